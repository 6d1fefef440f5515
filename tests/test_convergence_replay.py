"""benchmarks/convergence_replay.py: replaying convergence rules on recorded curves (synthetic curves, no model)."""

from __future__ import annotations

import math
import os

import pytest

from benchmarks.convergence_replay import (
    agreement,
    dev_summary,
    monitor_settings,
    observed_rows,
    render_markdown,
    replay_curve,
    replay_run,
    rule_options,
    summarize_rows,
    transitions,
)
from hf_async_mtl.async_kd.monitor import convergence_floor

# A CoLA-like task on a 300-example selection split: trivial MCC 0, margin 2 / sqrt(300) = 0.115.
N = 300
TRIVIAL = 0.0
FLOOR = convergence_floor(TRIVIAL, ("matthews_correlation",), N, 2.0)
MARGIN = FLOOR - TRIVIAL
REFERENCE = {
    "trivial_value": TRIVIAL,
    "margin": MARGIN,
    "floor": FLOOR,
    "selection_size": N,
    "greater_is_better": True,
    "metrics": ["matthews_correlation"],
}
STEPS = list(range(100, 1100, 100))
# Stuck at the majority class with one blip (the v1 CoLA pattern): nothing learnt.
PLATEAU = [0.0, 0.0, 0.0, 0.08, 0.0, 0.02, -0.01, 0.0, 0.03, 0.0]
# Learns, peaks at step 500, declines.
RISE_AND_DECLINE = [0.0, 0.1, 0.3, 0.45, 0.5, 0.48, 0.40, 0.35, 0.3, 0.3]
V1_SETTINGS = {"patience": 2, "min_steps": 200}


def replay(values, rule, **settings):
    return replay_curve(
        list(zip(STEPS, values)), **{**V1_SETTINGS, **settings}, **rule_options(rule, REFERENCE), trivial=TRIVIAL, margin=MARGIN
    )


def test_margin_is_two_noise_units():
    assert pytest.approx(2 / math.sqrt(N)) == MARGIN


def test_plateau_old_rule_converges_near_trivial_new_rule_does_not():
    old = replay(PLATEAU, "old")
    assert old["converged"] and old["converged_step"] == 600
    assert (old["teacher_step"], old["teacher_value"]) == (400, 0.08)
    assert old["near_trivial"] is True
    new = replay(PLATEAU, "new")
    assert not new["converged"]
    assert new["teacher_step"] is None and new["near_trivial"] is None
    assert new["best_smoothed"] < FLOOR


def test_rise_and_decline_both_converge_new_rule_not_near_trivial():
    old = replay(RISE_AND_DECLINE, "old")
    assert old["converged"] and (old["teacher_step"], old["converged_step"]) == (500, 700)
    assert old["near_trivial"] is False
    new = replay(RISE_AND_DECLINE, "new")
    # Smoothed (pairs): best 0.49 at step 600, then two evaluations without improvement.
    assert new["converged"] and new["converged_step"] == 800
    assert (new["teacher_step"], new["teacher_value"]) == (500, 0.5)
    assert new["near_trivial"] is False


def test_require_improvement_keeps_a_flat_curve_active():
    assert not replay([0.0] * 10, "old")["converged"]


def test_new_rule_needs_a_floor():
    with pytest.raises(ValueError, match="floor"):
        rule_options("new", {})


def _run(method, values, *, tasks=("cola",), version=1, max_steps=1000, dev=None, convergence=None, **settings):
    curves = []
    for i, step in enumerate(STEPS):
        log = {"step": step}
        for task in tasks:
            log[f"eval_{task}_score"] = values[i]
            if dev is not None:
                log[f"eval_{task}_dev_score"] = dev[i]
        curves.append(log)
    run = {
        "profile": "cpu" if version == 1 else "minilm",
        "method": method,
        "seed": 0,
        "tasks": list(tasks),
        "settings": {"kd_patience": 2, "kd_min_steps": 200, "max_steps": max_steps, **settings},
        "curves": curves,
        "convergence": convergence,
    }
    if version == 2:
        run["version"] = 2
    return run


