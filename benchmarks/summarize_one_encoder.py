"""Summarise the one-encoder benchmark (issue #41, `benchmarks/one_encoder.md`): results.md, summary.json, plots.

    python -m benchmarks.summarize_one_encoder benchmarks/results/one_encoder

Views (dev ×100), per task and GLUE-5:

- **final** (primary): the last evaluation of a training arm; for `mt_ft` the dev score of each task's fine-tuned
  model (the models that arm serves); for the merges the dev score of the merge chosen on the selection splits;
- **selected**: the evaluation with the best selection GLUE score (one checkpoint for all tasks, first on ties;
  `summarize_v2.run_views`); `mt_ft` and the merges select on the selection splits already: same as final.

The five single-task runs of a seed make the `single` arm (a task missing from a seed leaves that cell out; its
GLUE-5 needs all five). Each arm − single is paired by seed (seeds both have; mean of the differences, 95 % t
interval on n − 1 df) with the Welch interval (unpaired, Welch–Satterthwaite df) beside it. Every cell says its n
when it differs from the row's, so partial results (some arms, some seeds) summarise without failing.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.summarize_v2 import load_runs, mean_std, paired_stats, run_views

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
COLUMNS = (*TASKS, "glue5")
VIEWS = ("final", "selected")
ZERO_SHOT_STSB = 86.84  # frozen all-MiniLM-L6-v2, cosine of the two sentences (benchmarks/results/glue5_minilm/references.json)
PRIMARY = "primary"
GOAL_LOWER_END = -0.3
ARM_ORDER = (
    "single",
    "equal",
    "primary",
    "bi_stsb",
    "unshared2",
    "task_lora",
    "uncertainty",
    "mt_ft",
    "merge_ta",
    "merge_ties",
    "merge_dare",
)
MERGE_ORDER = ("merge_ta", "merge_ties", "merge_dare")
ARM_TITLES = {
    "single": "1 five single-task models",
    "equal": "2 equal weighting",
    "uncertainty": "3 uncertainty weighting",
    "task_lora": "4 per-task LoRA r=8, trained base",
    "unshared2": "5 unshared top-2",
    "bi_stsb": "6 bi-encoder STS-B",
    "primary": "7 **primary**: unshared top-2 + bi-encoder STS-B",
    "mt_ft": "8 multi-task → per-task fine-tuning",
    "merge_ta": "9 merge: task arithmetic",
    "merge_ties": "9 merge: TIES (per-tensor trim, as peft)",
    "merge_dare": "9 merge: DARE",
}


# ---- per run ----------------------------------------------------------------------------------------------


def _percent(scores: dict[str, Any] | None) -> dict[str, float]:
    return {t: 100 * float(v) for t, v in (scores or {}).items() if t in TASKS and v is not None}


def views_of(run: dict) -> dict[str, dict[str, float]]:
    """`{view: {task: dev ×100}}` of one run (see the module docstring)."""
    if run.get("kind") == "merge":
        final = _percent(run.get("final_dev"))
        return {"final": final, "selected": dict(final)}
    if run.get("finetuned_dev") is not None:  # mt_ft: the fine-tuned models, each selected on its selection split
        final = _percent(run["finetuned_dev"])
        return {"final": final, "selected": dict(final)}
    if run.get("curves"):
        views = run_views(run)["views"]
        return {"final": dict(views["final"]), "selected": dict(views["selected"])}
    final = _percent(run.get("final_dev"))
    return {"final": final, "selected": {}}


def _glue5(scores: dict[str, float]) -> float | None:
    return float(np.mean([scores[t] for t in TASKS])) if all(t in scores for t in TASKS) else None


# A run alone on this machine keeps both cores busy: CPU time / wall time 1.69-1.93 in every run known to have run
# alone. Below this share other jobs held the cores, and its times say nothing about the arm (its scores are unaffected).
ALONE_CPU_SHARE = 1.5


# The CPU a run's times were measured on. Runs from commits before `benchmarks/provenance.py` recorded
# `machine.cpu_model` take it from `<results dir>/cpu_models.json` ({"runs": {"<arm>_s<seed>": model}}, written from
# the session notes); times are compared only within one CPU model.
CPU_MODELS_FILE = "cpu_models.json"
UNRECORDED_CPU = "unrecorded CPU"
MIXED_CPUS = "mixed CPUs"  # a single-task seed whose five runs did not all run on one CPU model: not timed


def load_cpu_models(results_dir: str) -> dict[str, str]:
    """`<arm>_s<seed>` → CPU model from `results_dir/cpu_models.json` (empty when absent)."""
    path = os.path.join(results_dir, CPU_MODELS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle)
    runs = recorded.get("runs") if isinstance(recorded, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(v, str) for v in runs.values()):
        raise ValueError(f'{path}: expected {{"runs": {{"<arm>_s<seed>": "<cpu model>"}}}}')
    return dict(runs)


def cpu_model(run: dict, recorded: dict[str, str] | None = None) -> str:
    """The run's CPU model: its provenance's `machine.cpu_model`, else the recorded one, else `UNRECORDED_CPU`."""
    machine = (run.get("provenance") or {}).get("machine") or {}
    if machine.get("cpu_model"):
        return str(machine["cpu_model"])
    return (recorded or {}).get(f"{run.get('arm') or run.get('method')}_s{run.get('seed')}", UNRECORDED_CPU)


def contended(run: dict) -> bool:
    """Whether a run's times were inflated by other jobs (CPU / wall below `ALONE_CPU_SHARE`); unknown counts as not."""
    wall, cpu = run.get("wall_seconds"), run.get("cpu_seconds")
    return bool(wall and cpu is not None and cpu / wall < ALONE_CPU_SHARE)


