"""One training step of a gradient-balancing method: per-task gradients of the shared encoder, combined."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from accelerate import Accelerator

from .weighting import WeightingMethod


def shared_and_task_parameters(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Trainable parameters of the shared encoder, and all other trainable ones (the heads)."""
    shared, other = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # DDP / PEFT wrappers prefix names ("module.", "base_model.model."): look for the encoder component.
        (shared if ".encoder." in f".{name}" or name.startswith("encoder.") else other).append(parameter)
    return shared, other


def per_task_gradient_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    weighting: WeightingMethod,
    losses: Mapping[str, torch.Tensor],
    step: int,
    gradient_accumulation_steps: int,
) -> torch.Tensor:
    """Accumulate the combined gradient of one step into `.grad` and return the (detached) mean loss.

    Each task's gradient of the shared parameters is taken with `torch.autograd.grad`, which runs no
    DDP all-reduce hooks; the method combines them; heads get their own task's gradient. Under
    several processes the combined gradient is then averaged across ranks once.
    """
    shared, heads = shared_and_task_parameters(model)
    task_names = list(weighting.task_names)
    missing = [t for t in task_names if t not in losses]
    if missing:
        raise ValueError(f"{type(weighting).__name__} needs every task in each step; missing {missing}.")
    rows = []
    for task in task_names:
        grads = torch.autograd.grad(losses[task], shared, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)]))
    combined = weighting.combine_gradients(torch.stack(rows), losses, step) / gradient_accumulation_steps
    total = sum(losses.values())
    head_grads = torch.autograd.grad(total, heads, allow_unused=True) if heads else []
    if accelerator.num_processes > 1:
        flat_heads = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(head_grads, heads)])
        both = accelerator.reduce(torch.cat([combined, flat_heads / gradient_accumulation_steps]), reduction="mean")
        combined, flat_heads = both[: combined.numel()], both[combined.numel():] * gradient_accumulation_steps
        head_grads = list(torch.split(flat_heads, [p.numel() for p in heads]))
    offset = 0
    for parameter in shared:
        piece = combined[offset : offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
        parameter.grad = piece.clone() if parameter.grad is None else parameter.grad + piece
    for parameter, grad in zip(heads, head_grads):
        if grad is None:
            continue
        grad = grad.view_as(parameter) / gradient_accumulation_steps
        parameter.grad = grad.clone() if parameter.grad is None else parameter.grad + grad
    return (total / len(losses)).detach() / gradient_accumulation_steps
