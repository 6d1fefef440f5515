"""`TaskSpec`s of the nine GLUE tasks.

Text fields are named like the columns of the Hub dataset `nyu-mll/glue`, and `label_names` follow
the order of its `ClassLabel` features, so a label id means the same thing whether the data came
from the Hub or from the original TSV files (see `glue_tasks.formats`).
"""

from __future__ import annotations

from hf_async_mtl.tasks import TaskSpec

__all__ = ["GLUE_TASKS", "get_glue_task"]

_PAIR = ("sentence1", "sentence2")

GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="cola",
            text_fields=("sentence",),
            label_names=("unacceptable", "acceptable"),
            metrics=("matthews_correlation",),
        ),
        TaskSpec(name="sst2", text_fields=("sentence",), label_names=("negative", "positive")),
        TaskSpec(
            name="mrpc",
            text_fields=_PAIR,
            label_names=("not_equivalent", "equivalent"),
            metrics=("f1", "accuracy"),
        ),
        TaskSpec(
            name="stsb",
            text_fields=_PAIR,
            label_names=None,
            metrics=("pearson", "spearmanr"),
            regression_range=(0.0, 5.0),
        ),
        TaskSpec(
            name="qqp",
            text_fields=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"),
            metrics=("f1", "accuracy"),
        ),
        TaskSpec(
            name="mnli",
            text_fields=("premise", "hypothesis"),
            label_names=("entailment", "neutral", "contradiction"),
            validation_splits=("validation_matched", "validation_mismatched"),
        ),
        TaskSpec(
            name="qnli",
            text_fields=("question", "sentence"),
            label_names=("entailment", "not_entailment"),
        ),
        TaskSpec(name="rte", text_fields=_PAIR, label_names=("entailment", "not_entailment")),
        # WNLI's ClassLabel order is the reverse of RTE's: id 1 = entailment, as in the raw files.
        TaskSpec(name="wnli", text_fields=_PAIR, label_names=("not_entailment", "entailment")),
    )
}


def get_glue_task(name: str) -> TaskSpec:
    """Return the `TaskSpec` of GLUE task `name` (lower-case Hub config name, e.g. `"sst2"`).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return GLUE_TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASKS)}.") from None