def test_monitor_settings_recover_v1_divisor_and_v2_defaults():
    assert monitor_settings(_run("equal", PLATEAU), 1000) == {"patience": 2, "min_steps": 200}
    assert monitor_settings(_run("pcgrad", PLATEAU, max_steps=200), 1000) == {"patience": 2, "min_steps": 40}
    assert monitor_settings(_run("equal", PLATEAU, version=2), 2400) == {"patience": 3, "min_steps": 0}


def test_replay_run_skips_async_kd_and_replays_true_label_runs():
    refs = {"cola": REFERENCE}
    assert replay_run(_run("async_kd", PLATEAU), refs, 1000) == []
    assert replay_run(_run("imtl_g_async_kd", PLATEAU), refs, 1000) == []
    assert replay_run(_run("equal", PLATEAU, async_kd=True), refs, 1000) == []
    rows = replay_run(_run("equal", PLATEAU), refs, 1000)
    assert [(r["task"], r["rule"], r["converged"], r["near_trivial"]) for r in rows] == [
        ("cola", "old", True, True),
        ("cola", "new", False, None),
        ("cola", "decline", False, None),
        ("cola", "full", False, None),
        ("cola", "decl", False, None),
    ]
    # A single-task run lists one task; a task without a curve is skipped.
    assert {r["task"] for r in replay_run(_run("single_cola", PLATEAU, tasks=("cola",)), refs, 1000)} == {"cola"}
    run = _run("equal", PLATEAU)
    run["tasks"] = ["cola", "rte"]
    assert {r["task"] for r in replay_run(run, refs, 1000)} == {"cola"}


def test_replay_run_v2_reads_dev_at_teacher_and_last():
    dev = [0.0, 0.1, 0.2, 0.3, 0.42, 0.4, 0.38, 0.36, 0.35, 0.33]
    rows = replay_run(_run("equal", RISE_AND_DECLINE, version=2, dev=dev), {"cola": REFERENCE}, 2400)
    old, new, decline, full, decl = rows
    assert (full["converged_step"], full["teacher_step"]) == (new["converged_step"], new["teacher_step"])  # no lucky first value here
    # The decline trigger fires once the smoothed value is more than the margin below its best smoothed
    # (0.5 + 0.48) / 2 = 0.49: at 800 the fall is 0.115, inside the margin 2/sqrt(300) = 0.1155; at 900 it is 0.165.
    assert (decline["converged_step"], decline["teacher_step"]) == (900, 500)
    # v2: patience 3 -> old converges at 800 (3 evaluations after the 500 peak).
    assert (old["converged_step"], old["teacher_step"]) == (800, 500)
    assert old["dev_at_teacher"] == 0.42 and old["dev_at_last"] == 0.33
    # A decline required: smoothed best 0.49 (step 600), margin 2 (1 - 0.49^2) / sqrt(300) = 0.088 at that level;
    # the fall passes it at 800 (0.115), patience (3) is met at 900.
    assert (decl["converged_step"], decl["teacher_step"], decl["dev_at_teacher"]) == (900, 500, 0.42)
    assert new["dev_at_teacher"] == 0.42
    summary = dev_summary(rows)
    assert [(r["rule"], r["converged_pairs"]) for r in summary] == [("decl", 1), ("decline", 1), ("full", 1), ("new", 1), ("old", 1)]
    assert summary[1]["mean_teacher_minus_last"] == pytest.approx(0.09)


