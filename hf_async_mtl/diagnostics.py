"""Gradient diagnostics of a multi-task run: per-task gradient conflict on the shared encoder over training.

`MultiTaskDiagnosticsCallback` (turned on by `MultiTaskTrainingArguments(diagnostics_steps=N)`): every N
optimizer steps it draws one batch of every task (seeded by the step, `per_device_train_batch_size` rows),
takes each task's gradient of the shared encoder with the same code the gradient methods use
(`gradients.task_gradient_matrix`), and records

* the pairwise cosine matrix of the task gradients and the fraction of task pairs in conflict (cosine < 0);
* each task's gradient norm and its ratio to the mean norm.

Each measurement joins the next training log (`diag_conflict_fraction`, `diag_cos_<a>__<b>`,
`diag_grad_norm_<task>`: every `report_to` backend sees them; set `logging_steps` to a divisor of N) and all of them are written to `<output_dir>/gradient_diagnostics.json` at
every save and at the end of training. Converged async-KD tasks contribute the gradient of the loss they
train on (distillation). Cost: one forward and backward pass per task per measurement, i.e. T extra
passes every N steps (with T tasks and one-task steps, about T / N of the training compute). The random
state is saved and restored around each measurement, so a run with diagnostics trains exactly like one
without.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from .errors import read_json_field
from .file_command import run_file_command
from .files import write_json_atomic
from .gradients import shared_and_task_parameters, task_gradient_matrix
from .state import checkpoint_global_step

FILE_NAME = "gradient_diagnostics.json"


def conflict_summary(task_grads: torch.Tensor, task_names: list[str]) -> dict[str, Any]:
    """Cosine matrix, conflict fraction and norms of a `[tasks, parameters]` gradient matrix."""
    norms = task_grads.norm(dim=1)
    unit = task_grads / norms.clamp_min(1e-12)[:, None]
    cosine = (unit @ unit.T).clamp(-1.0, 1.0)
    pairs = [(i, j) for i in range(len(task_names)) for j in range(i + 1, len(task_names))]
    conflicts = sum(1 for i, j in pairs if float(cosine[i, j]) < 0)
    mean_norm = float(norms.mean()) if len(norms) else 0.0
    return {
        "tasks": list(task_names),
        "cosine": [[round(float(v), 6) for v in row] for row in cosine],
        "conflict_fraction": conflicts / len(pairs) if pairs else 0.0,
        "grad_norm": {t: float(n) for t, n in zip(task_names, norms)},
        "grad_norm_ratio": {t: (float(n) / mean_norm if mean_norm > 0 else 0.0) for t, n in zip(task_names, norms)},
    }


class MultiTaskDiagnosticsCallback(TrainerCallback):
    """Per-task gradient conflict every `every` steps (see the module docstring).

    Args:
        every: Measure every this many optimizer steps (>= 1).
        task_loss: `(model, batch) -> (task, loss, outputs)` of one task-homogeneous batch: the run's own loss, so a
            converged async-KD task contributes the gradient of the loss it trains on.
        train_dataset: The run's `MultiTaskDataset` (one seeded batch of every task is drawn from it).
        collator: Pads a list of rows into a batch.
        batch_size: Rows per task batch.
        seed: The run's seed (batches are a function of seed and step).
        device: The training device.
        logs: The run's pending logs: each measurement is added there and joins the next training log.
        loss_context: Context manager of the run's forward passes (autocast), e.g. `Trainer.compute_loss_context_manager`.
        write_files: Whether this process writes `gradient_diagnostics.json` (the main process).
    """

    def __init__(
        self,
        every: int,
        task_loss: Callable[[torch.nn.Module, dict], tuple[str, torch.Tensor, Any]],
        train_dataset: Any,
        collator: Callable[[list], dict],
        batch_size: int,
        seed: int,
        device: Any,
        logs: dict[str, float],
        loss_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        write_files: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"diagnostics_steps must be >= 1, got {every}.")
        self.every = every
        self.task_loss, self.train_dataset, self.collator = task_loss, train_dataset, collator
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.logs, self.loss_context, self.write_files = logs, loss_context, write_files
        self.records: list[dict[str, Any]] = []
        self._resume_step = 0

    def check_checkpoint(self, directory: str) -> None:
        """Nothing to refuse: the measurements live in the output directory, not in checkpoints."""

    def load_checkpoint(self, directory: str) -> None:
        """Keep, when training starts, only the measurements taken up to the checkpoint's step."""
        self._resume_step = checkpoint_global_step(directory)

    def on_train_begin(self, args, state, control, **kwargs):
        # A fresh run (also a second `train()` of the same trainer) starts from no measurement.
        self.resume(args.output_dir, self._resume_step)
        self._resume_step = 0
        return control

    def resume(self, output_dir: str, step: int) -> None:
        """Start from the measurements of `output_dir` taken at or before `step` (a run resumed there; none when 0)."""
        self.records = []
        path = os.path.join(output_dir, FILE_NAME)
        if step > 0 and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                self.records = [r for r in json.load(handle).get("records", []) if r["step"] <= step]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            record = self.measure(model, state.global_step)
            self.records.append(record)
            logs = {"diag_conflict_fraction": record["conflict_fraction"]}
            names = record["tasks"]
            logs.update({f"diag_cos_{a}__{b}": record["cosine"][i][j] for i, a in enumerate(names) for j, b in enumerate(names) if j > i})
            logs.update({f"diag_grad_norm_{t}": v for t, v in record["grad_norm"].items()})
            # Joins the next training log: logging from inside on_step_end would disturb the Trainer's own loss
            # logging of this step.
            self.logs.update(logs)

    def on_save(self, args, state, control, **kwargs):
        self.write(args.output_dir)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.write(args.output_dir)
        return control

    def _batches(self, step: int) -> dict[str, dict[str, torch.Tensor]]:
        dataset = self.train_dataset
        rng = np.random.default_rng(self.seed * 1_000_003 + step)
        batches = {}
        for position, task in enumerate(dataset.task_names):
            start, end = int(dataset.offsets[position]), int(dataset.offsets[position + 1])
            rows = rng.choice(np.arange(start, end), size=min(self.batch_size, end - start), replace=False)
            batch = self.collator([dataset[int(i)] for i in rows])
            batches[task] = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batches

    def measure(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        """One measurement at `step` on that step's seeded batches (random state restored afterwards; `.grad` untouched)."""
        return self.measure_batches(model, self._batches(step), step)

    def measure_batches(self, model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], step: int) -> dict[str, Any]:
        """One measurement on the given task → batch mapping (random state restored afterwards; `.grad` untouched)."""
        states = (
            random.getstate(),
            np.random.get_state(),
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        )
        try:
            shared, _ = shared_and_task_parameters(model)
            losses = {}
            with self.loss_context():
                for task, batch in batches.items():
                    _, loss, _ = self.task_loss(model, dict(batch))
                    losses[task] = loss
            names = list(losses)
            task_grads = task_gradient_matrix(losses, names, shared, retain_graph=False)
            return {"step": step, **conflict_summary(task_grads, names), "loss": {t: float(value.detach()) for t, value in losses.items()}}
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if states[3] is not None:
                torch.cuda.set_rng_state_all(states[3])

    def write(self, output_dir: str) -> None:
        if not self.records or not self.write_files:
            return
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, FILE_NAME)
        payload = {
            "every_steps": self.every,
            "batch_size": self.batch_size,
            "definition": "cosine of per-task gradients of the shared encoder on one seeded batch per task; "
            "conflict_fraction = share of task pairs with cosine < 0",
            "records": self.records,
        }
        write_json_atomic(path, payload, indent=1)


