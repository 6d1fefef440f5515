"""Summarise the GLUE-5 v2 benchmark (profile `minilm`): JSON, markdown tables and plots.

    python -m benchmarks.summarize_v2 benchmarks/results/glue5_minilm

Every v2 run logs, at each evaluation, each task's score on the selection split carved from training data
(`eval_<task>_score`) and on the GLUE dev set (`eval_<task>_dev_score`). From one run's curves this reads,
per task (dev ×100):

- **final**: the last evaluation;
- **selected**: the evaluation with the best selection GLUE score (mean of the run's selection task scores;
  the first one on ties) — one checkpoint for all tasks;
- **per-task selected**: each task at its own best selection evaluation (first on ties);
- **oracle**: each task's best dev value over the evaluations. It selects on dev: an upper bound, not a method.

Per method, the **ceiling** (`benchmarks/ceiling.py`): best − final of each task's seed-averaged dev curve and
their GLUE-5 mean, with a percentile bootstrap interval over seeds — the most a per-task convergence or selection
method can recover on average — beside the per-seed oracle gap (inflated by the maximum of the evaluation noise);
for each async-KD − equal pair, the share of equal's ceiling it recovers on the pair's own seeds (a bootstrap that
redraws the difference and the ceiling together); for a #42 item-3 profile, equal's ceiling beside the regime
search's 2-seed value; per distilled convergence, the task's dev score at its teacher step and at the end, beside
equal weighting over the same steps (what distilling kept).

Methods are aggregated over seeds (mean ± sample std, ddof=1) per task, GLUE-5 and GLUE-4 (no RTE); the five
single-task runs of a seed make one `single_task` entry when all five exist. The like-for-like pairs of
`benchmarks/README.md` are compared by seed (only seeds both have) with 95 % t intervals on n − 1 df. The
matrix accumulates, so any subset of runs (and of a run's tasks) is summarised without failing.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

from benchmarks.ceiling import (
    BOOTSTRAP_SEED,
    N_BOOTSTRAP,
    align_seeds,
    best_minus_final,
    best_steps_line,
    ceiling,
    method_groups,
    run_curves,
)
from benchmarks.ceiling import MEANING as CEILING_MEANING
from benchmarks.ceiling import table_lines as ceiling_table_lines

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
GLUE4 = tuple(t for t in TASKS if t != "rte")
VIEWS = ("final", "selected", "per_task_selected", "oracle")
VIEW_TITLES = {
    "final": "Final checkpoint (last evaluation)",
    "selected": "Selected checkpoint (best selection-split GLUE-5 score, one checkpoint for all tasks)",
    "per_task_selected": "Per-task selected (each task at its own best selection-split evaluation)",
    "oracle": "Per-task dev oracle (each task's best dev value over the evaluations; selects on dev — an upper bound, not a method)",
}
# Table order: the primary pair first, then the other pairs, single-task, ablations (benchmarks/README.md).
METHOD_ORDER = (
    "async_kd",
    "async_kd_fw",
    "async_kd_decl",
    "async_kd_boot",
    "equal",
    "static",
    "uncertainty",
    "imtl_g",
    "imtl_g_async_kd",
    "single_task",
    "async_kd_old_rule",
    "async_kd_fw_on_demand",
)
ASYNC_METHODS = (
    "async_kd",
    "async_kd_fw",
    "async_kd_decl",
    "async_kd_boot",
    "imtl_g_async_kd",
    "async_kd_old_rule",
    "async_kd_fw_on_demand",
)
# Like-for-like pairs (a − b), declared in benchmarks/README.md before the v2 runs.
PAIRS = (
    ("async_kd", "equal"),
    ("async_kd_fw", "equal"),
    ("async_kd_fw", "async_kd"),
    ("async_kd", "static"),
    ("async_kd", "uncertainty"),
    ("static", "equal"),  # does a loss-weighting baseline beat equal weighting at all (added 2026-12-04)
    ("uncertainty", "equal"),
    ("async_kd", "single_task"),
    ("equal", "single_task"),  # multi-task vs one model per task, same examples of each task (added 2026-12-04)
    ("imtl_g_async_kd", "imtl_g"),
    ("async_kd_old_rule", "equal"),
    ("async_kd", "async_kd_old_rule"),
    ("async_kd_fw", "async_kd_old_rule"),
    # #42 item 3 (benchmarks/async_kd_regime.md): the paper's plateau rule and the decline rule (the library's default) against equal and
    # the baseline, and against each other
    ("async_kd_decl", "equal"),
    ("async_kd_fw", "uncertainty"),
    ("async_kd_decl", "uncertainty"),
    ("async_kd_decl", "async_kd_fw"),
    ("async_kd_boot", "equal"),
    ("async_kd_boot", "uncertainty"),
    ("async_kd_boot", "async_kd_decl"),
)
DECLINE_POINTS = 1.0  # a task "declines" when its last value is more than this below its best (×100)
MIN_DECLINING_TASKS = 2  # the v2 design needs at least two tasks peaking and declining under equal weighting


# ---- loading and one run's views --------------------------------------------------------------------------


def load_runs(results_dir: str) -> list[dict]:
    """Every per-run JSON under `results_dir/per_run` (unreadable or method-less files are skipped with a note)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "per_run", "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                run = json.load(handle)
        except (OSError, ValueError) as error:
            print(f"skip {path}: {error}", file=sys.stderr)
            continue
        if not isinstance(run, dict) or "method" not in run or "seed" not in run:
            print(f"skip {path}: no method/seed", file=sys.stderr)
            continue
        runs.append(run)
    return runs


def _curves(run: dict) -> list[dict]:
    return [c for c in (run.get("curves") or []) if isinstance(c, dict)]


def run_tasks(run: dict) -> list[str]:
    """The run's GLUE-5 tasks that its curves report on both splits (a task missing from the logs is skipped)."""
    curves = _curves(run)
    declared = [t for t in (run.get("tasks") or TASKS) if t in TASKS]
    return [t for t in declared if any(f"eval_{t}_score" in c for c in curves) and any(f"eval_{t}_dev_score" in c for c in curves)]


