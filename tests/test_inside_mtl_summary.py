"""benchmarks/inside_mtl.py --summarize on synthetic runs: the numbers its three tables rest on."""

import json

import numpy as np
import pytest

import benchmarks.glue5_references
from benchmarks import inside_mtl
from benchmarks.inside_mtl import CLASSIFICATION, TASKS


def _bins(right: int, wrong: int) -> list[dict]:
    """10 bins with every example at confidence 0.85 (bin 8)."""
    bins = [{"lower": b / 10, "upper": (b + 1) / 10, "count": 0, "accuracy": None, "confidence": None} for b in range(10)]
    bins[8] = {"lower": 0.8, "upper": 0.9, "count": right + wrong, "accuracy": right / (right + wrong), "confidence": 0.85}
    return bins


def _history(tasks, scale: float) -> list[dict]:
    """Training loss falls 1.0 -> 0.2 while the selection score rises 0.5 -> 0.5 + 0.3 * scale."""
    logs = []
    for i, step in enumerate((10, 20, 30, 40, 50)):
        logs.append({"step": step, **{f"train_loss_{t}": 1.0 - 0.2 * i for t in tasks}})
        logs.append({"step": step, **{f"eval_{t}_score": 0.5 + 0.075 * i * scale for t in tasks}})
    return logs


def _record(run: str, seed: int, score: float, ece: float, tasks=TASKS) -> dict:
    dev = {f"eval_{t}_score": score for t in tasks}
    dev.update({f"eval_{t}_ece": ece for t in tasks if t in CLASSIFICATION})
    record = {
        "run": run,
        "seed": seed,
        "dev": dev,
        "log_history": _history(tasks, 0.5 if len(tasks) > 1 else 1.0),
        "finetune_after_mtl": None,
        "diagnostics": None,
        "reliability": {
            t: _bins(right=8 if run == "equal" else 17, wrong=2 if run == "equal" else 3) for t in tasks if t in CLASSIFICATION
        },
    }
    if run in ("equal", "pcgrad"):
        cosine = np.eye(len(tasks)).tolist()
        cosine[0][1] = cosine[1][0] = -0.5  # cola and sst2 conflict
        record["diagnostics"] = [{"step": 10, "tasks": list(tasks), "cosine": cosine, "conflict_fraction": 0.1}]
    if run == "equal":
        record["finetune_after_mtl"] = {t: {"before": score, "after": score + 0.02 + 0.01 * seed} for t in tasks}
    return record


@pytest.fixture
def summarized(tmp_path, monkeypatch):
    monkeypatch.setattr(inside_mtl, "OUT_DIR", str(tmp_path))
    monkeypatch.setattr(benchmarks.glue5_references, "trivial_predictor", lambda task, glue_dir, selection_max: {"score": 10.0})
    (tmp_path / "per_run").mkdir()
    records = []
    for seed in (0, 1):
        records += [
            _record("equal", seed, 0.60, 0.10 + 0.01 * seed),
            _record("pcgrad", seed, 0.58, 0.12),
            _record("async_kd", seed, 0.61, 0.05),
            _record("async_kd_ens3", seed, 0.62, 0.04 - 0.01 * seed),
        ]
        records += [_record(f"single_{t}", seed, 0.55 + 0.01 * seed, 0.2, tasks=(t,)) for t in TASKS]
    records.append(_record("single_cola", 2, 0.5, 0.2, tasks=("cola",)))  # an incomplete seed: no single-task GLUE-5
    for record in records:
        (tmp_path / "per_run" / f"{record['run']}_s{record['seed']}.json").write_text(json.dumps(record))
    inside_mtl.summarize()
    return tmp_path, json.loads((tmp_path / "inside_mtl.json").read_text()), (tmp_path / "inside_mtl.md").read_text()


def test_gap_conflict_and_plots(summarized):
    out, summary, _ = summarized
    rows = {(r["method"], r["seed"], r["task"]): r for r in summary["gap"]["rows"]}
    assert len(rows) == 2 * 2 * len(TASKS)
    # At equal training loss the single-task score is 0.075 * i higher per point of 0.5 scale: mean over i = 0..4.
    assert rows[("equal", 0, "sst2")]["gap"] == pytest.approx(np.mean([0.0375 * i for i in range(5)]))
    assert rows[("equal", 0, "cola")]["conflict_fraction"] == pytest.approx(0.25)  # 1 of cola's 4 pairs
    assert rows[("equal", 0, "mrpc")]["conflict_fraction"] == 0.0
    for name in ("gap_equal_s0.png", "gap_pcgrad_s0.png", "conflicts_equal_s0.png", "reliability.png"):
        assert (out / name).stat().st_size > 1000, name


def test_calibration_paired_by_seed_and_pooled(summarized):
    _, summary, markdown = summarized
    assert summary["ece"]["equal"]["sst2"] == pytest.approx([10.0, 11.0])
    stat = summary["ece"]["async_kd_ens3 - equal"]["sst2"]
    assert stat["n"] == 2 and stat["per_seed"] == pytest.approx([4.0 - 10.0, 3.0 - 11.0])
    # Pooled bins: equal 16/20 right at 0.85 -> ECE 5.0; async_kd 34/40 right -> 0.0.
    assert summary["ece"]["pooled_over_seeds"]["cola"]["equal (n=2)"] == pytest.approx(5.0)
    assert summary["ece"]["pooled_over_seeds"]["cola"]["async_kd (n=2)"] == pytest.approx(0.0, abs=1e-9)
    assert "| async_kd_ens3 − equal (paired by seed, 95 % t) | -7.0 [" in markdown


def test_finetune_table_per_task_and_paired(summarized):
    _, summary, markdown = summarized
    glue5 = summary["finetune"]["glue5"]
    assert glue5["multi-task"] == pytest.approx({"0": 60.0, "1": 60.0})
    assert glue5["multi-task → fine-tuned"] == pytest.approx({"0": 62.0, "1": 63.0})
    assert glue5["single-task"] == pytest.approx({"0": 55.0, "1": 56.0})  # seed 2 has one single-task run only
    assert summary["finetune"]["per_task"]["single-task"]["cola"] == pytest.approx([55.0, 56.0, 50.0])
    assert summary["finetune"]["multi-task → fine-tuned - single-task"]["per_seed"] == pytest.approx([7.0, 7.0])
    assert "| trivial predictor (majority class / training mean) | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.00 |" in markdown
