"""hf_async_mtl: multi-task text classification for the Hugging Face Trainer.

Shared encoder + one head per task, task-mixing samplers, loss-weighting and gradient-balancing
methods, and asynchronous convergence through self-distillation of converged tasks (Lu et al.,
NAACL 2022 industry track).
"""

import warnings

from .async_kd import AsyncConvergenceCallback, AsyncKDOptions, ConvergenceMonitor, distillation_loss, kl_distillation_loss
from .config import MultiTaskTrainingArguments
from .data import (
    MultiTaskDataCollator,
    MultiTaskDataset,
    TaskDatasets,
    build_task_datasets,
    cap_dataset,
    carve_validation_split,
    load_task_file,
    tokenize_task,
    validate_task_dataset,
)
from .metrics import compute_task_metrics, glue_score
from .modeling import MultiTaskConfig, MultiTaskModel
from .objectives import HardLabelObjective, MaskedLmObjective, StepContext, TaskObjective
from .sampling import MultiTaskBatchSampler
from .sources import DatasetsSource, TaskDataSource, TaskSource, TextOfTask, load_task
from .spec_inference import infer_task_spec
from .tasks import TaskSpec
from .trainer import MultiTaskTrainer
from .weighting import WeightingMethod, available_weightings, build_weighting, register_weighting

# `python -m hf_async_mtl.calibration` (or `.diagnostics`): the package imports these modules before runpy runs one as
# __main__, and runpy warns about it; they only define functions, so running them twice is harmless.
warnings.filterwarnings("ignore", message=r"'hf_async_mtl\.[a-z_]+' found in sys\.modules after import of package", category=RuntimeWarning)

__version__ = "0.1.0"

__all__ = [
    "AsyncConvergenceCallback",
    "AsyncKDOptions",
    "ConvergenceMonitor",
    "DatasetsSource",
    "HardLabelObjective",
    "MaskedLmObjective",
    "MultiTaskBatchSampler",
    "MultiTaskConfig",
    "MultiTaskDataCollator",
    "MultiTaskDataset",
    "MultiTaskModel",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "StepContext",
    "TaskObjective",
    "TaskDataSource",
    "TaskDatasets",
    "TaskSource",
    "TextOfTask",
    "TaskSpec",
    "WeightingMethod",
    "available_weightings",
    "build_task_datasets",
    "build_weighting",
    "cap_dataset",
    "carve_validation_split",
    "compute_task_metrics",
    "distillation_loss",
    "glue_score",
    "infer_task_spec",
    "kl_distillation_loss",
    "load_task",
    "load_task_file",
    "register_weighting",
    "tokenize_task",
    "validate_task_dataset",
]