def _first_argmax(values: list[float]) -> int:
    """Index of the first maximum (ties go to the earlier evaluation)."""
    best = max(values)
    return next(i for i, v in enumerate(values) if v == best)


def run_views(run: dict) -> dict:
    """The four views of one run: `{view: {task: dev ×100}}` plus the steps they were read at."""
    curves = _curves(run)
    tasks = run_tasks(run)
    views: dict = {view: {} for view in VIEWS}
    steps: dict = {"final": {}, "per_task_selected": {}, "oracle": {}, "selected": None}
    for task in tasks:
        dev_key, sel_key = f"eval_{task}_dev_score", f"eval_{task}_score"
        with_dev = [c for c in curves if dev_key in c]
        views["final"][task] = 100 * float(with_dev[-1][dev_key])
        steps["final"][task] = with_dev[-1].get("step")
        best_dev = _first_argmax([c[dev_key] for c in with_dev])
        views["oracle"][task] = 100 * float(with_dev[best_dev][dev_key])
        steps["oracle"][task] = with_dev[best_dev].get("step")
        both = [c for c in with_dev if sel_key in c]
        if both:
            best_sel = _first_argmax([c[sel_key] for c in both])
            views["per_task_selected"][task] = 100 * float(both[best_sel][dev_key])
            steps["per_task_selected"][task] = both[best_sel].get("step")
    # One checkpoint for every task: the evaluations that report every task on both splits.
    complete = [c for c in curves if tasks and all(f"eval_{t}_score" in c and f"eval_{t}_dev_score" in c for t in tasks)]
    if complete:
        best = complete[_first_argmax([float(np.mean([c[f"eval_{t}_score"] for t in tasks])) for c in complete])]
        views["selected"] = {t: 100 * float(best[f"eval_{t}_dev_score"]) for t in tasks}
        steps["selected"] = best.get("step")
    return {"tasks": tasks, "views": views, "steps": steps}


def _glue(scores: dict[str, float], tasks: tuple[str, ...]) -> float | None:
    """Mean over `tasks`, or None when one of them is missing."""
    return float(np.mean([scores[t] for t in tasks])) if all(t in scores for t in tasks) else None


# ---- aggregation ------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> dict:
    """`{"mean", "std", "n"}` with the sample std (ddof=1; None for fewer than two values)."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}


def paired_stats(differences: list[float]) -> dict:
    """Mean of per-seed differences and its 95 % t interval on n − 1 df (no interval for n = 1)."""
    n = len(differences)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "half_width": None, "interval": None, "per_seed": []}
    mean = float(np.mean(differences))
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "half_width": None, "interval": None, "per_seed": differences}
    sd = float(np.std(differences, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "interval": [mean - half, mean + half], "per_seed": differences}


def _method_entries(runs: list[dict]) -> dict[str, dict[int, dict]]:
    """method → seed → `{"views", "wall_seconds", "peak_rss_mb", "run"}`; single-task runs of a seed merged
    into `single_task` when all five tasks exist."""
    entries: dict[str, dict[int, dict]] = defaultdict(dict)
    single: dict[int, dict[str, dict]] = defaultdict(dict)
    for run in runs:
        method, seed = str(run["method"]), int(run["seed"])
        views = run_views(run)
        if method.startswith("single_"):
            task = method.removeprefix("single_")
            if task in views["tasks"]:
                single[seed][task] = {"views": views, "run": run}
            continue
        entries[method][seed] = {
            "views": views["views"],
            "steps": views["steps"],
            "wall_seconds": run.get("wall_seconds"),
            "peak_rss_mb": run.get("peak_rss_mb"),
            "run": run,
        }
    for seed, by_task in sorted(single.items()):
        if not all(t in by_task for t in TASKS):
            continue
        merged = {view: {t: by_task[t]["views"]["views"][view].get(t) for t in TASKS} for view in VIEWS}
        merged = {view: {t: v for t, v in scores.items() if v is not None} for view, scores in merged.items()}
        walls = [by_task[t]["run"].get("wall_seconds") for t in TASKS]
        peaks = [by_task[t]["run"].get("peak_rss_mb") for t in TASKS]
        entries["single_task"][seed] = {
            "views": merged,
            "steps": None,
            # five models: the cost of the entry is the sum of their training times
            "wall_seconds": float(sum(walls)) if all(w is not None for w in walls) else None,
            "peak_rss_mb": max(peaks) if all(p is not None for p in peaks) else None,
            "run": None,
        }
    return entries


def _ordered(methods) -> list[str]:
    methods = list(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(m for m in methods if m not in METHOD_ORDER)


def _method_rank(method: str) -> int:
    """Position of a run's method in the tables (single-task runs where `single_task` is)."""
    name = "single_task" if method.startswith("single_") else method
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def aggregate(runs: list[dict]) -> dict:
    """Per method: seeds, each view's per-task / GLUE-5 / GLUE-4 mean ± std and per-seed values, oracle gaps, cost."""
    entries = _method_entries(runs)
    table = {}
    for method in _ordered(entries):
        by_seed = entries[method]
        seeds = sorted(by_seed)
        entry: dict = {"seeds": seeds, "views": {}}
        for view in VIEWS:
            per_seed = {seed: by_seed[seed]["views"][view] for seed in seeds}
            glue5 = {seed: _glue(s, TASKS) for seed, s in per_seed.items()}
            glue4 = {seed: _glue(s, GLUE4) for seed, s in per_seed.items()}
            entry["views"][view] = {
                "tasks": {t: mean_std([s[t] for s in per_seed.values() if t in s]) for t in TASKS},
                "glue5": mean_std([v for v in glue5.values() if v is not None]),
                "glue4": mean_std([v for v in glue4.values() if v is not None]),
                "by_seed": {str(seed): {"tasks": per_seed[seed], "glue5": glue5[seed], "glue4": glue4[seed]} for seed in seeds},
            }
        gaps = {}
        for reference in ("final", "selected"):
            per_seed = {}
            for seed in seeds:
                oracle = entry["views"]["oracle"]["by_seed"][str(seed)]["glue5"]
                other = entry["views"][reference]["by_seed"][str(seed)]["glue5"]
                if oracle is not None and other is not None:
                    per_seed[str(seed)] = oracle - other
            gaps[reference] = {**mean_std(list(per_seed.values())), "by_seed": per_seed}
        entry["oracle_gap"] = gaps
        walls = [by_seed[s]["wall_seconds"] for s in seeds if by_seed[s]["wall_seconds"] is not None]
        peaks = [by_seed[s]["peak_rss_mb"] for s in seeds if by_seed[s]["peak_rss_mb"] is not None]
        entry["wall_minutes"] = float(np.mean(walls)) / 60 if walls else None
        entry["peak_rss_mb"] = float(np.mean(peaks)) if peaks else None
        if method != "single_task":
            entry["selected_step"] = {str(s): by_seed[s]["steps"]["selected"] for s in seeds}
        table[method] = entry
    for method, group in method_groups(runs).items():
        if method in table:
            table[method]["ceiling"] = ceiling(run_curves(group, "eval_{task}_dev_score"))
    return table