def arm_entries(runs: list[dict], cpu_models: dict[str, str] | None = None) -> dict[str, dict[int, dict]]:
    """arm → seed → `{"views": {view: {column: value}}, "wall_seconds", "cpu_seconds", "cpu_model", "parameters_served",
    "encoders_served", "tasks"}`; the single-task runs of a seed are one `single` entry (sums of times and parameters;
    its CPU model only when all five ran on one)."""
    entries: dict[str, dict[int, dict]] = defaultdict(dict)
    singles: dict[int, list[dict]] = defaultdict(list)
    for run in runs:
        arm = str(run.get("arm") or run["method"])
        if arm.startswith("single_"):
            singles[int(run["seed"])].append(run)
            continue
        views = views_of(run)
        entries[arm][int(run["seed"])] = {
            "views": {v: {**views[v], "glue5": _glue5(views[v])} for v in VIEWS},
            "wall_seconds": run.get("wall_seconds"),
            "cpu_seconds": run.get("cpu_seconds"),
            "contended": contended(run),
            "cpu_model": cpu_model(run, cpu_models),
            "parameters_served": run.get("parameters_served"),
            "encoders_served": run.get("encoders_served"),
            "tasks": sorted(views["final"]),
        }
    for seed, group in singles.items():
        merged: dict[str, dict[str, float]] = {v: {} for v in VIEWS}
        for run in group:
            views = views_of(run)
            for v in VIEWS:
                merged[v].update(views[v])
        complete = len({str(r.get("arm") or r["method"]) for r in group}) == len(TASKS)

        def total(key: str, group: list[dict] = group, complete: bool = complete) -> float | None:
            values = [r.get(key) for r in group]
            return float(sum(values)) if complete and all(v is not None for v in values) else None

        entries["single"][seed] = {
            "views": {v: {**merged[v], "glue5": _glue5(merged[v])} for v in VIEWS},
            "wall_seconds": total("wall_seconds"),
            "cpu_seconds": total("cpu_seconds"),
            "contended": any(contended(r) for r in group),
            "cpu_model": _one_cpu({cpu_model(r, cpu_models) for r in group}),
            "parameters_served": total("parameters_served"),
            "encoders_served": len(TASKS),  # the arm serves five models (a seed's missing ones are not yet run)
            "tasks": sorted(merged["final"]),
        }
    return dict(entries)


def _one_cpu(models: set[str]) -> str:
    return next(iter(models)) if len(models) == 1 else MIXED_CPUS


# ---- statistics -------------------------------------------------------------------------------------------


