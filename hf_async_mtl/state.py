"""What a checkpoint holds beyond the Trainer's own files (the weighting method's state, the batch stream's
configuration), so a resumed run continues identically, and the protocol by which a run's parts resume."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .errors import InputError, key_line, read_json_file
from .files import write_json_atomic
from .sampling import MultiTaskBatchSampler, check_sampler_resume, save_sampler_state
from .weighting import WeightingMethod

WEIGHTING_STATE_NAME = "weighting_state.pt"
logger = logging.getLogger(__name__)


class StepLosses:
    """The task losses of the optimizer step in progress, handed to the weighting method once the step ends.

    Loss-history methods (DWA, FAMO, ...) see each step's mean loss per task exactly once
    (`WeightingMethod.after_optimizer_step`); micro-batches of gradient accumulation add up in between.
    """

    def __init__(self, weighting: WeightingMethod) -> None:
        self.weighting = weighting
        self.losses: dict[str, list[float]] = defaultdict(list)
        self.step = 0

    def record(self, task: str, value: float, step: int) -> None:
        """One micro-batch's loss of `task` during optimizer step `step`."""
        if self.losses and step != self.step:
            self.flush()
        self.step = step
        self.losses[task].append(value)

    def flush(self) -> None:
        """Hand the recorded step's mean losses to the weighting method (nothing if none were recorded)."""
        if self.losses:
            self.weighting.after_optimizer_step({t: float(np.mean(v)) for t, v in self.losses.items()}, self.step)
            self.losses.clear()


class WeightingCheckpointState:
    """Saves and restores the weighting method's state in a checkpoint directory.

    The sampler needs nothing here: it is deterministic per seed and epoch, and the Trainer resumes
    its position by skipping the batches already trained on. Losses are handed over at the end of
    each optimizer step, so a checkpoint (written after that) has none pending.
    """

    def __init__(self, weighting: WeightingMethod, step_losses: StepLosses) -> None:
        self.weighting = weighting
        self.step_losses = step_losses

    def save(self, directory: str) -> None:
        """Write the weighting state into checkpoint `directory`."""
        os.makedirs(directory, exist_ok=True)
        self.step_losses.flush()
        path = os.path.join(directory, WEIGHTING_STATE_NAME)
        torch.save({"weighting": self.weighting.state_dict()}, f"{path}.tmp")
        os.replace(f"{path}.tmp", path)

    def load(self, directory: str) -> None:
        """Restore the weighting state from checkpoint `directory`."""
        path = os.path.join(directory, WEIGHTING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {directory} was not written by MultiTaskTrainer.")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.weighting.load_state_dict(saved["weighting"])
        self.step_losses.losses.clear()
        # Checkpoints of 0.1 kept the last step's losses pending: hand them over now.
        for task, values in saved.get("pending_losses", {}).items():
            self.step_losses.losses[task].extend(values)
        self.step_losses.step = int(saved.get("pending_step", 0))
        self.step_losses.flush()

    @staticmethod
    def resolve(resume_from_checkpoint: str | bool, output_dir: str) -> str:
        """The checkpoint directory to resume from: the given one, or with `True` the output directory's last
        *complete* checkpoint (one interrupted while saving is skipped, with a warning)."""
        if isinstance(resume_from_checkpoint, bool):
            return last_complete_checkpoint(output_dir)
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"Can't find a valid checkpoint at {resume_from_checkpoint}.")
        return resume_from_checkpoint


# ---- what defines a run ----------------------------------------------------------------------------------------

RUN_DEFINITION_NAME = "run_definition.json"
PROGRESS_NAME = "training_progress.json"
# The training options a resumed run must keep (besides the tasks, heads, labels and pooling of config.json, the batch
# stream of sampler_state.json — seed, batch size, processes, accumulation, sampling — and async-KD's rule): with another value it would silently continue a different run.
# Options that may change on resume: max_steps / num_train_epochs, logging, evaluation and saving intervals, output
# and reporting options, dataloader workers (docs/glue.md, "Resuming").
RUN_DEFINING_OPTIONS = (
    "mtl_method", "mtl_method_options", "step_composition", "sampling_strategy", "sampling_temperature", "task_streams", "length_aware_batching",
    "async_kd", "bf16", "fp16",
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay", "optim", "max_grad_norm",
    "mlm_probability", "end_task", "tartan_dev_fraction", "tartan_dev_max",
)  # fmt: skip


