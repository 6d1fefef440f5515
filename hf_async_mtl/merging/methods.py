"""Merging methods: how the task vectors of single-task fine-tunes combine into one update of the base encoder.

A task vector is what fine-tuning changed, `τ_t = θ_t − θ0` (for a LoRA fine-tune, its merged encoder minus the
base: `B·A·scaling` on the adapted weights, 0 elsewhere). Each method turns the task vectors into one *direction*
`v`, tensor by tensor; the merged encoder is `θ0 + λ·v`, with `λ` (and the density) chosen on the tasks' selection
splits (`hf_async_mtl.merging.merge`). For one parameter tensor:

- `task_arithmetic` (Ilharco et al., "Editing models with task arithmetic", ICLR 2023): `v = Σ_t τ_t`.
- `ties` (Yadav et al., "TIES-Merging", NeurIPS 2023): trim each `τ_t` to its `density` share of largest-magnitude
  entries (`trim`), elect one sign per entry, the sign of the sum of the trimmed values (`elect_sign`; + where the
  sum is 0), and take the mean of the trimmed entries that are non-zero and agree with it (`disjoint_mean`; 0 where
  none does).
- `dare` (Yu et al., "Language Models are Super Mario", ICML 2024): drop each entry of `τ_t` with probability
  `1 − density` and divide the kept ones by `density`, which keeps the expected value (`drop_and_rescale`); then
  `v = Σ_t` of them (peft's `dare_linear`).
- `dare_ties`: DARE's drop and rescale, then TIES' sign election and disjoint mean.
- `ties_global`: TIES as Yadav et al. define it, the trim over each *whole* task vector (all its parameters
  flattened; their reference code's `topk_values_mask`: entries whose magnitude is at least the task vector's
  `(d − int(d·density))`-th smallest are kept, d counting its non-zero entries) instead of per tensor
  (`global_trim_thresholds`).

These are the definitions of `peft.utils.merge_utils` (`task_arithmetic`, `ties`, `dare_linear`, `dare_ties`) with unit
task weights, trimming per tensor as peft does, with two choices made for reproducibility: TIES keeps
`density × size` entries rounded to the nearest integer (at least one), equal magnitudes kept in index order; DARE
draws its masks from a generator seeded by (seed, task, parameter name) (`dare_draws`), so a merge is reproducible,
independent of the order of the checkpoints, and the entries kept at one density include those kept at a lower one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "MERGE_METHODS",
    "MergeMethod",
    "dare_draws",
    "disjoint_mean",
    "drop_and_rescale",
    "elect_sign",
    "get_merge_method",
    "global_trim_thresholds",
    "merge_direction",
    "merged_parameters",
    "trim",
]


def trim(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """`tensor` with only its `density` share of largest-magnitude entries kept, the others 0.

    It keeps `round(density × size)` entries (halves up, at least one); among equal magnitudes the earlier index wins.
    """
    _check_density(density)
    flat = tensor.reshape(-1)
    keep = max(1, math.floor(density * flat.numel() + 0.5))
    if keep >= flat.numel():
        return tensor.clone()
    order = torch.argsort(flat.abs(), descending=True, stable=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:keep]] = True
    return (flat * mask).reshape(tensor.shape)


def global_trim_thresholds(task_vectors: Mapping[str, Mapping[str, torch.Tensor]], density: float) -> dict[str, float]:
    """Per task, the magnitude an entry of its whole task vector must reach to be kept at `density`: the
    `(d − int(d·density))`-th smallest magnitude over its d *non-zero* entries (TIES' reference `topk_values_mask`,
    whose full fine-tunes change every entry; entries equal to it are all kept, so `int(d·density) + 1` entries
    without ties, as there), or 0 (keep everything) when that count is 0. Counting non-zero entries only keeps `density` meaningful for a LoRA fine-tune, whose task vector is
    zero outside its adapted weights (else every density above its non-zero share would keep everything)."""
    _check_density(density)
    thresholds = {}
    for task, vector in task_vectors.items():
        magnitudes = torch.cat([tensor.detach().float().abs().reshape(-1) for tensor in vector.values()])
        magnitudes = magnitudes[magnitudes > 0]
        k = magnitudes.numel() - int(magnitudes.numel() * density)
        thresholds[task] = float(magnitudes.kthvalue(k).values) if k > 0 else 0.0
    return thresholds


def elect_sign(stacked: torch.Tensor) -> torch.Tensor:
    """The elected sign of each entry of tasks stacked on dim 0: +1 where their sum is >= 0, else −1."""
    return torch.where(stacked.sum(dim=0) >= 0, 1.0, -1.0).to(stacked.dtype)


def disjoint_mean(stacked: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Per entry, the mean over the tasks (dim 0) whose value is non-zero and has sign `sign`; 0 where none has."""
    agrees = torch.sign(stacked) == sign
    count = agrees.sum(dim=0)
    return (stacked * agrees).sum(dim=0) / count.clamp(min=1)


def drop_and_rescale(tensor: torch.Tensor, density: float, draws: torch.Tensor) -> torch.Tensor:
    """DARE: the entries whose uniform draw in [0, 1) is below `density` kept and divided by `density`, the others 0.

    Each entry is kept with probability `density`, so the expected value of the result is `tensor`.
    """
    _check_density(density)
    if draws.shape != tensor.shape:
        raise ValueError(f"DARE draws of shape {tuple(draws.shape)} for a tensor of shape {tuple(tensor.shape)}.")
    return torch.where(draws.to(tensor.device) < density, tensor / density, torch.zeros_like(tensor))