def welch_stats(a: list[float], b: list[float]) -> dict:
    """mean(a) − mean(b) with its 95 % Welch interval (unpaired; Welch–Satterthwaite df); no interval below 2 + 2."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        return {"n_a": len(a), "n_b": len(b), "mean": None, "df": None, "half_width": None, "interval": None}
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return {"n_a": len(a), "n_b": len(b), "mean": diff, "df": None, "half_width": None, "interval": None}
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return {"n_a": len(a), "n_b": len(b), "mean": diff, "df": None, "half_width": 0.0, "interval": [diff, diff]}
    df = float(se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    half = float(stats.t.ppf(0.975, df) * math.sqrt(se2))
    return {"n_a": len(a), "n_b": len(b), "mean": diff, "df": df, "half_width": half, "interval": [diff - half, diff + half]}


def _values(per_seed: dict[int, dict], view: str, column: str) -> dict[int, float]:
    return {s: e["views"][view][column] for s, e in per_seed.items() if e["views"][view].get(column) is not None}


def aggregate(entries: dict[str, dict[int, dict]]) -> dict:
    """Per arm: mean ± sd per view and column, resources; per arm ≠ single: paired and Welch differences."""
    table: dict[str, Any] = {}
    reference = entries.get("single", {})
    for arm in ordered(entries):
        per_seed = entries[arm]
        row: dict[str, Any] = {"seeds": sorted(per_seed), "views": {}, "vs_single": {}}
        for view in VIEWS:
            row["views"][view] = {c: mean_std(list(_values(per_seed, view, c).values())) for c in COLUMNS}
            if arm != "single":
                diffs = {}
                for c in COLUMNS:
                    mine, theirs = _values(per_seed, view, c), _values(reference, view, c)
                    common = sorted(set(mine) & set(theirs))
                    diffs[c] = {
                        "paired": {**paired_stats([mine[s] - theirs[s] for s in common]), "seeds": common},
                        "welch": welch_stats(list(mine.values()), list(theirs.values())),
                    }
                row["vs_single"][view] = diffs
        for key in ("parameters_served", "encoders_served"):
            row[key] = mean_std([e[key] for e in per_seed.values() if e.get(key) is not None])
        # times from the seeds that ran alone only (see `contended`), one entry per CPU model; `wall_seconds` and
        # `cpu_seconds` are those of the table's reference CPU (`reference_cpu`)
        alone = {s: e for s, e in per_seed.items() if not e.get("contended") and e.get("cpu_model") != MIXED_CPUS}
        row["times_by_cpu"] = {}
        for model in sorted({str(e.get("cpu_model", UNRECORDED_CPU)) for e in alone.values()}):
            group = {seed: e for seed, e in alone.items() if e.get("cpu_model", UNRECORDED_CPU) == model}
            row["times_by_cpu"][model] = {
                "seeds": sorted(seed for seed, e in group.items() if e.get("wall_seconds") is not None),
                **{key: mean_std([e[key] for e in group.values() if e.get(key) is not None]) for key in ("wall_seconds", "cpu_seconds")},
            }
        row["contended_seeds"] = sorted(seed for seed, e in per_seed.items() if e.get("contended"))
        table[arm] = row
    main_cpu = reference_cpu(table)
    for row in table.values():
        times = row["times_by_cpu"].get(main_cpu) or {} if main_cpu else {}
        for key in ("wall_seconds", "cpu_seconds"):
            row[key] = times.get(key) or mean_std([])
    return table


def reference_cpu(table: dict) -> str | None:
    """The CPU model with the most timed runs in the table (first by name on ties): the cost table's main columns."""
    counts: dict[str, int] = defaultdict(int)
    for row in table.values():
        for model, times in row.get("times_by_cpu", {}).items():
            counts[model] += len(times["seeds"])
    return min(counts, key=lambda m: (-counts[m], m)) if counts else None


def ordered(arms) -> list[str]:
    return sorted(arms, key=lambda a: (ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER), a))


def primary_verdict(table: dict, seeds: int = 5) -> dict:
    """The declared goal: primary − single, GLUE-5 final, paired 95 % t lower end ≥ −0.3, and STS-B above 86.84."""
    row = table.get(PRIMARY)
    if not row or "final" not in row["vs_single"]:
        return {"status": "no primary runs yet"}
    paired = row["vs_single"]["final"]["glue5"]["paired"]
    stsb = row["views"]["final"]["stsb"]
    verdict = {"paired_glue5": paired, "stsb_mean": stsb["mean"], "n": paired["n"], "declared_seeds": seeds}
    if paired["interval"] is None or stsb["mean"] is None:
        verdict["status"] = "undetermined (fewer than two paired seeds)"
    else:
        met = paired["interval"][0] >= GOAL_LOWER_END and stsb["mean"] > ZERO_SHOT_STSB
        verdict["status"] = ("met" if met else "not met") + ("" if paired["n"] == seeds else f" (provisional: n={paired['n']} of {seeds})")
    return verdict


