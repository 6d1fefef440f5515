"""Asynchronous convergence via knowledge distillation from converged tasks (Lu et al., NAACL 2022 industry).

A layer over any weighting or gradient method, switched on with `MultiTaskTrainingArguments(async_kd=True)`:

- `options`: `AsyncKDOptions`, every option with its one set of defaults;
- `monitor`: per-task convergence decisions on the selection split (smoothing, trivial-predictor floor);
- `snapshots`: the parameters at each task's best step, kept without stopping training;
- `soft_labels`: the teacher built from them and its soft labels (one table, precomputed or on demand);
- `labelling`: `TeacherLabeller`, the teacher's pass over a task's training set;
- `losses`: the distillation losses (pure functions); `objective`: `DistillationObjective`, a converged task's objective;
- `checkpoint`: the async-KD part of a checkpoint and the resume check;
- `callback`: `AsyncConvergenceCallback`, built from these parts, which replaces a converged task's objective.
"""

from .callback import AsyncConvergenceCallback, trivial_predictor_value
from .labelling import TeacherLabeller
from .losses import distillation_loss, ensemble_teacher_outputs, kl_distillation_loss
from .monitor import ConvergenceMonitor, ConvergenceUpdate, convergence_floor, noise_margin
from .objective import DistillationObjective
from .options import AsyncKDOptions
from .snapshots import ParameterSnapshot, SnapshotKeeper, average_snapshots
from .soft_labels import SoftLabels, build_teacher
from .storage import dataset_fingerprint

__all__ = [
    "AsyncConvergenceCallback",
    "AsyncKDOptions",
    "DistillationObjective",
    "TeacherLabeller",
    "ConvergenceMonitor",
    "ConvergenceUpdate",
    "ParameterSnapshot",
    "SnapshotKeeper",
    "SoftLabels",
    "average_snapshots",
    "build_teacher",
    "convergence_floor",
    "noise_margin",
    "dataset_fingerprint",
    "distillation_loss",
    "ensemble_teacher_outputs",
    "kl_distillation_loss",
    "trivial_predictor_value",
]
