"""The ceiling view (benchmarks/ceiling.py) on hand-built curves where best − final is known."""

import numpy as np
import pytest

from benchmarks.ceiling import ceiling, per_seed_oracle_gap, run_curves

TASKS = ("a", "b")
STEPS = (100, 200, 300)


def _curves(values: dict[str, dict[int, list[float]]]) -> dict:
    return {t: {s: list(zip(STEPS, v)) for s, v in by_seed.items()} for t, by_seed in values.items()}


def test_seed_mean_best_minus_final_differs_from_the_per_seed_oracle_gap():
    # Task a: seed 0 peaks at 200 (+4 over final), seed 1 at 100 (+2): mean curve 11, 12, 9 -> ceiling 3.
    # Task b: rises in one seed and falls in the other: mean curve flat at 5 -> ceiling 0, per-seed gaps 0 and 2.
    curves = _curves({"a": {0: [10, 14, 10], 1: [12, 10, 8]}, "b": {0: [4, 5, 6], 1: [6, 5, 4]}})
    result = ceiling(curves, tasks=TASKS, n_bootstrap=2000)
    assert result["tasks"]["a"]["value"] == pytest.approx(3.0)
    assert result["tasks"]["a"]["best_step"] == 200 and result["tasks"]["a"]["final_step"] == 300
    assert result["tasks"]["b"]["value"] == pytest.approx(0.0)
    assert result["tasks"]["b"]["best_step"] == 100  # a flat curve: the first maximum
    assert result["glue5"]["value"] == pytest.approx(1.5)
    assert result["glue5"]["n_seeds"] == 2
    gap = per_seed_oracle_gap(curves, tasks=TASKS)
    # seed 0: (4 + 0) / 2 = 2; seed 1: (4 + 2) / 2 = 3
    assert gap["by_seed"] == {"0": pytest.approx(2.0), "1": pytest.approx(3.0)}
    assert gap["mean"] == pytest.approx(2.5)
    assert gap["mean"] > result["glue5"]["value"]


def test_bootstrap_interval_over_two_seeds_spans_the_three_possible_resamples():
    # Resamples of two seeds: {0,0}, {1,1} or {0,1}; task a's best − final is 4, 4 (seed 1 alone: 12 − 8) or 3.
    curves = _curves({"a": {0: [10, 14, 10], 1: [12, 10, 8]}, "b": {0: [4, 5, 6], 1: [6, 5, 4]}})
    result = ceiling(curves, tasks=TASKS, n_bootstrap=4000)
    low, high = result["tasks"]["a"]["interval"]
    assert low == pytest.approx(3.0) and high == pytest.approx(4.0)
    # task b: {0,0} -> 0, {1,1} -> 2, {0,1} -> 0
    low, high = result["tasks"]["b"]["interval"]
    assert low == pytest.approx(0.0) and high == pytest.approx(2.0)
    # GLUE-5 (here: 2 tasks) resamples both tasks with the same seeds: {0,0} -> 2, {1,1} -> 3, {0,1} -> 1.5
    low, high = result["glue5"]["interval"]
    assert low == pytest.approx(1.5) and high == pytest.approx(3.0)
    # fixed RNG seed: the same interval again
    assert ceiling(curves, tasks=TASKS, n_bootstrap=4000)["glue5"]["interval"] == result["glue5"]["interval"]


def test_identical_seeds_give_a_degenerate_interval_and_one_seed_none():
    curves = _curves({"a": {0: [1, 3, 2], 1: [1, 3, 2], 2: [1, 3, 2]}, "b": {0: [0, 0, 0], 1: [0, 0, 0], 2: [0, 0, 0]}})
    result = ceiling(curves, tasks=TASKS, n_bootstrap=500)
    assert result["tasks"]["a"]["value"] == pytest.approx(1.0)
    assert result["tasks"]["a"]["interval"] == [pytest.approx(1.0), pytest.approx(1.0)]
    single = ceiling(_curves({"a": {0: [1, 3, 2]}, "b": {0: [0, 1, 1]}}), tasks=TASKS)
    assert single["tasks"]["a"]["interval"] is None and single["glue5"]["interval"] is None
    assert single["glue5"]["value"] == pytest.approx(0.5)


def test_only_common_steps_count_and_a_missing_task_leaves_no_glue5():
    # seed 1 stopped at step 200: the mean curve ends at 200 for both seeds
    curves = {"a": {0: [(100, 1.0), (200, 5.0), (300, 0.0)], 1: [(100, 1.0), (200, 3.0)]}}
    result = ceiling(curves, tasks=TASKS, n_bootstrap=100)
    assert result["tasks"]["a"]["final_step"] == 200 and result["tasks"]["a"]["value"] == pytest.approx(0.0)
    assert "b" not in result["tasks"] and result["glue5"] is None


def test_run_curves_reads_dev_keys_scaled_and_by_seed():
    runs = [
        {
            "seed": s,
            "curves": [{"step": 200, "eval_a_dev_score": 0.5 + s / 10, "eval_a_score": 0.1}, {"step": 400, "eval_a_dev_score": 0.4}],
        }
        for s in (0, 1)
    ]
    curves = run_curves(runs, "eval_{task}_dev_score", tasks=TASKS)
    assert curves["a"] == {0: [(200, 50.0), (400, 40.0)], 1: [(200, 60.0), (400, 40.0)]}
    assert curves["b"] == {}
    result = ceiling(curves, tasks=("a",), n_bootstrap=100)
    assert result["tasks"]["a"]["value"] == pytest.approx(15.0)
    assert result["glue5"]["value"] == pytest.approx(15.0)
    assert np.isfinite(result["glue5"]["interval"]).all()