def test_summaries_count_pairs_convergences_and_near_trivial():
    refs = {"cola": REFERENCE}
    rows = replay_run(_run("equal", PLATEAU), refs, 1000) + replay_run(_run("static", RISE_AND_DECLINE), refs, 1000)
    summary = {r["rule"]: r for r in summarize_rows(rows, ("rule", "profile"))}
    assert (summary["old"]["pairs"], summary["old"]["converged"], summary["old"]["near_trivial"]) == (2, 2, 1)
    assert summary["old"]["near_trivial_per_convergence"] == 0.5
    assert (summary["new"]["pairs"], summary["new"]["converged"], summary["new"]["near_trivial"]) == (2, 1, 0)
    (trans,) = transitions(rows)
    assert trans["method"] == "equal" and not trans["new_converged"] and not trans["learnt_later"]
    (agree,) = agreement(rows)
    assert (agree["both"], agree["old_only"], agree["new_only"], agree["neither"]) == (1, 1, 0, 0)


def test_observed_rows_read_the_report_and_check_the_replay():
    report = {
        "cola": {
            "converged": True,
            "converged_step": 600,
            "best_step": 400,
            "metric_at_convergence": 0.08,
            "history": [[s, v] for s, v in zip(STEPS, PLATEAU)],
        }
    }
    rows = observed_rows(_run("async_kd", PLATEAU, convergence=report), {"cola": REFERENCE}, 1000)
    (row,) = rows
    assert row["rule"] == "old" and row["near_trivial"] is True and row["replay_matches"] is True
    report["cola"]["converged_step"] = 700
    assert observed_rows(_run("async_kd", PLATEAU, convergence=report), {"cola": REFERENCE}, 1000)[0]["replay_matches"] is False
    # A true-label run has no report to observe.
    assert observed_rows(_run("equal", PLATEAU), {"cola": REFERENCE}, 1000) == []


def test_render_markdown_states_what_is_compared():
    refs = {"cola": REFERENCE}
    rows = replay_run(_run("equal", PLATEAU, version=2, dev=PLATEAU), refs, 2400)
    obs = observed_rows(
        _run(
            "async_kd",
            PLATEAU,
            convergence={"cola": {"converged": True, "converged_step": 600, "best_step": 400, "metric_at_convergence": 0.08}},
        ),
        refs,
        1000,
    )
    obs_summary = summarize_rows(obs, ("rule", "profile"))
    for row in obs_summary:
        row.update(replay_checked=1, replay_matches=1)
    obs_per_task = summarize_rows(obs, ("rule", "profile", "task"))
    for row in obs_per_task:
        row["near_trivial_runs"] = ["async_kd_s0"]
    result = {
        "commit": "abc",
        "dirty": False,
        "z": 2.0,
        "sources": [{"dir": "x", "runs_used": 2}],
        "references": {"minilm": {"cola": {**REFERENCE, "predictor": "majority class 1"}}},
        "summary": summarize_rows(rows, ("rule", "profile")),
        "per_task": summarize_rows(rows, ("rule", "profile", "task")),
        "agreement": agreement(rows),
        "transitions": transitions(rows),
        "dev_summary": dev_summary(rows),
        "observed": {"summary": obs_summary, "per_task": obs_per_task, "rows": obs},
    }
    text = render_markdown(result)
    assert "What is compared" in text and "near-trivial" in text and "v2 (minilm)" in text
    assert "dev at teacher" in text and "async_kd_s0" in text


GLUE_DIR = os.environ.get(
    "GLUE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "glue_data")
)


@pytest.mark.skipif(not os.path.isdir(os.path.join(GLUE_DIR, "CoLA")), reason="GLUE data not available")
def test_v1_references_from_glue_labels():
    from benchmarks.convergence_replay import compute_references

    refs = compute_references("cpu", GLUE_DIR, tasks=("cola", "rte"))
    assert refs["cola"]["selection_size"] == 300 and refs["cola"]["train_pool_size"] == 1000
    assert refs["cola"]["trivial_value"] == 0.0 and refs["cola"]["margin"] == pytest.approx(2 / math.sqrt(300))
    assert refs["rte"]["selection_size"] == 249 and refs["rte"]["margin"] == pytest.approx(1 / math.sqrt(249))
