"""Sharded training (FSDP, DeepSpeed ZeRO): which engine a run asks for, what it refuses, the layers FSDP2 wraps, the
optimizer of a method's own parameters and the unsharded copy a teacher runs in.

A gradient method (`needs_task_gradients`) takes one gradient of the shared encoder per task with
`torch.autograd.grad` and writes their combination into `.grad`. A sharding engine updates from the gradients of its
own backward: FSDP reduce-scatters them into its shards in post-backward hooks, DeepSpeed fills its flat gradient
partitions in its engine's backward. `torch.autograd.grad` runs neither. Measured with pcgrad over two CPU processes
(torch 2.13, accelerate 1.16, DeepSpeed 0.19.8): FSDP2 fails in the first step ("aten.cat.default got mixed
torch.Tensor and DTensor"), ZeRO-2 at the first optimizer step (IndexError in `reduce_ipg_grads`), and ZeRO-1 and
ZeRO-3 train without error on other gradients than one process (the second step's loss 4.33 instead of 3.90).
The per-task matrix would also hold `T × P` full gradients on every rank, the memory sharding exists to save. So a
gradient method under any engine and stage is refused before any work (`check_sharding`), naming the alternatives.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from .weighting import available_weightings, get_weighting

WEIGHTING_OPTIMIZER_NAME = "weighting_optimizer.pt"


def _deepspeed_stage(config: Any) -> int | None:
    """The ZeRO stage of a DeepSpeed config (dict, JSON string or path); 0 when it names none, None if unreadable."""
    if isinstance(config, str):
        try:
            if os.path.isfile(config):
                with open(config, encoding="utf-8") as handle:
                    config = json.load(handle)
            else:
                config = json.loads(config)
        except (OSError, ValueError):
            return None
    if not isinstance(config, Mapping):
        return None
    stage = config.get("zero_optimization", {}).get("stage", 0)
    return int(stage) if isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit()) else None


def sharding_engine(args: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The sharding engine a run asks for, in words (`"FSDP"`, `"DeepSpeed ZeRO-3"`, ...), or None.

    Reads the training arguments (`fsdp`, `deepspeed`) and the variables `accelerate launch` sets from its config
    (`ACCELERATE_USE_FSDP`, `ACCELERATE_USE_DEEPSPEED`, `ACCELERATE_DEEPSPEED_ZERO_STAGE`): a run launched with
    `accelerate launch --use_fsdp` shards the model although its own arguments do not say so.
    """
    environ = os.environ if environ is None else environ
    if getattr(args, "fsdp", None) or environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    deepspeed = getattr(args, "deepspeed", None)
    if deepspeed or environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        stage = _deepspeed_stage(deepspeed) if deepspeed else None
        if stage is None:
            variable = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
            stage = int(variable) if variable.isdigit() else None
        return "DeepSpeed" if stage is None else f"DeepSpeed ZeRO-{stage}"
    return None