def paired_differences(table: dict) -> dict:
    """For each declared pair present: per view, per task and GLUE-5, the by-seed differences and intervals."""
    result = {}
    for a, b in PAIRS:
        if a not in table or b not in table:
            continue
        key = f"{a} − {b}"
        result[key] = {"a": a, "b": b}
        for view in VIEWS:
            seeds_a, seeds_b = table[a]["views"][view]["by_seed"], table[b]["views"][view]["by_seed"]
            shared = sorted(set(seeds_a) & set(seeds_b), key=int)
            block = {}
            for task in TASKS:
                pairs = [
                    (s, seeds_a[s]["tasks"][task] - seeds_b[s]["tasks"][task])
                    for s in shared
                    if task in seeds_a[s]["tasks"] and task in seeds_b[s]["tasks"]
                ]
                block[task] = {**paired_stats([d for _, d in pairs]), "seeds": [int(s) for s, _ in pairs]}
            for name in ("glue5", "glue4"):
                pairs = [
                    (s, seeds_a[s][name] - seeds_b[s][name])
                    for s in shared
                    if seeds_a[s][name] is not None and seeds_b[s][name] is not None
                ]
                block[name] = {**paired_stats([d for _, d in pairs]), "seeds": [int(s) for s, _ in pairs]}
            result[key][view] = block
    return result


