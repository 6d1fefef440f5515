"""Summarise GLUE-5 benchmark runs: JSON + markdown table + curve and comparison plots.

python -m benchmarks.summarize benchmarks/results/glue5_cpu
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict

import numpy as np

from benchmarks.ceiling import ceiling, method_groups, run_curves
from benchmarks.ceiling import table_lines as ceiling_table_lines

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
BASELINES_EXCLUDED = ("async_kd", "async_kd_top3", "async_kd_ens3", "async_kd_all_tasks")
# Matrix entries whose step cost is that of another measured method (same computation per step).
METHOD_OPTIONS_ALIASES = {"async_kd_top3": "async_kd", "async_kd_ens3": "async_kd"}
# Step composition controls, not balancing methods of their own: never "the best baseline".
CONTROLS = ("equal_all_tasks",)


def _load(results_dir: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "per_run", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            runs.append(json.load(handle))
    return runs


def _task_scores(metrics: dict | None, prefix: str = "dev") -> dict[str, float]:
    if not metrics:
        return {}
    return {t: 100 * metrics[f"{prefix}_{t}_score"] for t in TASKS if f"{prefix}_{t}_score" in metrics}


def _oracle_gap(run: dict) -> float | None:
    """Selection-split GLUE gap: each task at its own best evaluation vs the last evaluation (×100)."""
    curves = run.get("curves") or []
    if not curves:
        return None
    tasks = [t for t in run["tasks"] if f"eval_{t}_score" in curves[-1]]
    oracle = np.mean([max(c[f"eval_{t}_score"] for c in curves) for t in tasks])
    final = np.mean([curves[-1][f"eval_{t}_score"] for t in tasks])
    return 100 * float(oracle - final)


def _declines(run: dict) -> dict[str, float]:
    """Per task: last selection-split score minus the task's best one (×100; 0 = no decline)."""
    curves = run.get("curves") or []
    if not curves:
        return {}
    return {
        t: 100 * float(curves[-1][f"eval_{t}_score"] - max(c[f"eval_{t}_score"] for c in curves if f"eval_{t}_score" in c))
        for t in run["tasks"]
        if f"eval_{t}_score" in curves[-1]
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _scores_entry(by_seed: dict[int, dict[str, float]]) -> dict:
    """Per-task and GLUE-5 mean ± std over seeds, plus each seed's GLUE-5 score (for paired differences)."""
    rows = list(by_seed.values())
    glue5 = {str(seed): float(np.mean([scores[t] for t in TASKS])) for seed, scores in by_seed.items()}
    return {"tasks": {t: _mean_std([r[t] for r in rows]) for t in TASKS}, "glue5": _mean_std(list(glue5.values())), "glue5_by_seed": glue5}


def aggregate(runs: list[dict]) -> dict:
    """Per method: mean/std over seeds of each task's dev score (final and best-selected), GLUE-5 average."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    # single-task runs: seed -> task -> (final, best-selected) dev score
    single: dict[int, dict[str, tuple[float, float]]] = defaultdict(dict)
    for run in runs:
        if run["method"].startswith("single_"):
            task = run["tasks"][0]
            final = _task_scores(run["final_dev"])[task]
            best = _task_scores(run.get("best_selected_dev"))[task] if run.get("best_selected_dev") else final
            single[run["seed"]][task] = (final, best)
        else:
            by_method[run["method"]].append(run)
    table = {}
    for method, method_runs in by_method.items():
        entry = {"seeds": [r["seed"] for r in method_runs]}
        for label, key in (("final", "final_dev"), ("best_selected", "best_selected_dev")):
            by_seed = {r["seed"]: _task_scores(r[key]) for r in method_runs if r.get(key)}
            if by_seed:
                entry[label] = _scores_entry(by_seed)
        declines = [d for d in (_declines(r) for r in method_runs) if d]
        if declines:
            # Mean over the runs that have the task: a task missing from some runs' curves is skipped there.
            entry["decline"] = {t: float(np.mean([d[t] for d in declines if t in d])) for t in TASKS if any(t in d for d in declines)}
        gaps = [g for g in (_oracle_gap(r) for r in method_runs) if g is not None]
        entry["oracle_gap"] = float(np.mean(gaps)) if gaps else None
        seed0 = next((r for r in method_runs if r["seed"] == 0), None)
        if seed0 is not None:
            scores = _task_scores(seed0["final_dev"])
            entry["seed0"] = {"tasks": scores, "glue5": float(np.mean([scores[t] for t in TASKS]))}
        entry["wall_seconds"] = float(np.mean([r["wall_seconds"] for r in method_runs]))
        entry["peak_rss_mb"] = float(np.mean([r["peak_rss_mb"] for r in method_runs]))
        table[method] = entry
    # Five one-task models make one GLUE-5 entry per seed that has all five.
    complete = sorted(seed for seed, scores in single.items() if len(scores) == len(TASKS))
    if complete:
        entry = {"seeds": complete, "oracle_gap": None, "wall_seconds": None, "peak_rss_mb": None}
        for index, label in enumerate(("final", "best_selected")):
            entry[label] = _scores_entry({seed: {t: single[seed][t][index] for t in TASKS} for seed in complete})
        table["single_task"] = entry
    # v1 runs evaluate the dev sets at the end only: the ceiling is read on the selection-split curves.
    for method, group in method_groups(runs).items():
        if method in table:
            table[method]["ceiling_selection"] = ceiling(run_curves(group, "eval_{task}_score"))
    return table


def load_step_times(results_dir: str) -> dict:
    """Per-method step-time ratios of `benchmarks/method_step_time.py`, if it has been run."""
    path = os.path.join(os.path.dirname(results_dir), "speed", "method_step_time.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["methods"]


def seed0_table(table: dict, step_times: dict) -> list[str]:
    """Every method at seed 0 (same budget, same seed): per-task dev score and step cost relative to EW."""
    rows = [m for m in table if "final" in table[m] and 0 in table[m]["seeds"] and m != "single_task"]
    if not rows:
        return []
    lines = [
        "### Every method, seed 0 (same budget and seed)",
        "",
        "Final checkpoint, dev ×100. Step times from `benchmarks/method_step_time.py` (median step, no evaluation): "
        "all-tasks methods take one batch of every task per step, so their cost per training example is the "
        "step ratio / 5.",
        "",
        "| method | " + " | ".join(TASKS) + " | GLUE-5 | step time vs equal | time per example vs equal |",
        "|---" * (len(TASKS) + 4) + "|",
    ]
    for method in sorted(rows, key=lambda m: -table[m]["seed0"]["glue5"]):
        scores = table[method]["seed0"]
        timing = step_times.get(method) or step_times.get(METHOD_OPTIONS_ALIASES.get(method) or method)
        step = f"{timing['step_time_vs_equal']:.2f}" if timing else "–"
        example = f"{timing['example_time_vs_equal']:.2f}" if timing else "–"
        lines.append(
            f"| {method} | "
            + " | ".join(f"{scores['tasks'][t]:.2f}" for t in TASKS)
            + f" | **{scores['glue5']:.2f}** | {step} | {example} |"
        )
    return lines + [""]


def _standard_error(a: dict, b: dict) -> str:
    """Standard error of a difference of two means over seeds (sample std), or why there is none."""
    by_seed_a, by_seed_b = a.get("glue5_by_seed", {}), b.get("glue5_by_seed", {})
    runs_a, runs_b = list(by_seed_a.values()), list(by_seed_b.values())
    if len(runs_a) < 2 or len(runs_b) < 2:
        return f"{len(runs_a)} vs {len(runs_b)} seed(s): no error estimate"
    error = float(np.sqrt(np.var(runs_a, ddof=1) / len(runs_a) + np.var(runs_b, ddof=1) / len(runs_b)))
    text = f"standard error of the difference {error:.2f}, {len(runs_a)} vs {len(runs_b)} seeds"
    # A run seed fixes the heads' initialisation and the sampler's shuffling (the data splits are the
    # same for every seed), which two methods with the same seed share; the per-seed difference removes
    # that shared variation (seed 2, say, is low for every method).
    shared = sorted(set(by_seed_a) & set(by_seed_b), key=int)
    if len(shared) >= 2:
        differences = [by_seed_a[s] - by_seed_b[s] for s in shared]
        paired = float(np.std(differences, ddof=1) / np.sqrt(len(differences)))
        text += f"; paired by seed: {np.mean(differences):+.2f} ± {paired:.2f} standard error, per seed " + ", ".join(
            f"{d:+.2f}" for d in differences
        )
    return text


def decline_table(table: dict) -> list[str]:
    """How far each task falls from its best selection-split score by the end (the mechanism async-KD targets)."""
    rows = [m for m in table if table[m].get("decline")]
    if not rows:
        return []
    lines = [
        "### Decline after each task's best point (selection split)",
        "",
        "Last evaluation minus the task's best evaluation, ×100, mean over seeds (0 = the task ends at its best).",
        "",
        "| method | " + " | ".join(TASKS) + " | mean |",
        "|---" * (len(TASKS) + 2) + "|",
    ]
    for method in sorted(rows, key=lambda m: -np.mean(list(table[m]["decline"].values()))):
        decline = table[method]["decline"]  # a task no run of the method has is shown as "–" and left out of the mean
        lines.append(
            f"| {method} | "
            + " | ".join(f"{decline[t]:.2f}" if t in decline else "–" for t in TASKS)
            + f" | {np.mean([decline[t] for t in TASKS if t in decline]):.2f} |"
        )
    return lines + [""]


def markdown(table: dict, profile_note: str, step_times: dict | None = None) -> str:
    """The results table as markdown."""

    def cell(value):
        mean, std = value
        return f"{mean:.2f} ± {std:.2f}" if std else f"{mean:.2f}"

    step_times = step_times or {}
    lines = [profile_note, "", "Dev scores ×100 (task score = mean of its GLUE metrics), mean ± sample std over seeds.", ""]
    for label, title in (("final", "Final checkpoint"), ("best_selected", "Checkpoint with the best selection-split GLUE score")):
        lines += [f"### {title}", "", "| method | seeds | " + " | ".join(TASKS) + " | GLUE-5 |", "|---" * (len(TASKS) + 3) + "|"]
        ordered = sorted((m for m in table if label in table[m]), key=lambda m: -table[m][label]["glue5"][0])
        for method in ordered:
            row = table[method][label]
            lines.append(
                f"| {method} | {len(table[method]['seeds'])} | "
                + " | ".join(cell(row["tasks"][t]) for t in TASKS)
                + f" | **{cell(row['glue5'])}** |"
            )
        baselines = [m for m in ordered if m not in BASELINES_EXCLUDED + CONTROLS and m != "single_task"]
        ours = [m for m in BASELINES_EXCLUDED if m in table and label in table[m]]
        references = []
        if baselines:
            best = max(baselines, key=lambda m: table[m][label]["glue5"][0])
            references.append((f"best baseline ({best})", best))
        if label in table.get("single_task", {}):
            references.append(("single-task fine-tuning", "single_task"))
        if ours and references:
            lines.append("")
        for name, reference in references:
            for method in ours:
                delta = table[method][label]["glue5"][0] - table[reference][label]["glue5"][0]
                lines.append(
                    f"- {method} − {name}: **{delta:+.2f}** GLUE-5 points "
                    f"({_standard_error(table[method][label], table[reference][label])})."
                )
        lines.append("")
    lines += seed0_table(table, step_times)
    lines += decline_table(table)
    lines += [
        "### Cost and the single-checkpoint vs per-task-best gap",
        "",
        "Same number of training examples for every method (all-tasks-per-step methods take 1/5 of the steps, "
        "each with one batch of every task); wall time includes the selection-split evaluations. Runs of the "
        "matrix may overlap other jobs on the machine, so wall times are indicative only; the clean per-step "
        "cost is `benchmarks/method_step_time.py`'s.",
        "",
        "| method | train wall s | time vs equal | peak RSS MB | oracle gap (selection split, ×100) |",
        "|---|---|---|---|---|",
    ]
    reference = (table.get("equal") or {}).get("wall_seconds")
    for method, entry in table.items():
        if entry["wall_seconds"] is None:
            continue
        gap = "" if entry["oracle_gap"] is None else f"{entry['oracle_gap']:.2f}"
        ratio = f"{entry['wall_seconds'] / reference:.2f}" if reference else ""
        lines.append(f"| {method} | {entry['wall_seconds']:.0f} | {ratio} | {entry['peak_rss_mb']:.0f} | {gap} |")
    lines += [""] + ceiling_section(table)
    return "\n".join(lines) + "\n"


def ceiling_section(table: dict) -> list[str]:
    """The ceiling view (`benchmarks/ceiling.py`) where v1 allows it: v1 runs have no dev curves."""
    rows = [
        (m, e["ceiling_selection"], {"mean": e.get("oracle_gap"), "std": None})
        for m, e in table.items()
        if e.get("ceiling_selection") and e["ceiling_selection"]["tasks"]
    ]
    lines = [
        "### Ceiling (seed-averaged best − final)",
        "",
        "v1 runs evaluate the GLUE dev sets at the end only (final and best-selected checkpoints): **there are no "
        "dev curves, so no dev ceiling** for v1. Below, the same quantities on the *selection-split* curves "
        "(carved from training data, at most 300 examples per task): best − final of each task's seed-averaged "
        "selection curve and their GLUE-5 mean, 95 % percentile bootstrap over seeds (10,000 resamples, RNG seed "
        "0) — the most a per-task convergence or selection method could recover on average on that split — beside "
        "the per-seed oracle gap (each seed's own best minus final, averaged over seeds: it also collects the "
        "maximum of the evaluation noise, so it overstates what a method could recover). A different, noisier "
        "split than the v2 dev ceilings: not comparable with them.",
        "",
    ]
    if not rows:
        return lines + ["No selection curves.", ""]
    return lines + ceiling_table_lines(rows) + [""]


def plot(runs: list[dict], table: dict, results_dir: str) -> list[str]:
    """Per-method validation curves (seed 0) with convergence marks, and a comparison chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for run in runs:
        if run["seed"] != 0 or run["method"].startswith("single_") or not run.get("curves"):
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        steps = [c["step"] for c in run["curves"]]
        for index, task in enumerate(run["tasks"]):
            color = f"C{index}"
            ax.plot(steps, [100 * c[f"eval_{task}_score"] for c in run["curves"]], color=color, label=task, marker=".")
            record = (run.get("convergence") or {}).get(task) or {}
            values = [c[f"eval_{task}_score"] for c in run["curves"]]
            best_step, best_value = record.get("best_step"), record.get("metric_at_convergence")
            if best_step in steps and record.get("signal", "score") != "score":  # reported in its kd_signal's unit
                best_value = values[steps.index(best_step)]
            if best_step is None:  # no convergence monitor: mark the task's own best evaluation
                best_step, best_value = steps[values.index(max(values))], max(values)
            ax.plot(best_step, 100 * best_value, "o", color=color, markersize=9, fillstyle="none")
            if record.get("converged_step") is not None:
                ax.axvline(record["converged_step"], color=color, linestyle="--", alpha=0.6)
        ax.set_xlabel("step")
        ax.set_ylabel("selection-split score ×100")
        kd = " (monitored), dashed = KD switch" if run.get("convergence") else " per task"
        ax.set_title(f"{run['method']} (seed 0): selection-split curves; circles = best point{kd}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = os.path.join(results_dir, f"curves_{run['method']}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    methods = sorted((m for m in table if "final" in table[m]), key=lambda m: -table[m]["final"]["glue5"][0])
    if methods:
        fig, ax = plt.subplots(figsize=(8, 4))
        means = [table[m]["final"]["glue5"][0] for m in methods]
        stds = [table[m]["final"]["glue5"][1] for m in methods]
        ax.bar(methods, means, yerr=stds, color=["C3" if m.startswith("async_kd") else "C0" for m in methods])
        ax.set_ylim(min(means) - 5, max(means) + 3)
        ax.set_ylabel("GLUE-5 dev ×100 (final checkpoint)")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        path = os.path.join(results_dir, "comparison.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def summarize(results_dir: str) -> dict:
    """Write `summary.json`, `results.md` and the plots for the runs under `results_dir`."""
    runs = _load(results_dir)
    if not runs:
        print(f"no runs under {results_dir}")
        return {}
    table = aggregate(runs)
    reference = [r for r in runs if r["method"] == "equal"] or [r for r in runs if not r["method"].startswith("single_")] or runs
    settings = reference[0]["settings"]
    note = "Profile: " + ", ".join(f"{k}={v}" for k, v in settings.items() if not isinstance(v, dict)) + f"; caps={settings.get('caps')}"
    with open(os.path.join(results_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(table, handle, indent=1)
    text = markdown(table, note, load_step_times(results_dir))
    with open(os.path.join(results_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plot(runs, table, results_dir)
    print(text)
    return table


if __name__ == "__main__":
    summarize(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "glue5_cpu"))
