"""One training step of a gradient-balancing method: per-task gradients of the shared encoder, combined."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from accelerate import Accelerator

from .task_capacity import task_of_parameter
from .weighting import WeightingMethod


def shared_and_task_parameters(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Trainable parameters of the shared encoder, and all other trainable ones: the heads and the encoder's
    task-owned parts (per-task adapters, unshared layers), whose gradient is their own task's."""
    shared: list[torch.nn.Parameter] = []
    other: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # DDP / PEFT wrappers prefix names ("module.", "base_model.model."): look for the encoder component.
        in_encoder = ".encoder." in f".{name}" or name.startswith("encoder.")
        (shared if in_encoder and task_of_parameter(name) is None else other).append(parameter)
    return shared, other


def per_task_gradient_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    weighting: WeightingMethod,
    losses: Mapping[str, torch.Tensor],
    step: int,
    gradient_accumulation_steps: int,
    dev: tuple[torch.Tensor, list[torch.nn.Parameter]] | None = None,
) -> torch.Tensor:
    """Accumulate the combined gradient of one step into `.grad` and return the (detached) mean loss.

    Each task's gradient of the shared parameters is taken with `torch.autograd.grad`, which runs no
    DDP all-reduce hooks. Under several processes the per-task gradient matrix, the head gradients
    and the task losses are averaged across ranks in ONE all-reduce before the method combines
    them, so every rank applies the combination of the global per-task gradients (identical to a
    single process at the same global batch, also for non-linear methods such as PCGrad or MGDA).

    `dev` = (dev loss, dev-head parameters) for methods steered by a held-out objective (META-TARTAN): its
    gradient on the shared parameters goes to `weighting.set_dev_gradient` (averaged across ranks with
    the rest) and its gradient on the dev heads is accumulated into their `.grad` (the optimizer trains them).
    """
    shared, heads = shared_and_task_parameters(model)
    task_names = list(weighting.task_names)
    missing = [t for t in task_names if t not in losses]
    if missing:
        raise ValueError(f"{type(weighting).__name__} needs every task in each step; missing {missing}.")
    # fp16: differentiate the scaled losses (small gradients would underflow in half precision), combine the
    # unscaled gradients, and store the result scaled again, so that the gradient scaler unscales it, finds
    # an overflow (inf / NaN) and skips the step exactly as after a plain backward.
    scaler = getattr(accelerator, "scaler", None)
    scaler = scaler if scaler is not None and scaler.is_enabled() else None
    scale = None
    if scaler is not None:
        scaler.scale(losses[task_names[0]])  # initialises the scaler's state for this iteration (as backward would)
        scale = float(scaler.get_scale())
    task_grads = task_gradient_matrix(losses, task_names, shared, scale=scale or 1.0, retain_graph=True)
    # A tensor: task_names is never empty (sum's stub allows its start value 0).
    total = cast(torch.Tensor, sum(losses[task] for task in task_names))
    total = total * scale if scale else total
    head_grads = _flatten(torch.autograd.grad(total, heads, allow_unused=True), heads).float() if heads else task_grads.new_zeros(0)
    if scale:
        head_grads = head_grads / scale
    loss_values = torch.stack([losses[task].detach().float() for task in task_names])
    dev_grads = task_grads.new_zeros(0)
    if dev is not None:
        dev_loss, dev_parameters = dev
        # Scaled like the task losses (a half-precision dev gradient would underflow too), then unscaled.
        pieces = torch.autograd.grad(dev_loss * scale if scale else dev_loss, [*shared, *dev_parameters], allow_unused=True)
        dev_grads = _flatten(pieces, [*shared, *dev_parameters]).float()
        dev_grads = dev_grads / scale if scale else dev_grads
    if accelerator.num_processes > 1:
        packed = accelerator.reduce(torch.cat([task_grads.reshape(-1), head_grads, dev_grads, loss_values]), reduction="mean")
        task_grads = packed[: task_grads.numel()].view_as(task_grads)
        head_grads = packed[task_grads.numel() : task_grads.numel() + head_grads.numel()]
        dev_grads = packed[task_grads.numel() + head_grads.numel() : task_grads.numel() + head_grads.numel() + dev_grads.numel()]
        loss_values = packed[-len(task_names) :]
    overflow = bool(scale) and not (bool(torch.isfinite(task_grads).all()) and bool(torch.isfinite(dev_grads).all()))
    if dev is not None:
        shared_size = task_grads.shape[1]
        if not overflow:  # an overflowing step never reaches the method's state
            weighting.set_dev_gradient(dev_grads[:shared_size])
        # Stored scaled like the rest (the gradient scaler unscales every .grad before the optimizer step).
        _accumulate(dev[1], dev_grads[shared_size:] * (scale or 1.0) / gradient_accumulation_steps)
    if overflow:
        # An overflow: the method never sees it (its state stays clean); the scaler skips this step.
        combined = torch.full_like(task_grads[0], float("inf"))
    else:
        combined = weighting.combine_gradients(task_grads, dict(zip(task_names, loss_values)), step)
        if not isinstance(combined, torch.Tensor) or tuple(combined.shape) != (task_grads.shape[1],):
            shape = tuple(combined.shape) if isinstance(combined, torch.Tensor) else type(combined).__name__
            raise ValueError(
                f"Weighting method {weighting.name!r}: combine_gradients must return the combined gradient of shape "
                f"[P={task_grads.shape[1]}], got {shape}."
            )
    combined, head_grads = combined / gradient_accumulation_steps, head_grads / gradient_accumulation_steps
    if scale:
        combined, head_grads = combined * scale, head_grads * scale
    _accumulate(shared, combined)
    _accumulate(heads, head_grads)
    return (loss_values.mean() / gradient_accumulation_steps).detach()


