"""What a checkpoint holds of the weighting method beyond the Trainer's own files, so a resumed run continues identically."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
from transformers.trainer_utils import get_last_checkpoint

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


def checkpoint_global_step(directory: str) -> int:
    """The optimizer step a checkpoint was written at (its `trainer_state.json`; 0 when it has none)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_callback import TrainerState

    path = os.path.join(directory, TRAINER_STATE_NAME)
    return TrainerState.load_from_json(path).global_step if os.path.isfile(path) else 0