def run_definition(args: Any) -> dict[str, Any]:
    """The values of `RUN_DEFINING_OPTIONS` in `args`, as JSON values."""
    values = {name: getattr(args, name, None) for name in RUN_DEFINING_OPTIONS}
    return json.loads(json.dumps(values, default=str))


def check_run_definition(directory: str, args: Any) -> None:
    """Refuse to resume `directory` with another value of a run-defining option: one line naming the option, the
    checkpoint's value and this run's. A checkpoint written before the file existed is not checked."""
    path = os.path.join(directory, RUN_DEFINITION_NAME)
    if not os.path.isfile(path):
        return
    saved, text = read_json_file(path, "run definition")
    for name, value in run_definition(args).items():
        if name in saved and saved[name] != value:
            raise InputError(
                f"{path}, line {key_line(text, name) or 1}, field {name!r}: the checkpoint was trained with {name}={saved[name]!r}, "
                f"this run has {name}={value!r}; resume with the checkpoint's value.",
                name,
            )


# ---- complete checkpoints -------------------------------------------------------------------------------------

COMPLETE_NAME = "multitask_checkpoint.json"


def _step_of(name: str) -> int:
    return int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else -1


def checkpoint_is_complete(directory: str) -> bool:
    """Whether `directory` holds the completeness marker, written after every other file of the checkpoint."""
    return os.path.isfile(os.path.join(directory, COMPLETE_NAME))


def last_complete_checkpoint(output_dir: str) -> str:
    """The newest `checkpoint-N` of `output_dir` whose save completed; newer incomplete ones are skipped with a warning."""
    names = (
        [n for n in os.listdir(output_dir) if n.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and _step_of(n) >= 0]
        if os.path.isdir(output_dir)
        else []
    )
    names.sort(key=_step_of, reverse=True)
    for position, name in enumerate(names):
        if checkpoint_is_complete(os.path.join(output_dir, name)):
            if position:
                logger.warning(
                    "%s: skipping %s, interrupted while saving; resuming from %s, the last complete checkpoint.",
                    output_dir,
                    ", ".join(names[:position]),
                    name,
                )
            return os.path.join(output_dir, name)
    if names:
        raise ValueError(f"No complete checkpoint in output directory {output_dir}: {', '.join(names)} were interrupted while saving.")
    raise ValueError(f"No checkpoint found in output directory {output_dir}.")


def check_complete(directory: str) -> None:
    """Refuse a checkpoint whose save was interrupted (no completeness marker, or a file it lists is missing), naming
    the last complete checkpoint beside it."""
    marker = os.path.join(directory, COMPLETE_NAME)
    missing = None
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            listed = json.load(handle).get("files", [])
        missing = next((name for name in listed if not os.path.exists(os.path.join(directory, name))), None)
        if missing is None:
            return
    parent, name = os.path.split(os.path.normpath(directory))
    older = sorted(
        (
            n
            for n in (os.listdir(parent) if os.path.isdir(parent) else [])
            if n.startswith(f"{PREFIX_CHECKPOINT_DIR}-")
            and 0 <= _step_of(n) < _step_of(name)
            and checkpoint_is_complete(os.path.join(parent, n))
        ),
        key=_step_of,
    )
    suggestion = (
        f"resume from {os.path.join(parent, older[-1])}, the last complete checkpoint" if older else "no complete checkpoint precedes it"
    )
    what = f"{missing} is missing" if missing else f"it has no {COMPLETE_NAME}, written last"
    older_format = "" if missing else f" (a checkpoint saved before the marker existed, 2026-12-06, has no {COMPLETE_NAME} either)"
    raise InputError(
        f"resume_from_checkpoint {directory}: interrupted while saving ({what}); {suggestion}{older_format}.", "resume_from_checkpoint"
    )


class CheckpointCompletion(TrainerCallback):
    """Writes the completeness marker of each checkpoint after every other file: the trainer keeps this callback last,
    so a checkpoint whose save was interrupted (a crash, `kill -9`) has no marker and is never resumed by mistake.
    Then it deletes the checkpoints beyond `save_total_limit` (transformers' rotation, which `MultiTaskTrainer` holds
    back until here): older checkpoints go only once the new one is complete."""

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            directory = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            files = sorted(
                os.path.relpath(os.path.join(root, f), directory)
                for root, _, names in os.walk(directory)
                for f in names
                if not f.endswith(".tmp")
            )
            write_json_atomic(os.path.join(directory, COMPLETE_NAME), {"step": state.global_step, "files": files}, indent=1)
            rotate_checkpoints(
                output_dir=args.output_dir,
                save_total_limit=args.save_total_limit,
                best_model_checkpoint=state.best_model_checkpoint,
                use_mtime=True,
            )
        return control


