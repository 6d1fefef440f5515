"""The *ceiling* of a regime: how much any per-task convergence or selection method can recover on average.

    python -m benchmarks.ceiling          # every stored regime -> benchmarks/results/ceiling/ceiling.{json,md}

For one method in one regime, average each task's dev curve over the seeds (step by step), then take that
seed-mean curve's best value minus its final value: **best − final** per task, and the GLUE-5 mean of the five
(each task at its own best step). A method that stops or freezes each task at the right step can gain, on
average over seeds, at most this much over the final checkpoint (it cannot know each seed's noise in advance).
The interval is a percentile bootstrap over seeds: resample the seeds with replacement, recompute the seed-mean
curves and their best − final (fixed RNG seed, so the table regenerates exactly).

The **per-seed oracle gap** (each seed's per-task dev maximum minus its final value, then averaged over
seeds) is a different quantity: in every seed it picks the luckiest evaluation, so it also collects the maximum
of the evaluation noise (about 2 points of RTE accuracy on 277 dev examples, per evaluation) and is larger than
the ceiling even where no task declines on average.

Both are read on the dev curves and select on dev: upper bounds for a method, never methods. Runs without dev
curves (the v1 profiles record dev at the end only) have no dev ceiling; for them this reports the same
quantity on the selection-split curves, labelled as such.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
N_BOOTSTRAP = 10000
BOOTSTRAP_SEED = 0
LEVEL = 0.95

MEANING = (
    "**Ceiling** = best − final of the seed-averaged dev curve, per task, and their GLUE-5 mean: the most any "
    "per-task convergence or selection method can recover on average over seeds in this regime (interval: 95 % "
    "percentile bootstrap over seeds, 10,000 resamples, RNG seed 0; with 2 seeds it has only three distinct "
    "resamples, with 1 seed none). **Per-seed oracle gap** = each seed's own per-task dev maximum minus its final "
    "value, averaged over seeds: it picks the luckiest evaluation of every seed, so it adds the maximum of the "
    "evaluation noise and overstates what a method could recover. Both select on dev: upper bounds, not methods."
)


def best_minus_final(mean_curves: np.ndarray) -> np.ndarray:
    """best − final along the last axis (steps)."""
    return mean_curves.max(axis=-1) - mean_curves[..., -1]


def align_seeds(curves: dict) -> tuple[list, list, np.ndarray] | None:
    """`{seed: [(step, value), ...]}` → (seeds, common steps, matrix seeds × steps); None without a common step.

    Only the steps every seed evaluated are kept (a seed that stopped early shortens the curve for all)."""
    seeds = sorted(s for s, points in curves.items() if points)
    if not seeds:
        return None
    by_seed = {s: {step: float(value) for step, value in curves[s]} for s in seeds}
    steps = sorted(set.intersection(*(set(points) for points in by_seed.values())))
    if not steps:
        return None
    return seeds, steps, np.array([[by_seed[s][step] for step in steps] for s in seeds])


def ceiling(
    curves: dict[str, dict],
    tasks: tuple[str, ...] = TASKS,
    n_bootstrap: int = N_BOOTSTRAP,
    rng_seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> dict:
    """Seed-averaged best − final per task and GLUE-5 mean, with a percentile bootstrap interval over seeds.

    `curves`: `{task: {seed: [(step, value), ...]}}` in the units wanted back (the benchmark passes dev ×100).
    Returns `{"tasks": {task: {...}}, "glue5": {...} | None}`; each entry has `value` (best − final of the seed-mean
    curve), `best_step`, `final_step`, `best`, `final`, `n_seeds`, `seeds`, and `interval` ([low, high], None for
    one seed). GLUE-5 (the mean over `tasks` of the per-task values) needs every task, and uses the seeds that have
    every task; its bootstrap draws one resample of those seeds for all tasks at once. A task whose seeds differ
    from that set gets its own draws for its own interval.
    """
    rng = np.random.default_rng(rng_seed)
    alpha = (1 - level) / 2
    aligned = {t: align_seeds(curves.get(t) or {}) for t in tasks}
    result: dict = {"tasks": {}, "glue5": None, "n_bootstrap": n_bootstrap, "rng_seed": rng_seed, "level": level}
    present = [t for t in tasks if aligned[t] is not None]
    for task in present:
        seeds, steps, matrix = aligned[task]
        mean = matrix.mean(axis=0)
        best = int(np.argmax(mean))  # first maximum: ties go to the earlier evaluation
        result["tasks"][task] = {
            "value": float(mean[best] - mean[-1]),
            "best_step": steps[best],
            "final_step": steps[-1],
            "best": float(mean[best]),
            "final": float(mean[-1]),
            "n_seeds": len(seeds),
            "seeds": list(seeds),
            "interval": None,
        }
    common = sorted(set.intersection(*(set(aligned[t][0]) for t in present))) if present else []
    draws = rng.integers(0, len(common), size=(n_bootstrap, len(common))) if len(common) > 1 else None
    boot_by_task = {}
    for task in present:
        seeds, _, matrix = aligned[task]
        if len(seeds) < 2:
            continue
        if seeds == common:
            idx = draws
        else:
            idx = np.random.default_rng([rng_seed, tasks.index(task)]).integers(0, len(seeds), size=(n_bootstrap, len(seeds)))
        boot = best_minus_final(matrix[idx].mean(axis=1))
        boot_by_task[task] = boot if seeds == common else None
        result["tasks"][task]["interval"] = [float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))]
    if len(present) == len(tasks) and common:
        # GLUE-5 over the seeds every task has (point estimate and bootstrap on that one set of seeds)
        values, boots = [], []
        for task in tasks:
            seeds, _, matrix = aligned[task]
            rows = matrix[[seeds.index(s) for s in common]]
            values.append(float(best_minus_final(rows.mean(axis=0))))
            if draws is not None:
                boots.append(boot_by_task.get(task) if boot_by_task.get(task) is not None else best_minus_final(rows[draws].mean(axis=1)))
        interval = None
        if draws is not None:
            glue = np.mean(boots, axis=0)
            interval = [float(np.quantile(glue, alpha)), float(np.quantile(glue, 1 - alpha))]
        result["glue5"] = {"value": float(np.mean(values)), "n_seeds": len(common), "seeds": list(common), "interval": interval}
    return result


def per_seed_oracle_gap(curves: dict[str, dict], tasks: tuple[str, ...] = TASKS) -> dict:
    """Each seed's per-task (max − last) over its own curve, GLUE-5 mean per seed; mean ± sample std over seeds."""
    seeds = (
        sorted(set.intersection(*({s for s, p in (curves.get(t) or {}).items() if p} for t in tasks)))
        if all(curves.get(t) for t in tasks)
        else []
    )
    per_seed = {}
    for seed in seeds:
        gaps = []
        for task in tasks:
            values = [float(v) for _, v in curves[task][seed]]
            gaps.append(max(values) - values[-1])
        per_seed[str(seed)] = float(np.mean(gaps))
    values = list(per_seed.values())
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "n": len(values),
        "by_seed": per_seed,
    }


