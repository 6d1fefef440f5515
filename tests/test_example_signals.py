"""benchmarks.example_signals: signals recomputed from per-example selection predictions, bootstrap margins, replay."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from benchmarks.example_signals import (
    replay_examples,
    replay_run,
    signal_matrix,
    signal_values,
    task_score,
    trivial_signal,
)
from hf_async_mtl.async_kd.bootstrap import resample_indices

RNG = np.random.default_rng(0)


def test_scores_match_sklearn_and_scipy_on_every_resample() -> None:
    labels = RNG.integers(0, 2, 300).astype(np.float64)
    p_true = np.clip(0.5 + 0.3 * RNG.standard_normal(300), 0.01, 0.99)
    predicted = np.where(p_true > 0.5, labels, 1 - labels)
    draws = resample_indices("t", 300, 5)
    for metrics, reference in (
        (("matthews_correlation",), lambda y, p: matthews_corrcoef(y, p)),
        (("f1", "accuracy"), lambda y, p: (f1_score(y, p) + accuracy_score(y, p)) / 2),
        (("accuracy",), accuracy_score),
    ):
        assert float(task_score(metrics, p_true, labels)) == pytest.approx(reference(labels, predicted), abs=1e-12)
        batched = task_score(metrics, p_true[draws], labels[draws])
        expected = [reference(labels[d], predicted[d]) for d in draws]
        np.testing.assert_allclose(batched, expected, atol=1e-12)
    scores = RNG.uniform(0, 5, 200)
    guesses = scores + RNG.standard_normal(200)
    expected = (pearsonr(guesses, scores)[0] + spearmanr(guesses, scores)[0]) / 2
    assert float(task_score(("pearson", "spearmanr"), guesses, scores)) == pytest.approx(expected, abs=1e-12)
    # a constant prediction: the correlation is undefined and counts as 0, as in the library
    assert float(task_score(("pearson", "spearmanr"), np.full(200, 2.5), scores)) == 0.0


def test_continuous_signals_and_their_trivial_values() -> None:
    labels = np.array([1, 1, 1, 0], dtype=np.float64)
    p_true = np.array([0.9, 0.6, 0.4, 0.8])
    assert signal_values("prob", (), False, p_true, labels) == pytest.approx(0.675)
    assert signal_values("loss", (), False, p_true, labels) == pytest.approx(np.mean(np.log(p_true)))
    assert signal_values("brier", (), False, p_true, labels) == pytest.approx(-2 * np.mean((1 - p_true) ** 2))
    # training prior 3:1 for class 1: the trivial predictor's true-class probability is 0.75 on class-1 rows, 0.25 else
    train = np.array([1, 1, 1, 0])
    assert trivial_signal("prob", (), False, train, labels) == pytest.approx((3 * 0.75 + 0.25) / 4)
    assert trivial_signal("score", ("accuracy",), False, train, labels) == pytest.approx(0.75)  # majority class 1
    assert trivial_signal("score", ("matthews_correlation",), False, train, labels) == 0.0
    # regression: every continuous signal is minus the MSE; the trivial predictor is the training mean
    targets = np.array([1.0, 2.0, 3.0])
    assert signal_values("brier", (), True, np.array([1.0, 2.0, 4.0]), targets) == pytest.approx(-1 / 3)
    assert trivial_signal("loss", (), True, np.array([2.0, 2.0]), targets) == pytest.approx(-2 / 3)


def _predictions(levels: list[float], n: int = 400, spread: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[E, n] true-class probabilities: a fixed per-example offset (examples differ a lot) plus each evaluation's level."""
    rng = np.random.default_rng(seed)
    offsets = spread * rng.standard_normal(n)
    values = np.clip(np.array(levels)[:, None] + offsets[None, :], 0.01, 0.99)
    return values, rng.integers(0, 2, n).astype(np.float64)


STEPS = [100 * (i + 1) for i in range(9)]


def test_paired_margin_sees_a_small_decline_the_examples_noise_would_hide() -> None:
    # every example's probability falls by 0.03 after step 400: tiny against the spread between examples (0.25), but
    # the same examples at every evaluation, so the paired difference has almost no noise
    values, labels = _predictions([0.60, 0.66, 0.70, 0.72, 0.72, 0.69, 0.66, 0.63, 0.60])
    matrix = signal_matrix("prob", (), False, values, labels, resample_indices("t", 400, 200))
    unpaired = np.std(matrix[4, 1:], ddof=1)
    assert unpaired > 0.01  # one evaluation's value is uncertain by more than 0.01 on 400 examples
    result = replay_examples(STEPS, matrix, trivial=0.5, shape="decl", patience=3, min_steps=0)
    assert result["converged"] and result["converged_step"] < STEPS[-1]
    assert result["teacher_step"] in (400, 500)  # the best raw value: the parameters async-KD would freeze


