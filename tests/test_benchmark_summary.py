"""The statistics the GLUE-5 benchmark's conclusions rest on (benchmarks/summarize.py)."""

import numpy as np
import pytest

from benchmarks.summarize import TASKS, _standard_error, aggregate, markdown


def _run(method: str, seed: int, glue5: float) -> dict:
    """One synthetic run whose five task scores are all `glue5` (×100)."""
    final = {f"dev_{t}_score": glue5 / 100 for t in TASKS}
    curves = [{f"eval_{t}_score": 0.5 for t in TASKS}, {f"eval_{t}_score": 0.6 for t in TASKS},
              {**{f"eval_{t}_score": 0.6 for t in TASKS}, "eval_mrpc_score": 0.55}]
    return {"method": method, "seed": seed, "tasks": list(TASKS), "final_dev": final, "best_selected_dev": final,
            "curves": curves, "wall_seconds": 10.0, "peak_rss_mb": 100.0}


def _single(task: str, seed: int, score: float) -> dict:
    run = _run(f"single_{task}", seed, score)
    run["tasks"] = [task]
    run["final_dev"] = {f"dev_{task}_score": score / 100}
    run["best_selected_dev"] = {f"dev_{task}_score": (score + 1) / 100}
    return run


def test_aggregate_uses_sample_std_and_keeps_runs_by_seed():
    table = aggregate([_run("equal", 0, 50.0), _run("equal", 1, 52.0), _run("equal", 2, 54.0)])
    mean, std = table["equal"]["final"]["glue5"]
    assert mean == pytest.approx(52.0)
    assert std == pytest.approx(2.0)  # ddof=1; the population std would be 1.63
    assert table["equal"]["final"]["glue5_by_seed"] == pytest.approx({"0": 50.0, "1": 52.0, "2": 54.0})
    # MRPC ends 5 points below its best selection-split score; the other tasks end at their best.
    assert table["equal"]["decline"]["mrpc"] == pytest.approx(-5.0)
    assert table["equal"]["decline"]["sst2"] == pytest.approx(0.0)
    assert table["equal"]["oracle_gap"] == pytest.approx(1.0)


def test_single_run_has_zero_std():
    table = aggregate([_run("famo", 0, 48.0)])
    assert table["famo"]["final"]["glue5"] == pytest.approx((48.0, 0.0))


def test_standard_error_unpaired_and_paired_by_seed():
    a = aggregate([_run("async_kd", s, v) for s, v in enumerate([54.0, 53.0, 51.0])])["async_kd"]["final"]
    b = aggregate([_run("imtl_g", s, v) for s, v in enumerate([53.0, 53.5, 48.5])])["imtl_g"]["final"]
    text = _standard_error(a, b)
    unpaired = np.sqrt(np.var([54, 53, 51], ddof=1) / 3 + np.var([53, 53.5, 48.5], ddof=1) / 3)
    assert f"standard error of the difference {unpaired:.2f}" in text
    differences = [1.0, -0.5, 2.5]
    paired = np.std(differences, ddof=1) / np.sqrt(3)
    assert f"paired by seed: {np.mean(differences):+.2f} ± {paired:.2f}" in text
    assert "+1.00, -0.50, +2.50" in text


def test_standard_error_needs_two_seeds_and_pairs_only_shared_seeds():
    one = aggregate([_run("static", 0, 50.0)])["static"]["final"]
    three = aggregate([_run("equal", s, 50.0 + s) for s in range(3)])["equal"]["final"]
    assert _standard_error(one, three) == "1 vs 3 seed(s): no error estimate"
    two = aggregate([_run("dwa", s, 49.0) for s in (1, 2)])["dwa"]["final"]
    text = _standard_error(three, two)
    assert "paired by seed: +2.50" in text  # seeds 1 and 2 only: (51 - 49 + 52 - 49) / 2
    no_shared = aggregate([_run("rlw", s, 49.0) for s in (5, 6)])["rlw"]["final"]
    assert "paired" not in _standard_error(three, no_shared)


def test_markdown_compares_async_kd_with_the_best_baseline_not_a_control():
    runs = [_run("async_kd", s, 53.0 + s) for s in range(3)]
    runs += [_run("imtl_g", s, 51.0 + s) for s in range(3)]
    runs += [_run("equal_all_tasks", s, 60.0) for s in range(3)]  # a control, never "the best baseline"
    runs += [_single(t, s, 52.5 + s) for s in range(3) for t in TASKS]  # not a multi-task baseline
    text = markdown(aggregate(runs), "profile")
    assert "async_kd − best baseline (imtl_g): **+2.00**" in text
    assert "async_kd − single-task fine-tuning: **+0.50**" in text
    assert "mean ± sample std over seeds" in text


def test_single_task_runs_make_one_glue5_entry_per_complete_seed():
    runs = [_single(t, 0, 50.0) for t in TASKS] + [_single(t, 1, 54.0) for t in TASKS]
    runs += [_single("cola", 2, 90.0)]  # seed 2 lacks four tasks: not a GLUE-5 score
    entry = aggregate(runs)["single_task"]
    assert entry["seeds"] == [0, 1]
    assert entry["final"]["glue5"] == pytest.approx((52.0, np.std([50, 54], ddof=1)))
    assert entry["best_selected"]["glue5_by_seed"] == pytest.approx({"0": 51.0, "1": 55.0})