def task_gradient_matrix(
    losses: Mapping[str, torch.Tensor],
    task_names: list[str],
    parameters: list[torch.nn.Parameter],
    *,
    scale: float = 1.0,
    retain_graph: bool = True,
) -> torch.Tensor:
    """`[tasks, parameters]` fp32 matrix: row t = d losses[t] / d parameters, flattened (zeros where unused).

    `torch.autograd.grad` leaves `.grad` untouched. `scale` multiplies each loss before differentiating
    (fp16 loss scaling) and divides the gradients after. Used by the gradient methods and by
    `MultiTaskDiagnosticsCallback`.
    """
    rows = []
    for task in task_names:
        loss = losses[task] * scale if scale != 1.0 else losses[task]
        grads = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
        rows.append(_flatten(grads, parameters).float())
    matrix = torch.stack(rows)
    return matrix / scale if scale != 1.0 else matrix


def _flatten(grads, parameters) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, parameters)])


def _accumulate(parameters, flat: torch.Tensor) -> None:
    offset = 0
    for parameter in parameters:
        piece = flat[offset : offset + parameter.numel()].view_as(parameter).to(parameter.dtype)
        offset += parameter.numel()
        parameter.grad = piece.clone() if parameter.grad is None else parameter.grad + piece


# ---- data-parallel consistency (several processes) -----------------------------------------------------


def global_loss_values(accelerator: Accelerator, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-task losses with their values averaged over processes and their gradients left local.

    Every rank draws the same tasks at a step (each keeps its slice of one global batch), so one all-reduce
    of the step's loss values gives every rank the losses of the global batch: a method that reads loss
    values (weights, FAMO / DWA state, uncertainty's log-variance gradients) then decides the same on every
    rank, as one process would at the same global batch. `loss + (global - loss.detach())` has the global
    value and the local gradient, which DDP (or `average_gradients`) averages as usual.
    """
    if accelerator.num_processes == 1 or not losses:
        return dict(losses)
    names = list(losses)
    averaged = accelerator.reduce(torch.stack([losses[t].detach().float() for t in names]), reduction="mean")
    return {t: losses[t] + (averaged[i].to(losses[t].dtype) - losses[t].detach()) for i, t in enumerate(names)}


def average_gradients(accelerator: Accelerator, parameters) -> None:
    """Average the `.grad` of `parameters` (those that have one) over processes, in one all-reduce.

    For steps whose backward ran without DDP's synchronisation (several forwards of the wrapped model before
    one backward, which DDP with `find_unused_parameters` refuses). Called after every micro-batch of gradient
    accumulation it is still exact: the part averaged before is the same on every rank, and a mean is linear.
    """
    if accelerator.num_processes == 1:
        return
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    flat = accelerator.reduce(torch.cat([p.grad.reshape(-1).float() for p in with_grad]), reduction="mean")
    offset = 0
    for parameter in with_grad:
        parameter.grad.copy_(flat[offset : offset + parameter.numel()].view_as(parameter.grad))
        offset += parameter.numel()