def test_a_flat_curve_is_a_plateau_but_not_a_decline() -> None:
    values, labels = _predictions([0.60, 0.68, 0.72, 0.72, 0.72, 0.72, 0.72, 0.72, 0.72])
    noise = np.random.default_rng(5).normal(0, 0.004, size=values.shape)  # per example, per evaluation jitter
    matrix = signal_matrix("prob", (), False, np.clip(values + noise, 0.01, 0.99), labels, resample_indices("t", 400, 200))
    assert not replay_examples(STEPS, matrix, trivial=0.5, shape="decl", patience=3, min_steps=0)["converged"]
    assert replay_examples(STEPS, matrix, trivial=0.5, shape="plateau", patience=3, min_steps=0)["converged"]


def test_the_floor_keeps_a_task_near_its_trivial_predictor_from_converging() -> None:
    # rises to 0.52 and falls back, never clear of the trivial 0.5 by two bootstrap sds
    values, labels = _predictions([0.49, 0.51, 0.52, 0.51, 0.50, 0.49, 0.48, 0.47, 0.46], spread=0.3)
    matrix = signal_matrix("prob", (), False, values, labels, resample_indices("t", 400, 200))
    for shape in ("plateau", "decl"):
        assert not replay_examples(STEPS, matrix, trivial=0.5, shape=shape, patience=3, min_steps=0)["converged"]
    assert replay_examples(STEPS, matrix, trivial=0.3, shape="plateau", patience=3, min_steps=0)["converged"]


def test_replay_run_recomputes_the_logged_score_and_judges_against_dev() -> None:
    values, labels = _predictions([0.60, 0.66, 0.70, 0.72, 0.72, 0.69, 0.66, 0.63, 0.60], n=600)
    logged = task_score(("accuracy",), values, labels[None, :])
    curves = [
        {"step": s, "eval_sst2_score": float(v), "eval_sst2_dev_score": 0.80 + 0.01 * min(i, 4) - 0.01 * max(0, i - 4)}
        for i, (s, v) in enumerate(zip(STEPS, logged))
    ]
    run = {"method": "equal", "seed": 0, "tasks": ["sst2"], "curves": curves, "_source": "benchmarks/results/x/per_run/equal_s0.json"}
    arrays = {"sst2/steps": np.array(STEPS), "sst2/values": values.astype(np.float16), "sst2/labels": labels.astype(np.float32)}
    rows, checks = replay_run(run, arrays, {"sst2": np.array([0, 1, 1])}, {"sst2": 872}, draws=100, subsets=(None, 250, "half"))
    assert checks[0]["max_score_gap"] < 0.01  # float16 storage moves a probability across 0.5 rarely
    assert {r["split"] for r in rows} == {600, 300, 250} and {r["signal"] for r in rows} == {
        "score_formula",
        "score",
        "loss",
        "prob",
        "brier",
    }
    prob = next(r for r in rows if (r["signal"], r["rule"], r["split"]) == ("prob", "decl", 600))
    assert prob["converged_early"] and prob["dev_at_teacher"] == pytest.approx(0.84 if prob["teacher_step"] == 500 else 0.83)
    assert prob["recovered"] > 0 and prob["false"] is False
    # half: the signal reads 300 examples, judged on dev and on the other 300's score curve (selection data only)
    halves = [r for r in rows if r["split_label"] == "half"]
    assert {r["judged_on"] for r in halves} == {"dev", "held-out half"} and {r["split"] for r in halves} == {300}
    held = next(r for r in halves if (r["signal"], r["rule"], r["judged_on"]) == ("prob", "decl", "held-out half"))
    assert held["converged_early"] and held["dev_final"] == pytest.approx(float(task_score(("accuracy",), values[-1], labels)), abs=0.1)
    assert held["recovered"] > 0  # the held-out half's accuracy also peaked at the teacher's step


def test_the_declared_choice_reads_the_held_out_halves_only():
    from benchmarks.example_signals import choose_signal

    def row(signal, rule, recovered, false, judged_on="held-out half", split="half", group="equal"):
        return {
            "run_set": "r",
            "group": group,
            "judged_on": judged_on,
            "split_label": split,
            "signal": signal,
            "rule": rule,
            "curves": 25,
            "converged": 5,
            "false": false,
            "glue5_recovered": recovered,
            "glue5_seeds": 5,
        }

    base = [row("score_formula", "decl", 0.0, 0), row("score", "decl", 0.35, 0), row("prob", "plateau", 0.30, 0)]
    # dev-judged and other-split rows, however good, are not read
    noise = [row("brier", "decl", 5.0, 0, judged_on="dev"), row("loss", "decl", 5.0, 0, split="stored")]
    assert choose_signal(base + noise, "r")["chosen"] == ["score", "decl"]
    assert choose_signal([row("score_formula", "decl", 0.0, 0), row("score", "decl", 0.08, 0)], "r")["chosen"] is None  # < 0.10
    assert choose_signal([row("score_formula", "decl", 0.0, 0), row("score", "decl", 0.5, 1)], "r")["chosen"] is None  # more false
    assert choose_signal([row("score", "decl", 0.5, 0)], "r")["chosen"] is None  # no default row: nothing to beat
