"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hf_async_mtl.metrics import (
    METRICS,
    compute_task_metrics,
    glue_score,
    main_metric_value,
)
from hf_async_mtl.tasks import TaskSpec

BINARY = TaskSpec(name="binary", text_fields=("sentence",), label_names=("no", "yes"), metrics=("f1", "accuracy"))
REGRESSION = TaskSpec(name="reg", text_fields=("a", "b"), metrics=("pearson", "spearmanr"), regression_range=(0, 5))


def test_metric_registry_names() -> None:
    assert set(METRICS) == {"accuracy", "f1", "matthews_correlation", "pearson", "spearmanr"}


def test_accuracy() -> None:
    assert METRICS["accuracy"](np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == pytest.approx(0.5)


def test_f1_binary_positive_class() -> None:
    # tp=2 (idx 0, 2), fp=1 (idx 3), fn=1 (idx 1): precision=2/3, recall=2/3 -> F1=2/3.
    predictions = np.array([1, 0, 1, 1, 0])
    labels = np.array([1, 1, 1, 0, 0])
    assert METRICS["f1"](predictions, labels) == pytest.approx(2 / 3)
    # The positive class is 1: swapping the classes changes F1 (tp=1, fp=1, fn=1 -> 0.5).
    assert METRICS["f1"](1 - predictions, 1 - labels) == pytest.approx(0.5)


def test_f1_without_positives_is_zero() -> None:
    assert METRICS["f1"](np.array([0, 0]), np.array([0, 0])) == 0.0


def test_mcc_by_hand_2x2() -> None:
    # labels/preds: tp=3, tn=2, fp=1, fn=2
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    predictions = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    tp, tn, fp, fn = 3, 2, 1, 2
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert expected == pytest.approx(4 / math.sqrt(4 * 5 * 3 * 4))
    assert METRICS["matthews_correlation"](predictions, labels) == pytest.approx(expected)


def test_mcc_perfect_inverse_and_constant() -> None:
    labels = np.array([0, 1, 0, 1])
    assert METRICS["matthews_correlation"](labels, labels) == pytest.approx(1.0)
    assert METRICS["matthews_correlation"](1 - labels, labels) == pytest.approx(-1.0)
    # Constant predictions: 0/0, reported as 0.0 (sklearn convention), never NaN.
    assert METRICS["matthews_correlation"](np.ones(4, dtype=int), labels) == 0.0


def test_mcc_multiclass() -> None:
    # Confusion (rows=true, cols=pred): [[1,1,0],[0,1,0],[0,0,1]]; n=4, correct=3,
    # t=[2,1,1], p=[1,2,1]: cov = 3*4 - (2+2+1) = 7; sqrt((16-6)*(16-6)) = 10 -> 0.7.
    labels = np.array([0, 0, 1, 2])
    predictions = np.array([0, 1, 1, 2])
    assert METRICS["matthews_correlation"](predictions, labels) == pytest.approx(0.7)


def test_pearson_by_hand() -> None:
    # x centred: [-1, 0, 1]; y centred: [-2, 1, 1] -> r = 3 / sqrt(2 * 6) = sqrt(3)/2.
    assert METRICS["pearson"](np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 4.0])) == pytest.approx(math.sqrt(3) / 2)


def test_spearman_with_ties_uses_average_ranks() -> None:
    # ranks(x) = [1, 2, 3, 4]; ranks(y) with ties = [1, 2.5, 2.5, 4]
    # centred: [-1.5, -.5, .5, 1.5] and [-1.5, 0, 0, 1.5] -> 4.5 / sqrt(5 * 4.5) = 3/sqrt(10).
    x = np.array([0.1, 0.2, 0.3, 0.9])
    y = np.array([1.0, 3.0, 3.0, 7.0])
    assert METRICS["spearmanr"](x, y) == pytest.approx(3 / math.sqrt(10))
    # Monotone but non-linear: Spearman is exactly 1 while Pearson is not.
    z = np.exp(np.array([1.0, 2.0, 3.0, 10.0]))
    assert METRICS["spearmanr"](z, np.arange(4.0)) == pytest.approx(1.0)
    assert METRICS["pearson"](z, np.arange(4.0)) < 0.9


