"""`MultiTaskTrainingArguments`: `TrainingArguments` plus the multi-task options."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields

from transformers import TrainingArguments

from .async_kd.options import ENSEMBLE_TYPES, LOSS_TYPES, NOISE_MODES, SOFT_LABEL_MODES, AsyncKDOptions
from .async_kd.signals import SIGNALS
from .precision import cpu_bf16_warning
from .sampling import COMPOSITIONS, SAMPLING_STRATEGIES, TASK_STREAMS
from .sharding import check_sharding
from .weighting import available_weightings, get_weighting

_TRAINING_ARGUMENT_NAMES = frozenset(f.name for f in fields(TrainingArguments))

LOWER_IS_BETTER_SUFFIXES = ("_ece", "_perplexity")  # reported metrics (calibration, MLM tasks) where lower is better
ASYNC_KD_ALIAS = "async_kd"  # --mtl_method async_kd = --mtl_method equal --async_kd
_KD = AsyncKDOptions  # the async-KD options' one set of defaults
logger = logging.getLogger(__name__)


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """Training arguments for `MultiTaskTrainer`.

    Task mixing:
        sampling_strategy: How the task of each step is drawn: `proportional` (p ∝ n), `temperature`
            (p ∝ n^(1/T)), `uniform`, `round_robin`, `annealed` (proportional → uniform over `max_steps`, which it needs).
        sampling_temperature: T of the `temperature` strategy.
        step_composition: `one_task` (one task per step), `all_tasks` (one batch of every task per
            step), or `auto` (all_tasks when the method needs it, else one_task).
        length_aware_batching: Group examples of similar length inside a task to cut padding.

    Task balancing:
        mtl_method: Any name of `hf_async_mtl.weighting.available_weightings()` (`equal`, `static`,
            `uncertainty`, `dwa`, `gradnorm`, `pcgrad`, `cagrad`, `mgda`, `imtl_g`, ...). `async_kd` is an
            alias for `equal` with `async_kd=True`.
        mtl_method_options: Options of the weighting method (dict, or a JSON string on the command line).

    Asynchronous convergence (`async_kd=True`, over any `mtl_method` and step composition):
        async_kd: Once a task's selection metric has converged, train it by distillation to soft labels
            of its best parameters while the other tasks keep their true labels (Lu et al., 2022).
        kd_patience: Evaluations without improvement of a task's (smoothed) metric before it counts as converged.
        kd_min_delta: Smallest change that counts as an improvement.
        kd_min_steps: No task is declared converged before this step.
        kd_smoothing: Patience runs on the mean of the last `kd_smoothing` evaluations (1 = raw values,
            the paper's rule), so one noisy evaluation neither resets nor ends it.
        kd_full_window: The smoothed series starts once `kd_smoothing` evaluations exist, so a lucky first
            evaluation cannot become the best that later means must beat.
        kd_trivial_gate: A task may converge only once its smoothed best beats its trivial predictor
            (training majority class / mean) on the selection split by `kd_margin_z` noise units.
        kd_margin_z: Noise units of the gate's margin: z · s / sqrt(n) on n selection examples, s = 0.5
            for accuracy / F1 and 1 for MCC / correlations (z = 2: CoLA's MCC on 500 examples must pass 0.089);
            also of the decline `kd_require_decline` asks for and of teacher refresh.
        kd_decline_trigger: A task also converges when its smoothed selection metric has fallen below its
            best by more than the gate's margin (a decline the split can show), even if its best did not
            clear the trivial-predictor floor: its best point is then measurably better than continuing.
            Off by default: measured, it brings back near-trivial teachers (docs/async_kd.md). Needs
            `kd_require_decline=False`.
        kd_require_decline: A task converges only once its smoothed selection metric has also fallen below
            its best by more than `kd_margin_z` noise units at its own level (`noise_margin`): evidence that
            it got worse, not only that it stopped improving. On by default (issue #42: the plateau rule left a
            task below equal weighting beyond its interval where tasks converge apart, the decline rule none);
            false: a plateau of `kd_patience` evaluations is enough, the paper's rule (docs/async_kd.md shows what
            each rule did in the benchmarks).
        kd_noise: `formula` (the floor and the decline margin from formulas at the selection split's size) or
            `bootstrap` (from resamples of the selection examples, the decline paired between evaluations).
        kd_signal: What the rule reads on the selection split: `score` (the task's metric) or a mean over its
            examples, of the true class's log-probability (`loss`), probability (`prob`) or minus the Brier score
            (`brier`); minus the MSE for regression. Other than `score`, needs `kd_noise="bootstrap"`.
        kd_refresh: A converged task keeps being evaluated; when its selection metric beats its
            teacher's by the same margin, the current parameters become its teacher and relabel it.
        kd_require_improvement: A task converges only after its metric improved at least once over its
            first evaluation (a task still on its initial plateau is not distilled from a model that
            has learnt nothing).
        kd_temperature: Softmax temperature of the KL distillation loss (loss scaled by T²).
        kd_loss: `kl` (KL(teacher‖student) on softened distributions) or `mse` (on logits).
        kd_alpha: Weight of the distillation loss; 1 - alpha goes to the hard-label loss (1 = pure KD).
        kd_top_k: Teacher built from a task's k best snapshots (1 = best only).
        kd_ensemble: How k > 1 snapshots form the teacher: `parameters` (one model with their averaged
            weights, one labelling pass) or `predictions` (each snapshot labels the training set and the
            soft labels are the mean probability / mean regression output; k passes).
        kd_soft_labels: When a converged task's soft labels are computed: `precompute` (the paper: one
            pass of the teacher over the whole training set at convergence, stored in
            `output_dir/soft_labels/`) or `on_demand` (each example's row the first time a batch draws
            it afterwards; same labels, no pass over examples never drawn again, work spread over
            ranks; the teacher's parameters stay on the training device until every row is labelled) or
            `online` (the teacher labels every distilled batch as it is drawn, nothing kept; the only mode
            for a streamed task).
        kd_snapshot_dir: Keep best-parameter snapshots in this directory instead of CPU memory.
        kd_stop_when_all_converged: End training once every task has converged.

    End-task aware training (TARTAN, Dery et al., ICLR 2022):
        end_task: The task(s) the run is for (comma-separated); the others are auxiliaries. Used by
            `mtl_method="mt_tartan"` (static: end tasks and auxiliaries each get half of the total weight)
            and `"meta_tartan"` (meta-learned weights), and — unless `metric_for_best_model` is given — it
            makes the end task's selection score the metric of best checkpoints and early stopping.
        tartan_dev_fraction: `meta_tartan`: fraction of each end task's training set held out (at most
            `tartan_dev_max` examples, seeded) to train the dev head whose gradient steers the weights.
        mlm_probability: Fraction of tokens masked in the batches of MLM tasks (`TaskSpec(objective="mlm")`).
        early_stopping_patience: Stop after this many evaluations without improvement of
            `metric_for_best_model` (transformers' `EarlyStoppingCallback`); 0 = off.

    Defaults that differ from `TrainingArguments`: `eval_strategy="steps"`, `remove_unused_columns=False`
    (the dataset keeps `task_ids`), `report_to="none"`, `per_device_eval_batch_size=64` (length-sorted batches).
    """

    sampling_strategy: str = field(
        default="temperature", metadata={"help": f"How each step's task is drawn: one of {SAMPLING_STRATEGIES}."}
    )
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of the temperature strategy (p ∝ n^(1/T))."})
    task_streams: str = field(
        default="by_position",
        metadata={
            "help": "What seeds each task's stream of examples besides the seed: 'by_position' (its place among the "
            "tasks) or 'by_name' (its name: the task draws the same batches whatever other tasks are trained beside "
            "it, e.g. a single-task baseline that sees exactly a multi-task run's examples of that task)."
        },
    )
    step_composition: str = field(
        default="auto", metadata={"help": f"'auto' or one of {COMPOSITIONS}: one task per step, or every task each step."}
    )
    length_aware_batching: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together inside a task (less padding)."}
    )
    mtl_method: str = field(
        default="equal",
        metadata={
            "help": "Weighting method (equal, static, uncertainty, dwa, gradnorm, rlw, famo, pcgrad, gradvac, cagrad, mgda, imtl_g, nash_mtl, mt_tartan, meta_tartan); 'async_kd' = equal with --async_kd."
        },
    )
    mtl_method_options: dict | str | None = field(
        default=None, metadata={"help": "Options of the weighting method as a JSON object, e.g. '{\"temperature\": 2.0}'."}
    )
    async_kd: bool = field(
        default=False, metadata={"help": "Asynchronous convergence: converged tasks train by self-distillation (over any mtl_method)."}
    )
    kd_patience: int = field(
        default=_KD.patience, metadata={"help": "async_kd: evaluations without improvement before a task has converged."}
    )
    kd_min_delta: float = field(default=_KD.min_delta, metadata={"help": "async_kd: smallest metric change that counts as an improvement."})
    kd_min_steps: int = field(default=_KD.min_steps, metadata={"help": "async_kd: no task converges before this step."})
    kd_require_improvement: bool = field(
        default=_KD.require_improvement, metadata={"help": "async_kd: converge only after the metric improved over its first evaluation."}
    )
    kd_smoothing: int = field(
        default=_KD.smoothing, metadata={"help": "async_kd: patience on the mean of the last N evaluations (1 = raw)."}
    )
    kd_full_window: bool = field(
        default=_KD.full_window,
        metadata={
            "help": "async_kd: the smoothed series starts with the first full window of kd_smoothing evaluations (false: the first, unaveraged evaluation counts as a smoothed value)."
        },
    )
    kd_trivial_gate: bool = field(
        default=_KD.trivial_gate,
        metadata={"help": "async_kd: converge only once the metric beats the trivial predictor by kd_margin_z noise units."},
    )
    kd_margin_z: float = field(
        default=_KD.margin_z,
        metadata={"help": "async_kd: noise units (z) of the trivial-predictor gate, of the required decline and of teacher refresh."},
    )
    kd_decline_trigger: bool = field(
        default=_KD.decline_trigger,
        metadata={
            "help": "async_kd: also converge when the smoothed metric falls below its best by the kd_margin_z margin (with --kd_require_decline false)."
        },
    )
    kd_require_decline: bool = field(
        default=_KD.require_decline,
        metadata={
            "help": "async_kd: converge only once the smoothed metric has also fallen below its best by kd_margin_z noise units at its own level (false: a plateau of kd_patience evaluations is enough, as in the paper; its exact rule also sets kd_smoothing 1, kd_trivial_gate false, kd_require_improvement false)."
        },
    )
    kd_noise: str = field(
        default=_KD.noise,
        metadata={
            "help": f"async_kd: how the floor and the decline margin measure the selection split's noise, one of {NOISE_MODES}: "
            "formulas at the split's size, or 400 resamples of its examples (the decline paired between evaluations; "
            "about 1 s per evaluation for five 1,000-example splits)."
        },
    )
    kd_signal: str = field(
        default=_KD.signal,
        metadata={
            "help": f"async_kd: what the convergence rule reads on the selection split, one of {SIGNALS}: the task's metric, "
            "or the mean true-class log-probability / probability / minus Brier score over its examples (minus the MSE for "
            "regression). Other than score: needs --kd_noise bootstrap, and not with --kd_refresh."
        },
    )
    kd_refresh: bool = field(
        default=_KD.refresh,
        metadata={
            "help": "async_kd: a converged task takes a new teacher when its metric later beats the teacher's by the margin "
            "(kd_signal score only)."
        },
    )
    kd_temperature: float = field(default=_KD.temperature, metadata={"help": "async_kd: temperature of the KL distillation loss."})
    kd_loss: str = field(default=_KD.loss, metadata={"help": f"async_kd: distillation loss, one of {LOSS_TYPES}."})
    kd_alpha: float = field(default=_KD.alpha, metadata={"help": "async_kd: weight of the KD loss; 1 - alpha for the hard labels."})
    kd_top_k: int = field(default=_KD.top_k, metadata={"help": "async_kd: teacher built from the k best snapshots of a task."})
    kd_ensemble: str = field(
        default=_KD.ensemble,
        metadata={
            "help": f"async_kd, kd_top_k > 1: combine the snapshots' {ENSEMBLE_TYPES[0]} (weight average) or their {ENSEMBLE_TYPES[1]} (prediction ensemble)."
        },
    )
    kd_soft_labels: str = field(
        default=_KD.soft_labels,
        metadata={
            "help": f"async_kd: when soft labels are computed, one of {SOFT_LABEL_MODES} (precompute = one pass over the training set at convergence)."
        },
    )
    kd_snapshot_dir: str | None = field(
        default=_KD.snapshot_dir, metadata={"help": "async_kd: keep snapshots on disk here (default: CPU memory)."}
    )
    kd_stop_when_all_converged: bool = field(
        default=_KD.stop_when_all_converged, metadata={"help": "async_kd: stop training once every task has converged."}
    )
    kd_label_batch_size: int | None = field(
        default=_KD.label_batch_size,
        metadata={
            "help": "async_kd: batch size of the soft-label (teacher) pass; default max(128, per_device_eval_batch_size) -- its batches are length-sorted, so large ones waste no padding."
        },
    )
    diagnostics_steps: int = field(
        default=0,
        metadata={
            "help": "Every N steps, measure per-task gradient conflict on the shared encoder (cosines, norms; logged and saved to gradient_diagnostics.json). Costs one forward+backward per task per measurement. 0 = off."
        },
    )
    calibration_bins: int = field(
        default=0,
        metadata={
            "help": "Report the expected calibration error (eval_<task>_ece) of classification tasks with this many equal-width confidence bins (15 is usual); every evaluation's bins go to calibration.json (reliability diagrams: python -m hf_async_mtl.calibration). 0 = off."
        },
    )
    finetune_after_mtl_steps: int = field(
        default=0,
        metadata={
            "help": "run_glue_mtl.py: after multi-task training, fine-tune a copy of the model on each task alone for up to this many steps (selection and early stopping on the task's selection split; one exported model per task in <output_dir>/finetuned/<task>/export, its evaluations in trainer_state.json beside it). 0 = off."
        },
    )
    finetune_eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluation interval of the per-task fine-tuning (default: finetune_after_mtl_steps / 10)."}
    )
    finetune_patience: int = field(
        default=3, metadata={"help": "Per-task fine-tuning stops after this many evaluations without improvement."}
    )
    end_task: str | None = field(
        default=None,
        metadata={
            "help": "TARTAN: the end task(s) of the run, comma-separated; the other tasks are auxiliaries (mt_tartan, meta_tartan weights; best checkpoint and early stopping on the end task's selection score)."
        },
    )
    tartan_dev_fraction: float = field(
        default=0.1,
        metadata={"help": "meta_tartan: fraction of each end task's training set held out for the dev head (at most tartan_dev_max)."},
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model (with end_task: the end task's selection score). 0 = off."
        },
    )
    tartan_dev_max: int = field(default=500, metadata={"help": "meta_tartan: upper bound on each end task's dev-head examples."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked in the batches of MLM auxiliary tasks."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate every task (no, steps, epoch)."})
    per_device_eval_batch_size: int = field(
        default=64,
        metadata={
            "help": "Evaluation and prediction batch size per device (Trainer's default is 8); evaluation batches are length-sorted, so a large batch wastes little padding."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the multi-task dataset carries task_ids and soft labels."}
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Integrations to report to (tensorboard, wandb, none...)."})

    def __post_init__(self) -> None:
        # TrainingArguments fills metric_for_best_model ("loss") under load_best_model_at_end: remember whether the
        # user chose one, so that an end task's score can be the default instead.
        self.metric_for_best_model_given = self.metric_for_best_model is not None
        # transformers takes every metric not ending in "loss" as higher-is-better: a calibration error or a perplexity
        # chosen for selection would pick the worst checkpoint.
        if self.greater_is_better is None and (self.metric_for_best_model or "").endswith(LOWER_IS_BETTER_SUFFIXES):
            self.greater_is_better = False
        # Before TrainingArguments' own processing, which imports the sharding engine (DeepSpeed) to read its config.
        check_sharding(self)
        super().__post_init__()
        slow_bf16 = cpu_bf16_warning(self.bf16, self.device.type)  # device: already set up by TrainingArguments
        if slow_bf16:
            logger.warning(slow_bf16)
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {self.sampling_strategy!r}.")
        if self.task_streams not in TASK_STREAMS:
            raise ValueError(f"task_streams must be one of {TASK_STREAMS}, got {self.task_streams!r}.")
        for option in fields(self):  # this class's on/off options: "false" would count as on silently
            if (
                option.name not in _TRAINING_ARGUMENT_NAMES
                and option.type in ("bool", bool)
                and not isinstance(getattr(self, option.name), bool)
            ):
                raise ValueError(f"{option.name} must be True or False, got {getattr(self, option.name)!r}.")
        temperature = self.sampling_temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not (math.isfinite(temperature) and temperature > 0)
        ):
            raise ValueError(f"sampling_temperature must be a finite number > 0, got {temperature!r}.")
        if self.step_composition != "auto" and self.step_composition not in COMPOSITIONS:
            raise ValueError(f"step_composition must be 'auto' or one of {COMPOSITIONS}, got {self.step_composition!r}.")
        if isinstance(self.mtl_method_options, str):
            try:
                self.mtl_method_options = json.loads(self.mtl_method_options) if self.mtl_method_options.strip() else {}
            except json.JSONDecodeError as error:
                raise ValueError(f"mtl_method_options is not valid JSON: {error.msg}.") from None
        if self.mtl_method_options is not None and not isinstance(self.mtl_method_options, Mapping):
            raise ValueError(f"mtl_method_options must be a JSON object of the method's options, got {self.mtl_method_options!r}.")
        self.mtl_method_options = dict(self.mtl_method_options or {})
        if self.mtl_method == ASYNC_KD_ALIAS:
            self.mtl_method, self.async_kd = "equal", True
        if self.mtl_method not in available_weightings():
            raise ValueError(f"Unknown mtl_method {self.mtl_method!r}; known: {[*available_weightings(), ASYNC_KD_ALIAS]}.")
        # Bounds and choices of every kd_* option (checked with async-KD off too: a typo is caught before any work);
        # the clashes between options (decline trigger / requirement, a signal's noise and refresh) only matter when the
        # rule is used: with async-KD off, the "only act with async-KD" error below names them instead.
        values = {name.removeprefix("kd_"): getattr(self, name) for name in AsyncKDOptions.argument_names()}
        if not self.async_kd:
            values["decline_trigger"] = False
            if values["signal"] in SIGNALS:
                values["signal"] = "score"
        AsyncKDOptions(**values)
        for name in ("diagnostics_steps", "calibration_bins", "finetune_after_mtl_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = off), got {getattr(self, name)!r}.")
        if self.finetune_patience < 1 or (self.finetune_eval_steps is not None and self.finetune_eval_steps < 1):
            raise ValueError("finetune_patience and finetune_eval_steps must be >= 1.")
        self.end_tasks = [t.strip() for t in (self.end_task or "").split(",") if t.strip()]
        if self.end_task is not None and not self.end_tasks:
            raise ValueError("end_task is empty: name the end task(s), comma-separated.")
        if not 0.0 < self.tartan_dev_fraction < 1.0 or self.tartan_dev_max < 1:
            raise ValueError(
                f"tartan_dev_fraction must be in (0, 1) and tartan_dev_max >= 1, got {self.tartan_dev_fraction}, {self.tartan_dev_max}."
            )
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0 (0 = off), got {self.early_stopping_patience}.")
        if self.push_to_hub and str(getattr(self.hub_strategy, "value", self.hub_strategy)) in ("checkpoint", "all_checkpoints"):
            # transformers uploads a checkpoint before the callbacks write the multi-task state and completeness marker.
            raise ValueError(
                f"hub_strategy {getattr(self.hub_strategy, 'value', self.hub_strategy)!r} uploads each checkpoint before its "
                "multi-task state (batch stream, weighting, async-KD, completeness marker) is written, so it could not be "
                "resumed: use hub_strategy 'end' or 'every_save' (the model), and keep checkpoints on disk."
            )
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError(
                "early_stopping_patience stops training on evaluations: set eval_strategy to 'steps' or 'epoch' "
                "(or leave it out of a run that does not train)."
            )
        if self.sampling_strategy == "annealed" and self.max_steps <= 0:
            raise ValueError(
                "sampling_strategy 'annealed' anneals from proportional to uniform over max_steps: set max_steps (> 0); "
                "with num_train_epochs alone every epoch would restart the schedule."
            )
        if self.async_kd and self.eval_strategy == "no":
            raise ValueError(
                "async_kd monitors validation metrics during training: set eval_strategy to 'steps' or 'epoch' "
                "(or leave it out of a run that does not train)."
            )
        ignored = self.ignored_kd_options()
        if ignored:
            raise ValueError(
                ", ".join(f"{name}={getattr(self, name)!r}" for name in ignored)
                + (" only act" if len(ignored) > 1 else " only acts")
                + " with async-KD, which is off: set async_kd=True (--async_kd, or mtl_method='async_kd'), or leave "
                + ("them at their defaults." if len(ignored) > 1 else "it at its default.")
            )
        for unused in self.unused_options():
            logger.warning(unused)
        method = get_weighting(self.mtl_method)
        if method.needs_task_gradients and self.gradient_accumulation_steps > 1:
            logger.warning(
                "mtl_method %r combines the per-task gradients of each micro-batch and sums the results: with "
                "gradient_accumulation_steps %d it never sees the step's gradients (its projections / weights are those "
                "of smaller batches). For the method at the effective batch, raise per_device_train_batch_size instead.",
                self.mtl_method,
                self.gradient_accumulation_steps,
            )
        if method.needs_all_tasks and self.step_composition not in ("auto", "all_tasks"):
            raise ValueError(
                f"mtl_method {self.mtl_method!r} needs one batch of every task per step: step_composition 'all_tasks' "
                f"(or 'auto'), not {self.step_composition!r}."
            )
        if self.early_stopping_patience and self.metric_for_best_model is None and len(self.end_tasks) != 1:
            raise ValueError(
                "early_stopping_patience needs metric_for_best_model (or a single end_task, which sets it)"
                + (f"; with several end tasks {self.end_tasks}, choose the metric." if self.end_tasks else ".")
            )

    def unused_options(self) -> list[str]:
        """What an option set away from its default does not act on under the others (a warning each, not an error:
        harmless, but rarely what was meant)."""
        unused = []
        default_temperature = self.__dataclass_fields__["sampling_temperature"].default
        if self.sampling_temperature != default_temperature and self.sampling_strategy != "temperature":
            unused.append(
                f"sampling_temperature={self.sampling_temperature} acts only with sampling_strategy 'temperature', not {self.sampling_strategy!r}."
            )
        if self.async_kd and self.kd_temperature != _KD.temperature and self.kd_loss == "mse":
            unused.append(f"kd_temperature={self.kd_temperature} acts only on the KL loss (kd_loss 'kl'), not 'mse'.")
        if self.async_kd and self.kd_ensemble != _KD.ensemble and self.kd_top_k == 1:
            unused.append(f"kd_ensemble={self.kd_ensemble!r} combines kd_top_k > 1 snapshots; with kd_top_k 1 the teacher is the best one.")
        return unused

    def ignored_kd_options(self) -> list[str]:
        """The async-KD options (`kd_*`) that differ from their defaults while async-KD is off (they would do nothing)."""
        if self.async_kd:
            return []
        return [
            f.name for f in fields(self) if f.name.startswith("kd_") and f.default is not MISSING and getattr(self, f.name) != f.default
        ]

    def __getstate__(self) -> dict:
        # The Trainer pickles its arguments into every checkpoint (training_args.bin), which
        # push_to_hub uploads: never let the Hub token travel with them.
        state = dict(self.__dict__)
        state["hub_token"] = None
        return state
