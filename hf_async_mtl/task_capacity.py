"""Task-specific capacity on the shared encoder: one LoRA adapter per task (peft) and unshared top-k layers.

Both keep one encoder and give each task some parameters of its own inside it:

- **Per-task adapters** (`add_task_adapters`): the encoder is wrapped by `peft.get_peft_model` with one named
  adapter per task (adapter name = task name), e.g. ``encoder.base_model.model.encoder.layer.0.attention.self.
  query.lora_A.cola.weight``. The base weights are frozen (classic LoRA) or trained with the adapters
  (`train_base=True`: a shared full fine-tune plus a low-rank part per task).
- **Unshared top-k layers** (`add_unshared_layers`): each of the encoder's last k layers becomes a
  `TaskRoutedLayer` holding one copy of it per task (initialised from the checkpoint's layer), e.g.
  ``encoder.encoder.layer.5.unshared.cola.attention.self.query.weight``; the embeddings and the first L − k
  layers stay shared. With pooler pooling the pooler stays shared.

A forward routes by the batch's task (`route`): batches are task-homogeneous, also in all-task steps, where each
task's batch is forwarded on its own, so no example of one task ever passes through another task's adapter or
layers, and a task's parts receive gradient only from its own batches. `task_of_parameter` names the task that
owns a parameter (None for the shared ones): gradient methods treat task-owned parameters like heads (their
gradient is the task's own), async-KD snapshots keep the converging task's parts, and exports inline one task's
parts into a plain encoder (`plain_encoder`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

from torch import nn

ROUTED_MODULE = "unshared"
# The adapter name of the shared-encoder LoRA (`adapters.wrap_encoder`): shared, not task-owned.
SHARED_ADAPTER = "default"


class TaskRoutedLayer(nn.Module):
    """One encoder layer per task in place of a shared one; a forward runs the routed task's copy.

    Arguments and outputs pass through unchanged, so the encoder's own layer loop (attention masks, caches,
    gradient checkpointing inside the layer) works as with the original layer.
    """

    def __init__(self, layer: nn.Module, task_names: Sequence[str]) -> None:
        super().__init__()
        self.unshared = nn.ModuleDict({task: copy.deepcopy(layer) for task in task_names})
        self.route: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.route is None:
            raise RuntimeError("An unshared encoder layer ran without a task route; call the model with task_ids or task_name.")
        return self.unshared[self.route](*args, **kwargs)


def layer_list(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers: the `nn.ModuleList` with `num_hidden_layers` entries
    (``encoder.layer`` for BERT / RoBERTa / DeBERTa / ELECTRA, ``transformer.layer`` for DistilBERT, ``layers``)."""
    count = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and ROUTED_MODULE not in name.split(".")
    ]
    if not candidates:
        raise ValueError(
            f"Cannot find the layer list of {type(encoder).__name__} (an nn.ModuleList of its {count} layers): "
            "unshared top layers need one."
        )
    # The outermost list: the shortest module path.
    return min(candidates, key=lambda item: item[0].count("."))[1]


def add_unshared_layers(encoder: nn.Module, num_layers: int, task_names: Sequence[str]) -> None:
    """Give each task its own copy of the encoder's last `num_layers` layers, in place (copies of the current
    weights, so call it after the pretrained weights are loaded)."""
    layers = layer_list(encoder)
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"unshared_layers must be between 1 and the encoder's {len(layers)} layers, got {num_layers}.")
    for index in range(len(layers) - num_layers, len(layers)):
        layers[index] = TaskRoutedLayer(layers[index], task_names)