@runtime_checkable
class CheckpointPart(Protocol):
    """A part of a run (a callback) with checkpoint state of its own.

    It writes its files into each checkpoint from `on_save` (as transformers' stateful callbacks do) and, on
    resume, `MultiTaskTrainer.train` calls `check_checkpoint` of every part before anything is loaded, then
    `load_checkpoint`. Transformers' own `ExportableState` is not used: its restore re-creates a callback from
    JSON arguments, which can carry neither tensors nor the parts a callback is built from.
    """

    def check_checkpoint(self, directory: str) -> None:
        """Raise (one line naming the file and option) if this part cannot continue from `directory`."""

    def load_checkpoint(self, directory: str) -> None:
        """Restore this part's state from `directory`."""


class TrainingStateCallback(TrainerCallback):
    """The weighting method's per-step bookkeeping and its checkpoint state, and the batch stream's configuration.

    After each optimizer step it hands that step's task losses to the weighting method (DWA, FAMO, ...) and clears
    the gradients of the method's learnable parameters: `Trainer` zeroes only the model's (`model.zero_grad()`),
    so without this a method's parameters (uncertainty's log-variances, meta_tartan's dev heads) would be stepped
    with gradients summed over every step so far. In each checkpoint it writes the weighting state, the sampler's
    configuration, the run-defining options and the training loss summed so far; on resume it refuses another batch
    stream or run-defining option and restores the weighting state and the loss sum (so the run's `train_loss`
    covers every step, not only those after the resume).

    Args:
        step_losses: The run's `StepLosses` (which holds the weighting method).
        build_sampler: Builds the run's training sampler (None: a run without training data).
        gradient_accumulation_steps: Micro-batches per optimizer step.
        args: The run's training arguments (their `RUN_DEFINING_OPTIONS` are saved and compared on resume).
    """

    def __init__(
        self,
        step_losses: StepLosses,
        build_sampler: Callable[[], MultiTaskBatchSampler] | None,
        gradient_accumulation_steps: int,
        args: Any = None,
    ) -> None:
        self.step_losses = step_losses
        self.weighting_state = WeightingCheckpointState(step_losses.weighting, step_losses)
        self.build_sampler = build_sampler
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.args = args
        self.loss_sum: torch.Tensor | float = 0.0  # sum of the training_step losses of this run, resumed ones included
        self.resumed = False  # load_checkpoint ran since the last train begin
        self._was_resumed = False

    def add_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's training loss (kept as a tensor: no device synchronisation per step)."""
        self.loss_sum = self.loss_sum + loss.detach().float()

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.resumed:  # a fresh run (also a second train() of the same trainer) starts its sum at 0
            self.loss_sum = 0.0
        self._was_resumed, self.resumed = self.resumed, False
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.step_losses.flush()
        self.step_losses.weighting.zero_grad(set_to_none=True)
        return control

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            directory = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            self.weighting_state.save(directory)
            if self.build_sampler is not None:
                save_sampler_state(self.build_sampler(), self.gradient_accumulation_steps, directory)
            if self.args is not None:
                write_json_atomic(os.path.join(directory, RUN_DEFINITION_NAME), run_definition(self.args), indent=1)
            progress = {"loss_sum": float(self.loss_sum), "global_step": state.global_step}
            write_json_atomic(os.path.join(directory, PROGRESS_NAME), progress, indent=1)
        return control

    def check_checkpoint(self, directory: str) -> None:
        if self.args is not None:
            check_run_definition(directory, self.args)
        if self.build_sampler is not None:
            check_sampler_resume(directory, self.build_sampler(), self.gradient_accumulation_steps)

    def load_checkpoint(self, directory: str) -> None:
        self.weighting_state.load(directory)
        path = os.path.join(directory, PROGRESS_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                self.loss_sum = float(json.load(handle)["loss_sum"])
            self.resumed = True

    def whole_run_train_loss(self, global_step: int) -> float | None:
        """The mean training loss over every step of a resumed run (None for a run that did not resume)."""
        if not self._was_resumed or global_step <= 0:
            return None
        return float(self.loss_sum) / global_step


def checkpoint_global_step(directory: str) -> int:
    """The optimizer step a checkpoint was written at (its `trainer_state.json`; 0 when it has none)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_callback import TrainerState

    path = os.path.join(directory, TRAINER_STATE_NAME)
    return TrainerState.load_from_json(path).global_step if os.path.isfile(path) else 0
