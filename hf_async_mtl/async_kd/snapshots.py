"""Best-parameter snapshots taken during training, without stopping it.

When a task reaches a new best validation value, the parameters that matter for it (the shared
encoder plus that task's head) are copied aside; once the task converges, the best copy is loaded
into a teacher model to produce the task's soft labels. Snapshots live on CPU or, to spare host
memory for large encoders, in a safetensors file.

Which tensors are copied is up to an ``include(name, tensor)`` predicate, so a PEFT / partially
frozen model can keep only what training changes, e.g.
``include=lambda n, p: p.requires_grad or n.startswith("heads.sst2.")``.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Sequence

import torch
from safetensors.torch import load_file

from .storage import save_safetensors_atomic

IncludeFn = Callable[[str, torch.Tensor], bool]


class ParameterSnapshot:
    """Copy of selected parameters and buffers (e.g. shared encoder + one task head) taken at a step.

    Build with `capture`. The tensors are held on CPU, or only as a file path when a `directory`
    was given. Do not modify the tensors returned by `tensors()` in place.
    """

    def __init__(
        self, *, step: int, metric: float, tensors: dict[str, torch.Tensor] | None, path: str | None, nbytes: int, names: tuple[str, ...]
    ) -> None:
        self.step = step
        self._names = names
        self.metric = metric
        self._tensors = tensors
        self._path = path
        self._nbytes = nbytes
        self._released = False

    @classmethod
    def capture(
        cls,
        model: torch.nn.Module,
        include: IncludeFn,
        *,
        step: int,
        metric: float,
        directory: str | None = None,
        reuse: dict[str, torch.Tensor] | None = None,
    ) -> ParameterSnapshot:
        """Clone the named parameters and buffers of `model` for which `include(name, tensor)` is true.

        Args:
            model: The training model (any device, sharded by FSDP or not); it is not modified.
            include: Selection predicate, called with each parameter and each buffer.
            step: Training step the snapshot belongs to.
            metric: Validation value at that step.
            directory: If given, the copy is written atomically to a new file there and not kept
                in memory.
            reuse: CPU copies of some of the same tensors taken at this very step (e.g. the shared
                encoder in another task's snapshot); they are shared instead of copied again.
        """
        if not math.isfinite(float(metric)):
            raise ValueError(f"Snapshot metric must be finite, got {metric!r} at step {step}.")
        selected: dict[str, torch.Tensor] = {}
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if include(name, tensor):
                if reuse is not None and name in reuse:
                    selected[name] = reuse[name]  # same step, same values: share, never modified in place
                    continue
                # A parameter sharded by FSDP (a DTensor) is gathered whole: every rank captures at the same
                # evaluation. copy=True guarantees an independent tensor even when the source is already on CPU.
                value = tensor.detach()
                value = value.full_tensor() if hasattr(value, "full_tensor") else value
                selected[name] = value.to(device="cpu", copy=True)
        if not selected:
            raise ValueError(f"include selected no parameters or buffers of {type(model).__name__}; nothing to snapshot.")
        return cls._from_tensors(selected, step=step, metric=float(metric), directory=directory)

    @classmethod
    def load(cls, path: str, *, step: int, metric: float, directory: str | None = None) -> ParameterSnapshot:
        """Rebuild a snapshot from a file written by `save_copy` (e.g. when resuming from a checkpoint).

        The tensors are read into memory, or copied into a new file under `directory`: the snapshot
        never depends on `path` itself, which checkpoint rotation may delete, and `release` never
        deletes it.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Snapshot file {path!r} does not exist.")
        return cls._from_tensors(load_file(path), step=step, metric=float(metric), directory=directory)

    @classmethod
    def _from_tensors(cls, tensors: dict[str, torch.Tensor], *, step: int, metric: float, directory: str | None) -> ParameterSnapshot:
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if directory is None:
            return cls(step=step, metric=metric, tensors=tensors, path=None, nbytes=nbytes, names=tuple(tensors))
        path = os.path.join(os.fspath(directory), f"snapshot-step{step}-{uuid.uuid4().hex[:12]}.safetensors")
        save_safetensors_atomic(path, tensors, {"step": str(step), "metric": repr(metric)})
        return cls(step=step, metric=metric, tensors=None, path=path, nbytes=nbytes, names=tuple(tensors))

    @property
    def nbytes(self) -> int:
        """Size of the copied tensors in bytes (whether held in memory or on disk)."""
        return self._nbytes

    @property
    def path(self) -> str | None:
        """File holding the snapshot, or `None` for an in-memory snapshot."""
        return self._path

    @property
    def in_memory(self) -> bool:
        """Whether the tensors are currently held in host memory."""
        return self._tensors is not None

    @property
    def released(self) -> bool:
        """Whether `release` was called."""
        return self._released

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the captured tensors (capture order; file order for `load`ed snapshots)."""
        return self._names

    def tensors(self) -> dict[str, torch.Tensor]:
        """The captured tensors by name (read from disk for a file-backed snapshot)."""
        if self._released:
            raise RuntimeError(f"Snapshot of step {self.step} was released; its tensors are gone.")
        if self._tensors is not None:
            return dict(self._tensors)
        assert self._path is not None
        if not os.path.isfile(self._path):
            raise FileNotFoundError(f"Snapshot file {self._path!r} (step {self.step}) no longer exists.")
        return load_file(self._path)

    def save_copy(self, path: str) -> None:
        """Atomically write the tensors to `path` (e.g. into a checkpoint); the snapshot itself is unchanged."""
        save_safetensors_atomic(path, self.tensors(), {"step": str(self.step), "metric": repr(self.metric)})

    def restore_into(self, model: torch.nn.Module, strict: bool = True) -> None:
        """Copy the captured tensors into the same-named parameters/buffers of `model`.

        `model` is typically a teacher copy of the training model; only captured names are
        written, the rest of `model` is left alone. Values are copied onto the target's device and
        dtype.

        Raises:
            KeyError: with `strict`, when captured names are missing from `model`.
            ValueError: when a shape differs.
        """
        targets: dict[str, torch.Tensor] = dict(model.named_parameters())
        targets.update(model.named_buffers())
        source = self.tensors()
        missing = sorted(name for name in source if name not in targets)
        if missing and strict:
            raise KeyError(
                f"Snapshot of step {self.step} holds {len(missing)} tensor(s) missing from "
                f"{type(model).__name__}: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
        # Check every shape first so a mismatch cannot leave the model half-restored.
        for name, value in source.items():
            if name in targets and targets[name].shape != value.shape:
                raise ValueError(
                    f"Snapshot tensor {name!r} has shape {tuple(value.shape)} but the model's has {tuple(targets[name].shape)}."
                )
        with torch.no_grad():
            for name, value in source.items():
                if name in targets:
                    targets[name].copy_(value)

    def release(self) -> None:
        """Free the held tensors and delete the snapshot file, if any. Safe to call twice."""
        self._tensors = None
        if self._path is not None and os.path.exists(self._path):
            os.remove(self._path)
        self._released = True

    def __repr__(self) -> str:
        where = "released" if self._released else (self._path or "memory")
        return f"ParameterSnapshot(step={self.step}, metric={self.metric}, nbytes={self._nbytes}, at={where})"


def average_snapshots(snapshots: Sequence[ParameterSnapshot]) -> dict[str, torch.Tensor]:
    """Element-wise mean of snapshots with identical names and shapes (a "top-k average" teacher).

    Floating tensors are averaged in float32 (float64 for float64 inputs) and cast back to their
    dtype; integer tensors (e.g. ``position_ids``, ``num_batches_tracked``) cannot be averaged
    meaningfully and are taken from the first snapshot.
    """
    if not snapshots:
        raise ValueError("average_snapshots needs at least one snapshot.")
    first = snapshots[0].tensors()
    sums = {
        name: t.to(torch.float64 if t.dtype == torch.float64 else torch.float32, copy=True)
        for name, t in first.items()
        if t.is_floating_point()
    }
    for snapshot in snapshots[1:]:
        other = snapshot.tensors()
        if set(other) != set(first):
            diff = sorted(set(other) ^ set(first))
            raise ValueError(f"Snapshots of steps {snapshots[0].step} and {snapshot.step} hold different tensors: {diff[:10]}")
        for name, acc in sums.items():
            if other[name].shape != acc.shape:
                raise ValueError(f"Tensor {name!r} has different shapes across snapshots.")
            acc += other[name].to(acc.dtype)
    averaged = {name: t for name, t in first.items() if not t.is_floating_point()}
    for name, acc in sums.items():
        averaged[name] = (acc / len(snapshots)).to(first[name].dtype)
    return {name: averaged[name] for name in first}  # keep the capture order


class SnapshotKeeper:
    """Keeps the best-k snapshots of each task (k=1 default), ranked by metric and direction.

    Capturing happens only when the offer would be kept, so offering at every evaluation is cheap
    for non-improving steps. A snapshot pushed out of the top-k is released (memory / file freed).
    Ties go to the earlier snapshot, matching `ConvergenceMonitor`'s strict-improvement rule.

    A snapshot offered with `pin=True` (the convergence monitor's best step, which with a minimum
    improvement need not be the best raw value) is always kept and comes first in `best`; the other
    k − 1 places go to the best values.

    Args:
        k: Snapshots kept per task (>= 1).
        directory: If given, snapshots are written to ``<directory>/<task>/`` instead of memory.
    """

    def __init__(self, k: int = 1, directory: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}.")
        self.k = k
        self.directory = directory
        self._kept: dict[str, list[ParameterSnapshot]] = {}
        self._directions: dict[str, bool] = {}
        self._pinned: dict[str, int] = {}  # task -> step of the snapshot that must stay

    def _better(self, a: float, b: float, greater_is_better: bool) -> bool:
        return a > b if greater_is_better else a < b

    def offer(
        self, task: str, model: torch.nn.Module, include: IncludeFn, *, step: int, metric: float, greater_is_better: bool, pin: bool = False
    ) -> bool:
        """Snapshot `model` for `task` if `metric` ranks among the task's best k (always if `pin`); True if kept."""
        metric = float(metric)
        if not math.isfinite(metric):
            raise ValueError(f"Task {task!r} at step {step}: metric must be finite, got {metric}.")
        direction = self._directions.setdefault(task, bool(greater_is_better))
        if direction != bool(greater_is_better):
            raise ValueError(f"Task {task!r} was offered with greater_is_better={direction} before; got {greater_is_better}.")
        kept = self._kept.setdefault(task, [])
        pinned = self._pinned.get(task)
        free = [s for s in kept if s.step != pinned]
        places = self.k - (len(kept) - len(free))
        if not pin and len(free) >= places and (places == 0 or not self._better(metric, free[-1].metric, direction)):
            return False
        if self.directory is not None and (not task or os.sep in task or (os.altsep and os.altsep in task)):
            raise ValueError(f"Task name {task!r} cannot be used as a directory name.")
        directory = None if self.directory is None else os.path.join(self.directory, task)
        # Tasks that reach a new best at the same evaluation share the encoder's copy (one copy, not T).
        reuse: dict[str, torch.Tensor] = {}
        for other in self._kept.values():
            for candidate in other:
                if candidate.step == step and candidate.in_memory and not candidate.released:
                    reuse.update(candidate.tensors())
        snapshot = ParameterSnapshot.capture(model, include, step=step, metric=metric, directory=directory, reuse=reuse)
        # Insert after every snapshot at least as good, so equal metrics keep their age order.
        position = len(kept)
        for i, existing in enumerate(kept):
            if self._better(metric, existing.metric, direction):
                position = i
                break
        kept.insert(position, snapshot)
        if pin:
            self._pinned[task] = step
        while len(kept) > self.k:
            # The worst snapshot that is not pinned leaves.
            worst = max(i for i, s in enumerate(kept) if s.step != self._pinned.get(task))
            kept.pop(worst).release()
        return True

    def adopt(self, task: str, snapshots: Sequence[ParameterSnapshot], *, greater_is_better: bool, pinned_step: int | None = None) -> None:
        """Make `snapshots` the kept ones of `task` (e.g. after `ParameterSnapshot.load` on resume).

        Snapshots previously kept for the task are released; beyond the best k, the given ones are too
        (the one of `pinned_step`, if any, always stays).
        """
        for snapshot in snapshots:
            if not math.isfinite(snapshot.metric):
                raise ValueError(f"Task {task!r}: snapshot of step {snapshot.step} has non-finite metric.")
        self.release(task)
        self._directions[task] = bool(greater_is_better)
        # Stable sort: best first, ties keep the earlier step first.
        ordered = sorted(snapshots, key=lambda s: (-s.metric if greater_is_better else s.metric, s.step))
        if pinned_step is not None and any(s.step == pinned_step for s in ordered):
            self._pinned[task] = pinned_step
            chosen = [s for s in ordered if s.step == pinned_step][:1]
            chosen += [s for s in ordered if s not in chosen][: self.k - 1]
        else:
            chosen = ordered[: self.k]
        for extra in ordered:
            if extra not in chosen:
                extra.release()
        self._kept[task] = [s for s in ordered if s in chosen]

    def pinned_step(self, task: str) -> int | None:
        """Step of the task's pinned snapshot (None if none)."""
        return self._pinned.get(task)

    def best(self, task: str) -> list[ParameterSnapshot]:
        """The task's kept snapshots: the pinned one first, then best value first (empty if none)."""
        kept = list(self._kept.get(task, []))
        pinned = [s for s in kept if s.step == self._pinned.get(task)]
        return pinned + [s for s in kept if s not in pinned]

    def release(self, task: str) -> None:
        """Release and forget every snapshot of `task` (e.g. once its soft labels are stored)."""
        for snapshot in self._kept.pop(task, []):
            snapshot.release()
        self._directions.pop(task, None)
        self._pinned.pop(task, None)

    def release_all(self) -> None:
        """Release the snapshots of every task."""
        for task in list(self._kept):
            self.release(task)