def add_task_adapters(
    encoder: nn.Module, peft_config: Any, task_names: Sequence[str], train_base: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Wrap `encoder` with one PEFT adapter per task (adapter name = task name); returns the wrapped encoder and
    the resolved config dict. Every adapter is trainable (an adapter gets gradient only from its task's
    batches); the base weights are frozen unless `train_base`."""
    from .adapters import peft_config_from_dict, wrap_encoder

    if SHARED_ADAPTER in task_names:
        raise ValueError(
            f"Per-task adapters are named after their tasks; rename the task {SHARED_ADAPTER!r} (peft's name of a shared adapter)."
        )
    config = copy.deepcopy(peft_config_from_dict(peft_config))
    wrapped, resolved = wrap_encoder(encoder, config, adapter_name=task_names[0])
    wrapped_any = cast(Any, wrapped)
    if getattr(config, "task_type", None) is not None:
        config.task_type = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        for task in task_names[1:]:
            wrapped_any.add_adapter(task, config)
    for name, parameter in wrapped.named_parameters():
        parameter.requires_grad_(train_base or task_of_parameter(name) is not None)
    return wrapped, resolved


def _tuner_layers(encoder: nn.Module) -> Iterator[Any]:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a declared dependency
        return
    for module in encoder.modules():
        if isinstance(module, BaseTunerLayer):
            yield module


@contextlib.contextmanager
def route(encoder: nn.Module, task: str, _checkpoints: bool = True) -> Iterator[None]:
    """Run `task`'s adapter and unshared layers inside this block (no-op for an encoder without either).

    Adapters are switched through peft's active-adapter attribute of each adapted layer, not `set_adapter`:
    `set_adapter` also freezes the inactive adapters (requires_grad=False), which would hide them from an
    optimizer built over every task's adapter, and peft's per-example `adapter_names` refuses training mode.

    Gradient checkpointing recomputes a layer's forward during the backward pass, after this block has exited:
    a checkpointed layer would then run whatever adapter is active at that time (another task's). Inside the
    block, every checkpointed layer's checkpoint function is wrapped so that the function it stores for the
    recompute runs under `route(encoder, task)` again.
    """
    routed = [module for module in encoder.modules() if isinstance(module, TaskRoutedLayer)]
    tuners = [module for module in _tuner_layers(encoder) if task in module._get_available_adapters()]
    checkpointed = [
        layer
        for layer in encoder.modules()
        if _checkpoints
        and getattr(layer, "gradient_checkpointing", False)
        and callable(getattr(layer, "_gradient_checkpointing_func", None))
    ]
    saved = (
        [module.route for module in routed],
        [module._active_adapter for module in tuners],
        [module.__dict__.get("_gradient_checkpointing_func") for module in checkpointed],
    )
    for module in routed:
        module.route = task
    for tuner in tuners:
        tuner._active_adapter = [task]
    if routed or tuners:
        for layer in checkpointed:
            layer._gradient_checkpointing_func = _routed_checkpoint(layer._gradient_checkpointing_func, encoder, task)
    try:
        yield
    finally:
        for module, previous in zip(routed, saved[0]):
            module.route = previous
        for tuner, previous in zip(tuners, saved[1]):
            tuner._active_adapter = previous
        for layer, previous_func in zip(checkpointed, saved[2]):
            if previous_func is None:
                layer.__dict__.pop("_gradient_checkpointing_func", None)
            else:
                layer._gradient_checkpointing_func = previous_func


def _routed_checkpoint(checkpoint_func: Any, encoder: nn.Module, task: str) -> Any:
    """`checkpoint_func` whose stored function (run at forward and again at the recompute) runs under `task`'s route."""

    def checkpoint(function: Any, *args: Any, **kwargs: Any) -> Any:
        def routed_function(*inner_args: Any, **inner_kwargs: Any) -> Any:
            with route(encoder, task, _checkpoints=False):
                return function(*inner_args, **inner_kwargs)

        return checkpoint_func(routed_function, *args, **kwargs)

    return checkpoint


def task_of_parameter(name: str) -> str | None:
    """The task that owns parameter `name` (an unshared layer's copy or a per-task adapter), or None when it is
    shared (base encoder weights, the shared LoRA adapter) or not in the encoder."""
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part == ROUTED_MODULE:
            return parts[index + 1]
        if part.startswith("lora_") and parts[index + 1] != SHARED_ADAPTER:
            return parts[index + 1]
    return None


def has_task_capacity(encoder: nn.Module) -> bool:
    """Whether the encoder has unshared layers or per-task adapters."""
    return any(task_of_parameter(name) is not None for name, _ in encoder.named_parameters())


def plain_encoder(encoder: nn.Module, task: str) -> nn.Module:
    """A copy of the encoder as `task` sees it, as a plain transformers model: the task's adapter merged into the
    base weights (the other tasks' adapters dropped) and its copy of each unshared layer inlined."""
    from .adapters import is_peft_encoder

    plain = copy.deepcopy(encoder)
    if is_peft_encoder(plain):
        peft_model = cast(Any, plain)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            plain = peft_model.merge_and_unload(adapter_names=[task])
    for module in list(plain.modules()):
        if isinstance(module, nn.ModuleList):
            for index, layer in enumerate(module):
                if isinstance(layer, TaskRoutedLayer):
                    module[index] = layer.unshared[task]
    for parameter in plain.parameters():
        parameter.requires_grad_(True)
    return plain