@pytest.mark.parametrize("name", ["pearson", "spearmanr"])
def test_constant_predictions_give_zero_correlation(name: str) -> None:
    value = METRICS[name](np.full(4, 2.5), np.array([0.0, 1.0, 2.0, 3.0]))
    assert value == 0.0 and not math.isnan(value)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_input_checks(name: str) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        METRICS[name](np.array([1, 0]), np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="empty"):
        METRICS[name](np.array([]), np.array([]))


def test_compute_task_metrics_classification_takes_argmax() -> None:
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5], [1.0, 0.9], [0.2, 0.1]])  # -> [1, 0, 1, 0, 0]
    labels = np.array([1, 1, 1, 0, 1])
    result = compute_task_metrics(BINARY, logits, labels)
    # tp=2, fp=0, fn=2 -> F1 = 4/6; accuracy 3/5.
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["score"] == pytest.approx((2 / 3 + 0.6) / 2)
    assert set(result) == {"f1", "accuracy", "score"}
    assert all(type(v) is float for v in result.values())


def test_compute_task_metrics_regression_accepts_column_vectors() -> None:
    predictions = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    labels = np.array([1.0, 4.0, 4.0])
    result = compute_task_metrics(REGRESSION, predictions, labels)
    assert result["pearson"] == pytest.approx(math.sqrt(3) / 2, rel=1e-6)
    # ranks [1,2,3] vs [1,2.5,2.5]: centred [-1,0,1] and [-1,.5,.5] -> 1.5/sqrt(2*1.5) = sqrt(3)/2.
    assert result["spearmanr"] == pytest.approx(math.sqrt(3) / 2)
    assert result["score"] == pytest.approx(math.sqrt(3) / 2, rel=1e-6)
    same = compute_task_metrics(REGRESSION, predictions[:, 0], labels[:, None])
    assert same == pytest.approx(result)


@pytest.mark.parametrize(
    ("spec", "predictions", "labels", "message"),
    [
        (BINARY, np.zeros((3, 3)), np.array([0, 1, 0]), r"shape \[N, 2\]"),
        (BINARY, np.zeros(3), np.array([0, 1, 0]), r"shape \[N, 2\]"),
        (BINARY, np.zeros((3, 2)), np.array([0, 1]), "3 predictions but 2 labels"),
        (BINARY, np.zeros((0, 2)), np.array([], dtype=int), "empty"),
        (BINARY, np.zeros((2, 2)), np.array([-1, -1]), "an unlabelled test split"),
        (BINARY, np.zeros((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (BINARY, np.array([[np.nan, 0.0], [0.0, 1.0]]), np.array([0, 1]), "NaN"),
        (REGRESSION, np.zeros((3, 2)), np.zeros(3), r"\[N\] or \[N, 1\]"),
        (REGRESSION, np.zeros(3), np.zeros(4), "3 predictions but 4 labels"),
        (REGRESSION, np.array([]), np.array([]), "empty"),
    ],
)
def test_compute_task_metrics_errors(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_task_metrics(spec, predictions, labels)


def test_builtin_metric_names_are_the_ones_task_specs_know() -> None:
    from hf_async_mtl.tasks import CLASSIFICATION_METRICS, REGRESSION_METRICS

    assert set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS) == set(METRICS)


def test_metrics_default_by_the_kind_of_task() -> None:
    """A regression spec without `metrics` is scored by Pearson / Spearman, not by an accuracy of 0 on floats."""
    regression = TaskSpec(name="sim", text_fields=("a", "b"), label_names=None)
    assert regression.metrics == ("pearson", "spearmanr")
    assert TaskSpec(name="sent", text_fields=("s",), label_names=("neg", "pos")).metrics == ("accuracy",)
    scores = compute_task_metrics(regression, np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.4, 0.8]))
    assert scores["score"] == pytest.approx(1.0) and "accuracy" not in scores


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"label_names": None, "metrics": ("accuracy",)}, r"Task 'odd': metric 'accuracy' scores class ids, but the task is a regression"),
        (
            {"label_names": ("a", "b"), "metrics": ("pearson",)},
            r"metric 'pearson' scores regression targets, but the task is a classification",
        ),
        ({"label_names": ("a", "b", "c"), "metrics": ("f1",)}, r"metric 'f1' is the binary F1 of label id 1, but the task has 3 labels"),
        ({"label_names": ("a", "b"), "metrics": ("bleu",)}, r"unknown metric 'bleu'.*\(evaluate modules go in evaluate_metrics\)"),
        ({"label_names": ("a", "b"), "metrics": ("f1_macro",)}, r"unknown metric 'f1_macro' \(did you mean 'f1'\?\)"),
        ({"label_names": ("a", "b"), "metrics": "accuracy"}, r"metrics must be a sequence of metric names, got the string 'accuracy'"),
    ],
)
def test_task_spec_refuses_metrics_that_cannot_score_it(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        TaskSpec(name="odd", text_fields=("s",), **fields)
    assert getattr(caught.value, "option", "metrics") == "metrics"


def test_main_metric_value() -> None:
    metrics = {"f1": 0.8, "accuracy": 0.6, "score": 0.7}
    assert main_metric_value(BINARY, metrics) == pytest.approx(0.7)
    spec = dataclasses.replace(BINARY, name="binary_f1", main_metric="f1")
    assert main_metric_value(spec, metrics) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="'score'.*accuracy"):
        main_metric_value(BINARY, {"accuracy": 0.5})


