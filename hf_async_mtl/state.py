"""What a checkpoint must hold beyond the Trainer's own files, so a resumed run continues identically."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from transformers.trainer_utils import get_last_checkpoint

if TYPE_CHECKING:
    from .trainer import MultiTaskTrainer

WEIGHTING_STATE_NAME = "weighting_state.pt"


class MultiTaskCheckpointState:
    """Saves and restores the weighting method's state and the asynchronous-convergence state.

    The sampler needs nothing here: it is deterministic per seed and epoch, and the Trainer resumes
    its position by skipping the batches already trained on.
    """

    def __init__(self, trainer: MultiTaskTrainer) -> None:
        self.trainer = trainer

    def _async_callback(self):
        from .callbacks import AsyncConvergenceCallback

        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, AsyncConvergenceCallback):
                return callback
        return None

    def save(self, directory: str) -> None:
        """Write the extra state into checkpoint `directory` (main process only)."""
        if not self.trainer.args.should_save:
            return
        os.makedirs(directory, exist_ok=True)
        # The losses of the step just finished are handed to the method at the start of the next step;
        # keep them too, or DWA / FAMO bookkeeping would miss this step after a resume.
        pending = {task: list(values) for task, values in self.trainer._step_losses.items()}
        torch.save(
            {"weighting": self.trainer.weighting.state_dict(), "pending_losses": pending, "pending_step": self.trainer._step_losses_at},
            os.path.join(directory, WEIGHTING_STATE_NAME),
        )
        callback = self._async_callback()
        if callback is not None:
            callback.save_to(directory)

    def load(self, directory: str) -> None:
        """Restore the extra state from checkpoint `directory`."""
        path = os.path.join(directory, WEIGHTING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {directory} was not written by MultiTaskTrainer.")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.trainer.weighting.load_state_dict(saved["weighting"])
        self.trainer._step_losses.clear()
        self.trainer._step_losses.update({task: list(values) for task, values in saved["pending_losses"].items()})
        self.trainer._step_losses_at = int(saved["pending_step"])
        callback = self._async_callback()
        if callback is not None:
            callback.load_from(directory)

    def resolve(self, resume_from_checkpoint: str | bool) -> str:
        """The checkpoint directory `Trainer.train(resume_from_checkpoint=...)` will use."""
        if isinstance(resume_from_checkpoint, bool):
            last = get_last_checkpoint(self.trainer.args.output_dir)
            if last is None:
                raise ValueError(f"No checkpoint found in output directory {self.trainer.args.output_dir}.")
            return last
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"Can't find a valid checkpoint at {resume_from_checkpoint}.")
        return resume_from_checkpoint
