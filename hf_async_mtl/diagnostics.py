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

import json
import os
import random
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from .gradients import shared_and_task_parameters, task_gradient_matrix

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
    """Per-task gradient conflict every `every` steps (see the module docstring)."""

    def __init__(self, host: Any, every: int) -> None:
        """`host`: the `MultiTaskTrainer` (its args, train_dataset, data_collator, task_loss, compute_loss_context_manager)."""
        if every < 1:
            raise ValueError(f"diagnostics_steps must be >= 1, got {every}.")
        self.host, self.every = host, every
        self.records: list[dict[str, Any]] = []
        self.pending: dict[str, float] = {}

    def resume(self, output_dir: str, step: int) -> None:
        """Start from the measurements of `output_dir` taken at or before `step` (a run resumed there; none when 0)."""
        self.records, self.pending = [], {}
        path = os.path.join(output_dir, FILE_NAME)
        if step > 0 and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                self.records = [r for r in json.load(handle).get("records", []) if r["step"] <= step]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            record = self.measure(model if model is not None else self.host.model, state.global_step)
            self.records.append(record)
            logs = {"diag_conflict_fraction": record["conflict_fraction"]}
            names = record["tasks"]
            logs.update({f"diag_cos_{a}__{b}": record["cosine"][i][j] for i, a in enumerate(names) for j, b in enumerate(names) if j > i})
            logs.update({f"diag_grad_norm_{t}": v for t, v in record["grad_norm"].items()})
            # Joins the next training log (MultiTaskTrainer.log): logging from inside on_step_end would
            # disturb the Trainer's own loss logging of this step.
            self.pending.update(logs)

    def on_save(self, args, state, control, **kwargs):
        self.write(args.output_dir)

    def on_train_end(self, args, state, control, **kwargs):
        self.write(args.output_dir)

    def _batches(self, step: int) -> dict[str, dict[str, torch.Tensor]]:
        dataset = self.host.train_dataset
        rng = np.random.default_rng(self.host.args.seed * 1_000_003 + step)
        size = self.host.args.per_device_train_batch_size
        batches = {}
        for task in dataset.task_names:
            start, end = int(dataset.offsets[dataset.task_names.index(task)]), int(dataset.offsets[dataset.task_names.index(task) + 1])
            rows = rng.choice(np.arange(start, end), size=min(size, end - start), replace=False)
            batch = self.host.data_collator([dataset[int(i)] for i in rows])
            batches[task] = {k: v.to(self.host.args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batches

    def measure(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        """One measurement at `step` (random state restored afterwards; `.grad` untouched)."""
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                  torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        try:
            shared, _ = shared_and_task_parameters(model)
            losses = {}
            with self.host.compute_loss_context_manager():
                for task, batch in self._batches(step).items():
                    _, loss, _ = self.host.task_loss(model, dict(batch))
                    losses[task] = loss
            names = list(losses)
            task_grads = task_gradient_matrix(losses, names, shared, retain_graph=False)
            return {"step": step, **conflict_summary(task_grads, names),
                    "loss": {t: float(l.detach()) for t, l in losses.items()}}
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if states[3] is not None:
                torch.cuda.set_rng_state_all(states[3])

    def write(self, output_dir: str) -> None:
        if not self.records or not self.host.is_world_process_zero():
            return
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, FILE_NAME)
        payload = {"every_steps": self.every, "batch_size": self.host.args.per_device_train_batch_size,
                   "definition": "cosine of per-task gradients of the shared encoder on one seeded batch per task; "
                                 "conflict_fraction = share of task pairs with cosine < 0",
                   "records": self.records}
        with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
        os.replace(f"{path}.tmp", path)


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


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m hf_async_mtl.diagnostics OUTPUT_DIR/gradient_diagnostics.json conflicts.png")
    plot_conflicts(sys.argv[1], sys.argv[2])