def load_references(results_dir: str) -> tuple[dict | None, str | None]:
    """references.json of this results folder, else v2's (same training pool: carve 0.1, ≤ 500, seed 42; same dev)."""
    for path in (
        os.path.join(results_dir, "references.json"),
        os.path.join(ROOT, "benchmarks", "results", "glue5_minilm", "references.json"),
    ):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle), os.path.relpath(path, ROOT)
    return None, None


# ---- markdown ---------------------------------------------------------------------------------------------


def _cell(stat: dict, row_n: int | None = None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat.get("std") is not None else "")
    return text + (f" (n={stat['n']})" if row_n is not None and stat["n"] != row_n else "")


def _count(stat: dict) -> str:
    return "–" if stat.get("mean") is None else f"{stat['mean']:g}"


def _interval(stat: dict, n: int | str) -> str:
    if stat.get("mean") is None:
        return "–"
    if stat.get("interval") is None:
        return f"{stat['mean']:+.2f} (n={n}, no interval)"
    if (
        stat.get("half_width") is not None and stat["half_width"] < 1e-9
    ):  # identical differences (RTE accuracy is coarse): no spread to estimate, not certainty
        return f"{stat['mean']:+.2f} (n={n}, sd 0: no interval)"
    low, high = stat["interval"]
    return f"{stat['mean']:+.2f} [{low:+.2f}, {high:+.2f}] (n={n})"


def _diff_cell(diff: dict) -> str:
    paired, welch = diff["paired"], diff["welch"]
    if paired["n"] == 0 and welch["mean"] is None:
        return "–"
    # Welch uses every seed of each arm (n = arm's seeds / single-task seeds), the paired interval the shared seeds only.
    counts = f"{welch['n_a']}/{welch['n_b']}"
    return f"{_interval(paired, paired['n'])}; Welch {_interval(welch, counts)}"