def run_curves(
    runs: list[dict], key: str = "eval_{task}_dev_score", scale: float = 100.0, tasks: tuple[str, ...] = TASKS
) -> dict[str, dict]:
    """`{task: {seed: [(step, value × scale)]}}` from per-run JSONs (`run["curves"]`, `run["seed"]`); tasks a run does
    not log are left out for that run. Single-task runs (`single_<task>`) contribute their one task."""
    out: dict[str, dict] = {t: {} for t in tasks}
    for run in runs:
        for task in tasks:
            name = key.format(task=task)
            points = [
                (c.get("step"), scale * float(c[name]))
                for c in (run.get("curves") or [])
                if isinstance(c, dict) and name in c and c[name] is not None
            ]
            if points:
                out[task][int(run["seed"])] = points
    return out


# ---- formatting -------------------------------------------------------------------------------------------


def format_value(entry: dict | None) -> str:
    """`0.79 [0.41, 1.20]`, or without interval when there is none."""
    if not entry:
        return "–"
    text = f"{entry['value']:.2f}"
    if entry.get("interval"):
        low, high = entry["interval"]
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def format_gap(gap: dict | None) -> str:
    if not gap or gap.get("mean") is None:
        return "–"
    return f"{gap['mean']:.2f}" + (f" ± {gap['std']:.2f}" if gap.get("std") is not None else "")


def table_lines(rows: list[tuple[str, dict, dict]], tasks: tuple[str, ...] = TASKS, label: str = "method") -> list[str]:
    """Markdown rows: (name, ceiling(...), per_seed_oracle_gap(...))."""
    lines = [
        f"| {label} | seeds | " + " | ".join(tasks) + " | **GLUE-5 ceiling** | per-seed oracle gap (GLUE-5) |",
        "|---" * (len(tasks) + 4) + "|",
    ]
    for name, result, gap in rows:
        seeds = (result.get("glue5") or {}).get("n_seeds") or max((e["n_seeds"] for e in result["tasks"].values()), default=0)
        lines.append(
            f"| {name} | {seeds} | "
            + " | ".join(format_value(result["tasks"].get(t)) for t in tasks)
            + f" | **{format_value(result.get('glue5'))}** | {format_gap(gap)} |"
        )
    return lines