def test_glue_score_is_mean_of_task_scores() -> None:
    per_task = {
        "cola": {"matthews_correlation": 0.5, "score": 0.5},
        "mrpc": {"f1": 0.9, "accuracy": 0.8, "score": 0.85},
        "stsb": {"pearson": 0.8, "spearmanr": 0.9, "score": 0.85},
    }
    # Mean of task scores (0.5 + 0.85 + 0.85) / 3, not of all 5 individual metrics (0.78).
    assert glue_score(per_task) == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError, match="at least one task"):
        glue_score({})
    with pytest.raises(ValueError, match="rte"):
        glue_score({"rte": {"accuracy": 0.7}})


# ---- `evaluate` modules (TaskSpec.evaluate_metrics), loaded offline from local scripts ----------

# A local `evaluate` metric script. Separate import lines: evaluate's dependency scan misreads
# `import a, b`. It returns numbers, a list and a string (the last two are not reported).
MAX_ERROR_SCRIPT = """
import datasets
import evaluate


class MaxError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Largest absolute error, the exact-match rate and the example count.",
            citation="",
            inputs_description="predictions, references: numbers",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        errors = [abs(p - r) for p, r in zip(predictions, references)]
        return {
            "max_error": max(errors),
            "accuracy": sum(e == 0 for e in errors) / len(errors),
            "count": len(errors),
            "errors": errors,
            "note": "not a number",
        }
"""

EXACT_MATCH_SCRIPT = MAX_ERROR_SCRIPT.replace("class MaxError", "class ExactMatchRate").replace(
    """"max_error": max(errors),""", """"score": 1.0 - max(errors),"""
)


def write_metric(directory, name: str, text: str = MAX_ERROR_SCRIPT) -> str:
    path = directory / f"{name}.py"
    path.write_text(text)
    return str(path)