def equal_curves(runs: list[dict]) -> dict:
    """Under `equal`, per task and seed: where its best dev / selection value is and whether it declines by the end."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for run in sorted((r for r in runs if r["method"] == "equal"), key=lambda r: int(r["seed"])):
        curves = _curves(run)
        for task in run_tasks(run):
            record = {"seed": int(run["seed"])}
            for split, key in (("dev", f"eval_{task}_dev_score"), ("selection", f"eval_{task}_score")):
                points = [(c.get("step"), 100 * float(c[key])) for c in curves if key in c]
                if not points:
                    continue
                best = _first_argmax([v for _, v in points])
                record[split] = {
                    "best_step": points[best][0],
                    "best": points[best][1],
                    "last_step": points[-1][0],
                    "last": points[-1][1],
                    "declines": points[-1][1] < points[best][1] - DECLINE_POINTS,
                }
            by_task[task].append(record)
    summary = {}
    for task in TASKS:
        records = by_task.get(task, [])
        if not records:
            continue
        counts = {split: sum(1 for r in records if r.get(split, {}).get("declines")) for split in ("dev", "selection")}
        summary[task] = {
            "seeds": records,
            "declining_seeds": counts,
            "n": len(records),
            # a task peaks and declines when its dev score ends > 1 point below its best in most seeds
            "peaks_and_declines": counts["dev"] * 2 > len(records),
        }
    declining = [t for t, s in summary.items() if s["peaks_and_declines"]]
    return {
        "tasks": summary,
        "declining_tasks": declining,
        "required": MIN_DECLINING_TASKS,
        "design_met": len(declining) >= MIN_DECLINING_TASKS,
        "rule": f"dev score at the last evaluation is more than {DECLINE_POINTS:g} point below the task's best dev "
        "score, in more than half of the equal-weighting seeds",
    }


def load_references(results_dir: str) -> dict | None:
    path = os.path.join(results_dir, "references.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ---- markdown ---------------------------------------------------------------------------------------------


def _cell(stat: dict, seeds: int | None = None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat.get("std") is not None else "")
    if seeds is not None and stat["n"] != seeds:
        text += f" (n={stat['n']})"
    return text


def _diff_cell(stat: dict, row_n: int | None = None) -> str:
    if not stat or stat["n"] == 0:
        return "–"
    if stat["n"] == 1:
        return f"{stat['mean']:+.2f} (n=1, no interval)"
    low, high = stat["interval"]
    text = f"{stat['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"
    return text + (f" (n={stat['n']})" if row_n is not None and stat["n"] != row_n else "")


def _profile_line(runs: list[dict]) -> str:
    if not runs:
        return "Profile: no runs yet."
    reference = [r for r in runs if r["method"] == "equal"] or [r for r in runs if not str(r["method"]).startswith("single_")] or runs
    settings = reference[0].get("settings") or {}
    skipped = ("mtl_method", "async_kd", "step_composition")
    text = ", ".join(f"{k}={v}" for k, v in settings.items() if not isinstance(v, dict) and k not in skipped)
    profile = reference[0].get("profile", "?")
    commits = defaultdict(int)
    for run in runs:
        prov = run.get("provenance") or {}
        commits[(str(prov.get("commit") or "?")[:8]) + ("+dirty" if prov.get("dirty") else "")] += 1
    commit_text = ", ".join(f"{c} ({n} runs)" for c, n in sorted(commits.items(), key=lambda kv: -kv[1]))
    return f"Profile `{profile}` (v2): {text}. {len(runs)} runs; commits: {commit_text}{_package_text(runs)}."


def _package_text(runs: list[dict]) -> str:
    """The packages whose versions differ between runs (one version everywhere is not news), with run counts."""
    versions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in runs:
        for name, version in ((run.get("provenance") or {}).get("packages") or {}).items():
            versions[name][str(version)] += 1
    mixed = {name: counts for name, counts in versions.items() if len(counts) > 1}
    if not mixed:
        return ""
    parts = [f"{name} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items())) for name, counts in sorted(mixed.items())]
    return "; package versions differ: " + "; ".join(parts)


def _reference_rows(references: dict | None) -> list[str]:
    if not references:
        return ["| trivial predictor | – | references.json missing: run `python -m benchmarks.glue5_references` |"]
    trivial = references.get("trivial_predictor", {})
    cells = [f"{trivial[t]['score']:.2f}" if t in trivial else "–" for t in TASKS]
    glue5 = references.get("trivial_glue5")
    glue4 = references.get("trivial_glue4")
    rows = [
        "| trivial predictor (majority class / training mean) | – | "
        + " | ".join(cells)
        + f" | {_cell({'mean': glue5, 'std': None, 'n': 1})} | {_cell({'mean': glue4, 'std': None, 'n': 1})} | – |"
    ]
    zero_shot = references.get("stsb_zero_shot_cosine")
    if zero_shot:
        cells = [f"{zero_shot['score']:.2f}" if t == "stsb" else "–" for t in TASKS]
        rows.append("| frozen encoder, zero-shot cosine (STS-B only) | – | " + " | ".join(cells) + " | – | – | – |")
    return rows


def view_table(table: dict, view: str, references: dict | None) -> list[str]:
    lines = [
        f"### {VIEW_TITLES[view]}",
        "",
        "| method | seeds | " + " | ".join(TASKS) + " | GLUE-5 | GLUE-4 (no RTE) | wall min |",
        "|---" * (len(TASKS) + 5) + "|",
    ]
    for method, entry in table.items():
        row = entry["views"][view]
        seeds = len(entry["seeds"])
        wall = "–" if entry["wall_minutes"] is None else f"{entry['wall_minutes']:.1f}"
        lines.append(
            f"| {method} | {seeds} | "
            + " | ".join(_cell(row["tasks"][t], seeds) for t in TASKS)
            + f" | **{_cell(row['glue5'], seeds)}** | {_cell(row['glue4'], seeds)} | {wall} |"
        )
    return lines + _reference_rows(references) + [""]


def paired_tables(pairs: dict) -> list[str]:
    if not pairs:
        return []
    lines = [
        "## Paired differences by seed",
        "",
        "a − b per seed (only seeds both have), mean and 95 % t interval on n − 1 df "
        "(t.ppf(0.975, n − 1) · sd / √n), dev ×100. n = seeds with a GLUE-5 score in both; (n=k) marks a "
        "cell with a different number of seeds.",
        "",
    ]
    for view in VIEWS:
        lines += [
            f"### {VIEW_TITLES[view]}",
            "",
            "| pair | n | " + " | ".join(TASKS) + " | GLUE-5 | GLUE-4 (no RTE) |",
            "|---" * (len(TASKS) + 4) + "|",
        ]
        for name, pair in pairs.items():
            block = pair[view]
            n = block["glue5"]["n"]
            lines.append(
                f"| {name} | {n} | "
                + " | ".join(_diff_cell(block[t], n) for t in TASKS)
                + f" | **{_diff_cell(block['glue5'])}** | {_diff_cell(block['glue4'], n)} |"
            )
        lines.append("")
    return lines


def recovered(runs: list[dict], pairs: dict, n_bootstrap: int = N_BOOTSTRAP, rng_seed: int = BOOTSTRAP_SEED) -> dict:
    """Per `X − equal` async-KD pair, the share of equal weighting's ceiling it recovers at the final checkpoint, on the
    pair's own seeds: the paired GLUE-5 difference over equal's GLUE-5 ceiling (best − final of its seed-mean dev curves)
    on those same seeds. Intervals: one percentile bootstrap over those seeds draws the difference *and* the ceiling
    together (the ceiling is itself uncertain); `minus_half` = difference − ½ ceiling, the issue's "at least half
    recovered" (above 0 when met), with its interval from the same draws."""
    equal = method_groups(runs).get("equal") or []
    curves = run_curves(equal, "eval_{task}_dev_score")
    out = {}
    for name, pair in pairs.items():
        if pair["b"] != "equal" or pair["a"] not in ASYNC_METHODS:
            continue
        stat = pair["final"]["glue5"]
        seeds = [int(s) for s in stat.get("seeds") or []]
        matrices = []
        for task in TASKS:
            aligned = align_seeds({s: curves[task][s] for s in seeds if s in curves.get(task, {})})
            if aligned is None or aligned[0] != sorted(seeds):
                break
            matrices.append(aligned[2][[aligned[0].index(s) for s in seeds]])
        if not seeds or len(matrices) != len(TASKS):
            continue
        differences = np.asarray(stat["per_seed"], dtype=float)
        value = float(np.mean([best_minus_final(m.mean(axis=0)) for m in matrices]))
        entry = {
            "seeds": seeds,
            "difference": float(differences.mean()),
            "ceiling": value,
            "share": float(differences.mean() / value) if value > 0 else None,
            "minus_half": float(differences.mean() - value / 2),
            "share_interval": None,
            "minus_half_interval": None,
            "resamples_without_ceiling": 0,
        }
        if len(seeds) > 1:
            draws = np.random.default_rng(rng_seed).integers(0, len(seeds), size=(n_bootstrap, len(seeds)))
            boot_diff = differences[draws].mean(axis=1)
            boot_ceiling = np.mean([best_minus_final(m[draws].mean(axis=1)) for m in matrices], axis=0)
            positive = boot_ceiling > 0
            shares = boot_diff[positive] / boot_ceiling[positive]
            entry["resamples_without_ceiling"] = int((~positive).sum())
            if shares.size:
                entry["share_interval"] = [float(np.quantile(shares, 0.025)), float(np.quantile(shares, 0.975))]
            half = boot_diff - boot_ceiling / 2
            entry["minus_half_interval"] = [float(np.quantile(half, 0.025)), float(np.quantile(half, 0.975))]
        out[name] = entry
    return out