def best_steps_line(rows: list[tuple[str, dict, dict]], tasks: tuple[str, ...] = TASKS) -> list[str]:
    """Where each seed-mean curve peaks (best step / final step) — the regime's shape at a glance."""
    lines = ["| method | " + " | ".join(f"{t} best step / final" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, result, _ in rows:
        cells = []
        for task in tasks:
            entry = result["tasks"].get(task)
            cells.append("–" if not entry else f"{entry['best_step']} / {entry['final_step']} ({entry['best']:.1f}→{entry['final']:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# ---- every stored regime ----------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _load(results_dir: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "per_run", "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                run = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and "method" in run and "seed" in run:
            runs.append(run)
    return runs


def method_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """method → runs; the five `single_<task>` runs of the matrix make one `single_task` group."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        name = "single_task" if str(run["method"]).startswith("single_") else str(run["method"])
        groups.setdefault(name, []).append(run)
    return groups


def regime_rows(runs: list[dict], key: str) -> list[tuple[str, dict, dict]]:
    rows = []
    for method, group in sorted(method_groups(runs).items(), key=lambda kv: (kv[0] != "equal", kv[0])):
        curves = run_curves(group, key)
        if not any(curves.values()):
            continue
        rows.append((method, ceiling(curves), per_seed_oracle_gap(curves)))
    return rows


def anchor_rows(path: str) -> list[tuple[str, dict, dict]]:
    """The 3,000-step anchor's equal run (one seed, dev curves logged); its async-KD run has selection curves only."""
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    equal = stored.get("equal_run") or {}
    dev = equal.get("dev_curves") or {}
    curves = {t: {0: [(s, 100 * float(v)) for s, v in dev.get(t, [])]} for t in TASKS if dev.get(t)}
    return [("equal (1 seed)", ceiling(curves), per_seed_oracle_gap(curves))] if curves else []


def regimes() -> list[tuple[str, str]]:
    """(name, results dir) of every stored GLUE-5 regime with per-run JSONs, v2 first."""
    found = sorted(d for d in glob.glob(os.path.join(RESULTS, "glue5_*")) if glob.glob(os.path.join(d, "per_run", "*.json")))
    return [(os.path.basename(d), d) for d in found]


def overview() -> tuple[str, dict]:
    lines = ["# Ceiling of every stored regime", "", "Regenerate: `python -m benchmarks.ceiling`. Dev ×100. " + MEANING, ""]
    data: dict = {}
    for name, directory in regimes():
        runs = _load(directory)
        has_dev = any(any("_dev_score" in k for c in (r.get("curves") or []) for k in c) for r in runs)
        rows = regime_rows(runs, "eval_{task}_dev_score") if has_dev else []
        lines += [f"## {name}", ""]
        if rows:
            lines += table_lines(rows) + ["", "Seed-mean dev curves: best step / final step (best → final):", ""]
            lines += best_steps_line(rows) + [""]
            data[name] = {"split": "dev", "rows": {m: {"ceiling": c, "per_seed_oracle_gap": g} for m, c, g in rows}}
            continue
        sel_rows = regime_rows(runs, "eval_{task}_score")
        lines += [
            (
                "These runs evaluated the dev sets at the end only (final and best-selected checkpoints): **no dev "
                "curves, so no dev ceiling**. The same quantities on the *selection-split* curves (carved from "
                "training data, ≤ 300 examples per task here) are shown instead — a different, noisier split, "
                "not comparable with the dev ceilings above."
            ),
            "",
        ]
        if sel_rows:
            lines += table_lines(sel_rows) + [""]
        data[name] = {"split": "selection", "rows": {m: {"ceiling": c, "per_seed_oracle_gap": g} for m, c, g in sel_rows}}
    anchor = os.path.join(RESULTS, "anchor_3000", "anchor_3000.json")
    if os.path.isfile(anchor):
        rows = anchor_rows(anchor)
        lines += [
            "## anchor_3000 (3,000 steps, linear decay, 64 tokens)",
            "",
            (
                "One seed of equal weighting with dev curves (`equal_run`): no interval. The async-KD run of the anchor "
                "logged selection curves only (no dev curves): no ceiling."
            ),
            "",
        ]
        if rows:
            lines += table_lines(rows) + [""] + best_steps_line(rows) + [""]
            data["anchor_3000"] = {"split": "dev", "rows": {m: {"ceiling": c, "per_seed_oracle_gap": g} for m, c, g in rows}}
    return "\n".join(lines) + "\n", data


def main(out_dir: str | None = None) -> str:
    out_dir = out_dir or os.path.join(RESULTS, "ceiling")
    text, data = overview()
    os.makedirs(out_dir, exist_ok=True)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks.provenance import provenance

    origin = provenance(ROOT)  # before writing: opening the tracked output truncates it, which would read as a dirty tree
    with open(os.path.join(out_dir, "ceiling.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {"regimes": data, "n_bootstrap": N_BOOTSTRAP, "rng_seed": BOOTSTRAP_SEED, "level": LEVEL, "provenance": origin},
            handle,
            indent=1,
        )
    with open(os.path.join(out_dir, "ceiling.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else None))
