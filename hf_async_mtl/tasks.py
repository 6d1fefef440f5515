"""Task descriptions: what a task's examples look like and how it is scored. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bi_encoder import BI_ENCODER, COSINE_HEAD, CROSS_ENCODER, PAIR_ENCODINGS, default_pair_head, pair_head_problem
from .errors import InputError, did_you_mean
from .prompting import PROMPT_EVAL_MODES, check_template

OBJECTIVES = ("supervised", "mlm")
MLM_PROBLEM_TYPE = "masked_lm"  # the head's problem_type in MultiTaskConfig (hf_async_mtl.mlm uses the same name)

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# The built-in metrics (`hf_async_mtl.metrics.METRICS`) by the kind of task they score.
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearmanr")


def default_metrics(is_regression: bool) -> tuple[str, ...]:
    """A task's metrics when none are given: Pearson and Spearman for a regression, accuracy for a classification."""
    return REGRESSION_METRICS if is_regression else ("accuracy",)


def metrics_problem(metrics: Sequence[Any], *, is_regression: bool, num_labels: int) -> str | None:
    """Why built-in `metrics` cannot score a task of this kind (an unknown name, a classification metric on a
    regression or the reverse, binary F1 on more than two classes), or None."""
    known = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
    for name in metrics:
        if not isinstance(name, str) or name not in known:
            return f"unknown metric {name!r}{did_you_mean(str(name), known)}; built-in metrics: {sorted(known)} (evaluate modules go in evaluate_metrics)"
        if is_regression and name in CLASSIFICATION_METRICS:
            return f"metric {name!r} scores class ids, but the task is a regression (no label_names): use {list(REGRESSION_METRICS)}"
        if not is_regression and name in REGRESSION_METRICS:
            return f"metric {name!r} scores regression targets, but the task is a classification: use {list(CLASSIFICATION_METRICS)}"
        if name == "f1" and num_labels != 2:
            return f"metric 'f1' is the binary F1 of label id 1, but the task has {num_labels} labels"
    return None


# `TaskSpec.extra` key set by `infer_task_spec`: the label names are the sorted distinct text labels of the training
# split, so an id in another split (ids follow the names' order) would not mean what its file meant: loaders refuse ids.
NAMES_FROM_TEXT = "label_names_from_text"


