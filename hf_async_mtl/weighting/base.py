"""Interface shared by all task-balancing strategies.

A strategy is a small `torch.nn.Module` that the trainer drives without knowing which one it is; it only reads the
class attributes `needs_all_tasks` and `needs_task_gradients`:

* loss-weighting methods (`needs_task_gradients=False`): the trainer back-propagates `weigh_losses(losses, step)`;
* gradient methods (`needs_task_gradients=True`): the trainer computes one gradient of the shared parameters per
  task, stacks them into a `[T, P]` matrix and writes `combine_gradients(grads, losses, step)` into `.grad`.

After every optimizer step the trainer calls `after_optimizer_step` with that step's detached per-task losses.
Learnable weights are `nn.Parameter`s (the trainer optimises `method.parameters()`); every other piece of state is a
buffer, so `state_dict()`/`load_state_dict()` resume a run exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class WeightingMethod(nn.Module):
    """Base class of a task-balancing strategy over a fixed, ordered set of tasks.

    Args:
        task_names: The tasks, in the order used for gradient rows and weight vectors.
        **options: Method options; the accepted names and their defaults are `option_defaults`. An unknown name
            raises `TypeError` listing the method's options.

    Attributes:
        task_names: The task names, as a tuple.
        options: The effective options (defaults overridden by the given ones).
        last_weights: Per-task weights used at the last call (the multiplier each task's loss or gradient got),
            for logging. Every task is present; before the first call all weights are 1.
    """

    name: ClassVar[str]
    #: Every task must have a loss in each call (one batch of every task per optimizer step).
    needs_all_tasks: ClassVar[bool] = False
    #: The trainer computes one gradient of the shared parameters per task and calls `combine_gradients`.
    needs_task_gradients: ClassVar[bool] = False
    #: The method takes an `end_tasks` option, which the trainer fills from `end_task` when it is not given.
    uses_end_tasks: ClassVar[bool] = False
    #: Each step the trainer computes the gradient of a held-out end-task loss through `dev_head_modules()` (built
    #: with `build_dev_heads`) and hands it over with `set_dev_gradient` before `combine_gradients`.
    needs_dev_gradient: ClassVar[bool] = False
    #: Learning rate of the method's learnable parameters (None: the run's).
    learning_rate: float | None = None
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    #: Buffer of the seeded generator (registered by `_register_rng`, only in methods that draw random numbers).
    rng_state: Tensor

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__()
        label = getattr(type(self), "name", type(self).__name__)
        if isinstance(task_names, str):
            raise TypeError(f"Weighting method {label!r}: task_names must be a sequence of names, not a string.")
        names = tuple(task_names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"Weighting method {label!r}: task_names must be non-empty strings, got {names!r}.")
        if len(set(names)) != len(names):
            raise ValueError(f"Weighting method {label!r}: task_names contain duplicates: {names!r}.")
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            known = ", ".join(f"{k}={v!r}" for k, v in self.option_defaults.items()) or "none"
            raise TypeError(f"Weighting method {label!r} got unknown option(s) {unknown}; its options (with defaults) are: {known}.")
        self.task_names: tuple[str, ...] = names
        self.options: dict[str, Any] = {**self.option_defaults, **options}
        self.last_weights: dict[str, float] = dict.fromkeys(names, 1.0)
        self._index = {n: i for i, n in enumerate(names)}

    @property
    def num_tasks(self) -> int:
        """Number of tasks T."""
        return len(self.task_names)

    def schedule_warning(self, max_steps: int) -> str | None:
        """A message when the method cannot act within `max_steps` optimizer steps (e.g. a history window
        longer than the run), else None. The trainer logs it as a warning."""
        return None

    # ----------------------------------------------------------------------------------------------- loss weighting
    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        """Weights of all tasks (shape `[T]`, task order) for the default `weigh_losses`. Default: all ones."""
        return torch.ones(self.num_tasks)

    def _checked_weights(self, weights: Any, produced_by: str) -> Tensor:
        """`weights` when it is a `[T]` tensor; else an error naming the method and what returned it (a subclass's)."""
        if not isinstance(weights, Tensor) or tuple(weights.shape) != (self.num_tasks,):
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(
                f"Weighting method {self.name!r}: {produced_by} must return a tensor of shape [T={self.num_tasks}], got {shape}."
            )
        return weights

    def weigh_losses(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        """Differentiable scalar combining the given per-task losses: `sum_t w_t * L_t` over the tasks present.

        `losses` may hold a subset of the tasks unless `needs_all_tasks` is set (then a missing task is an error).
        """
        present = self._check_losses(losses)
        weights = self._checked_weights(self.loss_weights(losses, step), "loss_weights")
        self._set_last_weights(weights)
        terms = [weights[self._index[t]].to(losses[t]) * losses[t] for t in present]
        return sum(terms[1:], terms[0])

    # ------------------------------------------------------------------------------------------- gradient balancing
    def combine_gradients(self, grads: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        """Combine per-task gradients `[T, P]` (rows in `task_names` order) of the shared parameters into `[P]`."""
        if self.needs_task_gradients:
            raise NotImplementedError(
                f"Weighting method {self.name!r} sets needs_task_gradients but implements no combine_gradients: implement it "
                "(or subclass GradientWeightingMethod and implement gradient_weights)."
            )
        raise NotImplementedError(f"Weighting method {self.name!r} weighs losses (needs_task_gradients=False); call weigh_losses instead.")

    def after_optimizer_step(self, losses: Mapping[str, float], step: int) -> None:
        """Per-optimizer-step bookkeeping with that step's detached per-task losses. Default: nothing."""

    # ------------------------------------------------------------------------------ end-task dev gradient (TARTAN)
    def build_dev_heads(self, hidden_size: int, num_outputs: Mapping[str, int], std: float = 0.02, seed: int = 0) -> None:
        """Create the heads of the held-out end-task loss (methods with `needs_dev_gradient`)."""
        raise NotImplementedError(f"Weighting method {self.name!r} has no dev heads (needs_dev_gradient=False).")

    def dev_head_modules(self) -> nn.ModuleDict | None:
        """The heads of the held-out end-task loss, or None for methods without them."""
        return None

    def set_dev_gradient(self, gradient: Tensor) -> None:
        """This step's gradient of the held-out end-task loss (methods with `needs_dev_gradient`)."""
        raise NotImplementedError(f"Weighting method {self.name!r} takes no dev gradient (needs_dev_gradient=False).")

    # ---------------------------------------------------------------------------------------------------- helpers
    def _check_losses(self, losses: Mapping[str, Any]) -> list[str]:
        """Names of the tasks present in `losses`, in task order; rejects unknown and (if required) missing tasks."""
        unknown = sorted(k for k in losses if k not in self._index)
        if unknown:
            raise ValueError(f"Weighting method {self.name!r}: unknown task(s) {unknown}; tasks are {self.task_names}.")
        present = [t for t in self.task_names if t in losses]
        if not present:
            raise ValueError(f"Weighting method {self.name!r}: no task losses given.")
        if self.needs_all_tasks and len(present) != self.num_tasks:
            missing = [t for t in self.task_names if t not in losses]
            raise ValueError(
                f"Weighting method {self.name!r} needs a loss for every task in each call (needs_all_tasks=True); "
                f"missing {missing}. Use a batch composition that puts every task in each optimizer step."
            )
        return present

    def _loss_values(self, losses: Mapping[str, Any]) -> Tensor:
        """Detached float64 CPU vector `[T]` of the losses of all tasks (all must be present)."""
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise ValueError(f"Weighting method {self.name!r} needs the losses of all tasks; missing {missing}.")
        return torch.tensor([_as_float(losses[t]) for t in self.task_names], dtype=torch.float64)

    def _set_last_weights(self, weights: Tensor) -> None:
        # One device sync per call: the weights are tiny and logging needs plain floats.
        values = weights.detach().to("cpu", torch.float64).tolist()
        self.last_weights = dict(zip(self.task_names, values))

    def _register_rng(self, seed: int) -> None:
        """Keep a seeded generator's state in a buffer so that checkpoints resume the random stream exactly."""
        self.register_buffer("rng_state", torch.Generator().manual_seed(int(seed)).get_state())

    @contextmanager
    def _rng(self) -> Iterator[torch.Generator]:
        # The generator is rebuilt from the buffer on each use, so load_state_dict is all it takes to resume.
        generator = torch.Generator()
        generator.set_state(self.rng_state.cpu())
        yield generator
        self.rng_state.copy_(generator.get_state())

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"tasks={list(self.task_names)}{options}"


class GradientWeightingMethod(WeightingMethod):
    """Base of gradient-balancing methods: the combined gradient is a weighted sum of the task gradients.

    Subclasses implement `gradient_weights(gram, losses, step)` on the `[T, T]` Gram matrix of the task gradients
    (every method here only needs inner products), so the `[T, P]` matrix is touched twice: once for the Gram
    matrix and once for the final weighted sum. `last_weights` are these effective weights.
    """

    needs_all_tasks: ClassVar[bool] = True
    needs_task_gradients: ClassVar[bool] = True

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        """Weights `[T]` (float64, CPU) of the task gradients given their float64 CPU Gram matrix."""
        raise NotImplementedError(
            f"Weighting method {self.name!r}: a GradientWeightingMethod implements gradient_weights(gram, losses, step)."
        )

    def combine_gradients(self, grads: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        """Return `sum_t w_t * grads[t]` with `w = gradient_weights(...)`, shape `[P]`, dtype/device of `grads`."""
        self._check_losses(losses)
        if grads.dim() != 2 or grads.shape[0] != self.num_tasks:
            raise ValueError(f"Weighting method {self.name!r}: grads must have shape [T={self.num_tasks}, P], got {tuple(grads.shape)}.")
        gram = gram_matrix(grads)
        if torch.isfinite(gram).all():
            weights = self._checked_weights(self.gradient_weights(gram, losses, step), "gradient_weights")
        else:
            # Overflowed gradients (e.g. fp16): skip the solver and bookkeeping, and let the non-finite sum reach the
            # trainer's own overflow handling instead of crashing inside an optimiser.
            weights = torch.ones(self.num_tasks, dtype=torch.float64)
        self._set_last_weights(weights)
        return weights.to(device=grads.device, dtype=grads.dtype) @ grads


def _as_float(value: Any) -> float:
    """A loss as a Python float; tensors are detached first (they may still be part of the autograd graph)."""
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def gram_matrix(grads: Tensor) -> Tensor:
    """Float64 CPU Gram matrix `G[i, j] = grads[i] . grads[j]` of a `[T, P]` gradient matrix.

    Pairwise `torch.dot` rather than `grads @ grads.T`: a matmul may run in TF32 when the trainer enables it, which is
    too coarse for the cosines and projections computed from G.
    """
    rows = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
    count = rows.shape[0]
    pairs = [(i, j) for i in range(count) for j in range(i, count)]
    values = torch.stack([torch.dot(rows[i], rows[j]) for i, j in pairs]).to("cpu", torch.float64)
    gram = torch.empty(count, count, dtype=torch.float64)
    for (i, j), value in zip(pairs, values):
        gram[i, j] = gram[j, i] = value
    return gram