def test_evaluate_metric_keys_join_builtins_with_prefix_on_collision(tmp_path, monkeypatch) -> None:
    import evaluate

    script = write_metric(tmp_path, "max_error")
    exact = write_metric(tmp_path, "exact_match_rate", EXACT_MATCH_SCRIPT)
    loads = []
    real_load = evaluate.load
    monkeypatch.setattr(evaluate, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    spec = TaskSpec(
        name="binary_eval",
        text_fields=("s",),
        label_names=("no", "yes"),
        metrics=("f1", "accuracy"),
        evaluate_metrics=(script, exact),
    )
    assert loads == []  # configuration only: nothing loaded when the spec is built
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # argmax -> [1, 0, 1, 1]
    labels = np.array([1, 1, 1, 0])
    result = compute_task_metrics(spec, logits, labels)
    # Built-ins: tp=2, fp=1, fn=1 -> F1 2/3; accuracy 2/4.
    # max_error.py: |errors| = [0, 1, 0, 1] -> max_error 1, its "accuracy" 0.5 collides -> prefixed.
    # exact_match_rate.py: "score" collides with the built-in -> prefixed; its "accuracy" and "count"
    # collide with the built-in and with max_error.py's keys -> prefixed.
    assert result == pytest.approx(
        {
            "f1": 2 / 3,
            "accuracy": 0.5,
            "max_error": 1.0,
            "max_error_accuracy": 0.5,
            "count": 4.0,
            "exact_match_rate_score": 0.0,
            "exact_match_rate_accuracy": 0.5,
            "exact_match_rate_count": 4.0,
            "score": (2 / 3 + 0.5) / 2,  # the mean of the built-ins only, as before
        }
    )
    assert all(type(v) is float for v in result.values())
    assert len(loads) == 2
    compute_task_metrics(spec, logits, labels)
    assert len(loads) == 2  # cached after the first computation


def test_evaluate_only_regression_task_with_evaluate_main_metric(tmp_path) -> None:
    script = write_metric(tmp_path, "max_error")
    spec = TaskSpec(
        name="reg_eval",
        text_fields=("a", "b"),
        metrics=(),
        evaluate_metrics=(script,),
        main_metric="max_error",
        greater_is_better=False,
    )
    result = compute_task_metrics(spec, np.array([[1.0], [2.5], [3.0]]), np.array([1.5, 2.5, 0.0]))
    # errors [0.5, 0, 3]: max 3, exact 1/3, count 3; no built-in metric, so score averages these.
    assert result == pytest.approx({"max_error": 3.0, "accuracy": 1 / 3, "count": 3.0, "score": (3 + 1 / 3 + 3) / 3})
    assert main_metric_value(spec, result) == 3.0
    typo = dataclasses.replace(spec, main_metric="max_eror")
    with pytest.raises(ValueError, match="main metric 'max_eror' not among the computed metrics"):
        compute_task_metrics(typo, np.array([1.0]), np.array([1.0]))


def test_evaluate_metric_missing_script_fails_in_one_line(tmp_path) -> None:
    missing = str(tmp_path / "no_such_metric.py")
    spec = TaskSpec(name="broken", text_fields=("s",), label_names=("no", "yes"), evaluate_metrics=(missing,))
    with pytest.raises(ValueError) as info:
        compute_task_metrics(spec, np.array([[0.0, 1.0]]), np.array([1]))
    message = str(info.value)
    assert message.startswith(f"Task 'broken': evaluate metric {missing!r} cannot be loaded")
    assert "\n" not in message


def test_evaluate_metric_failing_compute_names_task_and_metric(tmp_path) -> None:
    script = write_metric(tmp_path, "divide", MAX_ERROR_SCRIPT.replace("max(errors)", "1 / 0"))
    spec = TaskSpec(name="odd_eval", text_fields=("s",), label_names=("no", "yes"), evaluate_metrics=(script,))
    with pytest.raises(ValueError, match=r"Task 'odd_eval': evaluate metric .*divide\.py' failed \(ZeroDivisionError"):
        compute_task_metrics(spec, np.array([[0.0, 1.0]]), np.array([1]))


def test_evaluate_metrics_are_configuration() -> None:
    import json

    spec = TaskSpec(
        name="cfg",
        text_fields=("s",),
        label_names=("no", "yes"),
        evaluate_metrics=["m/a.py", "accuracy"],
        main_metric="a_key",
    )
    assert spec.evaluate_metrics == ("m/a.py", "accuracy")
    # Round-trips through JSON the way run_glue_mtl reads a custom tasks file; heads are unchanged.
    entry = json.loads(json.dumps(dataclasses.asdict(spec)))
    assert TaskSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}) == spec
    assert spec.head_config() == dataclasses.replace(spec, evaluate_metrics=(), main_metric="score").head_config()
    assert hash(spec) == hash(dataclasses.replace(spec))
    with pytest.raises(ValueError, match="sequence of metric ids"):
        TaskSpec(name="cfg", text_fields=("s",), evaluate_metrics="m/a.py")
    with pytest.raises(ValueError, match="duplicates"):
        TaskSpec(name="cfg", text_fields=("s",), evaluate_metrics=("x", "x"))
    with pytest.raises(ValueError, match="at least one metric"):
        TaskSpec(name="cfg", text_fields=("s",), metrics=())
    with pytest.raises(ValueError, match="main_metric 'a_key'"):
        TaskSpec(name="cfg", text_fields=("s",), main_metric="a_key")


