"""What a checkpoint holds beyond the Trainer's own files (the weighting method's state, the batch stream's
configuration), so a resumed run continues identically, and the protocol by which a run's parts resume."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .sampling import MultiTaskBatchSampler, check_sampler_resume, save_sampler_state
from .weighting import WeightingMethod

WEIGHTING_STATE_NAME = "weighting_state.pt"


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
        torch.save({"weighting": self.weighting.state_dict()}, os.path.join(directory, WEIGHTING_STATE_NAME))

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
        """The checkpoint directory `Trainer.train(resume_from_checkpoint=...)` will use."""
        if isinstance(resume_from_checkpoint, bool):
            last = get_last_checkpoint(output_dir)
            if last is None:
                raise ValueError(f"No checkpoint found in output directory {output_dir}.")
            return last
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"Can't find a valid checkpoint at {resume_from_checkpoint}.")
        return resume_from_checkpoint


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
    with gradients summed over every step so far. In each checkpoint it writes the weighting state and the
    sampler's configuration; on resume it refuses another batch stream and restores the weighting state.

    Args:
        step_losses: The run's `StepLosses` (which holds the weighting method).
        build_sampler: Builds the run's training sampler (None: a run without training data).
        gradient_accumulation_steps: Micro-batches per optimizer step.
    """

    def __init__(
        self, step_losses: StepLosses, build_sampler: Callable[[], MultiTaskBatchSampler] | None, gradient_accumulation_steps: int
    ) -> None:
        self.step_losses = step_losses
        self.weighting_state = WeightingCheckpointState(step_losses.weighting, step_losses)
        self.build_sampler = build_sampler
        self.gradient_accumulation_steps = gradient_accumulation_steps

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
        return control

    def check_checkpoint(self, directory: str) -> None:
        if self.build_sampler is not None:
            check_sampler_resume(directory, self.build_sampler(), self.gradient_accumulation_steps)

    def load_checkpoint(self, directory: str) -> None:
        self.weighting_state.load(directory)


def checkpoint_global_step(directory: str) -> int:
    """The optimizer step a checkpoint was written at (its `trainer_state.json`; 0 when it has none)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_callback import TrainerState

    path = os.path.join(directory, TRAINER_STATE_NAME)
    return TrainerState.load_from_json(path).global_step if os.path.isfile(path) else 0
