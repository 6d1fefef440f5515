"""benchmarks.regime_pick: the declared selection rule of the #42 regime search, on synthetic candidates."""

from __future__ import annotations

import json

import pytest

from benchmarks.regime_pick import TASKS, outcome, parse_cpu_logs

TRIVIAL = {"cola": 0.0, "sst2": 50.92, "mrpc": 74.80, "stsb": 0.0, "rte": 47.29}


def _run(seed: int, final: dict[str, float], drop: float, losses=(0.7, 0.4)) -> dict:
    """Equal weighting: every task peaks at `final + drop` at step 200 and ends at `final` at step 400 (dev, 0..1)."""
    curves = []
    for step, extra in ((100, 0.0), (200, drop), (300, drop / 2), (400, 0.0)):
        log = {"step": step, "eval_glue_score": 0.5}
        log.update({f"eval_{t}_dev_score": (final[t] + extra) / 100 for t in TASKS})
        curves.append(log)
    logs = [{"step": 100, "loss": losses[0], "train_loss_rte": losses[0]}, {"step": 400, "loss": losses[1], "train_loss_rte": losses[1]}]
    return {"method": "equal", "seed": seed, "curves": curves, "train_logs": logs, "wall_seconds": 600.0}


def _write(root, name: str, runs: list[dict]) -> None:
    folder = root / f"glue5_{name}" / "per_run"
    folder.mkdir(parents=True)
    for run in runs:
        (folder / f"equal_s{run['seed']}.json").write_text(json.dumps(run))


@pytest.fixture
def results(tmp_path):
    (tmp_path / "glue5_minilm").mkdir()
    refs = {"trivial_predictor": {t: {"score": v} for t, v in TRIVIAL.items()}}
    (tmp_path / "glue5_minilm" / "references.json").write_text(json.dumps(refs))
    return tmp_path


GOOD = {"cola": 20.0, "sst2": 85.0, "mrpc": 80.0, "stsb": 82.0, "rte": 58.0}


def test_the_largest_sound_ceiling_wins_and_unsound_candidates_are_out(results):
    _write(results, "regime_cap", [_run(0, GOOD, 1.0), _run(1, GOOD, 1.0)])
    # the largest ceiling, but RTE ends at 52.0: below the better constant predictor (52.71), so unsound
    _write(results, "regime_cap_long", [_run(0, {**GOOD, "rte": 52.0}, 3.0), _run(1, {**GOOD, "rte": 52.0}, 3.0)])
    # a diverging run: the last training loss is not below the first
    _write(results, "regime_long", [_run(0, GOOD, 2.5), _run(1, GOOD, 2.5, losses=(0.7, 0.9))])
    _write(results, "regime_cap_lr2e4", [_run(0, GOOD, 2.0)])  # one seed: not eligible
    result = outcome({}, str(results), ("regime_cap", "regime_cap_long", "regime_long", "regime_cap_lr2e4"))
    rows = {r["candidate"]: r for r in result["candidates"]}
    assert rows["regime_cap_long"]["soundness"]["below_trivial"] == ["rte"]
    assert rows["regime_long"]["soundness"]["divergence"] and not rows["regime_long"]["soundness"]["sound"]
    assert not rows["regime_cap_lr2e4"]["complete"]
    assert rows["regime_cap"]["ceiling"]["glue5"]["value"] == pytest.approx(1.0)
    assert result["pick"] == "regime_cap" and not result["reaches_target"] and not result["finished"]


def test_within_005_the_candidate_with_fewer_steps_wins(results):
    _write(results, "regime_cap_long", [_run(s, GOOD, 2.0) for s in (0, 1)])  # 3600 steps
    _write(results, "regime_cap_linear", [_run(s, GOOD, 1.97) for s in (0, 1)])  # 1800 steps, 0.03 lower
    result = outcome({}, str(results), ("regime_cap_long", "regime_cap_linear"))
    assert result["pick"] == "regime_cap_linear" and result["reaches_target"]


def test_the_target_is_reached_when_a_sound_candidate_reaches_it_even_if_the_tie_rule_picks_another(results):
    _write(results, "regime_cap_long", [_run(s, GOOD, 1.52) for s in (0, 1)])  # 3600 steps, above 1.5
    _write(results, "regime_cap_linear", [_run(s, GOOD, 1.48) for s in (0, 1)])  # 1800 steps, within 0.05, below 1.5
    result = outcome({}, str(results), ("regime_cap_long", "regime_cap_linear"))
    assert result["pick"] == "regime_cap_linear" and result["reaches_target"]
    from benchmarks.regime_pick import markdown

    assert "no sound candidate reaches" not in markdown(result) and "fewer steps" in markdown(result)


def test_cpu_times_come_from_the_time_line_after_each_run_header(tmp_path):
    log = tmp_path / "runner.log"
    log.write_text(
        "=== run regime_cap_long equal seed 0 2026-12-06T13:08:03+00:00 commit a\n"  # killed: no time line
        "=== run regime_cap_long equal seed 0 2026-12-06T20:50:36+00:00 commit a\n"
        "cpu: real 1428.430 s, user 2517.991 s, sys 47.254 s\n"
        "=== #41 next\ncpu: real 1321.550 s, user 1320.692 s, sys 6.785 s\n"  # another issue's run: no header, ignored
        "=== run regime_cap_long equal seed 1 2026-12-06T22:02:39+00:00 commit a\n"  # killed: no time line of its own
        "=== #41 next\ncpu: real 1327.0 s, user 1300.0 s, sys 27.0 s\n"  # the next job's time is not seed 1's
    )
    assert parse_cpu_logs([str(log)]) == {"regime_cap_long/0": pytest.approx(2565.245)}