def view_table(table: dict, view: str, references: dict | None) -> list[str]:
    lines = [
        "| arm | seeds | " + " | ".join(c.upper() if c != "glue5" else "GLUE-5" for c in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for arm, row in table.items():
        n = len(row["seeds"])
        cells = [_cell(row["views"][view][c], n) for c in COLUMNS]
        name = ARM_TITLES.get(arm, arm)
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    trivial = (references or {}).get("trivial_predictor", {})
    if trivial:
        cells = [f"{trivial[t]['score']:.2f}" if t in trivial else "–" for t in TASKS]
        glue5 = references.get("trivial_glue5") if references else None
        glue5_cell = f"{glue5:.2f}" if glue5 is not None else "–"
        lines.append("| trivial predictor (majority class / training mean) | – | " + " | ".join(cells) + f" | {glue5_cell} |")
    lines.append("| frozen encoder, zero-shot cosine (STS-B only) | – | – | – | – | " + f"{ZERO_SHOT_STSB:.2f} | – | – |")
    return lines + [""]


def diff_table(table: dict, view: str) -> list[str]:
    lines = [
        "| arm − single | " + " | ".join(c.upper() if c != "glue5" else "GLUE-5" for c in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for arm, row in table.items():
        if arm == "single" or view not in row["vs_single"]:
            continue
        cells = [_diff_cell(row["vs_single"][view][c]) for c in COLUMNS]
        name = ARM_TITLES.get(arm, arm)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _minutes(stat: dict) -> str:
    scaled = {k: (v / 60 if v is not None and k in ("mean", "std") else v) for k, v in stat.items()}
    return _cell(scaled, row_n=-1) if stat.get("mean") is not None else "–"


def cpu_models_in(table: dict) -> list[str]:
    """Every CPU model with timed runs, the reference CPU first."""
    reference = reference_cpu(table)
    models = {m for row in table.values() for m, t in row.get("times_by_cpu", {}).items() if t["seeds"]}
    return sorted(models, key=lambda m: (m != reference, m))


def resource_table(table: dict) -> list[str]:
    models = cpu_models_in(table)
    header = "| arm | encoders served | parameters served |" + "".join(f" training wall (min), {m} | CPU time (min), {m} |" for m in models)
    lines = [header, "|---|---|---|" + "---|---|" * len(models)]
    for arm, row in table.items():
        params = row["parameters_served"]
        line = (
            f"| {ARM_TITLES.get(arm, arm)} | {_count(row['encoders_served'])} | "
            + (f"{params['mean'] / 1e6:.2f}M" if params["mean"] is not None else "–")
            + " |"
        )
        for model in models:
            times = row.get("times_by_cpu", {}).get(model) or {}
            line += f" {_minutes(times.get('wall_seconds') or {})} | {_minutes(times.get('cpu_seconds') or {})} |"
        lines.append(line)
    return lines + [""]


def merge_choice_table(runs: list[dict]) -> list[str]:
    """Per merge run: the grid, the chosen λ and density, and whether λ is the grid's largest or smallest."""
    lines = ["| merge | seed | λ grid | densities | chosen λ | chosen density | λ at the grid's edge |", "|---|---|---|---|---|---|---|"]
    merges = sorted(
        (r for r in runs if r.get("kind") == "merge"),
        key=lambda r: (MERGE_ORDER.index(r["arm"]) if r["arm"] in MERGE_ORDER else len(MERGE_ORDER), str(r["arm"]), r["seed"]),
    )
    for run in merges:
        settings, chosen = run.get("settings") or {}, run.get("chosen") or {}
        scales = [float(s) for s in settings.get("scales") or []]
        scale = chosen.get("scale")
        edge = (
            "–" if scale is None or len(scales) < 2 else "largest" if scale == max(scales) else "smallest" if scale == min(scales) else "no"
        )
        densities = settings.get("densities")
        lines.append(
            f"| {ARM_TITLES.get(run['arm'], run['arm'])} | {run['seed']} | {', '.join(f'{s:g}' for s in scales)} | "
            f"{', '.join(f'{d:g}' for d in densities) if densities else '–'} | {scale if scale is not None else '–'} | "
            f"{chosen.get('density') if chosen.get('density') is not None else '–'} | {edge} |"
        )
    return lines + [""] if merges else ["No merge run yet.", ""]


def markdown(runs: list[dict], table: dict, verdict: dict, references: dict | None, reference_source: str | None) -> str:
    commits: dict[str, int] = defaultdict(int)
    for run in runs:
        prov = run.get("provenance") or {}
        commits[str(prov.get("commit") or "?")[:8] + ("+dirty" if prov.get("dirty") else "")] += 1
    smoke = any(run.get("smoke") for run in runs)
    lines = [
        "# One encoder vs five (issue #41): results",
        "",
        "Declared in [`benchmarks/one_encoder.md`](../../one_encoder.md); regenerate with "
        "`python -m benchmarks.summarize_one_encoder <results dir>`. Dev ×100, mean ± sd over seeds (n given where a cell "
        "has fewer seeds than its row).",
        "",
    ]
    if smoke:
        lines += ["**SMOKE RUNS (2 layers, 200 rows, 20 steps): a pipeline check, not results.**", ""]
    lines += [f"{len(runs)} runs; commits: " + ", ".join(f"{c} ({n})" for c, n in sorted(commits.items())), ""]
    lines += ["## Primary comparison: primary − single, GLUE-5, final checkpoint", ""]
    if "paired_glue5" in verdict:
        paired = verdict["paired_glue5"]
        lines.append(
            f"**{_interval(paired, paired['n'])}** (paired by seed, 95 % t); goal: lower end ≥ {GOAL_LOWER_END} and STS-B "
            f"above the zero-shot {ZERO_SHOT_STSB} (primary's STS-B: "
            + (f"{verdict['stsb_mean']:.2f}" if verdict["stsb_mean"] is not None else "–")
            + f"). Status: **{verdict['status']}**."
        )
    else:
        lines.append(verdict["status"] + ".")
    lines.append("")
    for view, title in (("final", "Final checkpoint (primary view)"), ("selected", "Selection-split best (secondary view)")):
        lines += [f"## {title}", ""]
        if view == "selected":
            lines += [
                "A multi-task arm serves one encoder, so it is read at one checkpoint for all tasks: the evaluation with "
                "the best mean selection score (first on ties). Each single-task model is read at its own best. `mt_ft` "
                "and the merges select on the selection splits already: as final.",
                "",
            ]
        lines += view_table(table, view, references)
        lines += [f"### Each arm − single-task ({view}): paired by seed [95 % t]; Welch [95 %] beside", ""] + diff_table(table, view)
    lines += ["## Served and spent", ""] + resource_table(table)
    lines += ["## The merges' choices (selection splits)", ""] + merge_choice_table(runs)
    lines += [
        "Notes: `mt_ft` serves each task's fine-tuned model (early stopping on its selection split): its final and "
        "selected views are both those models' dev scores. The merges choose λ (and density) on the selection splits; "
        "both views are the chosen merge's dev scores. Training wall / CPU time: the single-task row is the sum of the "
        "five runs of a seed; merges count their grid evaluation. CPU time = user + system of the run's process and "
        f"children. Times count only runs that had the machine to themselves (CPU / wall ≥ {ALONE_CPU_SHARE}: every run "
        "known to have run alone used 1.69–1.93 of the two cores); left out as contended (other jobs beside them, "
        "scores unaffected): "
        + (", ".join(f"{ARM_TITLES.get(a, a)} seed {s}" for a, row in table.items() for s in row.get("contended_seeds", [])) or "none")
        + ". Each CPU model has its own columns (a run's `provenance.machine.cpu_model`, else "
        f"`{CPU_MODELS_FILE}` beside `per_run/`, written from the session notes for runs whose commit did not record "
        "it); a single-task seed whose five runs did not share one CPU is left out of the times.",
    ]
    if reference_source:
        lines.append(
            f"Trivial predictors from `{reference_source}` (the full regime's training pool and dev sets: carve 0.1, ≤ 500, seed 42)."
        )
    return "\n".join(lines) + "\n"


# ---- plots ------------------------------------------------------------------------------------------------


def _task_step(run: dict, step: int) -> float:
    """A task's own optimizer steps at a run's `step`: round_robin gives each of the five tasks one step in five."""
    return step if len(run.get("tasks") or TASKS) == 1 else step / len(TASKS)


def plot(runs: list[dict], table: dict, results_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        arm = str(run.get("arm") or run["method"])
        arm = "single" if arm.startswith("single_") else arm
        for point in run.get("curves") or []:
            for task in TASKS:
                if f"eval_{task}_dev_score" in point:
                    curves[arm][task][_task_step(run, point["step"])].append(100 * point[f"eval_{task}_dev_score"])
    if curves:
        fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.6))
        for ax, task in zip(axes, TASKS):
            for arm in ordered(curves):
                points = sorted(curves[arm][task].items())
                if points:
                    ax.plot([p for p, _ in points], [np.mean(v) for _, v in points], marker=".", label=arm)
            if task == "stsb":
                ax.axhline(ZERO_SHOT_STSB, color="grey", linestyle="--", linewidth=1, label="zero-shot")
            ax.set_title(task)
            ax.set_xlabel("the task's own steps")
        axes[0].set_ylabel("dev ×100 (seed mean)")
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(results_dir, "curves.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    rows = [
        (arm, row["vs_single"]["final"]["glue5"]["paired"]) for arm, row in table.items() if arm != "single" and "final" in row["vs_single"]
    ]
    rows = [(arm, p) for arm, p in rows if p["mean"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
        for i, (arm, p) in enumerate(rows):
            err = [[p["half_width"]], [p["half_width"]]] if p["half_width"] is not None else None
            ax.errorbar([p["mean"]], [i], xerr=err, fmt="o", color="C3" if arm == PRIMARY else "C0")
        ax.axvline(0, color="black", linewidth=1)
        ax.axvline(GOAL_LOWER_END, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(rows)), [f"{arm} (n={p['n']})" for arm, p in rows])
        ax.set_xlabel("GLUE-5 dev, arm − single (final, paired, 95 % t)")
        fig.tight_layout()
        path = os.path.join(results_dir, "differences.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def summarize(results_dir: str) -> dict:
    runs = load_runs(results_dir)
    entries = arm_entries(runs, load_cpu_models(results_dir))
    table = aggregate(entries)
    verdict = primary_verdict(table)
    references, source = load_references(results_dir)
    summary = {
        "runs": len(runs),
        "arms": table,
        "primary": verdict,
        "zero_shot_stsb": ZERO_SHOT_STSB,
        "references_from": source,
        "reference_cpu": reference_cpu(table),
    }
    os.makedirs(results_dir, exist_ok=True)
    summary["plots"] = [os.path.basename(p) for p in plot(runs, table, results_dir)] if runs else []
    with open(os.path.join(results_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    with open(os.path.join(results_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(runs, table, verdict, references, source))
    return summary


if __name__ == "__main__":
    summarize(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benchmarks", "results", "one_encoder"))