def dare_draws(seed: int, task: str, name: str, shape: torch.Size | Sequence[int]) -> torch.Tensor:
    """Uniform draws in [0, 1) for DARE's mask of task `task`'s parameter `name`, from a generator seeded by all three."""
    digest = hashlib.sha256(f"hf_async_mtl.dare:{seed}:{task}:{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


# ---- one parameter tensor: the direction v of each method --------------------------------------------------------

Draws = Sequence[torch.Tensor] | None


def _task_arithmetic(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    return torch.stack(list(task_tensors)).sum(dim=0)


def _ties(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    trimmed = torch.stack([trim(tensor, _needed(density)) for tensor in task_tensors])
    return disjoint_mean(trimmed, elect_sign(trimmed))


def _ties_global(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    # `draws` carries each task's global threshold (merge_direction computes them over the whole task vectors).
    if draws is None or len(draws) != len(task_tensors):
        raise ValueError("ties_global needs each task's global trim threshold.")
    trimmed = torch.stack([torch.where(t.abs() >= float(d), t, torch.zeros_like(t)) for t, d in zip(task_tensors, draws)])
    return disjoint_mean(trimmed, elect_sign(trimmed))


def _dropped(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    if draws is None or len(draws) != len(task_tensors):
        raise ValueError("DARE needs one tensor of uniform draws per task.")
    return torch.stack([drop_and_rescale(tensor, _needed(density), draw) for tensor, draw in zip(task_tensors, draws)])


def _dare(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    return _dropped(task_tensors, density, draws).sum(dim=0)


def _dare_ties(task_tensors: Sequence[torch.Tensor], density: float | None, draws: Draws) -> torch.Tensor:
    dropped = _dropped(task_tensors, density, draws)
    return disjoint_mean(dropped, elect_sign(dropped))


@dataclass(frozen=True)
class MergeMethod:
    """A merging method: its direction on one parameter tensor (task tensors, density, DARE draws), whether it takes a
    density, whether it draws DARE masks, and its definition in words (for records and model cards)."""

    name: str
    direction: Callable[[Sequence[torch.Tensor], float | None, Draws], torch.Tensor]
    uses_density: bool
    uses_draws: bool
    definition: str
    # The default λ grid: a sum of task vectors (task arithmetic, DARE) has the size of several task vectors, TIES'
    # disjoint mean the size of one, so its useful λ is larger (the TIES reference code searches 0.8-2.5).
    default_scales: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)


MERGE_METHODS: dict[str, MergeMethod] = {
    method.name: method
    for method in (
        MergeMethod("task_arithmetic", _task_arithmetic, False, False, "θ0 + λ·Σ_t τ_t"),
        MergeMethod(
            "ties",
            _ties,
            True,
            False,
            "θ0 + λ·disjoint mean of the trimmed τ_t (top density share of magnitudes per tensor) agreeing with the "
            "elected sign (sign of their sum)",
            default_scales=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        ),
        MergeMethod(
            "ties_global",
            _ties_global,
            True,
            False,
            "θ0 + λ·disjoint mean of the trimmed τ_t (top density share of magnitudes over the whole task vector) "
            "agreeing with the elected sign (sign of their sum)",
            default_scales=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        ),
        MergeMethod("dare", _dare, True, True, "θ0 + λ·Σ_t DARE(τ_t) (entries kept with probability density, divided by density)"),
        MergeMethod(
            "dare_ties",
            _dare_ties,
            True,
            True,
            "θ0 + λ·disjoint mean of the DARE(τ_t) agreeing with the elected sign",
            default_scales=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        ),
    )
}


def get_merge_method(name: str) -> MergeMethod:
    """The method called `name`; an unknown name is a `ValueError` listing the known ones."""
    if name not in MERGE_METHODS:
        raise ValueError(f"Unknown merging method {name!r}; known: {', '.join(MERGE_METHODS)}.")
    return MERGE_METHODS[name]


# ---- whole encoders ------------------------------------------------------------------------------------------------


def merge_direction(
    method: str,
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    density: float | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The direction `v` of `method` for every parameter, from task vectors `{task: {parameter name: τ}}`.

    All tasks' vectors must have the same names and shapes. `density` is required by the methods that take one
    (TIES, DARE) and refused by task arithmetic; `seed` seeds DARE's masks (`dare_draws`).
    """
    chosen = get_merge_method(method)
    if chosen.uses_density:
        _check_density(_needed(density))
    elif density is not None:
        raise ValueError(f"{method} takes no density, got {density}.")
    tasks = list(task_vectors)
    if not tasks:
        raise ValueError("merge_direction needs the task vector of at least one task.")
    names = list(task_vectors[tasks[0]])
    for task in tasks[1:]:
        if list(task_vectors[task]) != names:
            raise ValueError(f"Task vectors of {tasks[0]!r} and {task!r} have different parameters.")
    thresholds = global_trim_thresholds(task_vectors, _needed(density)) if chosen.name == "ties_global" else None
    direction = {}
    for name in names:
        tensors = [task_vectors[task][name].float() for task in tasks]
        draws: list[torch.Tensor] | None = None
        if chosen.uses_draws:
            draws = [dare_draws(seed, task, name, tensors[0].shape) for task in tasks]
        elif thresholds is not None:
            draws = [torch.tensor(thresholds[task]) for task in tasks]
        direction[name] = chosen.direction(tensors, density, draws)
    return direction


def merged_parameters(base: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """`θ0 + scale·v` for the parameters in `direction` (computed in float32, returned in the base's dtype); every
    other entry of `base` (buffers, integer tensors) as it is."""
    merged = {}
    for name, value in base.items():
        if name in direction:
            merged[name] = (value.float() + scale * direction[name].to(value.device)).to(value.dtype)
        else:
            merged[name] = value.clone()
    return merged


def _needed(density: float | None) -> float:
    if density is None:
        raise ValueError("This merging method needs a density.")
    return density


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}.")