def test_a_modules_nan_stays_its_own_and_never_reaches_the_score(tmp_path) -> None:
    """A module's NaN (a correlation of constant predictions) made the score NaN, hence the GLUE average and every
    selection by them (NaN never compares greater): it stays under its key; the score averages finite values."""
    script = write_metric(tmp_path, "nan_corr", MAX_ERROR_SCRIPT.replace('"max_error": max(errors)', '"corr": float("nan")'))
    spec = TaskSpec(name="reg", text_fields=("a",), metrics=(), evaluate_metrics=(script,), main_metric="corr")
    result = compute_task_metrics(spec, np.array([[1.0], [1.0], [1.0]]), np.array([1.0, 2.0, 1.0]))
    assert math.isnan(result["corr"]) and result["score"] == pytest.approx((2 / 3 + 3) / 2)
    only_nan = write_metric(
        tmp_path,
        "only_nan",
        MAX_ERROR_SCRIPT.replace(
            '"max_error": max(errors),\n            "accuracy": sum(e == 0 for e in errors) / len(errors),\n            "count": len(errors),',
            '"corr": float("nan"),',
        ),
    )
    spec = TaskSpec(name="reg", text_fields=("a",), metrics=(), evaluate_metrics=(only_nan,), main_metric="corr")
    assert compute_task_metrics(spec, np.array([[1.0], [1.0]]), np.array([1.0, 2.0]))["score"] == 0.0


def test_ece_or_perplexity_for_selection_is_lower_is_better(tmp_path) -> None:
    """transformers takes any metric not ending in "loss" as higher-is-better: selecting on ECE picked the worst."""
    from hf_async_mtl import MultiTaskTrainingArguments

    for metric, expected in (("eval_cola_ece", False), ("mlm_cola_perplexity", False), ("eval_glue_score", True)):
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path), metric_for_best_model=metric, eval_strategy="steps")
        assert args.greater_is_better is expected, metric
    given = MultiTaskTrainingArguments(output_dir=str(tmp_path), metric_for_best_model="cola_ece", greater_is_better=True)
    assert given.greater_is_better is True  # the user's choice stands


def test_a_task_scored_by_lower_is_better_modules_stays_out_of_the_glue_score(tmp_path, tokenizer, tiny_data) -> None:
    """eval_glue_score averages higher-is-better scores: a task scored only by error modules (greater_is_better
    False) raised it by doing worse."""
    import dataclasses as dc

    from tests.conftest import TASKS
    from tests.test_trainer import make_trainer

    script = write_metric(tmp_path, "max_error")
    similarity = dc.replace(TASKS[1], metrics=(), evaluate_metrics=(script,), main_metric="max_error", greater_is_better=False)
    trainer = make_trainer(tmp_path, tokenizer, tiny_data)
    trainer.task_specs["similarity"] = similarity
    metrics = trainer.evaluate()
    assert "eval_similarity_score" in metrics and metrics["eval_glue_score"] == pytest.approx(metrics["eval_sentiment_score"])
