"""benchmarks.signal_replay: the loss signal's decisions and the false-convergence count, on synthetic curves."""

from __future__ import annotations

import math

import pytest

from benchmarks.convergence_replay import replay_curve
from benchmarks.signal_replay import TASKS, judge, loss_spread, signal_options, summarize, trivial_loss
from hf_async_mtl.async_kd.monitor import noise_margin

# A classification task on 500 selection examples: trivial loss ln 2 (balanced prior), score floor well below the curves.
REFERENCE = {"metrics": ["accuracy"], "selection_size": 500, "floor": 0.55, "trivial_loss": math.log(2), "greater_is_better": True}
MARGIN = 0.05  # the loss margin z * s
STEPS = [100 * (i + 1) for i in range(9)]


def _replay(losses: list[float], signal: str = "loss", shape: str = "decl") -> dict:
    options = signal_options(signal, shape, REFERENCE, MARGIN)
    assert options is not None
    return replay_curve(list(zip(STEPS, losses)), patience=3, min_steps=0, **options)


def test_loss_signal_converges_when_the_loss_rises_beyond_noise() -> None:
    rising = [0.69, 0.55, 0.45, 0.40, 0.42, 0.48, 0.55, 0.62, 0.70]  # best smoothed 0.41 at step 500, then up 0.2
    for signal in ("loss", "loss_nofloor"):
        result = _replay(rising, signal)
        assert result["converged"] and result["converged_step"] < STEPS[-1]
        assert result["teacher_step"] == 400  # the lowest raw loss: the parameters that would be frozen


def test_loss_signal_does_not_converge_on_a_flat_curve() -> None:
    # falls, then flat within the margin (0.05): a plateau is not a decline
    flat = [0.69, 0.50, 0.42, 0.40, 0.42, 0.40, 0.43, 0.41, 0.42]
    assert not _replay(flat)["converged"]
    assert not _replay(flat, "loss_nofloor")["converged"]
    # the plateau shape (no decline required) does converge on it: the difference between the two rule shapes
    assert _replay(flat, shape="plateau")["converged"]


def test_loss_floor_blocks_a_loss_never_better_than_trivial() -> None:
    # overconfident: the loss dips a little, never below trivial − margin, then rises far
    curve = [0.70, 0.68, 0.66, 0.67, 0.75, 0.85, 0.95, 1.05, 1.15]
    assert not _replay(curve, "loss")["converged"]
    assert _replay(curve, "loss_nofloor")["converged"]


def test_false_convergence_is_counted_against_the_final_dev_value() -> None:
    result = {"converged": True, "converged_step": 500, "teacher_step": 300, "last_step": 900}
    margin = noise_margin(0.80, ("accuracy",), 400, 2.0)  # 0.04 at 80 % on 400 examples
    # dev at the teacher step below the final by more than the margin: false, even though the dev curve's best is later
    dev = [(300, 0.70), (600, 0.85), (900, 0.80)]
    verdict = judge(result, dev, ("accuracy",), 400)
    assert verdict["dev_final"] == 0.80 and verdict["dev_margin"] == pytest.approx(margin)
    assert verdict["false"] is True and verdict["recovered"] == pytest.approx(-10.0)
    # below the dev curve's best (0.85) by more than the margin, but within noise of the final value: not false
    dev = [(300, 0.78), (600, 0.85), (900, 0.80)]
    verdict = judge(result, dev, ("accuracy",), 400)
    assert verdict["false"] is False and verdict["recovered"] == pytest.approx(-2.0)
    # converged at the last evaluation: not a convergence, nothing judged
    late = {**result, "converged_step": 900}
    assert judge(late, dev, ("accuracy",), 400)["converged_early"] is False
    assert judge(late, dev, ("accuracy",), 400)["false"] is None
    # no dev curve (v1): nothing computable
    assert judge(result, None, ("accuracy",), 400)["false"] is None


def test_summary_counts_and_glue5_recovered() -> None:
    rows = []
    for seed in (0, 1):
        for task in TASKS:
            converged = task == "rte"
            rows.append(
                {
                    "run_set": "s",
                    "group": "equal",
                    "seed": seed,
                    "task": task,
                    "converged_early": converged,
                    "converged_step": 400 if converged else None,
                    "dev_final": 0.6,
                    "false": (seed == 1) if converged else None,
                    "recovered": (2.0 if seed == 0 else -6.0) if converged else None,
                }
            )
    (row,) = summarize(rows, ("run_set",))
    assert (row["curves"], row["converged"], row["false"], row["judged"]) == (10, 2, 1, 2)
    assert row["mean_recovered_per_convergence"] == pytest.approx(-2.0)
    assert row["glue5_recovered"] == pytest.approx((2.0 / 5 - 6.0 / 5) / 2)


def test_loss_spread_and_trivial_loss() -> None:
    records = [
        {"task": "rte", "method": "equal", "loss": [(100, 0.6), (200, 0.7)]},
        {"task": "rte", "method": "equal", "loss": [(100, 0.8), (200, 0.7)]},
        {"task": "rte", "method": "single_rte", "loss": [(100, 0.5)]},  # one seed: no spread
    ]
    spread = loss_spread(records)
    assert spread["rte"] == pytest.approx(math.sqrt(0.02) / 2)  # median of sd 0.1414 (step 100) and 0 (step 200)
    assert spread["cola"] is None
    assert trivial_loss(False, 2, [0, 0, 0, 1], [0, 1]) == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
    assert trivial_loss(True, 1, [1.0, 3.0], [1.0, 3.0]) == pytest.approx(1.0)


def test_selection_predictions_keep_each_evaluations_true_class_probability_and_regression_output(tmp_path, tokenizer, tiny_data):
    """The recorded values reproduce the logged selection losses: mean −log p(true class) is the cross-entropy, mean
    squared error of the regression outputs the MSE (float16 storage and batch-mean weighting: 1 % tolerance)."""
    import numpy as np

    from benchmarks.selection_predictions import SelectionPredictions
    from tests.test_trainer import make_trainer

    train, evaluation = tiny_data
    sets = {name: {"selection": dataset, "dev": dataset} for name, dataset in evaluation.items()}
    trainer = make_trainer(
        tmp_path, tokenizer, (train, sets), eval_strategy="steps", eval_steps=2, max_steps=4, per_device_eval_batch_size=64
    )
    recorder = SelectionPredictions.attach(trainer)
    trainer.train()
    recorder.save(str(tmp_path / "p.npz"))
    saved = np.load(tmp_path / "p.npz")
    logs = {log["step"]: log for log in trainer.state.log_history if "eval_sentiment_loss" in log}
    assert list(saved["sentiment/steps"]) == list(saved["similarity/steps"]) == [2, 4] == sorted(logs)
    assert saved["sentiment/values"].shape == (2, len(evaluation["sentiment"])) and saved["sentiment/values"].dtype == np.float16
    for row, step in enumerate([2, 4]):
        p = saved["sentiment/values"][row].astype(np.float64)
        assert np.all((p > 0) & (p < 1))
        assert -np.log(p).mean() == pytest.approx(logs[step]["eval_sentiment_loss"], rel=1e-2)
        errors = saved["similarity/values"][row].astype(np.float64) - saved["similarity/labels"]
        assert (errors**2).mean() == pytest.approx(logs[step]["eval_similarity_loss"], rel=1e-2)
    assert sorted(saved["sentiment/labels"].tolist()) == sorted(evaluation["sentiment"]["labels"])