@dataclass(frozen=True)
class TaskSpec:
    """A classification or regression task over one sentence or a sentence pair.

    Args:
        name: Identifier used in metric keys (`eval_<name>_<metric>`), head names and file names.
            Lower-case letters, digits and underscores, starting with a letter.
        text_fields: One column (single sentence) or two columns (sentence pair) holding the text.
        label_names: The class names, in label-id order, for a classification task. `None` makes
            the task a regression task with one float target.
        label_field: The column holding the label (an int id, or a float target for regression).
        metrics: Names of the built-in metrics reported for the task (see `hf_async_mtl.metrics.METRICS`):
            `accuracy`, `f1` (binary), `matthews_correlation` for a classification, `pearson`, `spearmanr` for a
            regression; a name of the other kind is refused. Default: `("accuracy",)` for a classification,
            `("pearson", "spearmanr")` for a regression. May be empty when `evaluate_metrics` is not.
        main_metric: The metric that selects (convergence monitoring, best checkpoints). `"score"`
            is the mean of `metrics`, the GLUE convention (MRPC: mean of F1 and accuracy). With
            `evaluate_metrics`, it may also name a key those modules return (checked when metrics
            are computed, since the keys are only known then).
        greater_is_better: Direction of `main_metric`.
        regression_range: Inclusive `(low, high)` bounds a regression target must lie in, if any.
        validation_splits: Names of the evaluation splits (MNLI has matched and mismatched).
        evaluate_metrics: `evaluate` modules reported besides `metrics`: Hub ids (`"accuracy"`,
            `"evaluate-metric/f1"`) or paths of local metric scripts (`"metrics/max_error.py"`).
            They are configuration: nothing is loaded when the spec is built; `compute_task_metrics`
            loads each with `evaluate.load` the first time it is needed and caches it. See
            `hf_async_mtl.metrics` for how their results join the built-in ones.
        prompt_templates: DynaMaR prompt templates (`hf_async_mtl.prompting`): each holds every text
            field and one `{mask}`, e.g. `"{sentence} It was {mask}."`. With templates, every example
            is wrapped in a template and the head reads the mask token's hidden state (`pooling="mask"`);
            with several (a pool), training draws one per example each time the example is drawn.
        prompt_eval: How a task with a template pool is evaluated (and labelled by an async-KD teacher):
            `"first"` — with the first template; `"average"` (default) — head outputs averaged over the pool
            (chosen on the selection split by `benchmarks/dynamar.py`: mean selection score 63.7 vs 62.9).
        objective: `"supervised"` (classification or regression on the labels) or `"mlm"`: an auxiliary
            masked-language-modelling task over `text_fields` (TARTAN; `hf_async_mtl.mlm`). An MLM task
            needs no labels, is evaluated by its loss and perplexity, never enters the GLUE score and
            cannot be exported; `label_names`, metrics and templates do not apply to it.
        pair_encoding: How a pair task's two texts reach the encoder: `"cross_encoder"` (default: one sequence, a
            linear head on its pooled vector) or `"bi_encoder"` (each text encoded alone, the two pooled vectors
            scored by `pair_head`; `hf_async_mtl.bi_encoder`, docs/bi_encoder.md). Not with prompt templates.
        pair_head: A bi-encoder task's head: `"cosine"` (regression: the cosine of the two vectors in the label's
            units, trained as sentence-transformers' CosineSimilarityLoss on labels rescaled to [0, 1] by
            `regression_range`, which it needs; no parameters) or `"sbert"` (classification: a linear classifier on
            `(u, v, |u - v|, u * v)`). Default: from the task's kind.
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    label_field: str = "label"
    metrics: tuple[str, ...] = None  # type: ignore[assignment]  # None: by the task's kind, set in __post_init__
    main_metric: str = "score"
    greater_is_better: bool = True
    regression_range: tuple[float, float] | None = None
    validation_splits: tuple[str, ...] = ("validation",)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    evaluate_metrics: tuple[str, ...] = ()
    prompt_templates: tuple[str, ...] = ()
    prompt_eval: str = "average"
    objective: str = "supervised"
    pair_encoding: str = CROSS_ENCODER
    pair_head: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"TaskSpec name {self.name!r} is invalid: use lower-case letters, digits and underscores, "
                "starting with a letter (it becomes part of metric keys and file names)."
            )
        for field_name in ("text_fields", "label_names"):  # a string would be split into its characters
            if isinstance(getattr(self, field_name), str):
                raise ValueError(
                    f"Task {self.name!r}: {field_name} must be a sequence of names, e.g. ({getattr(self, field_name)!r},), "
                    f"not the string {getattr(self, field_name)!r}."
                )
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        if len(self.text_fields) not in (1, 2):
            raise ValueError(
                f"Task {self.name!r}: text_fields must name one column (single sentence) or two (a pair), got {self.text_fields!r}."
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Task {self.name!r}: objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.objective == "mlm":
            if self.label_names is not None or self.prompt_templates or self.evaluate_metrics:
                raise ValueError(f"Task {self.name!r}: an MLM task takes no label_names, prompt_templates or evaluate_metrics.")
            # Scored by its loss: lower is better; no label metrics.
            object.__setattr__(self, "metrics", ())
            object.__setattr__(self, "main_metric", "loss")
            object.__setattr__(self, "greater_is_better", False)
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))
            if len(self.label_names) < 2:
                raise ValueError(f"Task {self.name!r}: a classification task needs at least two label names.")
            if len(set(self.label_names)) != len(self.label_names):
                raise ValueError(f"Task {self.name!r}: label_names contain duplicates: {self.label_names!r}.")
        if self.metrics is None:
            object.__setattr__(self, "metrics", default_metrics(self.is_regression))
        if isinstance(self.metrics, str):
            raise ValueError(f"Task {self.name!r}: metrics must be a sequence of metric names, got the string {self.metrics!r}.")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        problem = None if self.is_mlm else metrics_problem(self.metrics, is_regression=self.is_regression, num_labels=self.num_labels)
        if problem:
            raise InputError(f"Task {self.name!r}: {problem}.", option="metrics")
        if isinstance(self.evaluate_metrics, str):
            raise ValueError(
                f"Task {self.name!r}: evaluate_metrics must be a sequence of metric ids, got the string {self.evaluate_metrics!r}."
            )
        object.__setattr__(self, "evaluate_metrics", tuple(self.evaluate_metrics))
        bad_ids = [m for m in self.evaluate_metrics if not isinstance(m, str) or not m.strip()]
        if bad_ids:
            raise ValueError(f"Task {self.name!r}: evaluate_metrics holds invalid metric ids {bad_ids!r}.")
        if len(set(self.evaluate_metrics)) != len(self.evaluate_metrics):
            raise ValueError(f"Task {self.name!r}: evaluate_metrics contain duplicates: {self.evaluate_metrics!r}.")
        if not self.metrics and not self.evaluate_metrics and not self.is_mlm:
            raise ValueError(f"Task {self.name!r}: at least one metric is needed.")
        if self.main_metric != "score" and self.main_metric not in self.metrics and not self.evaluate_metrics and not self.is_mlm:
            raise ValueError(
                f"Task {self.name!r}: main_metric {self.main_metric!r} must be 'score' (mean of metrics) or one of {self.metrics!r}."
            )
        object.__setattr__(self, "validation_splits", tuple(self.validation_splits))
        if self.regression_range is not None:
            if self.label_names is not None:
                raise ValueError(f"Task {self.name!r}: regression_range is only meaningful for regression tasks.")
            low, high = self.regression_range
            if not low < high:
                raise ValueError(f"Task {self.name!r}: regression_range {self.regression_range!r} must have low < high.")
            object.__setattr__(self, "regression_range", (float(low), float(high)))
        if isinstance(self.prompt_templates, str):
            object.__setattr__(self, "prompt_templates", (self.prompt_templates,))
        object.__setattr__(self, "prompt_templates", tuple(self.prompt_templates))
        if len(set(self.prompt_templates)) != len(self.prompt_templates):
            raise ValueError(f"Task {self.name!r}: prompt_templates contain duplicates.")
        for template in self.prompt_templates:
            try:
                check_template(template, self.text_fields)
            except ValueError as error:
                raise ValueError(f"Task {self.name!r}: prompt_templates: {error}") from None
        if self.prompt_eval not in PROMPT_EVAL_MODES:
            raise ValueError(f"Task {self.name!r}: prompt_eval must be one of {PROMPT_EVAL_MODES}, got {self.prompt_eval!r}.")
        self._check_pair_encoding()

    def _check_pair_encoding(self) -> None:
        if self.pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"Task {self.name!r}: pair_encoding must be one of {PAIR_ENCODINGS}, got {self.pair_encoding!r}.")
        if self.pair_encoding != BI_ENCODER:
            if self.pair_head is not None:
                raise ValueError(f"Task {self.name!r}: pair_head {self.pair_head!r} applies to pair_encoding='bi_encoder' only.")
            return
        if self.is_mlm:
            raise ValueError(f"Task {self.name!r}: an MLM task has no pair head; pair_encoding='bi_encoder' applies to supervised tasks.")
        if self.prompt_templates:
            raise ValueError(
                f"Task {self.name!r}: prompt templates put both texts in one sequence around a mask; a bi-encoder "
                "encodes them apart (use one or the other)."
            )
        if self.pair_head is None:
            object.__setattr__(self, "pair_head", default_pair_head(self.is_regression))
        problem = pair_head_problem(
            str(self.pair_head), is_regression=self.is_regression, num_text_fields=len(self.text_fields), label_range=self.regression_range
        )
        if problem:
            raise ValueError(f"Task {self.name!r}: {problem}.")

    @property
    def is_mlm(self) -> bool:
        """True for a masked-language-modelling auxiliary task (`objective="mlm"`)."""
        return self.objective == "mlm"

    @property
    def is_regression(self) -> bool:
        """True when the task predicts one float target instead of a class."""
        return self.label_names is None and not self.is_mlm

    @property
    def is_bi_encoder(self) -> bool:
        """True when the task's two texts are encoded apart and scored by a pair head (`pair_encoding="bi_encoder"`)."""
        return self.pair_encoding == BI_ENCODER

    @property
    def loss_label_range(self) -> tuple[float, float] | None:
        """The range its labels (and outputs) are rescaled from to [0, 1] in its loss: a cosine head's `regression_range`
        (sentence-transformers' CosineSimilarityLoss convention); None for every other head (losses on the labels as given)."""
        return self.regression_range if self.is_bi_encoder and self.pair_head == COSINE_HEAD else None

    @property
    def num_labels(self) -> int:
        """Number of head outputs: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        """Label id → name mapping in the convention of `PretrainedConfig.id2label`."""
        if self.label_names is None:
            return {0: "LABEL_0"}
        return dict(enumerate(self.label_names))

    def head_config(self) -> dict[str, Any]:
        """The JSON-serialisable description of this task's head stored in `MultiTaskConfig`.

        A task with prompt templates adds `pooling: "mask"`, its `text_fields`, `prompt_templates` and
        `prompt_eval`, so a saved or exported model wraps raw inputs exactly as training did. A bi-encoder task adds
        `pair_encoding`, `pair_head`, its `text_fields` and (cosine head) `label_range`, so a saved model rebuilds it.
        """
        if self.is_mlm:  # the vocabulary is the encoder's: the head needs no size of its own
            return {
                "name": self.name,
                "num_labels": 0,
                "problem_type": MLM_PROBLEM_TYPE,
                "id2label": {},
                "text_fields": list(self.text_fields),
            }
        head = {
            "name": self.name,
            "num_labels": self.num_labels,
            "problem_type": "regression" if self.is_regression else "single_label_classification",
            "id2label": {str(k): v for k, v in self.id2label.items()},
        }
        if self.is_bi_encoder:
            head.update(pair_encoding=BI_ENCODER, pair_head=self.pair_head, text_fields=list(self.text_fields))
            if self.loss_label_range is not None:
                head["label_range"] = list(self.loss_label_range)
        if self.prompt_templates:
            head.update(
                pooling="mask",
                text_fields=list(self.text_fields),
                prompt_templates=list(self.prompt_templates),
                prompt_eval=self.prompt_eval,
            )
        return head


def head_mismatches(heads: Sequence[Mapping[str, Any]], specs: Sequence[TaskSpec]) -> list[str]:
    """What differs between saved heads (`MultiTaskConfig.tasks`) and the heads `specs` need; empty when they match.

    Compares the task names, each head's size and kind (classification / regression), its label
    names (`id2label`), how it reads a pair (cross- or bi-encoder, pair head, label range), its prompt
    templates and, when all else matches, the task order (task ids index the heads).
    """
    expected = [spec.head_config() for spec in specs]
    have = {head["name"]: head for head in heads}
    problems = []
    for head in expected:
        got = have.get(head["name"])
        if got is None:
            problems.append(f"no head for task {head['name']!r}")
        elif (got["num_labels"], got["problem_type"]) != (head["num_labels"], head["problem_type"]):
            problems.append(
                f"task {head['name']!r}: head has {got['num_labels']} outputs ({got['problem_type']}), "
                f"the task needs {head['num_labels']} ({head['problem_type']})"
            )
        elif head["problem_type"] not in ("regression", MLM_PROBLEM_TYPE) and head_label_names(got) != head_label_names(head):
            problems.append(f"task {head['name']!r}: head labels {head_label_names(got)}, the task's labels {head_label_names(head)}")
        elif _pair_encoding(got) != _pair_encoding(head):
            problems.append(f"task {head['name']!r}: head is a {_pair_encoding(got)}, the task asks for a {_pair_encoding(head)}")
        elif list(got.get("prompt_templates") or []) != list(head.get("prompt_templates") or []):
            problems.append(
                f"task {head['name']!r}: head trained with prompt templates {list(got.get('prompt_templates') or [])}, "
                f"the task has {list(head.get('prompt_templates') or [])}"
            )
    extra = [head["name"] for head in heads if head["name"] not in {h["name"] for h in expected}]
    if extra:
        problems.append(f"heads for tasks not requested: {extra}")
    if not problems and [h["name"] for h in expected] != [h["name"] for h in heads]:
        problems.append(f"task order differs: model {[h['name'] for h in heads]}, requested {[h['name'] for h in expected]}")
    return problems


def _pair_encoding(head: Mapping[str, Any]) -> str:
    """How a head reads a pair, in words: "cross-encoder", or "bi-encoder (cosine head, labels 0 to 5)"."""
    if head.get("pair_encoding", CROSS_ENCODER) != BI_ENCODER:
        return "cross-encoder"
    label_range = head.get("label_range")
    labels = f", labels {float(label_range[0]):g} to {float(label_range[1]):g}" if label_range else ""
    return f"bi-encoder ({head.get('pair_head')} head{labels})"


def head_label_names(head: Mapping[str, Any]) -> list[str]:
    """A saved head's class names (`MultiTaskConfig.tasks` entry) in label-id order; empty for a regression head."""
    id2label = head.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def check_unique_names(specs: list[TaskSpec] | tuple[TaskSpec, ...]) -> None:
    """Raise a clear error when two task specs share a name."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"Task {spec.name!r} is given twice; task names must be unique.")
        seen.add(spec.name)


def as_column(values: Any, what: str) -> Any:
    """Flatten regression outputs or labels of shape `[N]` or `[N, 1]` to `[N]` (numpy array or tensor alike).

    Anything else is a `ValueError` naming `what`.
    """
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{what} must have shape [N] or [N, 1], got {tuple(values.shape)}.")
    return values


def check_task_specs(task_specs: Any, what: str = "task_specs") -> list[TaskSpec]:
    """`task_specs` as a list, or a `TypeError` unless it is a sequence (any iterable but a mapping) of `TaskSpec`."""
    if isinstance(task_specs, (str, bytes, Mapping)) or not isinstance(task_specs, Iterable):
        hint = " (e.g. list(specs.values()))" if isinstance(task_specs, Mapping) else ""
        raise TypeError(f"{what} must be a list of TaskSpec{hint}, got a {type(task_specs).__name__}.")
    specs = list(task_specs)
    for position, spec in enumerate(specs):
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"{what}[{position}] is a {type(spec).__name__}, not a TaskSpec.")
    return specs
