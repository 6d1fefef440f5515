"""META-TARTAN: end-task aware training with meta-learned task weights.

Dery, Michel, Talwalkar, Neubig, ICLR 2022. Every task (the end task(s) and each auxiliary) has a logit; the
weights are `T · softmax(logits)` (mean 1, the step size of equal weighting). A *dev head* per end task
(a linear layer on the end task's pooled representation, trained on a small held-out slice of the end task's
**training** data, never the dev set) gives `g_dev`, the gradient of the end task's held-out loss on the
shared encoder. After each optimizer step (taken with the current weights), each logit moves by the
first-order meta-gradient of the dev objective, with the alignments averaged over the step's micro-batches
(gradient accumulation): with `a_i` the alignment of task i's shared gradient `g_i` with `g_dev` (cosine by
default, or the raw dot product as in the paper's derivation, `alignment="dot"`) and `w = softmax(logits)`,

    d(sum_i w_i a_i) / d logit_j = w_j (a_j − sum_i w_i a_i),      logits += meta_lr · that

so objectives whose gradients point where the end task's held-out loss falls gain weight and opposed ones
lose it. Under `dot`, each micro-batch's product is an unbiased estimate of the full batch's (the task and dev
batches are drawn independently), so `meta_lr` means the same at any accumulation in expectation. A cosine is
not: noise inflates the norms of smaller micro-batches' gradients, so the same global batch split into more
micro-batches gives smaller cosines and moves the logits less. The trainer computes `g_dev` (and trains the dev heads at `dev_head_lr`) each step; under several
processes `g_dev` is averaged across ranks with the task gradients. The logits are a buffer and the dev heads
are the method's parameters, so a checkpoint resumes both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import GradientWeightingMethod
from .mt_tartan import split_end_tasks
from .registry import register_weighting

ALIGNMENTS = ("cosine", "dot")
_BLOCK = 1 << 18  # columns per float64 block of the alignment (fits in cache)


@register_weighting
class MetaTartan(GradientWeightingMethod):
    """Meta-learned end-task / auxiliary weights (see the module docstring).

    Options:
        end_tasks: The end task names (the trainer fills them from `end_task`).
        meta_lr: Step size of the logits.
        alignment: `cosine` (scale-free) or `dot` (the raw first-order meta-gradient).
        dev_head_lr: Learning rate of the dev heads (default: the run's learning rate).
    """

    name = "meta_tartan"
    uses_end_tasks = True
    needs_dev_gradient = True
    option_defaults = {"end_tasks": None, "meta_lr": 0.1, "alignment": "cosine", "dev_head_lr": None}

    logits: Tensor  # buffer (registered in __init__)

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.end_tasks, self.auxiliaries = split_end_tasks(self.name, self.task_names, self.options["end_tasks"])
        if self.options["alignment"] not in ALIGNMENTS:
            raise ValueError(f"Weighting method 'meta_tartan': alignment must be one of {ALIGNMENTS}, got {self.options['alignment']!r}.")
        if not float(self.options["meta_lr"]) > 0:
            raise ValueError(f"Weighting method 'meta_tartan': meta_lr must be > 0, got {self.options['meta_lr']}.")
        self.register_buffer("logits", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.dev_heads = nn.ModuleDict()
        self._dev_gradient: Tensor | None = None
        self._pending: list[Tensor] = []  # alignments of the optimizer step in progress
        self.last_alignment: dict[str, float] = {}

    # The base declares a plain attribute (other methods assign it); here it is derived from an option, read-only.
    @property
    def learning_rate(self) -> float | None:  # type: ignore[override]
        """The dev heads' learning rate (the trainer gives the method's parameters their own group)."""
        value = self.options["dev_head_lr"]
        return None if value is None else float(value)

    def build_dev_heads(self, hidden_size: int, num_outputs: Mapping[str, int], std: float = 0.02, seed: int = 0) -> None:
        """One linear dev head per end task on the `hidden_size` pooled representation (seeded init)."""
        generator = torch.Generator().manual_seed(int(seed))
        for task in self.end_tasks:
            head = nn.Linear(hidden_size, num_outputs[task])
            with torch.no_grad():
                head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
                head.bias.zero_()
            self.dev_heads[task] = head

    def dev_head_modules(self) -> nn.ModuleDict:
        """One linear head per end task (`build_dev_heads`)."""
        return self.dev_heads

    def set_dev_gradient(self, gradient: Tensor) -> None:
        """`g_dev` of this step, `[P]` in the order of the task gradients' columns."""
        self._dev_gradient = gradient

    def current_weights(self) -> Tensor:
        """`T · softmax(logits)` (float64, CPU)."""
        return self.num_tasks * torch.softmax(self.logits, dim=0)

    def combine_gradients(self, grads: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        self._check_losses(losses)
        if grads.dim() != 2 or grads.shape[0] != self.num_tasks:
            raise ValueError(f"Weighting method 'meta_tartan': grads must have shape [T={self.num_tasks}, P], got {tuple(grads.shape)}.")
        if self._dev_gradient is None:
            raise RuntimeError("meta_tartan: no dev gradient for this step (the trainer sets it with set_dev_gradient).")
        weights = self.current_weights()
        self._set_last_weights(weights)
        combined = weights.to(device=grads.device, dtype=grads.dtype) @ grads
        # A non-finite gradient entry (fp16 overflow) makes its float64 dot products non-finite, so checking the
        # T alignments is checking the [T, P] gradients, without two more passes over them.
        alignment = self.alignment(grads, self._dev_gradient)
        if torch.isfinite(alignment).all():
            self._pending.append(alignment)
        self._dev_gradient = None
        return combined

    def after_optimizer_step(self, losses: Mapping[str, float], step: int) -> None:
        """Apply the step's meta-gradient (mean alignment over its micro-batches) to the logits."""
        if self._pending:
            self.update_logits(torch.stack(self._pending).mean(dim=0))
            self._pending = []

    def alignment(self, grads: Tensor, dev_gradient: Tensor) -> Tensor:
        """`a_i`: cosine (or dot product) of each task gradient with the dev gradient (float64, logits' device)."""
        # float64 sums, taken over column blocks: no float64 copy of the whole [T, P] matrix (it cost more than the
        # products themselves), the same values up to float64 rounding.
        dev_gradient = dev_gradient.to(grads.device)
        values = torch.zeros(grads.shape[0], dtype=torch.float64, device=grads.device)
        squares, dev_square = torch.zeros_like(values), torch.zeros((), dtype=torch.float64, device=grads.device)
        for start in range(0, grads.shape[1], _BLOCK):
            rows, dev = grads[:, start : start + _BLOCK].double(), dev_gradient[start : start + _BLOCK].double()
            values += rows @ dev
            squares += (rows * rows).sum(dim=1)
            dev_square += dev @ dev
        if self.options["alignment"] == "cosine":
            values = values / (squares.sqrt() * dev_square.sqrt()).clamp(min=1e-12)
        return values.to(self.logits.device)

    def update_logits(self, alignment: Tensor) -> Tensor:
        """Move the logits by the meta-gradient of `sum_i w_i a_i`; returns the step taken (float64 `[T]`)."""
        alignment = alignment.to(device=self.logits.device, dtype=torch.float64)
        probabilities = torch.softmax(self.logits, dim=0)
        step = float(self.options["meta_lr"]) * probabilities * (alignment - (probabilities * alignment).sum())
        self.logits += step
        self.last_alignment = dict(zip(self.task_names, alignment.tolist()))
        return step
