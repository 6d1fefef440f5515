"""Callbacks that turn convergence decisions into trainer state (asynchronous convergence, Lu et al. 2022)."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .convergence import ConvergenceMonitor
from .distill import SoftLabelStore, dataset_fingerprint, ensemble_teacher_outputs
from .snapshots import ParameterSnapshot, SnapshotKeeper, average_snapshots
from .teacher import OnDemandTeacher

if TYPE_CHECKING:
    from .trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)

REPORT_NAME = "convergence_report.json"


class AsyncConvergenceCallback(TrainerCallback, ExportableState):
    """Asynchronous convergence via knowledge distillation from converged tasks.

    At each evaluation it feeds every task's main validation metric to a `ConvergenceMonitor` and
    keeps a snapshot of the parameters (shared encoder + the task's head, only trainable ones) at
    each task's best point. When a task converges, its best snapshot (or the average of its top-k)
    becomes a teacher that labels the task's whole training set once; the stored soft labels are
    attached to the training data, and from then on `MultiTaskTrainer.task_loss` trains that task
    with the distillation loss while the other tasks keep their true labels. With
    `kd_soft_labels="on_demand"` the teacher instead labels each example when a batch first draws it
    (`OnDemandTeacher`, kept in `trainer.teachers`).
    """

    def __init__(self, trainer: MultiTaskTrainer) -> None:
        args = trainer.args
        self.trainer = trainer
        self.specs = trainer.task_specs
        self.monitor = ConvergenceMonitor(
            {name: spec.greater_is_better for name, spec in self.specs.items()},
            patience=args.kd_patience,
            min_delta=args.kd_min_delta,
            min_steps=args.kd_min_steps,
            require_improvement=args.kd_require_improvement,
        )
        self.keeper = SnapshotKeeper(k=args.kd_top_k, directory=args.kd_snapshot_dir)
        self.store = SoftLabelStore(os.path.join(args.output_dir, "soft_labels"))
        self.records: dict[str, dict[str, Any]] = {}
        self.training = False

    # ---- ExportableState ------------------------------------------------------------------------

    def state(self) -> dict:
        return {"args": {}, "attributes": {"monitor": self.monitor.state_dict(), "records": self.records}}

    def load_state(self, attributes: dict[str, Any]) -> None:
        """Restore the monitor and convergence records saved by `state()`."""
        self.monitor.load_state_dict(attributes["monitor"])
        self.records = {task: dict(record) for task, record in attributes["records"].items()}

    # ---- events -------------------------------------------------------------------------------

    def _include(self, task: str):
        # Parameters that define the task's predictions: the shared encoder and the task's own head.
        # Only trainable ones change, so a PEFT / partially frozen model keeps just its adapters.
        head_prefix = f"heads.{task}."
        return lambda name, tensor: (name.startswith(head_prefix) or not name.startswith("heads.")) and (
            not isinstance(tensor, torch.nn.Parameter) or tensor.requires_grad
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        # Only evaluations during training select; a final evaluation (e.g. on the reported dev sets) must not.
        if not self.training:
            return control
        metrics = metrics or {}
        values = {}
        for task, spec in self.specs.items():
            key = f"eval_{task}_{spec.main_metric}"
            if key in metrics:
                values[task] = float(metrics[key])
        if not values:
            return control
        update = self.monitor.update(state.global_step, values)
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        for task in self.monitor.active_tasks:
            if task in values:
                self.keeper.offer(
                    task,
                    model,
                    self._include(task),
                    step=state.global_step,
                    metric=values[task],
                    greater_is_better=self.specs[task].greater_is_better,
                )
        for task in update.newly_converged:
            self.distill(task, model, state.global_step)
        if args.kd_stop_when_all_converged and self.monitor.all_converged:
            logger.info("Every task has converged: stopping training.")
            control.should_training_stop = True
        return control

    def distill(self, task: str, model: torch.nn.Module, step: int) -> None:
        """Label `task`'s training set with its best snapshot(s) and switch the task to distillation."""
        start = time.perf_counter()
        snapshots = self.keeper.best(task)
        if not snapshots:
            raise RuntimeError(f"Task {task!r} converged but no snapshot of its best point was kept.")
        dataset = self.trainer.train_dataset.task_datasets[task]
        fingerprint = dataset_fingerprint(dataset["input_ids"])
        ensemble, states = self._teacher_states(snapshots)
        if self.trainer.args.kd_soft_labels == "on_demand":
            # Rows are labelled as batches draw them (MultiTaskTrainer.task_loss).
            self.trainer.teachers[task] = OnDemandTeacher(
                task, list(states), is_regression=self.specs[task].is_regression, num_examples=len(dataset), fingerprint=fingerprint
            )
            self.keeper.release(task)
            self._record(task, step, snapshots, ensemble, "on_demand", 0, start)
            self._announce(task, step, "soft labels computed on demand")
            return
        accelerator = self.trainer.accelerator
        # Several processes: the main one labels the training set once and writes the store; the
        # others wait and read the same file, so every rank distills against identical soft labels.
        if accelerator.is_main_process:
            teacher = copy.deepcopy(model)
            outputs = []
            for state in states:
                teacher.load_state_dict(state, strict=False)
                outputs.append(self.teacher_outputs(teacher, task))
            soft_labels = outputs[0] if len(outputs) == 1 else ensemble_teacher_outputs(outputs, self.specs[task].is_regression)
            del teacher
            self.store.save(
                task,
                soft_labels,
                fingerprint=fingerprint,
                metadata={
                    "best_step": snapshots[0].step, "best_metric": snapshots[0].metric, "converged_step": step,
                    "teachers": len(snapshots), "teacher_steps": ",".join(str(s.step) for s in snapshots), "ensemble": ensemble,
                },
            )
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            soft_labels, _ = self.store.load(task, fingerprint=fingerprint)
        self.trainer.train_dataset.set_soft_labels(task, soft_labels)
        self.keeper.release(task)
        seconds = self._record(task, step, snapshots, ensemble, "precompute", int(soft_labels.shape[0]), start)
        self._announce(task, step, f"soft labels for {soft_labels.shape[0]} examples in {seconds:.1f} s")

    def _teacher_states(self, snapshots: list[ParameterSnapshot]) -> tuple[str, Iterable[dict[str, torch.Tensor]]]:
        """How the snapshots form the teacher, and its parameter state(s): one per prediction-ensemble member."""
        # Generators: tensors are read (and averaged) only where a teacher is built, one state at a time.
        if len(snapshots) > 1 and self.trainer.args.kd_ensemble == "predictions":
            return "predictions", (snapshot.tensors() for snapshot in snapshots)
        return "parameters", (snapshots[0].tensors() if len(snapshots) == 1 else average_snapshots(snapshots) for _ in (0,))

    def _record(self, task: str, step: int, snapshots: list[ParameterSnapshot], ensemble: str, mode: str,
                num_soft_labels: int, start: float) -> float:
        seconds = time.perf_counter() - start
        self.records[task] = {
            "converged_step": step,
            "best_step": self.monitor.best_step(task),
            "best_metric": self.monitor.best_value(task),
            "num_soft_labels": num_soft_labels,
            "teachers": len(snapshots),
            "teacher_steps": [s.step for s in snapshots],
            "ensemble": ensemble,
            "soft_labels": mode,
            "seconds": round(seconds, 3),
        }
        return seconds

    def _announce(self, task: str, step: int, what: str) -> None:
        spec = self.specs[task]
        logger.warning(
            f"task {task} converged at step {step}: best {spec.main_metric} {self.monitor.best_value(task):.4f} at step "
            f"{self.monitor.best_step(task)}; {what}"
        )
        self.trainer.log({f"kd_converged_{task}": float(step), f"kd_best_step_{task}": float(self.monitor.best_step(task))})

    @torch.no_grad()
    def teacher_outputs(self, teacher: torch.nn.Module, task: str) -> torch.Tensor:
        """Run `teacher` (eval mode, no grad, batched) over the task's training set in dataset order."""
        dataset = self.trainer.train_dataset.task_datasets[task]
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "task_ids") if c in dataset.column_names]
        # Length-sorted batches cut padding (this pass covers the whole training set); rows are put
        # back in dataset order afterwards.
        order = torch.tensor([len(ids) for ids in dataset["input_ids"]]).argsort(descending=True)
        loader = DataLoader(
            dataset.select(order.tolist()).select_columns(columns),
            batch_size=self.trainer.args.per_device_eval_batch_size,
            collate_fn=self.trainer.data_collator,
        )
        was_training = teacher.training
        teacher.eval()
        outputs = []
        for batch in loader:
            batch = {k: v.to(self.trainer.args.device) for k, v in batch.items()}
            outputs.append(teacher(**batch).logits.float().cpu())
        teacher.train(was_training)
        sorted_outputs = torch.cat(outputs)
        result = torch.empty_like(sorted_outputs)
        result[order] = sorted_outputs
        return result

    # ---- persistence ----------------------------------------------------------------------------

    def save_to(self, directory: str) -> None:
        """Write monitor, records, soft labels and pending snapshots into a checkpoint directory."""
        checkpoint_store = SoftLabelStore(os.path.join(directory, "soft_labels"))
        os.makedirs(checkpoint_store.directory, exist_ok=True)
        for task, soft_labels in self.trainer.train_dataset.soft_labels.items():
            dataset = self.trainer.train_dataset.task_datasets[task]
            checkpoint_store.save(task, soft_labels, fingerprint=dataset_fingerprint(dataset["input_ids"]))
        for task, teacher in self.trainer.teachers.items():
            teacher.save(self._teacher_path(directory, task))
        snapshot_index = {}
        for task in self.monitor.active_tasks:
            for position, snapshot in enumerate(self.keeper.best(task)):
                path = os.path.join(directory, "kd_snapshots", f"{task}-{position}.safetensors")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                snapshot.save_copy(path)
                snapshot_index.setdefault(task, []).append({"file": os.path.basename(path), "step": snapshot.step, "metric": snapshot.metric})
        with open(os.path.join(directory, "async_kd_state.json"), "w", encoding="utf-8") as handle:
            json.dump({**self.state()["attributes"], "snapshots": snapshot_index}, handle, indent=2)

    def load_from(self, directory: str) -> None:
        """Restore what `save_to` wrote, refusing soft labels computed on other training data."""
        with open(os.path.join(directory, "async_kd_state.json"), encoding="utf-8") as handle:
            saved = json.load(handle)
        self.load_state(saved)
        checkpoint_store = SoftLabelStore(os.path.join(directory, "soft_labels"))
        self.trainer.teachers.clear()
        for task in self.monitor.converged_tasks:
            dataset = self.trainer.train_dataset.task_datasets[task]
            fingerprint = dataset_fingerprint(dataset["input_ids"])
            if self.records.get(task, {}).get("soft_labels") == "on_demand":
                self.trainer.teachers[task] = OnDemandTeacher.load(self._teacher_path(directory, task), task=task, fingerprint=fingerprint)
                continue
            soft_labels, _ = checkpoint_store.load(task, fingerprint=fingerprint)
            self.trainer.train_dataset.set_soft_labels(task, soft_labels)
        self.keeper.release_all()
        for task, entries in saved.get("snapshots", {}).items():
            snapshots = [
                ParameterSnapshot.load(os.path.join(directory, "kd_snapshots", entry["file"]), step=entry["step"], metric=entry["metric"])
                for entry in entries
            ]
            self.keeper.adopt(task, snapshots, greater_is_better=self.specs[task].greater_is_better)

    @staticmethod
    def _teacher_path(directory: str, task: str) -> str:
        return os.path.join(directory, "kd_teachers", f"{task}.safetensors")

    def report(self) -> dict[str, dict[str, Any]]:
        """Per task: metric at its convergence point (best), its last evaluated metric, and the steps."""
        report = {}
        for task in self.specs:
            history = self.monitor.history(task)
            record = self.records.get(task, {})
            teacher = self.trainer.teachers.get(task)
            best = self.monitor.best_value(task)
            final = history[-1][1] if history else None
            report[task] = {
                "converged": task in self.monitor.converged_tasks,
                "converged_step": record.get("converged_step"),
                "best_step": self.monitor.best_step(task),
                "metric_at_convergence": best,
                "final_metric": final,
                "retention": (final - best) if (final is not None and best is not None) else None,
                "soft_labels": record.get("soft_labels"),
                "soft_label_seconds": round(teacher.seconds, 3) if teacher else record.get("seconds"),
                "num_soft_labels": teacher.num_labelled if teacher else record.get("num_soft_labels"),
                "history": history,
            }
        return report

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, REPORT_NAME), "w", encoding="utf-8") as handle:
                json.dump(self.report(), handle, indent=2)
        return control