def check_sharding(args: Any, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, with one line naming the alternatives (`ValueError`), what a sharding engine would break: a gradient
    method (any engine), and async-KD under DeepSpeed ZeRO-3.

    Reads `args.mtl_method` (the `async_kd` alias included) and `args.async_kd` as given, so that it can run before
    the arguments' own processing (which needs the engine installed); an unknown method is left to that processing.
    """
    engine = sharding_engine(args, environ)
    if engine is None:
        return
    method, async_kd = args.mtl_method, bool(getattr(args, "async_kd", False))
    if method == "async_kd":  # MultiTaskTrainingArguments' alias of equal + async_kd
        method, async_kd = "equal", True
    if method in available_weightings() and get_weighting(method).needs_task_gradients:
        loss_methods = ", ".join(name for name in available_weightings() if not get_weighting(name).needs_task_gradients)
        raise ValueError(
            f"mtl_method {method!r} is a gradient method: it combines per-task gradients of the shared encoder taken "
            f"with torch.autograd.grad, which bypass the backward that {engine} reduces (and shards) gradients in. Train {method} with DDP "
            f"(torchrun or accelerate launch without FSDP/DeepSpeed), or keep {engine} with a loss-weighting method "
            f"({loss_methods}; with or without async_kd)."
        )
    if getattr(args, "diagnostics_steps", 0):
        raise ValueError(
            f"diagnostics_steps measures per-task gradients of the shared encoder with torch.autograd.grad, which "
            f"{engine} shards outside its backward (each rank would measure its own shard): measure with DDP or one process."
        )
    if async_kd and engine == "DeepSpeed ZeRO-3":
        raise ValueError(
            "async_kd under DeepSpeed ZeRO-3: its best-parameter snapshots and teachers need whole parameters, which "
            "ZeRO-3 partitions outside its engine's forward. Use async_kd with ZeRO-2 or FSDP, or ZeRO-3 without async_kd."
        )


def fsdp_wrap_classes(model: torch.nn.Module) -> list[str] | None:
    """The layer classes FSDP2 should shard one by one: the model's `_no_split_modules` without those holding the
    input embedding (None when the model names none).

    accelerate shards every `_no_split_modules` class, then the input embedding by itself; when an embeddings
    block (BERT's `BertEmbeddings`) was sharded already, that second `fully_shard` of its word embedding fails
    ("Invariant encountered: value was None when it should not be", accelerate 1.16 with torch 2.13, on any device).
    """
    names = getattr(model, "_no_split_modules", None)
    embedding = getattr(model, "get_input_embeddings", lambda: None)()
    if not names or embedding is None:
        return None
    holding = {type(module).__name__ for module in model.modules() if any(m is embedding for m in module.modules())}
    present = {type(module).__name__ for module in model.modules()}
    return sorted(name for name in names if name in present and name not in holding) or None


# ---- the optimizer of a method's own parameters -------------------------------------------------------------------


class OwnParametersOptimizer:
    """The optimizer of a method's own parameters (uncertainty's log-variances) under a sharding engine.

    In one process or DDP they are one more group of the Trainer's optimizer. FSDP2 and DeepSpeed map every parameter
    of the optimizer to the model's (FSDP2: to its sharded twin, by name; DeepSpeed: into its flat partitions), and
    their optimizer checkpoints name parameters by the model's names: a parameter of the method's fails there. So
    they get this optimizer of their own: the Trainer's optimizer class and hyper-parameters (weight decay 0, the
    method's learning rate if it has one), stepped right after the Trainer's optimizer at the same point of the
    schedule (`step(factor)`, factor = the Trainer's current learning rate over its initial one: every schedule of
    `transformers.get_scheduler` multiplies the initial rate). The same update as one group of the Trainer's
    optimizer, as an element-wise optimizer (Adam, SGD, ...) updates each parameter on its own.
    """

    def __init__(
        self, parameters: Sequence[torch.nn.Parameter], optimizer_cls: Any, optimizer_kwargs: Mapping[str, Any], learning_rate: float | None
    ) -> None:
        kwargs = dict(optimizer_kwargs)
        if learning_rate is not None:
            kwargs["lr"] = learning_rate
        self.optimizer = optimizer_cls([{"params": list(parameters), "weight_decay": 0.0}], **kwargs)
        self.initial_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self, factor: float) -> None:
        """One update at `factor` times the initial learning rate."""
        for group, initial in zip(self.optimizer.param_groups, self.initial_lr):
            group["lr"] = initial * factor
        self.optimizer.step()

    def save(self, directory: str) -> None:
        torch.save(self.optimizer.state_dict(), os.path.join(directory, WEIGHTING_OPTIMIZER_NAME))

    def load(self, directory: str) -> None:
        """Restore what `save` wrote into a checkpoint (a checkpoint without the file leaves the state as it is)."""
        path = os.path.join(directory, WEIGHTING_OPTIMIZER_NAME)
        if os.path.isfile(path):
            self.optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class OwnParametersStep(TrainerCallback):
    """Steps the `OwnParametersOptimizer` that `owner()` returns (if any) after each step of the Trainer's optimizer
    that was not skipped (`skipped()`: an fp16 overflow), at the Trainer's point of the schedule."""

    def __init__(self, owner: Callable[[], OwnParametersOptimizer | None], skipped: Callable[[], bool]) -> None:
        self.owner = owner
        self.skipped = skipped

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        own = self.owner()
        if own is not None and optimizer is not None and not self.skipped():
            group = optimizer.param_groups[0]  # the learning rate of this step, before the scheduler moves it
            initial = group.get("initial_lr", args.learning_rate)
            own.step(float(group["lr"]) / float(initial) if initial else 0.0)
        return control


def complete_optimizer_state(optimizer: Any) -> int:
    """Give every trainable parameter of an Adam / AdamW optimizer that has not been stepped the state its first step
    would create (step 0, zero moments), so that a sharded checkpoint of it can be loaded: torch.distributed.checkpoint
    refuses an optimizer state that misses a trainable parameter (under FSDP: an encoder's pooler under mean pooling,
    the head of a task not drawn yet). Training is unchanged: a parameter without a gradient is not stepped, and its
    first step finds the state it would have made. Other optimizers are left as they are. Returns how many parameters
    got a state."""
    from torch.optim.optimizer import _get_scalar_dtype

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
    if not isinstance(inner, torch.optim.Adam):  # AdamW is one
        return 0
    filled = 0
    for group in inner.param_groups:
        for p in group["params"]:
            if not p.requires_grad or inner.state[p]:
                continue
            state = inner.state[p]
            if group["capturable"] or group["fused"]:
                state["step"] = torch.zeros((), dtype=_get_scalar_dtype(is_fused=group["fused"]), device=p.device)
            else:
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
            for key in ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group["amsgrad"] else ())):
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            filled += 1
    return filled


def unsharded_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of a not yet sharded model on the CPU, for teachers to run in (`TeacherLabeller.teacher_host`)."""
    return copy.deepcopy(model).to("cpu").requires_grad_(False).eval()
