"""`MultiTaskTrainer`: a `transformers.Trainer` that mixes tasks, balances them and evaluates each one."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import EarlyStoppingCallback, Trainer, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .async_kd.callback import AsyncConvergenceCallback
from .async_kd.labelling import TeacherLabeller
from .async_kd.options import AsyncKDOptions
from .calibration import truncate_calibration
from .config import MultiTaskTrainingArguments
from .data import EXAMPLE_IDS_COLUMN, TASK_IDS_COLUMN, MultiTaskDataCollator, MultiTaskDataset
from .diagnostics import MultiTaskDiagnosticsCallback
from .evaluation import MultiTaskEvaluationMixin
from .gradients import average_gradients, global_loss_values, per_task_gradient_step, shared_and_task_parameters
from .mlm import MlmMasker
from .model_card import build_model_card
from .objectives import StepContext, TaskObjective, default_objectives
from .resume import check_resume_checkpoint
from .sampling import LENGTH_GROUPING_FACTOR, MultiTaskBatchSampler
from .sharding import (
    OwnParametersOptimizer,
    OwnParametersStep,
    check_sharding,
    complete_optimizer_state,
    fsdp_wrap_classes,
    sharding_engine,
    unsharded_copy,
)
from .state import (
    COMPLETE_NAME,
    CheckpointCompletion,
    CheckpointPart,
    StepLosses,
    TrainingStateCallback,
    WeightingCheckpointState,
    checkpoint_global_step,
)
from .streaming import StreamStateCallback, check_streamed_run
from .tartan import DevObjective, carve_dev_slices, end_task_selection, weighting_options
from .tasks import TaskSpec, check_task_specs, check_unique_names
from .trainer_inputs import check_trainer_inputs
from .weighting import build_weighting

if TYPE_CHECKING:
    from .modeling import MultiTaskModel
    from .weighting.meta_tartan import MetaTartan

logger = logging.getLogger(__name__)


class _EpochDataLoader(DataLoader):
    """A DataLoader whose `set_epoch` (called by the Trainer each epoch) reaches the task sampler."""

    batch_sampler: MultiTaskBatchSampler  # what get_train_dataloader passes

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class MultiTaskTrainer(MultiTaskEvaluationMixin, Trainer):
    """Trains one `MultiTaskModel` on several tasks at once.

    Args:
        model: A `MultiTaskModel` whose heads match `task_specs`.
        args: `MultiTaskTrainingArguments`.
        task_specs: The tasks, in the model's head order.
        train_dataset: Task name → tokenized training set (see `hf_async_mtl.data.tokenize_task`).
        eval_dataset: Task name → tokenized evaluation set, or → `{split: dataset}` for tasks with
            several evaluation splits (the first split is the task's own; the others are reported as
            `eval_<task>_<split>_<metric>`). Use a split carved from training data for selection.
        processing_class: The tokenizer (used by the default collator and saved with the model).

    Metrics are reported as `eval_<task>_<metric>`, `eval_<task>_score`, `eval_<task>_loss`,
    `eval_glue_score` (mean of the task scores) and `eval_loss` (mean of the task losses), so
    `metric_for_best_model`, `load_best_model_at_end` and `EarlyStoppingCallback` work as usual.
    """

    train_dataset: MultiTaskDataset | None  # __init__ wraps a mapping of task datasets
    # transformers initialises it to None and fills it lazily, so mypy infers its type as None.
    _signature_columns: list[str]  # type: ignore[assignment]

    def __init__(
        self,
        model: torch.nn.Module,
        args: MultiTaskTrainingArguments,
        task_specs: Sequence[TaskSpec],
        train_dataset: Mapping[str, datasets.Dataset] | MultiTaskDataset | None = None,
        eval_dataset: Mapping[str, Any] | None = None,
        processing_class: Any = None,
        data_collator: Any = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError("MultiTaskTrainer needs MultiTaskTrainingArguments.")
        # A gradient method under FSDP / DeepSpeed (async-KD under ZeRO-3): refused before anything is built.
        check_sharding(args)
        task_specs = check_task_specs(task_specs)
        check_unique_names(task_specs)
        # Containers, the model's heads, which tasks have data, each tokenized set, the best-model metric.
        check_trainer_inputs(
            model,
            task_specs,
            train_dataset,
            eval_dataset,
            async_kd=args.async_kd,
            metric_for_best_model=args.metric_for_best_model,
            calibration=bool(args.calibration_bins),
        )
        self.task_specs = {spec.name: spec for spec in task_specs}
        # The method balances the tasks this run trains (a task without training data, e.g. the others in per-task
        # fine-tuning, would be normalised over by dwa / rlw / mt_tartan and missing from every step of the others).
        data = getattr(train_dataset, "task_datasets", train_dataset)
        trained = [name for name in self.task_specs if not isinstance(data, Mapping) or name in data] or list(self.task_specs)
        self.weighting = build_weighting(args.mtl_method, trained, **weighting_options(args))
        if args.end_tasks:
            end_task_selection(args, self.task_specs)
        self.dev_objective: DevObjective | None = None
        dev_slices: dict[str, datasets.Dataset] = {}
        if self.weighting.needs_dev_gradient and train_dataset is not None:
            if isinstance(train_dataset, MultiTaskDataset):
                train_dataset = train_dataset.task_datasets
            train_dataset, dev_slices = carve_dev_slices(
                # A method with needs_dev_gradient is META-TARTAN (it has end tasks).
                train_dataset,
                cast("MetaTartan", self.weighting).end_tasks,
                args.tartan_dev_fraction,
                args.tartan_dev_max,
                args.seed,
            )
        if train_dataset is not None and not isinstance(train_dataset, MultiTaskDataset):
            unknown = sorted(set(train_dataset) - set(self.task_specs))
            if unknown:
                raise ValueError(f"train_dataset has tasks without a TaskSpec: {unknown}.")
            train_dataset = MultiTaskDataset({name: train_dataset[name] for name in self.task_specs if name in train_dataset})
        if eval_dataset is not None:
            unknown = sorted(set(eval_dataset) - set(self.task_specs))
            if unknown:
                raise ValueError(f"eval_dataset has tasks without a TaskSpec: {unknown}.")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass processing_class (the tokenizer) or a data_collator.")
            # Under torch.compile every new batch shape can recompile: padding to a multiple of 8 bounds the
            # shapes at max_seq_length / 8 per batch size (and suits tensor cores).
            data_collator = MultiTaskDataCollator(processing_class, pad_to_multiple_of=8 if args.torch_compile else None)
        masker = MlmMasker(processing_class, args.mlm_probability) if any(s.is_mlm for s in task_specs) else None
        # One objective per task, asked for each batch's loss; async-KD replaces a converged task's entry.
        self.objectives: dict[str, TaskObjective] = default_objectives(list(task_specs), masker)
        if dev_slices:
            self.dev_objective = DevObjective(
                dev_slices, self.task_specs, data_collator, args.per_device_train_batch_size, args.seed, rank=args.process_index
            )
            self.weighting.build_dev_heads(
                cast("MultiTaskModel", model).config.hidden_size,
                {t: self.task_specs[t].num_labels for t in dev_slices},
                std=getattr(cast("MultiTaskModel", model).config.encoder_config, "initializer_range", 0.02),
                seed=args.seed,
            )
        self.step_composition = args.step_composition
        if self.step_composition == "auto":
            self.step_composition = "all_tasks" if self.weighting.needs_all_tasks else "one_task"
        if train_dataset is not None:
            sizes = train_dataset.task_sizes
            streamed = {t: sizes[t] for t in train_dataset.streamed}
            check_streamed_run(
                streamed, args, needs_dev_gradient=self.weighting.needs_dev_gradient, all_tasks=self.step_composition == "all_tasks"
            )
        if self.weighting.needs_task_gradients and not shared_and_task_parameters(model)[0]:
            raise ValueError(
                f"mtl_method {args.mtl_method!r} balances the tasks' gradients on the shared encoder, but no encoder "
                "parameter is both shared and trainable (per-task adapters on a frozen base?): train the base "
                "(task_adapters_train_base / --lora_train_base) or use a loss-weighting method."
            )
        schedule_warning = self.weighting.schedule_warning(args.max_steps)
        if schedule_warning:
            logger.warning(schedule_warning)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            callbacks=callbacks,
            **kwargs,
        )
        if self.is_fsdp_enabled and self.accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap is None:
            self.accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap = fsdp_wrap_classes(model)
        engine = sharding_engine(args)
        if engine and not (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            # accelerate shards only on accelerators: on CPU it drops the engine and wraps the model in DDP.
            logger.warning("%s was asked for, but accelerate runs it only on GPUs (and like devices): this run is DDP.", engine)
        if self.is_deepspeed_enabled and self.step_composition == "one_task":
            logger.warning(
                "DeepSpeed ZeRO steps on flat partitions: in one-task steps the other tasks' heads get zero gradients, not "
                "none, so the optimizer's momentum and weight decay keep moving them (unlike one process, DDP or FSDP); "
                "step_composition 'all_tasks' trains as one process does."
            )
        # Losses are per-batch means: let the Trainer divide them by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        self._task_metrics: dict[str, list[float]] = defaultdict(list)
        self._length_orders: dict[str, np.ndarray] = {}  # dataset fingerprint -> longest-first order
        # Values the run's parts report between training logs (e.g. gradient diagnostics): they join the next one.
        self.pending_logs: dict[str, float] = {}
        self.calibration_evaluations = 0  # evaluations this trainer added to calibration.json (see train())
        self.step_losses = StepLosses(self.weighting)
        self.training_state = TrainingStateCallback(
            self.step_losses, self.build_train_sampler if self.train_dataset is not None else None, args.gradient_accumulation_steps, args
        )
        self.add_callback(self.training_state)
        # Under FSDP / DeepSpeed a method's own parameters have their own optimizer (create_optimizer), stepped here.
        self.own_parameters: OwnParametersOptimizer | None = None
        self.add_callback(OwnParametersStep(lambda: self.own_parameters, lambda: self.accelerator.optimizer_step_was_skipped))
        # Writes each checkpoint's completeness marker: train() keeps it after every other callback.
        self.checkpoint_completion = CheckpointCompletion()
        self.add_callback(self.checkpoint_completion)
        if self.train_dataset is not None and self.train_dataset.streamed:  # each stream's block starts, in every checkpoint
            self.add_callback(StreamStateCallback({t: self.train_dataset.task_datasets[t] for t in self.train_dataset.streamed}))
        self.async_convergence: AsyncConvergenceCallback | None = None
        # Each task's latest selection predictions (task -> (predictions, labels)), kept by evaluation when a consumer
        # needs them (async-KD with kd_noise="bootstrap").
        self.selection_outputs: dict[str, tuple[Any, Any]] | None = None
        if args.async_kd:
            options = AsyncKDOptions.from_arguments(args)
            if options.noise == "bootstrap":
                self.selection_outputs = {}
            labeller = None
            if self.train_dataset is not None:
                assert args.output_dir is not None  # TrainingArguments.__post_init__ defaults it
                labeller = TeacherLabeller(
                    self.train_dataset,
                    self.data_collator,
                    args.device,
                    options.label_batch_size or max(128, args.per_device_eval_batch_size),
                    args.output_dir,
                    is_main_process=self.accelerator.is_main_process,
                    wait_for_everyone=self.accelerator.wait_for_everyone,
                    # FSDP shards the training model in place at train(): teachers run in an unsharded copy.
                    teacher_host=unsharded_copy(model) if self.is_fsdp_enabled else None,
                )
            self.async_convergence = AsyncConvergenceCallback(
                self.task_specs,
                options,
                self.train_dataset,
                cast("Mapping[str, Any] | None", self.eval_dataset),  # task name → dataset (or → {split: dataset})
                labeller,
                self.objectives,
                log=self.log,
                selection_outputs=self.selection_outputs,
            )
            self.add_callback(self.async_convergence)
        if args.diagnostics_steps:
            self.add_callback(
                MultiTaskDiagnosticsCallback(
                    args.diagnostics_steps,
                    self.task_loss,
                    self.train_dataset,
                    self.data_collator,
                    args.per_device_train_batch_size,
                    args.seed,
                    args.device,
                    self.pending_logs,
                    loss_context=self.compute_loss_context_manager,
                    write_files=self.is_world_process_zero(),
                )
            )
        if args.early_stopping_patience:  # MultiTaskTrainingArguments made sure there is a metric to stop on
            self.add_callback(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))

    # ---- data ---------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # example_ids are read by compute_loss (soft-label lookup), not by the model: keep them.
        if EXAMPLE_IDS_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, EXAMPLE_IDS_COLUMN, TASK_IDS_COLUMN]

    def build_train_sampler(self) -> MultiTaskBatchSampler:
        """The task-mixing batch sampler of this run (rank-aware; length-aware if enabled)."""
        # Only called with training data (get_train_dataloader checks; TrainingStateCallback gets it only then).
        dataset: MultiTaskDataset = cast(MultiTaskDataset, self.train_dataset)
        num_batches = None
        if self.args.max_steps > 0:
            num_batches = self.args.max_steps * self.args.gradient_accumulation_steps
        if self.args.length_aware_batching:  # a stream groups inside each block: it has no lengths up front
            for name in dataset.streamed:
                dataset.task_datasets[name].group_by_length(self._train_batch_size * self.args.world_size, LENGTH_GROUPING_FACTOR)
        return MultiTaskBatchSampler(
            dataset.task_sizes,
            self._train_batch_size,
            strategy=self.args.sampling_strategy,
            temperature=self.args.sampling_temperature,
            composition=self.step_composition,
            num_batches=num_batches,
            lengths=dataset.lengths() if self.args.length_aware_batching else None,
            length_grouping_factor=LENGTH_GROUPING_FACTOR,
            seed=self.args.seed if self.args.data_seed is None else self.args.data_seed,  # Trainer's convention
            rank=self.args.process_index,
            world_size=self.args.world_size,
            num_templates=dataset.num_templates,
            task_streams=self.args.task_streams,
            streamed=dataset.streamed,
        )

    def num_examples(self, dataloader: DataLoader) -> int:
        # A streamed task spans STREAM_SPAN indices: count its declared rows (none when undeclared), not the span.
        dataset = getattr(dataloader, "dataset", None)
        if isinstance(dataset, MultiTaskDataset) and dataset.streamed:
            return sum(size or 0 for size in dataset.task_sizes.values())
        return super().num_examples(dataloader)

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset.")
        sampler = self.build_train_sampler()
        self.train_sampler = sampler
        # Not passed through `accelerator.prepare`: the sampler already gives each rank its own shard
        # with the same task on every rank, and accelerate's BatchSamplerShard would re-shard it (and
        # mangles all-tasks batches, whose length is not the per-rank batch size).
        return _EpochDataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    # ---- loss ---------------------------------------------------------------------------------

    def _task_name(self, batch: Mapping[str, Any]) -> str:
        """The task of a task-homogeneous batch (a mixed batch is an error), read here rather than in the model."""
        return self.accelerator.unwrap_model(self.model)._resolve_task(batch[TASK_IDS_COLUMN], None)

    def task_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[str, torch.Tensor, Any]:
        """(task, loss, outputs) of one task-homogeneous batch, from the task's objective (`self.objectives`)."""
        task = self._task_name(batch)
        loss, outputs = self.objectives[task](model, batch, task, self.step_context(model))
        return task, loss, outputs

    def step_context(self, model: torch.nn.Module) -> StepContext:
        """What an objective may need beyond its batch: the unwrapped model, the step, the seed and the rank."""
        return StepContext(self.accelerator.unwrap_model(model), self.state.global_step, self.args.seed, self.args.process_index)

    def task_losses(self, model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-task losses of a step's inputs (one batch, or one batch of every task)."""
        batches = inputs["task_batches"].values() if "task_batches" in inputs else [inputs]
        losses = {}
        for batch in batches:
            task, loss, _ = self.task_loss(model, dict(batch))
            losses[task] = loss
        # Several processes: the values of the global batch (weights and method state agree on every rank).
        losses = global_loss_values(self.accelerator, losses)
        self._record_losses(losses)
        return losses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            _, loss, outputs = self.task_loss(model, dict(inputs))
            return (loss, outputs) if return_outputs else loss
        losses = self.task_losses(model, inputs)
        loss = self.weighting.weigh_losses(losses, self.state.global_step)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"Weighting method {self.weighting.name!r}: weigh_losses must return a scalar tensor, got {shape}.")
        for task, weight in self.weighting.last_weights.items():
            self._task_metrics[f"weight_{task}"].append(float(weight))
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = self._balanced_training_step(model, inputs, num_items_in_batch)
        self.training_state.add_loss(loss)  # the whole run's train_loss, across resumes
        return loss

    def _balanced_training_step(self, model, inputs, num_items_in_batch=None):
        """One micro-batch: the Trainer's step for loss-weighting methods, per-task gradients for gradient methods."""
        if not self.weighting.needs_task_gradients:
            if "task_batches" in inputs and isinstance(model, torch.nn.parallel.DistributedDataParallel):
                # One forward per task before one backward: DDP (find_unused_parameters) would see each head's
                # gradient as ready twice. Back-propagate unsynchronised, then average the gradients once.
                with self.accelerator.no_sync(model):
                    loss = super().training_step(model, inputs, num_items_in_batch)
                average_gradients(self.accelerator, model.parameters())
                return loss
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        # Per-task gradients come from autograd.grad, not backward: keep DDP from expecting a backward
        # (no_sync); per_task_gradient_step averages the combined gradient across processes once.
        with self.accelerator.no_sync(model):
            with self.compute_loss_context_manager():
                losses = self.task_losses(model, inputs)
            dev = None
            if self.dev_objective is not None:
                heads = self.weighting.dev_head_modules()
                # The unwrapped encoder runs outside the wrapped forward's autocast: enter it here (bf16 / fp16 runs).
                with self.accelerator.autocast():
                    dev_loss = self.dev_objective.loss(
                        self.accelerator.unwrap_model(model), heads, self.state.global_step, self.args.device
                    )
                dev = (dev_loss, [p for p in heads.parameters()])
            loss = per_task_gradient_step(
                self.accelerator,
                model,
                self.weighting,
                losses,
                self.state.global_step,
                self.current_gradient_accumulation_steps,
                dev=dev,
            )
        for task, weight in self.weighting.last_weights.items():
            self._task_metrics[f"weight_{task}"].append(float(weight))
        return loss

    def _record_losses(self, losses: Mapping[str, torch.Tensor]) -> None:
        for task, loss in losses.items():
            value = float(loss.detach())
            self.step_losses.record(task, value, self.state.global_step)
            self._task_metrics[f"loss_{task}"].append(value)

    def create_optimizer(self, model=None):
        heads = self.weighting.dev_head_modules()
        if heads is not None:
            heads.to(self.args.device)  # they read the encoder's output (buffers stay on the CPU)
        optimizer = super().create_optimizer(model)
        learnable = [p for p in self.weighting.parameters() if p.requires_grad]
        if learnable and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            # The engine's optimizer takes only the model's parameters: the method's get one of their own.
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model if model is not None else self.model)
            self.own_parameters = OwnParametersOptimizer(learnable, optimizer_cls, kwargs, self.weighting.learning_rate)
        elif learnable and not any(p is q for group in optimizer.param_groups for p in group["params"] for q in learnable):
            group = {"params": learnable, "weight_decay": 0.0}
            # A method may train its own parameters at its own rate (e.g. uncertainty's log-variances).
            if self.weighting.learning_rate is not None:
                group["lr"] = self.weighting.learning_rate
            optimizer.add_param_group(group)
        return optimizer

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # transformers rotates (save_total_limit) before the callbacks write their state and the completeness marker:
        # a kill in between would leave no complete checkpoint. CheckpointCompletion rotates after the marker instead.
        # A save into an existing checkpoint-N (a resume from an earlier step, or an earlier run's directory) first
        # removes its completeness marker: interrupted, the mix of new and old files must not pass as complete.
        checkpoint = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.isfile(os.path.join(checkpoint, COMPLETE_NAME)):
            os.remove(os.path.join(checkpoint, COMPLETE_NAME))
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.is_fsdp_enabled:  # a sharded optimizer checkpoint loads only with a state for every trainable parameter
            complete_optimizer_state(self.optimizer)
        super()._save_optimizer_and_scheduler(output_dir)
        if self.own_parameters is not None and self.args.should_save:
            self.own_parameters.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.own_parameters is not None and checkpoint:
            self.own_parameters.load(checkpoint)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_metrics:
            logs.update({f"train_{name}": float(np.mean(values)) for name, values in self._task_metrics.items()})
            self._task_metrics.clear()
        if "train_loss" in logs:  # the end-of-training summary: after a resume, the mean over the whole run
            whole_run = self.training_state.whole_run_train_loss(self.state.global_step)
            if whole_run is not None:
                logs["train_loss"] = whole_run
        if "loss" in logs and self.pending_logs:
            logs.update(self.pending_logs)
            self.pending_logs.clear()
        super().log(logs, start_time)

    # ---- Hub ----------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: Any = None,
        license: str | None = None,
        tags: Any = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: Any = None,
        dataset_tags: Any = None,
        dataset: Any = None,
        dataset_args: Any = None,
    ) -> None:
        """Write `output_dir/README.md` (what `push_to_hub` uploads): tasks, last evaluation, method and settings.

        Takes `Trainer.create_model_card`'s arguments; `tasks`, `dataset_tags` and `dataset_args` are not
        used (the card lists the model's own tasks). See `hf_async_mtl.model_card.build_model_card`.
        """
        if not self.is_world_process_zero():
            return
        assert self.args.output_dir is not None  # TrainingArguments.__post_init__ defaults it
        model = self.accelerator.unwrap_model(self.model)
        card = build_model_card(
            model.config,
            repo_id=getattr(self, "hub_model_id", None) or self.args.hub_model_id,
            model_name=model_name,
            args=self.args,
            task_specs=self.task_specs,
            log_history=self.state.log_history,
            step_composition=self.step_composition,
            convergence=self.async_convergence.report() if self.async_convergence is not None else None,
            base_model=finetuned_from,
            tags=tags,
            datasets=dataset,
            language=language,
            license=license,
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ---- resuming ----------------------------------------------------------------------------

    def _restore_early_stopping(self, directory: str) -> None:
        """Early stopping's count of evaluations without improvement, from the checkpoint's trainer_state.json:
        transformers restores it only with `restore_callback_states_from_checkpoint`, so a resumed run counted from 0
        and stopped later than the run it continues (or never)."""
        stopping = [callback for callback in self.callback_handler.callbacks if isinstance(callback, EarlyStoppingCallback)]
        path = os.path.join(directory, TRAINER_STATE_NAME)
        if not stopping or self.args.restore_callback_states_from_checkpoint or not os.path.isfile(path):
            return
        saved = TrainerState.load_from_json(path).stateful_callbacks.get(EarlyStoppingCallback.__name__)
        for callback, state in zip(stopping, saved if isinstance(saved, list) else [saved] if saved else []):
            for name, value in state.get("attributes", {}).items():
                setattr(callback, name, value)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """As `Trainer.train`; a resumed run also restores the state of every part with checkpoint state of its own
        (`CheckpointPart`: the weighting method and batch stream, async-KD, diagnostics), after checking them all.
        `resume_from_checkpoint=True` resumes the output directory's last *complete* checkpoint (one interrupted
        while saving is skipped); the returned `training_loss` covers every step of a resumed run."""
        assert self.args.output_dir is not None  # TrainingArguments.__post_init__ defaults it
        # The completeness marker is written after every other callback has saved its files.
        self.callback_handler.callbacks.remove(self.checkpoint_completion)
        self.callback_handler.callbacks.append(self.checkpoint_completion)
        start = 0
        if resume_from_checkpoint:
            directory = WeightingCheckpointState.resolve(resume_from_checkpoint, self.args.output_dir)
            resume_from_checkpoint = directory  # not True: the Trainer's own "last checkpoint" may be an incomplete one
            # Refuse a checkpoint of other tasks, heads, labels or parts before loading anything from it.
            check_resume_checkpoint(
                directory, list(self.task_specs.values()), model_config=self.accelerator.unwrap_model(self.model).config
            )
            parts = [callback for callback in self.callback_handler.callbacks if isinstance(callback, CheckpointPart)]
            for part in parts:
                part.check_checkpoint(directory)
            for part in parts:
                part.load_checkpoint(directory)
            self._restore_early_stopping(directory)
            start = checkpoint_global_step(directory)
        # The evaluation file that accumulates over a run keeps only what precedes its start (the checkpoint's step; when
        # fresh, only this trainer's own evaluations before training): a resumed run would otherwise repeat the steps
        # after the checkpoint, a re-run (or an earlier evaluate-only run, at step 0 too) mix two models.
        if self.is_world_process_zero():
            truncate_calibration(self.args.output_dir, start, keep_last=None if resume_from_checkpoint else self.calibration_evaluations)
        self.calibration_evaluations = 0  # a later fresh train() of this trainer keeps only what it evaluates before it
        try:
            output = super().train(
                resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
            )
        finally:  # a run that raised never reached on_train_end: later evaluations (the dev sets) must not select
            if self.async_convergence is not None:
                self.async_convergence.training = False
        whole_run = self.training_state.whole_run_train_loss(output.global_step)
        return output if whole_run is None else TrainOutput(output.global_step, whole_run, output.metrics)