def plot_conflicts(diagnostics_file: str, out_png: str) -> None:
    """Heat-maps of the task-gradient cosines over training: one panel per task pair row-block (tasks × tasks),
    averaged over the early, middle and late third of the measurements, plus the conflict fraction over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(diagnostics_file, encoding="utf-8") as handle:
        records = json.load(handle)["records"]
    if not records:
        raise ValueError(f"{diagnostics_file} holds no measurements.")
    names = records[0]["tasks"]
    thirds = [part for part in np.array_split(np.arange(len(records)), 3) if len(part)]
    fig, axes = plt.subplots(1, len(thirds) + 1, figsize=(3.6 * (len(thirds) + 1), 3.4))
    for axis, part in zip(axes, thirds):
        mean = np.mean([records[i]["cosine"] for i in part], axis=0)
        image = axis.imshow(mean, vmin=-1, vmax=1, cmap="coolwarm")
        axis.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_title(f"cosine, steps {records[part[0]]['step']}–{records[part[-1]]['step']}", fontsize=8)
    fig.colorbar(image, ax=list(axes[:-1]), shrink=0.8)
    axes[-1].plot([r["step"] for r in records], [r["conflict_fraction"] for r in records], "o-", markersize=3)
    axes[-1].set_xlabel("step")
    axes[-1].set_ylabel("conflicting pairs (cos < 0)")
    axes[-1].set_ylim(0, 1)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hf_async_mtl.diagnostics OUTPUT_DIR/gradient_diagnostics.json conflicts.png`; bad input is one line."""

    def run(diagnostics_file: str, png: str) -> None:
        read_json_field(diagnostics_file, "records", "gradient diagnostics file")  # one line for a wrong file
        plot_conflicts(diagnostics_file, png)

    return run_file_command(argv, "usage: python -m hf_async_mtl.diagnostics OUTPUT_DIR/gradient_diagnostics.json conflicts.png", run)


if __name__ == "__main__":
    raise SystemExit(main())