def search_ceiling(runs: list[dict], table: dict) -> dict | None:
    """For a #42 item-3 profile (`<candidate>_kd`): equal's ceiling here (5 seeds) beside the regime search's 2-seed
    value of the same candidate (results/regime_search/outcome.json), and whether it reaches the search's target."""
    profile = next((str(r.get("profile")) for r in runs if r.get("profile")), "")
    here = ((table.get("equal") or {}).get("ceiling") or {}).get("glue5")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "regime_search", "outcome.json")
    if not profile.endswith("_kd") or not here or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        outcome = json.load(handle)
    candidate = profile.removesuffix("_kd")
    found = next((c for c in outcome.get("candidates", []) if c.get("candidate") == candidate), None)
    if not found or not (found.get("ceiling") or {}).get("glue5"):
        return None
    return {"candidate": candidate, "search": found["ceiling"]["glue5"], "here": here, "target": outcome.get("target")}


def _interval_text(interval: list[float] | None, scale: float = 1.0, fmt: str = "+.2f") -> str:
    return f" [{scale * interval[0]:{fmt}}, {scale * interval[1]:{fmt}}]" if interval else ""


def recovered_table(table: dict, pairs: dict, shares: dict, search: dict | None = None) -> list[str]:
    value = (((table.get("equal") or {}).get("ceiling") or {}).get("glue5") or {}).get("value")
    lines = []
    if search:
        here, before, target = search["here"], search["search"], search["target"]
        lines += [
            "## The regime's ceiling: here vs the search",
            "",
            f"Equal weighting's GLUE-5 ceiling in `{search['candidate']}`: **{here['value']:.2f}**"
            f"{_interval_text(here.get('interval'), fmt='.2f')} over seeds {', '.join(map(str, here['seeds']))} here; the regime search"
            f" picked it on {before['value']:.2f}{_interval_text(before.get('interval'), fmt='.2f')} (seeds"
            f" {', '.join(map(str, before['seeds']))}, results/regime_search/outcome.md), the largest of its candidates."
            + (
                f" Below the {target:g} the search looked for: **the premise is weak here** (as declared, the comparison"
                " still runs in the pick)."
                if target is not None and here["value"] < target
                else ""
            ),
            "",
        ]
    if not shares or not value or value <= 0:
        return lines
    lines += [
        "## Ceiling recovered",
        "",
        "On each pair's own seeds: the paired GLUE-5 difference against equal over equal's GLUE-5 ceiling on the same"
        " seeds (best − final of its seed-mean dev curves). Intervals: a 95 % percentile bootstrap over those seeds"
        " (10,000 resamples, RNG seed 0) that redraws the difference and the ceiling together. *Difference − ½ ceiling*"
        ' is the goal\'s "at least half recovered" in points (met when its interval is above 0).',
        "",
        "| pair | seeds | final: difference | equal's ceiling on them | recovered | difference − ½ ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in shares.items():
        stat = pairs[name]["final"]["glue5"]
        share = "–" if entry["share"] is None else f"{100 * entry['share']:+.0f} %" + _interval_text(entry["share_interval"], 100, "+.0f")
        if entry["resamples_without_ceiling"]:
            share += f" ({entry['resamples_without_ceiling']} resamples with no ceiling left out)"
        lines.append(
            f"| {name} | {', '.join(map(str, entry['seeds']))} | {_diff_cell(stat)} | {entry['ceiling']:.2f} | {share} |"
            f" {entry['minus_half']:+.2f}{_interval_text(entry['minus_half_interval'])} |"
        )
    return lines + [""]


def calibration(runs: list[dict]) -> dict:
    """Per method and task: ECE ×100 of the dev set at the run's last evaluation (`eval_<task>_dev_ece`, logged with
    `calibration_bins`), by seed; empty when no run logged it."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        curves = [c for c in _curves(run) if any(k.endswith("_dev_ece") for k in c)]
        if not curves or str(run["method"]).startswith("single_"):
            continue
        for task in TASKS:
            key = f"eval_{task}_dev_ece"
            if key in curves[-1]:
                out[str(run["method"])][task][str(run["seed"])] = 100 * float(curves[-1][key])
    return {m: dict(t) for m, t in out.items()}


def convergence_events(runs: list[dict]) -> dict:
    """Per method and task: by seed, the async-KD report's converged step, teacher steps and whether it distilled
    (False: converged at the last step, where nothing trains); methods whose runs carry no report are left out."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        report = run.get("convergence")
        if not isinstance(report, dict) or str(run["method"]).startswith("single_"):
            continue
        # Reports written before the library skipped labelling at the last step carry no "distilled": inferred.
        steps = [int(c["step"]) for c in _curves(run) if "step" in c]
        last = int((run.get("settings") or {}).get("max_steps") or (max(steps) if steps else 0)) or None
        for task in TASKS:
            record = report.get(task) or {}
            step = record.get("converged_step")
            out[str(run["method"])][task][str(run["seed"])] = (
                {
                    "step": step,
                    "teacher_steps": record.get("teacher_steps") or [],
                    "distilled": record.get("distilled", last is None or step is None or int(step) < last),
                }
                if record.get("converged")
                else None
            )
    return {m: dict(t) for m, t in out.items()}


def convergence_table(events: dict) -> list[str]:
    if not events:
        return []
    lines = [
        "## Convergence events",
        "",
        "Per async-KD method and task: seeds converged of seeds run, then per converged seed `s<seed>: step (teacher "
        "steps)`; † = converged at the last step (nothing trained after it; runs since 2026-12-07 label nothing there).",
        "",
        "| method | " + " | ".join(TASKS) + " |",
        "|---" * (len(TASKS) + 1) + "|",
    ]
    for method in _ordered(events):
        cells = []
        for task in TASKS:
            by_seed = events[method].get(task, {})
            converged = {s: e for s, e in by_seed.items() if e is not None}
            detail = ", ".join(
                f"s{s}: {e['step']} ({', '.join(str(x) for x in e['teacher_steps'])}){'' if e['distilled'] else ' †'}"
                for s, e in sorted(converged.items(), key=lambda item: int(item[0]))
            )
            cells.append(f"{len(converged)}/{len(by_seed)}" + (f": {detail}" if detail else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def distillation_kept(runs: list[dict], events: dict | None = None) -> dict:
    """Per async-KD method and task, each distilled convergence with one teacher step: the task's dev score ×100 at
    the teacher step and at the run's last evaluation, and equal weighting's (same seed) at the same two steps. Until
    the first convergence both runs are the same run, so `equal` shows what true labels did over the window in which
    the task was distilled: whether distilling kept what its teacher had. `events`: `convergence_events(runs)`."""
    equal = {int(r["seed"]): r for r in runs if r["method"] == "equal"}
    out: dict = defaultdict(lambda: defaultdict(list))
    for method, by_task in (convergence_events(runs) if events is None else events).items():
        for run in (r for r in runs if str(r["method"]) == method):
            seed = int(run["seed"])
            for task, by_seed in by_task.items():
                event = by_seed.get(str(seed))
                if not event or not event["distilled"] or len(event["teacher_steps"]) != 1:
                    continue
                mine, theirs = (_score_by_step(r, f"eval_{task}_dev_score") if r is not None else {} for r in (run, equal.get(seed)))
                mine_sel, theirs_sel = (_score_by_step(r, f"eval_{task}_score") if r is not None else {} for r in (run, equal.get(seed)))
                teacher = int(event["teacher_steps"][0])
                if not mine or teacher not in mine:
                    continue
                last = max(mine)
                out[method][task].append(
                    {
                        "seed": seed,
                        "teacher_step": teacher,
                        "final_step": last,
                        "at_teacher": mine[teacher],
                        "final": mine[last],
                        "equal_at_teacher": theirs.get(teacher),
                        "equal_final": theirs.get(last),
                        # the same on the selection split (what a run can see while it trains)
                        "selection_at_teacher": mine_sel.get(teacher),
                        "selection_final": mine_sel.get(last),
                        "equal_selection_at_teacher": theirs_sel.get(teacher),
                        "equal_selection_final": theirs_sel.get(last),
                    }
                )
    return {m: dict(t) for m, t in out.items()}


def _score_by_step(run: dict, key: str) -> dict[int, float]:
    return {int(c["step"]): 100 * float(c[key]) for c in _curves(run) if key in c and "step" in c}


def _mean_change(events: list[dict], start: str, end: str) -> str:
    """The mean of end − start over the events that have both, as a table cell (n marked when fewer)."""
    changes = [e[end] - e[start] for e in events if e.get(end) is not None and e.get(start) is not None]
    if not changes:
        return "–"
    return f"{np.mean(changes):+.2f}" + (f" (n={len(changes)})" if len(changes) != len(events) else "")


def distillation_table(kept: dict) -> list[str]:
    if not kept:
        return []
    lines = [
        "## What distillation kept",
        "",
        "Per async-KD method and task, over its distilled convergences with one teacher step: the task's dev score at the"
        " final checkpoint − at the teacher step (the teacher's own dev score: what distilling could keep), mean and"
        " range; beside it equal weighting over the same steps of the same seeds (true labels all along). Below 0 in"
        " the first column: the task lost part of its teacher while it was distilled. The last two columns: the same on"
        " the selection split (held out from training, read by the convergence rule): what a run can see of it while it"
        " trains.",
        "",
        "| method | task | n | async-KD: final − teacher step | equal: final − same step | selection split: async-KD | selection"
        " split: equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in _ordered(kept):
        for task in TASKS:
            events = kept[method].get(task) or []
            if not events:
                continue
            own = [e["final"] - e["at_teacher"] for e in events]
            span = f" [{min(own):+.2f}, {max(own):+.2f}]" if len(own) > 1 else ""
            cells = [_mean_change(events, f"{who}at_teacher", f"{who}final") for who in ("equal_", "selection_", "equal_selection_")]
            lines.append(f"| {method} | {task} | {len(own)} | {np.mean(own):+.2f}{span} | " + " | ".join(cells) + " |")
    return lines + [""]


def calibration_table(ece: dict) -> list[str]:
    if not ece:
        return []
    tasks = [t for t in TASKS if any(t in by_task for by_task in ece.values())]
    lines = [
        "## Calibration at the final checkpoint",
        "",
        "Expected calibration error ×100 on each dev set (15 equal-width confidence bins), mean ± sd over seeds; below,"
        " each method − equal paired by seed (95 % t). Lower is better.",
        "",
        "| method | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    for method in _ordered(ece):
        lines.append(f"| {method} | " + " | ".join(_cell(mean_std(list(ece[method].get(t, {}).values()))) for t in tasks) + " |")
    if "equal" in ece:
        lines += ["", "| method − equal | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        for method in _ordered(ece):
            if method == "equal":
                continue
            cells = []
            for task in tasks:
                a, b = ece[method].get(task, {}), ece["equal"].get(task, {})
                cells.append(_diff_cell(paired_stats([a[s] - b[s] for s in sorted(set(a) & set(b), key=int)])))
            lines.append(f"| {method} − equal | " + " | ".join(cells) + " |")
    return lines + [""]


def gap_table(table: dict) -> list[str]:
    lines = [
        "## Oracle gap",
        "",
        "GLUE-5 of the per-task dev oracle (selects on dev: an upper bound) minus the final and the selected "
        "checkpoint, mean ± std over seeds.",
        "",
        "| method | seeds | oracle − final | oracle − selected |",
        "|---|---|---|---|",
    ]
    for method, entry in table.items():
        gaps = entry["oracle_gap"]
        lines.append(f"| {method} | {len(entry['seeds'])} | {_cell(gaps['final'])} | {_cell(gaps['selected'])} |")
    return lines + [""]


def ceiling_table(table: dict) -> list[str]:
    rows = [(m, e["ceiling"], e["oracle_gap"]["final"]) for m, e in table.items() if e.get("ceiling") and e["ceiling"]["tasks"]]
    if not rows:
        return []
    return (
        [
            "## Ceiling: seed-averaged best − final",
            "",
            CEILING_MEANING + " The per-seed oracle gap column is `oracle − final` of the table above.",
            "",
        ]
        + ceiling_table_lines(rows)
        + ["", "Where each seed-mean dev curve peaks: best step / final step (best → final):", ""]
        + best_steps_line(rows)
        + [""]
    )


def run_table(runs: list[dict]) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| method | seed | tasks | commit | wall min | peak RSS MB | final GLUE | selected GLUE (step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: (_method_rank(str(r["method"])), str(r["method"]), int(r["seed"]))):
        views = run_views(run)
        prov = run.get("provenance") or {}
        commit = str(prov.get("commit") or "?")[:8] + (" (dirty)" if prov.get("dirty") else "")
        wall = run.get("wall_seconds")
        peak = run.get("peak_rss_mb")
        tasks = views["tasks"]
        final = float(np.mean(list(views["views"]["final"].values()))) if views["views"]["final"] else None
        selected = float(np.mean(list(views["views"]["selected"].values()))) if views["views"]["selected"] else None
        missing = [t for t in (run.get("tasks") or []) if t not in tasks]
        task_text = ",".join(tasks) if len(tasks) < len(TASKS) else "all 5"
        if missing:
            task_text += f" (missing: {','.join(missing)})"
        lines.append(
            f"| {run['method']} | {run['seed']} | {task_text} | {commit} | "
            + ("–" if wall is None else f"{wall / 60:.1f}")
            + " | "
            + ("–" if peak is None else f"{peak:.0f}")
            + f" | {'–' if final is None else f'{final:.2f}'} | "
            + ("–" if selected is None else f"{selected:.2f} ({views['steps']['selected']})")
            + " |"
        )
    lines.append("")
    lines.append("Final / selected GLUE here: the mean over the run's own tasks (one task for a single-task run).")
    return lines + [""]


def _best_to_last(point: dict) -> str:
    return f"{point['best']:.1f}→{point['last']:.1f}"


def equal_curves_note(curves: dict) -> list[str]:
    if not curves["tasks"]:
        return ["## Equal weighting curves", "", "No `equal` runs yet.", ""]
    lines = [
        "## Equal weighting curves",
        "",
        f"Per task under `equal`, one value per seed (in the order of the seeds column): the step of the best "
        f"selection-split and dev score, and best → last (×100). Declines = last more than {DECLINE_POINTS:g} "
        f"point below the best. A task peaks and declines when its {curves['rule']}.",
        "",
        "| task | seeds | best selection step | selection best → last | declines (selection) | best dev step | "
        "dev best → last | declines (dev) | peaks and declines |",
        "|---" * 9 + "|",
    ]
    for task, entry in curves["tasks"].items():

        def column(split, fn):
            return ", ".join(fn(r[split]) if split in r else "–" for r in entry["seeds"])  # noqa: B023 (called in this iteration)

        n = entry["n"]
        lines.append(
            f"| {task} | {', '.join(str(r['seed']) for r in entry['seeds'])} | "
            f"{column('selection', lambda p: str(p['best_step']))} | {column('selection', _best_to_last)} | "
            f"{entry['declining_seeds']['selection']}/{n} | {column('dev', lambda p: str(p['best_step']))} | "
            f"{column('dev', _best_to_last)} | {entry['declining_seeds']['dev']}/{n} | "
            f"{'**yes**' if entry['peaks_and_declines'] else 'no'} |"
        )
    verdict = "met" if curves["design_met"] else "**NOT met**"
    lines += [
        "",
        f"Tasks that peak and decline: {', '.join(curves['declining_tasks']) or 'none'} — the design needs "
        f"at least {curves['required']}: {verdict}.",
        "",
    ]
    return lines


def markdown(runs: list[dict], summary: dict) -> str:
    """results.md from the runs and the parts `summarize_v2` computed once (its summary.json)."""
    table, pairs, references = summary["methods"], summary["paired_differences"], summary["references"]
    lines = [
        "# GLUE-5 v2 results",
        "",
        _profile_line(runs),
        "",
        "Dev scores ×100 (task score = mean of its GLUE metrics), mean ± sample std (ddof=1) over seeds; "
        "(n=k) marks a cell with fewer seeds than the row. `single_task` = one model per task (a seed counts "
        "when all five exist; wall = the five models' sum). Every choice reads the selection split carved from "
        "training data, except the oracle view.",
        "",
    ]
    if not table:
        lines += ["No runs yet.", ""]
    for view in VIEWS:
        if table:
            lines += view_table(table, view, references)
    if references and references.get("stsb_zero_shot_cosine"):
        zero = references["stsb_zero_shot_cosine"]
        lines += [
            f"Trivial predictor: majority class of the training pool (classification) or training-label mean "
            f"(STS-B: a constant has an undefined correlation, reported as 0), fitted on the benchmark's training "
            f"pool and scored on dev. Zero-shot STS-B: frozen encoder, cosine of mean-pooled embeddings, "
            f"{zero['score']:.2f} (Pearson {zero['pearson']:.2f} / Spearman {zero['spearmanr']:.2f}; "
            f"`{zero['source']}`).",
            "",
        ]
    lines += paired_tables(pairs)
    if table:
        lines += recovered_table(table, pairs, summary["ceiling_recovered"], summary["search_ceiling"])
        lines += gap_table(table)
        lines += ceiling_table(table)
    lines += convergence_table(summary["convergence_events"])
    lines += distillation_table(summary["distillation_kept"])
    lines += calibration_table(summary["calibration_ece"])
    lines += equal_curves_note(summary["equal_curves"])
    if runs:
        lines += run_table(runs)
    return "\n".join(lines) + "\n"


# ---- plots ------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _convergence(run: dict, task: str) -> dict:
    """The async-KD report of one task in a run (empty when there is none)."""
    report = run.get("convergence")
    record = report.get(task) if isinstance(report, dict) else None
    return record if isinstance(record, dict) else {}


def _task_curves(runs: list[dict], title: str, path: str, mark_convergence: bool) -> str | None:
    """Selection (solid) and dev (dashed) curves per task, one thin line per seed; KD switches marked."""
    runs = [r for r in runs if _curves(r)]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.6), sharex=True)
    for column, task in enumerate(TASKS):
        ax = axes[column]
        for run in sorted(runs, key=lambda r: int(r["seed"])):
            color = f"C{int(run['seed']) % 10}"
            curves = _curves(run)
            for key, style, split in ((f"eval_{task}_score", "-", "selection"), (f"eval_{task}_dev_score", "--", "dev")):
                points = [(c["step"], 100 * c[key]) for c in curves if key in c and "step" in c]
                if points:
                    ax.plot(
                        *zip(*points),
                        style,
                        color=color,
                        linewidth=0.9,
                        alpha=0.8,
                        label=f"{split} s{run['seed']}" if column == 0 else None,
                    )
            record = _convergence(run, task) if mark_convergence else {}
            if record.get("converged_step") is not None:
                ax.axvline(record["converged_step"], color=color, linestyle=":", linewidth=1.2)
            if record.get("best_step") is not None and record.get("metric_at_convergence") is not None:
                # the teacher's selection score (a run reading another kd_signal reports its value in that signal)
                score = {c["step"]: c.get(f"eval_{task}_score") for c in curves if "step" in c}.get(record["best_step"])
                value = record["metric_at_convergence"] if record.get("signal", "score") == "score" else score
                if value is not None:
                    ax.plot(record["best_step"], 100 * value, "o", color=color, fillstyle="none")
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score ×100")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _cola_curves(runs: list[dict], path: str) -> str | None:
    methods = ("equal", "async_kd", "async_kd_fw", "async_kd_old_rule")
    chosen = [r for r in runs if r["method"] in methods and _curves(r)]
    if not chosen:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, split, keys in (
        (axes[0], "selection", ("eval_cola_matthews_correlation", "eval_cola_score")),
        (axes[1], "dev", ("eval_cola_dev_matthews_correlation", "eval_cola_dev_score")),
    ):
        labelled = set()
        for run in sorted(chosen, key=lambda r: (methods.index(r["method"]), int(r["seed"]))):
            curves = _curves(run)
            key = next((k for k in keys if any(k in c for c in curves)), None)
            if key is None:
                continue
            points = [(c["step"], 100 * c[key]) for c in curves if key in c and "step" in c]
            color = f"C{methods.index(run['method'])}"
            ax.plot(*zip(*points), color=color, linewidth=0.9, alpha=0.8, label=None if run["method"] in labelled else run["method"])
            labelled.add(run["method"])
            converged = _convergence(run, "cola").get("converged_step")
            if converged is not None:
                ax.axvline(converged, color=color, linestyle=":", linewidth=1)
        ax.set_title(f"CoLA {split} MCC ×100 (thin = one seed, dotted = KD switch)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _comparison(table: dict, references: dict | None, path: str) -> str | None:
    methods = [m for m in table if table[m]["views"]["final"]["glue5"]["n"] or table[m]["views"]["selected"]["glue5"]["n"]]
    if not methods:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods) + 2), 4))
    x = np.arange(len(methods))
    values = []
    for offset, view, color in ((-0.2, "final", "C0"), (0.2, "selected", "C1")):
        stats_ = [table[m]["views"][view]["glue5"] for m in methods]
        means = [s["mean"] if s["mean"] is not None else np.nan for s in stats_]
        errors = [s["std"] or 0.0 for s in stats_]
        values += [v for v in means if not np.isnan(v)]
        ax.bar(x + offset, means, 0.4, yerr=errors, capsize=3, color=color, label=f"{view} checkpoint")
    if values:
        ax.set_ylim(max(0.0, min(values) - 6), max(values) + 3)
    title = "GLUE-5 dev ×100, mean ± std over seeds"
    if references and references.get("trivial_glue5") is not None:
        trivial = references["trivial_glue5"]
        title += f"; trivial predictor {trivial:.2f}"
        if values and ax.get_ylim()[0] <= trivial <= ax.get_ylim()[1]:
            ax.axhline(trivial, color="grey", linestyle="--", linewidth=1, label="trivial predictor")
    ax.set_title(title, fontsize=10)
    labels = [f"{m}\n(n={max(table[m]['views']['final']['glue5']['n'], table[m]['views']['selected']['glue5']['n'])})" for m in methods]
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("GLUE-5 dev ×100")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot(runs: list[dict], table: dict, references: dict | None, results_dir: str) -> list[str]:
    written = [
        _task_curves(
            [r for r in runs if r["method"] == "equal"],
            "equal weighting: selection (solid) and dev (dashed) per seed",
            os.path.join(results_dir, "curves_equal.png"),
            mark_convergence=False,
        )
    ]
    for method in ASYNC_METHODS:
        written.append(
            _task_curves(
                [r for r in runs if r["method"] == method],
                f"{method}: selection (solid) and dev (dashed); dotted = KD switch, circle = best monitored",
                os.path.join(results_dir, f"curves_{method}.png"),
                mark_convergence=True,
            )
        )
    written.append(_cola_curves(runs, os.path.join(results_dir, "cola_curves.png")))
    written.append(_comparison(table, references, os.path.join(results_dir, "comparison.png")))
    return [p for p in written if p]


# ---- entry point ------------------------------------------------------------------------------------------


def summarize_v2(results_dir: str) -> dict:
    """Write `summary.json`, `results.md` and the plots for the runs under `results_dir`; return the summary."""
    runs = load_runs(results_dir)
    references = load_references(results_dir)
    table = aggregate(runs)
    pairs = paired_differences(table)
    events = convergence_events(runs)
    summary = {
        "profile": next((r.get("profile") for r in runs), None),
        "runs": len(runs),
        "methods": table,
        "paired_differences": pairs,
        "equal_curves": equal_curves(runs),
        "calibration_ece": calibration(runs),
        "convergence_events": events,
        "distillation_kept": distillation_kept(runs, events),
        "ceiling_recovered": recovered(runs, pairs),
        "search_ceiling": search_ceiling(runs, table),
        "references": references,
    }
    os.makedirs(results_dir, exist_ok=True)
    plots = plot(runs, table, references, results_dir) if runs else []
    summary["plots"] = [os.path.basename(p) for p in plots]
    with open(os.path.join(results_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    text = markdown(runs, summary)
    with open(os.path.join(results_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    return summary


if __name__ == "__main__":
    summarize_v2(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "glue5_minilm"))
