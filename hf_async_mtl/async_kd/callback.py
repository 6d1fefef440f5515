"""`AsyncConvergenceCallback`: asynchronous convergence (Lu et al., NAACL 2022 industry) as a layer over any method.

At each evaluation during training the callback feeds every task's monitored selection metric to a
`ConvergenceMonitor` and keeps a snapshot of the parameters that define the task (shared encoder +
its head) at the monitor's best step. When a task converges, its teacher (`build_teacher`) gives
soft labels (`SoftLabels`: filled at once by the `TeacherLabeller`, or row by row as batches draw them)
and the callback replaces the task's entry in the run's objectives with a `DistillationObjective`; from
then on the task trains against them while the others keep their true labels, under whatever weighting
or gradient method the run uses.

The callback is built from explicit parts (the task specs, `AsyncKDOptions`, the training and selection
data, a labeller, the objectives mapping, a log function) and never sees the trainer. It persists its
state the way stateful callbacks do: `on_save` writes it into each checkpoint, and `load_checkpoint` (called
by the trainer for every callback with a `check_checkpoint` / `load_checkpoint` pair) restores it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, cast

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..data import MultiTaskDataset, template_view, token_rows
from ..files import write_json_atomic
from ..metrics import compute_task_metrics, main_metric_value
from ..objectives import TaskObjective
from ..task_capacity import task_of_parameter
from ..tasks import TaskSpec
from .bootstrap import BootstrapNoise
from .checkpoint import STATE_NAME, check_async_kd_checkpoint
from .labelling import TeacherLabeller
from .monitor import ConvergenceMonitor, convergence_floor
from .objective import DistillationObjective
from .options import AsyncKDOptions, check_options_for_tasks
from .signals import greater_is_better, per_example
from .snapshots import ParameterSnapshot, SnapshotKeeper
from .soft_labels import SoftLabels, build_teacher
from .storage import dataset_fingerprint

ONLINE_FINGERPRINT = "online: no table"  # online soft labels belong to no fixed set of rows

logger = logging.getLogger(__name__)

REPORT_NAME = "convergence_report.json"
_STATE_VERSION = 3


def trivial_predictor_value(spec: Any, train_labels: Any, eval_labels: Any) -> float:
    """The monitored metric of the task's trivial predictor on an evaluation split.

    Classification: the training set's majority class for every example. Regression: the training
    mean for every example, scored with the task's metric (a correlation with a constant is undefined
    and counts as 0; an error metric such as MSE gets its real value).
    """
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    if spec.is_regression:
        constant = np.full(len(eval_labels), float(np.mean(train_labels)), dtype=np.float32)
        return float(main_metric_value(spec, compute_task_metrics(spec, constant, eval_labels)))
    majority = int(np.bincount(train_labels.astype(int), minlength=spec.num_labels).argmax())
    logits = np.zeros((len(eval_labels), spec.num_labels), dtype=np.float32)
    logits[:, majority] = 1.0
    return float(main_metric_value(spec, compute_task_metrics(spec, logits, eval_labels)))


class AsyncConvergenceCallback(TrainerCallback):
    """Switches each task to self-distillation once its selection metric has converged.

    Args:
        task_specs: The run's tasks (name → spec, or a sequence). MLM tasks have no labels to distil and a task
            without training data has nothing to relabel: neither is monitored.
        options: The convergence rule, teacher and loss.
        train_dataset: The run's training data.
        selection_sets: Task → the evaluation data the monitored metrics are computed on (a split carved from
            training data; with several splits per task, the first). It gives the trivial predictor's floor.
        labeller: Labels a converged task's training set (the precomputed mode).
        objectives: The run's task → objective mapping; a converged task's entry becomes a `DistillationObjective`.
        log: Receives the convergence events (`kd_converged_<task>`, `kd_teacher_step_<task>`), e.g. `Trainer.log`.
    """

    def __init__(
        self,
        task_specs: Mapping[str, TaskSpec] | list[TaskSpec],
        options: AsyncKDOptions,
        train_dataset: MultiTaskDataset | None,
        selection_sets: Mapping[str, Any] | None,
        labeller: TeacherLabeller | None,
        objectives: MutableMapping[str, TaskObjective],
        log: Callable[[dict[str, float]], None] | None = None,
        selection_outputs: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> None:
        specs = dict(task_specs) if isinstance(task_specs, Mapping) else {spec.name: spec for spec in task_specs}
        self.options = options
        self.train_dataset = train_dataset
        self.selection_sets = selection_sets or {}
        self.labeller = labeller
        self.objectives = objectives
        self.log = log or (lambda logs: None)
        self.specs = {
            name: spec for name, spec in specs.items() if not spec.is_mlm and (train_dataset is None or name in train_dataset.num_templates)
        }
        if not self.specs:
            raise ValueError("async_kd needs at least one task with labels and training data (MLM tasks are never distilled).")
        pooled = sorted(t for t in self.specs if train_dataset is not None and train_dataset.num_templates[t] > 1)
        streamed = sorted(t for t in self.specs if train_dataset is not None and t in getattr(train_dataset, "streamed", ()))
        check_options_for_tasks(options, self.specs, pooled, streamed)
        if options.soft_labels == "precompute" and labeller is None and train_dataset is not None:
            raise ValueError("kd_soft_labels='precompute' needs a TeacherLabeller.")
        if options.noise == "bootstrap" and selection_outputs is None:
            raise ValueError("kd_noise='bootstrap' needs the evaluation's selection predictions (MultiTaskTrainer passes them).")
        self.selection_outputs = selection_outputs
        self.noise = (
            BootstrapNoise(self.specs, options.smoothing, options.margin_z, min_delta=options.min_delta, signal=options.signal)
            if options.noise == "bootstrap"
            else None
        )
        self.monitor = self._new_monitor(None)
        self.keeper = SnapshotKeeper(k=options.top_k, directory=options.snapshot_dir)
        self.soft_labels: dict[str, SoftLabels] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.references: dict[str, dict[str, float]] = {}
        self.training = False

    def _new_monitor(self, references: Mapping[str, Mapping[str, float]] | None) -> ConvergenceMonitor:
        options = self.options
        # The references are the score's (trivial predictor, formula margins): another signal's floor and decline
        # margin come from the bootstrap alone, set before each update, never from score units.
        references = (references or {}) if options.signal == "score" else {}
        return ConvergenceMonitor(
            {name: self._greater_is_better(name) for name in self.specs},
            patience=options.patience,
            min_delta=options.min_delta,
            min_steps=options.min_steps,
            require_improvement=options.require_improvement,
            smoothing=options.smoothing,
            full_window=options.full_window,
            floors={t: r["floor"] for t, r in references.items()} if options.trivial_gate else None,
            decline_margins={t: r["margin"] for t, r in references.items()} if options.decline_trigger else None,
            require_decline=options.require_decline,
            # Decline margins at each task's own level (its best smoothed value) on its selection split.
            noise={t: (self._monitored_metrics(t), int(r["selection_size"])) for t, r in references.items()},
            decline_z=options.margin_z,
        )

    def _greater_is_better(self, task: str) -> bool:
        """The direction of what the rule reads: the task's metric's, or (any other `kd_signal`) greater."""
        return greater_is_better(self.options.signal, self.specs[task])

    def _monitored_name(self, task: str) -> str:
        return self.specs[task].main_metric if self.options.signal == "score" else f"{self.options.signal} signal"

    def _monitored_metrics(self, task: str) -> tuple[str, ...]:
        spec = self.specs[task]
        return tuple(spec.metrics) if spec.main_metric == "score" else (spec.main_metric,)

    # ---- the floors: trivial predictor + margin, from training labels and the selection split ----

    def _selection_set(self, task: str):
        evaluation = self.selection_sets.get(task)
        if isinstance(evaluation, Mapping):
            evaluation = next(iter(evaluation.values()), None)
        # A prompt-template pool's views repeat the examples: the split's size and labels are one view's.
        return None if evaluation is None else template_view(evaluation, 0)

    def compute_references(self) -> dict[str, dict[str, float]]:
        """Per task: trivial predictor's value on the selection split, its size, the noise margin and the floor."""
        references = {}
        for task, spec in self.specs.items():
            selection = self._selection_set(task)
            if selection is None or "labels" not in selection.column_names:
                continue
            trivial = trivial_predictor_value(spec, self._train_labels(task, selection), selection["labels"])
            floor = convergence_floor(trivial, self._monitored_metrics(task), len(selection), self.options.margin_z, spec.greater_is_better)
            references[task] = {"trivial_value": trivial, "selection_size": len(selection), "floor": floor, "margin": abs(floor - trivial)}
        return references

    def _train_labels(self, task: str, selection: Any) -> Any:
        """The labels the trivial predictor is fitted on: the task's training set (a streamed task's are not at
        hand: its held-out rows)."""
        # cast: the trainer passes its training data here; a callback built without any fails here as it did before.
        dataset = cast(MultiTaskDataset, self.train_dataset)
        return selection["labels"] if task in dataset.streamed else dataset.template_view(task, 0)["labels"]

    def _measure_noise(self, step: int, values: Mapping[str, float]) -> dict[str, float]:
        """kd_noise='bootstrap': score this evaluation's selection predictions on the resamples and set each task's
        floor and decline margin for the monitor's update (see `async_kd.bootstrap`). Returns what the rule reads:
        `values` (the metrics), or with another `kd_signal` that signal on each task's selection split."""
        assert self.noise is not None and self.selection_outputs is not None
        read = dict(values)
        for task in values:
            converged = self.monitor.is_converged(task)  # no decision left to make: its history only
            if converged and self.options.signal == "score":
                continue
            outputs = self.selection_outputs.get(task)
            if outputs is None:
                raise ValueError(f"kd_noise='bootstrap': no selection predictions of task {task!r} at step {step}.")
            if converged:
                read[task] = float(np.mean(per_example(self.options.signal, self.specs[task], outputs[0], outputs[1])))
                continue
            train_labels = None if task in self.noise.trivial else self._train_labels(task, self._selection_set(task))
            observed = self.noise.observe(task, step, outputs[0], outputs[1], train_labels)
            if self.options.signal != "score":
                read[task] = observed
            self._set_noise_margins(task, *self.noise.margins(task, self.monitor.best_smoothed_step(task)))
        return read

    def _set_noise_margins(self, task: str, floor: float, margin: float | None) -> None:
        if self.options.trivial_gate:
            self.monitor.floors[task] = floor
        if margin is not None and (self.options.require_decline or self.options.decline_trigger):
            self.monitor.decline_margins[task] = margin

    # ---- events -------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        # A resumed run restored its references and monitor in `load_checkpoint`; a new one computes them here (also
        # without the gate: the report flags teachers within the trivial predictor's margin under any rule).
        if not self.references:
            self.references = self.compute_references()
            self.monitor = self._new_monitor(self.references)
        return control

    @staticmethod
    def _include(task: str):
        # Parameters that define the task's predictions: the shared encoder, the task's own parts of it (adapter,
        # unshared layers; not the other tasks') and the task's own head. Only trainable ones change, so a PEFT /
        # partially frozen model keeps just its adapters.
        head_prefix = f"heads.{task}."
        return lambda name, tensor: (
            (name.startswith(head_prefix) or not name.startswith("heads."))
            and task_of_parameter(name) in (None, task)
            and (not isinstance(tensor, torch.nn.Parameter) or tensor.requires_grad)
        )

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        # Only evaluations during training select; a final evaluation (e.g. on the reported dev sets) must not.
        if not self.training or model is None:
            return control
        values = {}
        for task, spec in self.specs.items():
            key = f"eval_{task}_{spec.main_metric}"
            if key in (metrics or {}):
                values[task] = float(metrics[key])
        if not values:
            return control
        if self.noise is not None:
            values = self._measure_noise(state.global_step, values)
        active_before = set(self.monitor.active_tasks)
        update = self.monitor.update(state.global_step, values)
        if self.noise is not None:
            for task in values:
                self.noise.keep_best(task, self.monitor.best_smoothed_step(task))
        for task in self.specs:
            if task not in values or task not in active_before:
                continue
            # The monitor's best step (min_delta included) is pinned: it is always part of the teacher, and
            # with top-k the other k - 1 places go to the best values.
            if self.options.top_k > 1 or task in update.new_best:
                self.keeper.offer(
                    task,
                    model,
                    self._include(task),
                    step=state.global_step,
                    metric=values[task],
                    greater_is_better=self._greater_is_better(task),
                    pin=task in update.new_best,
                )
        # At the run's last step no training follows: a task converging there is recorded, but labelling its training
        # set (a pass over every row) would change nothing, so it is skipped ("distilled": false in the report).
        max_steps = getattr(state, "max_steps", 0) or 0
        stops_here = self.options.stop_when_all_converged and self.monitor.all_converged
        at_end = (max_steps > 0 and state.global_step >= max_steps) or stops_here
        for task in update.newly_converged:
            if at_end:
                self._record_convergence_at_end(task, state.global_step)
            else:
                self.distill(task, model, state.global_step, self.keeper.best(task), kind="converged")
        if self.options.refresh and not at_end:
            for task in self.monitor.converged_tasks:
                if task in values and task not in update.newly_converged and self._beats_teacher(task, values[task]):
                    snapshot = ParameterSnapshot.capture(model, self._include(task), step=state.global_step, metric=values[task])
                    self.distill(task, model, state.global_step, [snapshot], kind="refresh")
        if self.options.stop_when_all_converged and self.monitor.all_converged:
            logger.info("Every task has converged: stopping training.")
            control.should_training_stop = True
        return control

    def _record_convergence_at_end(self, task: str, step: int) -> None:
        """Record `task`'s convergence at the run's last training step: its teacher's steps and metric, nothing distilled
        yet. Its snapshots are kept (and saved in the checkpoint): a run resumed from there with more steps distils
        from them at its first step (`_distill_pending`)."""
        snapshots = self.keeper.best(task)
        self.records[task] = {
            "converged_step": step,
            "refreshes": [],
            "teacher_steps": [s.step for s in snapshots],
            "teacher_metric": self.monitor.best_value(task),
            "ensemble": self.options.ensemble if len(snapshots) > 1 else "parameters",
            "soft_labels": None,
            "distilled": False,
        }
        logger.warning(
            f"task {task} converged at step {step}, where training ends: nothing is left to distil, no soft labels "
            f"(teacher {self._monitored_name(task)} {self.records[task]['teacher_metric']:.4f}, steps {self.records[task]['teacher_steps']})"
        )
        self.log({f"kd_converged_at_end_{task}": float(step)})

    def pending_tasks(self) -> list[str]:
        """Tasks that converged where a run ended and have not been distilled yet (their snapshots are kept)."""
        return [task for task, record in self.records.items() if record.get("distilled") is False]

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        # A run resumed past the step where a task converged at the end of an earlier run: distil it now.
        if self.training and model is not None and self.pending_tasks():
            for task in self.pending_tasks():
                self.distill(task, model, state.global_step, self.keeper.best(task), kind="converged")
        return control

    def _beats_teacher(self, task: str, value: float) -> bool:
        """Whether `value` beats the task's current teacher by more than the selection split's noise margin."""
        assert self.options.signal == "score"  # AsyncKDOptions refuses kd_refresh with another signal: no margin for it
        teacher_metric = self.records[task]["teacher_metric"]
        margin = self.references.get(task, {}).get("margin")
        if margin is None:
            selection = self._selection_set(task)
            spec = self.specs[task]
            metrics = spec.metrics if spec.main_metric == "score" else (spec.main_metric,)
            margin = abs(convergence_floor(0.0, tuple(metrics), len(selection), self.options.margin_z))
        return value > teacher_metric + margin if self.specs[task].greater_is_better else value < teacher_metric - margin

    # ---- distillation -----------------------------------------------------------------------------

    def distill(self, task: str, model: torch.nn.Module, step: int, snapshots: list[ParameterSnapshot], kind: str) -> None:
        """Build `task`'s teacher from `snapshots`, give it soft labels and switch the task to distillation."""
        options = self.options
        if not snapshots:
            raise RuntimeError(f"Task {task!r} converged but no snapshot of its best point was kept.")
        ensemble = options.ensemble if len(snapshots) > 1 else "parameters"
        num_examples, fingerprint = self._rows(task)
        soft_labels = SoftLabels(
            task,
            build_teacher(snapshots, ensemble),
            is_regression=self.specs[task].is_regression,
            num_examples=num_examples,
            fingerprint=fingerprint,
            metadata={"teacher_steps": ",".join(str(s.step) for s in snapshots), "ensemble": ensemble, "converged_step": str(step)},
            online=options.soft_labels == "online",
        )
        if options.soft_labels == "precompute":
            assert self.labeller is not None  # __init__ refuses precompute without a labeller
            soft_labels = self.labeller.label(soft_labels, model, average_templates=self.specs[task].prompt_eval == "average")
        for snapshot in snapshots:
            snapshot.release()
        self.keeper.release(task)
        self._switch_to_distillation(task, soft_labels)
        record = self.records.setdefault(task, {"converged_step": step, "refreshes": []})
        record["distilled"] = True  # also a task recorded at the end of an earlier run (its converged_step stays)
        teacher = {
            "teacher_steps": [s.step for s in snapshots],
            "teacher_metric": snapshots[0].metric if kind == "refresh" else self.monitor.best_value(task),
            "ensemble": ensemble,
            "soft_labels": options.soft_labels,
        }
        if kind == "refresh":
            record["refreshes"].append({"step": step, **teacher})
        record.update(teacher)
        what = (
            f"soft labels for {soft_labels.num_labelled} examples in {soft_labels.seconds:.1f} s"
            if soft_labels.complete
            else "soft labels computed online, batch by batch"
            if soft_labels.online
            else "soft labels computed on demand"
        )
        logger.warning(
            f"task {task} {'teacher refreshed' if kind == 'refresh' else 'converged'} at step {step}: teacher "
            f"{self._monitored_name(task)} {record['teacher_metric']:.4f} (steps {record['teacher_steps']}); {what}"
        )
        self.log(
            {
                f"kd_{'refresh' if kind == 'refresh' else 'converged'}_{task}": float(step),
                f"kd_teacher_step_{task}": float(snapshots[0].step),
            }
        )

    def _rows(self, task: str) -> tuple[int, str]:
        """The size and fingerprint of the training rows `task`'s soft labels belong to (online: none, no table)."""
        if self.options.soft_labels == "online":
            return 0, ONLINE_FINGERPRINT
        dataset = cast(MultiTaskDataset, self.train_dataset).template_view(task, 0)
        return len(dataset), dataset_fingerprint(token_rows(dataset))

    def _switch_to_distillation(self, task: str, soft_labels: SoftLabels) -> None:
        """From now on `task` trains against `soft_labels` instead of its true labels."""
        self.soft_labels[task] = soft_labels
        host = None
        if self.labeller is not None and self.labeller.teacher_host is not None and not soft_labels.complete:
            host = self.labeller.teacher_host.to(self.labeller.device)  # on demand: on the device until training ends
        self.objectives[task] = DistillationObjective(self.specs[task], soft_labels, self.options, teacher_host=host)

    # ---- persistence: one state file + one soft-label file per converged task, in every checkpoint ------

    def state_dict(self) -> dict[str, Any]:
        """Everything but tensors: the rule, the monitor, the per-task records and the floors' references."""
        return {
            "version": _STATE_VERSION,
            "rule": self.options.rule(),
            "monitor": self.monitor.state_dict(),
            "records": self.records,
            "references": self.references,
            **({"bootstrap": self.noise.state_dict()} if self.noise is not None else {}),
        }

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.save_to(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
        return control

    def save_to(self, directory: str) -> None:
        """Write the state dict, each converged task's soft labels and the pending best snapshots into a checkpoint."""
        for task, soft_labels in self.soft_labels.items():
            soft_labels.save(os.path.join(directory, "soft_labels", f"{task}.safetensors"))
        snapshot_index: dict[str, list[dict[str, Any]]] = {}
        for task in [*self.monitor.active_tasks, *self.pending_tasks()]:
            for position, snapshot in enumerate(self.keeper.best(task)):
                path = os.path.join(directory, "kd_snapshots", f"{task}-{position}.safetensors")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                snapshot.save_copy(path)
                snapshot_index.setdefault(task, []).append(
                    {
                        "file": os.path.basename(path),
                        "step": snapshot.step,
                        "metric": snapshot.metric,
                        "pinned": snapshot.step == self.keeper.pinned_step(task),
                    }
                )
        path = os.path.join(directory, STATE_NAME)
        write_json_atomic(path, {**self.state_dict(), "snapshots": snapshot_index}, indent=2)

    def check_checkpoint(self, directory: str) -> None:
        """Refuse, before anything is loaded, a checkpoint this callback cannot continue: no async-KD state, another
        convergence rule, a missing or unreadable soft-label or snapshot file. Each problem is one line naming the file."""
        check_async_kd_checkpoint(directory, self.options)

    def load_checkpoint(self, directory: str) -> None:
        """Restore what `save_to` wrote, refusing soft labels computed on other training data."""
        self.check_checkpoint(directory)
        with open(os.path.join(directory, STATE_NAME), encoding="utf-8") as handle:
            saved = json.load(handle)
        self.references = {t: dict(r) for t, r in saved["references"].items()}
        self.monitor = self._new_monitor(self.references)
        self.monitor.load_state_dict(saved["monitor"])
        if self.noise is not None:  # the floors and margins of the last updates (set again before each update)
            self.noise.load_state_dict(saved.get("bootstrap") or {})
            for task, (floor, margin) in self.noise.last.items():
                self._set_noise_margins(task, floor, margin)
        self.records = {task: dict(record) for task, record in saved["records"].items()}
        self.soft_labels = {}
        for task in self.monitor.converged_tasks:
            if self.records.get(task, {}).get("distilled") is False:
                continue  # converged where the saved run ended: distilled from its kept snapshots at the next step
            soft_labels = SoftLabels.load(
                os.path.join(directory, "soft_labels", f"{task}.safetensors"), task=task, fingerprint=self._rows(task)[1]
            )
            self._switch_to_distillation(task, soft_labels)
        self.keeper.release_all()
        for task, entries in saved.get("snapshots", {}).items():
            # With kd_snapshot_dir the resumed snapshots live on disk there too, not in memory.
            spill = None if self.keeper.directory is None else os.path.join(self.keeper.directory, task)
            snapshots = [
                ParameterSnapshot.load(
                    os.path.join(directory, "kd_snapshots", entry["file"]), step=entry["step"], metric=entry["metric"], directory=spill
                )
                for entry in entries
            ]
            pinned = next((entry["step"] for entry in entries if entry.get("pinned")), None)
            self.keeper.adopt(task, snapshots, greater_is_better=self._greater_is_better(task), pinned_step=pinned)

    # ---- report ---------------------------------------------------------------------------------

    def report(self) -> dict[str, dict[str, Any]]:
        """Per task, a plain dict: the decision and the evidence behind it (see docs/async_kd.md)."""
        report = {}
        for task in self.specs:
            history = self.monitor.history(task)
            record = self.records.get(task, {})
            reference = self.references.get(task, {})
            soft_labels = self.soft_labels.get(task)
            best = self.monitor.best_value(task)
            final = history[-1][1] if history else None
            teacher_metric = record.get("teacher_metric", best)
            trivial, margin, floor = reference.get("trivial_value"), reference.get("margin"), reference.get("floor")
            last = self.noise.last.get(task) if self.noise is not None else None
            if self.options.signal != "score":  # in the signal's units, once the bootstrap has observed the task
                noise = self.noise
                trivial = float(noise.trivial[task][0]) if noise is not None and task in noise.trivial else None
                margin = floor = None
            if last is not None and trivial is not None:  # kd_noise='bootstrap': the floor of the task's last update
                floor, margin = last[0], abs(last[0] - trivial)
            report[task] = {
                "converged": self.monitor.is_converged(task),
                "converged_step": record.get("converged_step"),
                # False for a task that converged at the last training step (nothing left to distil; no soft labels).
                "distilled": record.get("distilled", True) if record else False,
                "best_step": self.monitor.best_step(task),
                "metric_at_convergence": best,
                "teacher_steps": record.get("teacher_steps"),
                "teacher_metric": record.get("teacher_metric"),
                "final_metric": final,
                "retention": (final - teacher_metric) if (final is not None and teacher_metric is not None) else None,
                # Distilled for at least one evaluation, and its last selection value is worse than its teacher's by more
                # than the split's noise margin (the trivial gate's): distilling did not keep or bring back the
                # teacher's level (None: not judged).
                "lost_teacher": self._lost_teacher(task, record, history, margin),
                "trivial_value": trivial,
                "margin": margin,
                "floor": floor,
                "noise": self.options.noise,
                "signal": self.options.signal,
                # A smoothed fall below the best by more than this is a decline (kd_require_decline: needed to
                # converge; kd_decline_trigger alone: enough to converge, with the gate's fixed margin).
                "decline_margin": self.monitor.decline_margin(task),
                "require_decline": self.monitor.require_decline,
                "best_smoothed": self.monitor.best_smoothed(task),
                "smoothing": self.monitor.smoothing,
                "full_window": self.monitor.full_window,
                # A teacher within the trivial predictor's margin has learnt nothing the split can show.
                "near_trivial": (abs(teacher_metric - trivial) <= margin)
                if (record and trivial is not None and teacher_metric is not None)
                else None,
                "refreshes": record.get("refreshes", []),
                "soft_labels": record.get("soft_labels"),
                "soft_label_seconds": round(soft_labels.seconds, 3) if soft_labels else None,
                "num_soft_labels": soft_labels.num_labelled if soft_labels else None,
                "history": history,
                "smoothed_history": self._smoothed_history(history),
            }
        return report

    def _lost_teacher(self, task: str, record: dict, history: list[tuple[int, float]], margin: float | None) -> bool | None:
        teacher, converged_at = record.get("teacher_metric"), record.get("converged_step")
        if not record.get("distilled", True) or teacher is None or converged_at is None or margin is None:
            return None
        if not history or history[-1][0] <= converged_at:
            return None  # no evaluation after the convergence: nothing was distilled yet
        final = history[-1][1]
        change = final - teacher if self._greater_is_better(task) else teacher - final
        return change < -margin

    def _smoothed_history(self, history: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The smoothed series the monitor read: means of the last `smoothing` values; with full windows it
        starts at the `smoothing`-th evaluation, else the first values are means of shorter windows."""
        window = self.monitor.smoothing
        first = window - 1 if self.monitor.full_window else 0
        return [
            (step, sum(v for _, v in history[max(0, i + 1 - window) : i + 1]) / len(history[max(0, i + 1 - window) : i + 1]))
            for i, (step, _) in enumerate(history)
            if i >= first
        ]

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False
        report = self.report()
        for task, entry in report.items():
            if entry["lost_teacher"] and state.is_world_process_zero:
                logger.warning(
                    f"task {task} was distilled from step {entry['converged_step']} and ended "
                    f"{abs(entry['final_metric'] - entry['teacher_metric']):.4f} worse than its teacher on "
                    f"{self._monitored_name(task)} ({entry['teacher_metric']:.4f} at steps {entry['teacher_steps']} -> "
                    f"{entry['final_metric']:.4f}), more than the split's noise margin {entry['margin']:.4f}: distilling "
                    "did not keep its teacher's level; compare with a run without async-KD (docs/async_kd.md, 'What "
                    "distillation keeps')"
                )
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
            write_json_atomic(os.path.join(args.output_dir, REPORT_NAME), report, indent=2)
        return control
