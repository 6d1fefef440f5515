#!/usr/bin/env python
"""Replay convergence rules on recorded selection-split curves: how often does a rule freeze a task at a
teacher that is within noise of the task's trivial predictor ("false convergence")?

    python -m benchmarks.convergence_replay                       # default: the GLUE-5 v1 (cpu) and v2 (minilm) runs
    python -m benchmarks.convergence_replay --runs-dir DIR ...    # other per_run folders (repeatable)

Every run that trained every task on its true labels the whole time (no async-KD: methods not starting
with "async_kd" and not "imtl_g_async_kd"; single-task runs for their own task) recorded, at every
evaluation, each task's score on the selection split, the value an async-KD monitor would have read.
Feeding that curve to a `ConvergenceMonitor` gives exactly the decision the rule would have taken on
that trajectory (until convergence the async-KD run *is* such a run). Three rules are replayed:

- old: patience on raw values (smoothing 1), no floor, require_improvement, the run's patience/min_steps
  (v1: kd_patience 2, kd_min_steps 200 / the run's step divisor; v2: patience 3, min_steps 0);
- new: the same + smoothing 2 + the trivial-predictor floor at z = 2 (the library's defaults until 2026-12-02);
- decline: new + the opt-in decline trigger (`kd_decline_trigger`, decline margin = the floor's margin);
- full: new + the smoothed series starting with the first full window (`kd_full_window`, the library's
  default since 2026-12-02; "new" is the rule of the v2 benchmark's declared runs, commit 8b05ad6);
- decl: full + a decline required (`kd_require_decline`): the smoothed value must also have fallen below its
  best by more than z noise units at the task's level (`noise_margin`), so a plateau alone never converges.

A teacher (the monitor's best raw value before convergence) is *near-trivial* when
|teacher - trivial| <= margin, where trivial is the task's trivial predictor (training majority class,
STS-B: 0) on the selection split and margin = z * scale / sqrt(n) (`convergence_floor`). The async-KD
runs' own convergence reports give the observed rate of the rule they ran with.

Reads the GLUE label columns only (no model). Writes `benchmarks/results/convergence_replay/replay.json`
and `replay.md`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from hf_async_mtl.async_kd.monitor import ConvergenceMonitor, convergence_floor  # noqa: E402

Z = 2.0
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "convergence_replay")
DEFAULT_RUN_DIRS = (
    os.path.join(ROOT, "benchmarks", "results", "glue5_cpu", "per_run"),
    os.path.join(ROOT, "benchmarks", "results", "glue5_cpu_new_rule", "per_run"),
    os.path.join(ROOT, "benchmarks", "results", "glue5_cpu_decline", "per_run"),
    os.path.join(ROOT, "benchmarks", "results", "glue5_minilm", "per_run"),
    os.path.join(ROOT, "benchmarks", "results", "glue5_minilm_linear", "per_run"),
    os.path.join(ROOT, "benchmarks", "results", "glue5_minilm_t2", "per_run"),
)
# Profile name in the run JSONs -> the label used in the tables.
PROFILE_LABELS = {
    "cpu": "v1 (cpu)",
    "minilm": "v2 (minilm)",
    "minilm_t2": "v2, first profile (minilm_t2)",
    "minilm_linear": "v2, second profile (minilm_linear)",
}
# The rules replayed: ConvergenceMonitor options besides patience/min_steps (which come from the run).
RULES = {
    "old": {"smoothing": 1, "floor": False, "require_improvement": True},
    "new": {"smoothing": 2, "floor": True, "require_improvement": True},
    # the default rule + the opt-in decline trigger (kd_decline_trigger): decline margin = the floor's margin
    "decline": {"smoothing": 2, "floor": True, "require_improvement": True, "decline": True},
    # new + the smoothed series starting with the first full window (kd_full_window, the default from 2026-12-02)
    "full": {"smoothing": 2, "floor": True, "require_improvement": True, "full_window": True},
    # full + a decline beyond the split's noise at the task's level required (kd_require_decline)
    "decl": {"smoothing": 2, "floor": True, "require_improvement": True, "full_window": True, "require_decline": True},
}
# v2 runs: the profile's monitor settings (the brief of the v2 matrix; single-task runs share them).
V2_PATIENCE, V2_MIN_STEPS = 3, 0


# ---------------------------------------------------------------------------------------- pure replay


def near_trivial(value: float | None, trivial: float | None, margin: float | None) -> bool | None:
    """|value - trivial| <= margin (None when any of them is unknown)."""
    if value is None or trivial is None or margin is None:
        return None
    return abs(value - trivial) <= margin + 1e-12


def replay_curve(
    curve: Iterable[tuple[int, float]],
    *,
    patience: int,
    min_steps: int,
    smoothing: int = 1,
    floor: float | None = None,
    require_improvement: bool = True,
    greater_is_better: bool = True,
    trivial: float | None = None,
    margin: float | None = None,
    decline_margin: float | None = None,
    full_window: bool = False,
    require_decline: bool = False,
    noise: tuple[tuple[str, ...], int] | None = None,
    decline_z: float = Z,
) -> dict[str, Any]:
    """Feed one task's (step, selection value) curve to a `ConvergenceMonitor` and report its decision.

    `teacher_*` is the monitor's best raw value before convergence (the parameters async-KD would have
    frozen); it is None when the task never converged. `best_*` is the best raw value over the whole curve
    as the monitor kept it (= the teacher when converged). `near_trivial` compares the teacher with
    `trivial` ± `margin` (None when not converged or no reference was given).
    """
    points = [(int(step), float(value)) for step, value in curve]
    if not points:
        raise ValueError("replay_curve needs at least one (step, value) point.")
    monitor = ConvergenceMonitor(
        {"task": greater_is_better},
        patience=patience,
        min_steps=min_steps,
        require_improvement=require_improvement,
        smoothing=smoothing,
        floors=None if floor is None else {"task": floor},
        decline_margins=None if decline_margin is None else {"task": decline_margin},
        full_window=full_window,
        require_decline=require_decline,
        noise=None if noise is None else {"task": noise},
        decline_z=decline_z,
    )
    for step, value in points:
        monitor.update(step, {"task": value})
    converged = monitor.is_converged("task")
    best_step, best_value = monitor.best_step("task"), monitor.best_value("task")
    teacher_value = best_value if converged else None
    return {
        "converged": converged,
        "converged_step": monitor.converged_step("task"),
        "teacher_step": best_step if converged else None,
        "teacher_value": teacher_value,
        "best_step": best_step,
        "best_value": best_value,
        "best_smoothed": monitor.best_smoothed("task"),
        "last_step": points[-1][0],
        "last_value": points[-1][1],
        "trivial_value": trivial,
        "margin": margin,
        "floor": floor,
        "near_trivial": near_trivial(teacher_value, trivial, margin) if converged else None,
    }


def rule_options(rule: str, reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """`replay_curve` keyword arguments of a rule for one task (the floor comes from its reference)."""
    spec = RULES[rule]
    floor = None
    if spec["floor"]:
        if not reference or reference.get("floor") is None:
            raise ValueError(f"Rule {rule!r} needs the task's floor; reference: {reference!r}.")
        floor = float(reference["floor"])
    decline_margin = None
    if spec.get("decline"):
        if not reference or reference.get("margin") is None:
            raise ValueError(f"Rule {rule!r} needs the task's margin; reference: {reference!r}.")
        decline_margin = float(reference["margin"])
    noise = None
    if spec.get("require_decline"):
        if not reference or not reference.get("selection_size") or not reference.get("metrics"):
            raise ValueError(f"Rule {rule!r} needs the task's metrics and selection size; reference: {reference!r}.")
        noise = (tuple(reference["metrics"]), int(reference["selection_size"]))
    return {
        "smoothing": spec["smoothing"],
        "floor": floor,
        "require_improvement": spec["require_improvement"],
        "decline_margin": decline_margin,
        "full_window": bool(spec.get("full_window", False)),
        "require_decline": bool(spec.get("require_decline", False)),
        "noise": noise,
        "decline_z": float((reference or {}).get("z", Z)),
    }


# ---------------------------------------------------------------------------------------- run files


def is_async_kd(run: Mapping[str, Any]) -> bool:
    """Whether a run distilled any task (so its curves are not true-label training throughout)."""
    method = str(run.get("method", ""))
    settings = run.get("settings") or {}
    return (
        method.startswith("async_kd")
        or method == "imtl_g_async_kd"
        or bool(settings.get("async_kd"))
        or settings.get("mtl_method") == "async_kd"
    )


def run_version(run: Mapping[str, Any]) -> int:
    return int(run.get("version", 1))


def monitor_settings(run: Mapping[str, Any], profile_max_steps: int | None = None) -> dict[str, int]:
    """Patience and min_steps the run's async-KD monitor had (or would have had).

    v1 (`glue5_quality.run_one`) divides kd_min_steps by the run's step divisor (5 for single-task and
    all-tasks-per-step runs) but records the profile's undivided value in `settings`; the divisor is
    recovered from the profile's and the run's max_steps. v2 uses patience 3 and min_steps 0 throughout.
    """
    settings = run.get("settings") or {}
    if run_version(run) >= 2:
        return {"patience": V2_PATIENCE, "min_steps": V2_MIN_STEPS}
    patience = int(settings.get("kd_patience", 2))
    min_steps = int(settings.get("kd_min_steps", 0))
    if profile_max_steps and settings.get("max_steps"):
        divisor = max(1, round(profile_max_steps / int(settings["max_steps"])))
        min_steps //= divisor
    return {"patience": patience, "min_steps": min_steps}


def task_curve(run: Mapping[str, Any], task: str, split: str | None = None) -> list[tuple[int, float]]:
    """(step, value) of `eval_<task>[_<split>]_score` over the run's evaluations, in step order."""
    key = f"eval_{task}_{split}_score" if split else f"eval_{task}_score"
    points = {int(log["step"]): float(log[key]) for log in run.get("curves") or [] if key in log and "step" in log}
    return sorted(points.items())


def value_at(curve: list[tuple[int, float]], step: int | None) -> float | None:
    if step is None:
        return None
    return dict(curve).get(int(step))


def replay_run(
    run: Mapping[str, Any],
    references: Mapping[str, Mapping[str, Any]],
    profile_max_steps: int | None = None,
    rules: Iterable[str] = tuple(RULES),
) -> list[dict[str, Any]]:
    """One row per (task with a selection curve, rule) of a true-label run; [] for an async-KD run."""
    if is_async_kd(run):
        return []
    settings = monitor_settings(run, profile_max_steps)
    rows = []
    for task in run.get("tasks") or TASKS:
        curve = task_curve(run, task)
        if not curve:
            continue
        reference = references.get(task) or {}
        dev = task_curve(run, task, "dev") if run_version(run) >= 2 else []
        for rule in rules:
            result = replay_curve(
                curve,
                **settings,
                **rule_options(rule, reference),
                greater_is_better=bool(reference.get("greater_is_better", True)),
                trivial=reference.get("trivial_value"),
                margin=reference.get("margin"),
            )
            row = {
                "profile": run.get("profile"),
                "version": run_version(run),
                "method": run.get("method"),
                "seed": run.get("seed"),
                "task": task,
                "rule": rule,
                **settings,
                "num_evaluations": len(curve),
                **result,
            }
            if dev:
                row["dev_at_teacher"] = value_at(dev, result["teacher_step"])
                row["dev_at_last"] = dev[-1][1]
            rows.append(row)
    return rows


def report_rule(report_task: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """Which rule an async-KD run's monitor ran: v1 reports (no `smoothing` field) are the old rule. A run whose noise
    was measured by resampling (`kd_noise`) or that read another signal than the score (`kd_signal`) gets them
    appended: its margins (and values) are not the stored curve's formula ones, so it is not replayed here."""
    rule = _rule_shape(report_task, run)
    for field, default in (("noise", "formula"), ("signal", "score")):
        if report_task.get(field, default) != default:
            rule += f",{field}={report_task[field]}"
    return rule


def _rule_shape(report_task: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    if "smoothing" not in report_task:
        return "old"
    gated = report_task.get("floor") is not None
    if report_task.get("require_decline"):
        return (
            "decl"
            if report_task.get("full_window") and int(report_task["smoothing"]) == 2 and gated
            else (f"smoothing={report_task['smoothing']},gate={gated},require_decline")
        )
    if report_task.get("decline_margin") is not None or str(run.get("method", "")).endswith("_decline"):
        return "decline" if int(report_task["smoothing"]) == 2 and gated else f"smoothing={report_task['smoothing']},gate={gated},decline"
    if report_task.get("full_window") and int(report_task["smoothing"]) == 2 and gated:
        return "full"
    return (
        "old"
        if int(report_task["smoothing"]) == 1 and not gated
        else ("new" if int(report_task["smoothing"]) == 2 and gated else f"smoothing={report_task['smoothing']},gate={gated}")
    )


def observed_rows(
    run: Mapping[str, Any], references: Mapping[str, Mapping[str, Any]], profile_max_steps: int | None = None
) -> list[dict[str, Any]]:
    """One row per task of an async-KD run's own convergence report, with a replay of its rule on its curve.

    The replay is a fidelity check: until a task converges the run trained it on true labels, so the
    replayed rule must reach the same converged_step and best_step as the report.
    """
    report = run.get("convergence") or {}
    if not is_async_kd(run) or not report:
        return []
    settings = monitor_settings(run, profile_max_steps)
    rows = []
    for task, entry in report.items():
        reference = references.get(task) or {}
        trivial, margin = reference.get("trivial_value"), reference.get("margin")
        if entry.get("signal", "score") != "score":  # teacher in the signal's units: its own trivial value and margin
            trivial, margin = entry.get("trivial_value"), entry.get("margin")
        rule = report_rule(entry, run)
        teacher = entry.get("teacher_metric")
        if teacher is None:
            teacher = entry.get("metric_at_convergence")
        converged = bool(entry.get("converged"))
        row = {
            "profile": run.get("profile"),
            "version": run_version(run),
            "method": run.get("method"),
            "seed": run.get("seed"),
            "task": task,
            "rule": rule,
            **settings,
            "converged": converged,
            "converged_step": entry.get("converged_step"),
            "best_step": entry.get("best_step"),
            "teacher_value": teacher if converged else None,
            "trivial_value": trivial,
            "margin": margin,
            "near_trivial": near_trivial(teacher, trivial, margin) if converged else None,
            "reported_near_trivial": entry.get("near_trivial"),
        }
        curve = task_curve(run, task)
        if rule in RULES and curve:
            replayed = replay_curve(
                curve, **settings, **rule_options(rule, reference), greater_is_better=bool(reference.get("greater_is_better", True))
            )
            row["replay_matches"] = (
                replayed["converged"] == converged
                and replayed["converged_step"] == entry.get("converged_step")
                and (not converged or replayed["best_step"] == entry.get("best_step"))
            )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- summaries


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize_rows(rows: Iterable[Mapping[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Counts per group of `keys`: pairs, convergences, near-trivial convergences and their rates."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]
        converged = [r for r in members if r["converged"]]
        near = [r for r in converged if r.get("near_trivial")]
        not_above = [
            r for r in converged if r.get("trivial_value") is not None and r["teacher_value"] <= r["trivial_value"] + r["margin"] + 1e-12
        ]
        out.append(
            {
                **dict(zip(keys, key)),
                "pairs": len(members),
                "converged": len(converged),
                "near_trivial": len(near),
                "not_above_floor": len(not_above),
                "near_trivial_per_convergence": _rate(len(near), len(converged)),
                "near_trivial_per_pair": _rate(len(near), len(members)),
            }
        )
    return out


def transitions(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each (run, task) the old rule froze near-trivially: what the new rule did on the same curve."""
    by_pair: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_pair[(row["profile"], row["method"], row["seed"], row["task"])][row["rule"]] = row
    out = []
    for (profile, method, seed, task), rules in sorted(by_pair.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        old, new = rules.get("old"), rules.get("new")
        if not old or not new or not old.get("near_trivial"):
            continue
        entry = {
            "profile": profile,
            "method": method,
            "seed": seed,
            "task": task,
            "old_converged_step": old["converged_step"],
            "old_teacher_step": old["teacher_step"],
            "old_teacher_value": old["teacher_value"],
            "trivial_value": old["trivial_value"],
            "margin": old["margin"],
            "new_converged": new["converged"],
            "new_converged_step": new["converged_step"],
            "new_teacher_step": new["teacher_step"],
            "new_teacher_value": new["teacher_value"],
            "best_value_whole_curve": new["best_value"],
            "last_value": old["last_value"],
            "learnt_later": old["last_value"] - old["trivial_value"] > old["margin"]
            or new["best_value"] - old["trivial_value"] > old["margin"],
        }
        if "dev_at_teacher" in old:
            entry.update(
                old_dev_at_teacher=old["dev_at_teacher"], new_dev_at_teacher=new.get("dev_at_teacher"), dev_at_last=old["dev_at_last"]
            )
        out.append(entry)
    return out


def agreement(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per profile and task, the two rules on the same curves: who converged, and (both) where and at what teacher."""
    by_pair: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_pair[(row["profile"], row["task"], row["method"], row["seed"])][row["rule"]] = row
    groups: dict[tuple, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = defaultdict(list)
    for (profile, task, _, _), rules in by_pair.items():
        if "old" in rules and "new" in rules:
            groups[(profile, task)].append((rules["old"], rules["new"]))
    out = []
    for profile, task in sorted(groups, key=lambda k: (str(k[0]), TASKS.index(k[1]) if k[1] in TASKS else 99)):
        pairs = groups[(profile, task)]
        both = [(o, n) for o, n in pairs if o["converged"] and n["converged"]]

        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        out.append(
            {
                "profile": profile,
                "task": task,
                "pairs": len(pairs),
                "both": len(both),
                "old_only": sum(1 for o, n in pairs if o["converged"] and not n["converged"]),
                "new_only": sum(1 for o, n in pairs if n["converged"] and not o["converged"]),
                "neither": sum(1 for o, n in pairs if not o["converged"] and not n["converged"]),
                "both_mean_teacher_old": mean([o["teacher_value"] for o, _ in both]),
                "both_mean_teacher_new": mean([n["teacher_value"] for _, n in both]),
                "both_mean_converged_step_old": mean([o["converged_step"] for o, _ in both]),
                "both_mean_converged_step_new": mean([n["converged_step"] for _, n in both]),
            }
        )
    return out


def dev_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """v2: mean dev score at the replayed teacher vs at the last evaluation, per rule and task (converged pairs)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("dev_at_teacher") is not None and row["converged"]:
            groups[(row["profile"], row["rule"], row["task"])].append(row)
    out = []
    for key in sorted(groups):
        members = groups[key]
        at_teacher = sum(r["dev_at_teacher"] for r in members) / len(members)
        at_last = sum(r["dev_at_last"] for r in members) / len(members)
        out.append(
            {
                "profile": key[0],
                "rule": key[1],
                "task": key[2],
                "converged_pairs": len(members),
                "mean_dev_at_teacher": at_teacher,
                "mean_dev_at_last": at_last,
                "mean_teacher_minus_last": at_teacher - at_last,
            }
        )
    return out


# ---------------------------------------------------------------------------------------- references (GLUE labels)


def selection_split_labels(profile_name: str, task: str, glue_dir: str) -> tuple[Any, Any]:
    """(training-pool labels, selection-split labels) of one task, carved as `glue5_quality.run_one[_v2]` carve them.

    The selection split takes the profile's `selection_fraction` (0.1 unless set; the #42 regime profiles: 0.3) of
    the training set, at most `selection_max`, seed 42. The pool is what the run trained on: v1 capped it; v2 keeps the
    full pool, the regime profiles cap what is left after the carve (`capped`), as `run_one_v2` does.
    """
    import numpy as np

    from benchmarks.glue5_quality import PROFILES, capped
    from glue_tasks import load_glue_task
    from hf_async_mtl.data import cap_dataset as cap
    from hf_async_mtl.data import carve_validation_split

    profile = PROFILES[profile_name]
    fraction = float(profile.get("selection_fraction", 0.1))
    pool, held_out = carve_validation_split(load_glue_task(task, "train", glue_dir), fraction, profile["selection_max"], seed=42)
    if profile.get("version", 1) < 2:
        pool = cap(pool, profile["caps"].get(task), 42)
    else:  # v2 and the regime profiles: carved from the full set, then the pool capped (run_one_v2; no cap: the pool)
        pool = capped(pool, profile["caps"].get(task), 42)
    return np.asarray(pool["label"]), np.asarray(held_out["label"])


def compute_references(profile_name: str, glue_dir: str, z: float = Z, tasks: Iterable[str] = TASKS) -> dict[str, dict]:
    """Per task: the trivial predictor's selection-split value, the split's size, the margin and floor at `z`.

    The selection split and training pool are carved as `glue5_quality.run_one[_v2]` carve them; the
    majority class comes from the training pool (v1: the capped pool the run trained on; v2: the full pool).
    """
    import numpy as np

    from glue_tasks import get_glue_task
    from hf_async_mtl.async_kd.callback import trivial_predictor_value

    references = {}
    for name in tasks:
        spec = get_glue_task(name)
        train_labels, selection_labels = selection_split_labels(profile_name, name, glue_dir)
        trivial = trivial_predictor_value(spec, train_labels, selection_labels)
        metrics = tuple(spec.metrics if spec.main_metric == "score" else (spec.main_metric,))
        floor = convergence_floor(trivial, metrics, len(selection_labels), z, spec.greater_is_better)
        entry = {
            "trivial_value": trivial,
            "selection_size": len(selection_labels),
            "train_pool_size": len(train_labels),
            "metrics": list(metrics),
            "z": z,
            "margin": abs(floor - trivial),
            "floor": floor,
            "greater_is_better": spec.greater_is_better,
        }
        if spec.is_regression:
            entry["predictor"] = "training-label mean (constant: correlation undefined, counts as 0)"
        else:
            counts = np.bincount(train_labels.astype(np.int64), minlength=spec.num_labels)
            majority = int(counts.argmax())
            entry["predictor"] = f"majority class {majority} ({spec.label_names[majority]})"
            entry["train_majority_share"] = float(counts[majority] / counts.sum())
            entry["selection_majority_share"] = float(np.mean(selection_labels == majority))
        references[name] = entry
    return references


# ---------------------------------------------------------------------------------------- driver


def load_runs(run_dirs: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every per-run JSON under `run_dirs`, deduplicated by (results folder, profile, method, seed)."""
    runs, sources, seen = [], [], set()
    for directory in run_dirs:
        files = sorted(glob.glob(os.path.join(directory, "*.json")))
        used = 0
        for path in files:
            with open(path, encoding="utf-8") as handle:
                run = json.load(handle)
            if "curves" not in run or "method" not in run:
                continue
            folder = os.path.basename(os.path.dirname(os.path.abspath(directory)))
            key = (folder, run.get("profile"), run.get("method"), run.get("seed"))
            if key in seen:
                continue
            seen.add(key)
            run["_source"] = os.path.relpath(path, ROOT)
            runs.append(run)
            used += 1
        sources.append({"dir": os.path.relpath(directory, ROOT), "files": len(files), "runs_used": used})
    return runs, sources


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def render_markdown(result: Mapping[str, Any]) -> str:
    z = result["z"]
    lines = [
        "# Convergence-rule replay on recorded selection curves",
        "",
        f"Generated by `python -m benchmarks.convergence_replay` at commit `{result['commit']}`"
        + (" (tracked files modified)" if result.get("dirty") else "")
        + ".",
        "",
        "**What is compared.** Every run that trained all its tasks on true labels the whole time (no async-KD"
        " method; single-task runs for their own task) logged each task's score on the *selection split* at every"
        " evaluation. Each task's curve is fed to `ConvergenceMonitor` under three rules, exactly as an async-KD"
        " monitor would have read it (until a task converges, an async-KD run is such a run):",
        "",
        "- **old**: patience on raw values (smoothing 1), no floor, require_improvement; v1: patience 2, min_steps"
        " 200 ÷ the run's step divisor (40 for single-task and all-tasks-per-step runs); v2: patience 3, min_steps 0.",
        f"- **new**: the same + smoothing 2 + the trivial-predictor floor (trivial + margin, z = {z:g}) — the default until 2026-12-02.",
        "- **decline**: new + the opt-in decline trigger (`kd_decline_trigger`): a smoothed fall below the best by"
        " more than the margin converges the task, floor or not. The tables comparing two rules compare old and new.",
        "",
        "A convergence is **near-trivial** when its teacher (the monitor's best raw selection value before"
        " convergence, the parameters async-KD would freeze) satisfies |teacher − trivial| ≤ margin, with trivial ="
        " the trivial predictor's selection-split value (training majority class; STS-B: constant → 0) and margin ="
        f" {z:g} · s / √n (s = 0.5 for accuracy/F1, 1 for MCC/correlation, averaged over the task's metrics;"
        " n = selection-split size). *Not above floor* also counts teachers below trivial − margin.",
        "",
        "Run files read: " + "; ".join(f"`{s['dir']}` ({s['runs_used']} runs)" for s in result["sources"]) + ".",
        "",
        "## Trivial predictor and floor per task (selection split)",
        "",
        "| profile | task | predictor | n | trivial | margin | floor |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for profile, refs in result["references"].items():
        for task, ref in refs.items():
            lines.append(
                f"| {PROFILE_LABELS.get(profile, profile)} | {task} | {ref['predictor']} | {ref['selection_size']} | "
                f"{ref['trivial_value']:.4f} | {ref['margin']:.4f} | {ref['floor']:.4f} |"
            )
    lines += [
        "",
        "## Replayed rules: false convergences (true-label runs)",
        "",
        "Pairs = (run, task) selection curves replayed; converged = the rule declared the task converged before"
        " the run ended; near-trivial = converged with |teacher − trivial| ≤ margin; rates are per convergence and"
        " per pair.",
        "",
        "| rule | profile | pairs | converged | near-trivial | not above floor | near-trivial / converged | near-trivial / pairs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['rule']} | {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['pairs']} | {row['converged']} | "
            f"{row['near_trivial']} | {row['not_above_floor']} | {_pct(row['near_trivial_per_convergence'])} | "
            f"{_pct(row['near_trivial_per_pair'])} |"
        )
    lines += [
        "",
        "### Per task",
        "",
        "| profile | task | rule | pairs | converged | near-trivial | not above floor | near-trivial / converged |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(
        result["per_task"], key=lambda r: (r["profile"], TASKS.index(r["task"]) if r["task"] in TASKS else 99, r["rule"] != "old")
    ):
        lines.append(
            f"| {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['task']} | {row['rule']} | {row['pairs']} | "
            f"{row['converged']} | {row['near_trivial']} | {row['not_above_floor']} | "
            f"{_pct(row['near_trivial_per_convergence'])} |"
        )
    lines += [
        "",
        "The new rule cannot converge near-trivially on a greater-is-better metric: it converges only once its"
        " smoothed best (a mean of raw values) clears trivial + margin, and its teacher is the best raw value, at"
        " least that mean. Its zero is by construction; the evidence is what the old rule froze (below) and what"
        " the floor costs (convergences given up, next table).",
        "",
        "### Both rules on the same curves",
        "",
        "Per (run, task) curve: converged under both rules, only the old, only the new, neither; for the curves both"
        " converged on, the mean teacher (selection score) and mean convergence step of each rule.",
        "",
        "| profile | task | pairs | both | old only | new only | neither | teacher old → new (both) | conv. step old → new (both) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["agreement"]:
        lines.append(
            f"| {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['task']} | {row['pairs']} | {row['both']} | "
            f"{row['old_only']} | {row['new_only']} | {row['neither']} | "
            f"{_fmt(row['both_mean_teacher_old'])} → {_fmt(row['both_mean_teacher_new'])} | "
            f"{_fmt(row['both_mean_converged_step_old'], 0)} → {_fmt(row['both_mean_converged_step_new'], 0)} |"
        )
    trans = result["transitions"]
    lines += [
        "",
        "### What the new rule did where the old rule converged near-trivially",
        "",
        "Same curve, both rules. *Learnt later* = the task's selection score later cleared trivial + margin"
        " (its best over the whole run, or its last value), i.e. the old rule froze a teacher that knew nothing"
        " while training on true labels went on to learn.",
        "",
    ]
    if trans:
        has_dev = any("old_dev_at_teacher" in t for t in trans)
        header = "| profile | method | seed | task | old: conv. step / teacher step / teacher | trivial ± margin | new: conv. step / teacher step / teacher | best (whole run) | last | learnt later |"
        if has_dev:
            header += " dev at old teacher | dev at last |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for t in trans:
            line = (
                f"| {PROFILE_LABELS.get(t['profile'], t['profile'])} | {t['method']} | {t['seed']} | {t['task']} | "
                f"{t['old_converged_step']} / {t['old_teacher_step']} / {_fmt(t['old_teacher_value'])} | "
                f"{_fmt(t['trivial_value'])} ± {_fmt(t['margin'])} | "
                + (
                    f"{t['new_converged_step']} / {t['new_teacher_step']} / {_fmt(t['new_teacher_value'])}"
                    if t["new_converged"]
                    else "not converged"
                )
                + f" | {_fmt(t['best_value_whole_curve'])} | {_fmt(t['last_value'])} | {_fmt(t['learnt_later'])} |"
            )
            if has_dev:
                line += f" {_fmt(t.get('old_dev_at_teacher'))} | {_fmt(t.get('dev_at_last'))} |"
            lines.append(line)
        learnt = sum(1 for t in trans if t["learnt_later"])
        lines += [
            "",
            f"{len(trans)} near-trivial old-rule convergences; the new rule converged on "
            f"{sum(1 for t in trans if t['new_converged'])} of these curves (never near-trivially); on {learnt} the "
            "task later learnt (selection score above trivial + margin).",
        ]
    else:
        lines.append("None.")
    if result["dev_summary"]:
        lines += [
            "",
            "### v2: dev score at the replayed teacher vs at the last evaluation (converged pairs)",
            "",
            "What distillation would have frozen (the dev score of the teacher's step) vs where equal weighting"
            " ended (dev score at the last evaluation), means over the pairs the rule converged on.",
            "",
            "| profile | task | rule | converged pairs | dev at teacher | dev at last | teacher − last |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for row in result["dev_summary"]:
            lines.append(
                f"| {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['task']} | {row['rule']} | "
                f"{row['converged_pairs']} | {row['mean_dev_at_teacher']:.4f} | {row['mean_dev_at_last']:.4f} | "
                f"{row['mean_teacher_minus_last']:+.4f} |"
            )
    obs = result["observed"]
    lines += [
        "",
        "## Observed: the async-KD runs' own convergence reports",
        "",
        "Each async-KD run's recorded decision per task (teacher = `teacher_metric`, else `metric_at_convergence`,"
        " the best selection value before convergence), against the same trivial ± margin. v1 runs all ran the"
        " old rule. *Replay matches* = replaying the run's rule on its own selection curve reproduces its"
        " converged_step and best_step (a check of the replay).",
        "",
        "| rule run | profile | pairs | converged | near-trivial | not above floor | near-trivial / converged | replay matches |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in obs["summary"]:
        lines.append(
            f"| {row['rule']} | {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['pairs']} | {row['converged']} | "
            f"{row['near_trivial']} | {row['not_above_floor']} | {_pct(row['near_trivial_per_convergence'])} | "
            f"{row['replay_matches']}/{row['replay_checked']} |"
        )
    if obs["per_task"]:
        lines += [
            "",
            "| rule run | profile | task | pairs | converged | near-trivial | runs (method_seed) with a near-trivial teacher |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for row in sorted(obs["per_task"], key=lambda r: (r["rule"], r["profile"], TASKS.index(r["task"]) if r["task"] in TASKS else 99)):
            lines.append(
                f"| {row['rule']} | {PROFILE_LABELS.get(row['profile'], row['profile'])} | {row['task']} | {row['pairs']} | "
                f"{row['converged']} | {row['near_trivial']} | {', '.join(row['near_trivial_runs']) or '–'} |"
            )
    lines.append("")
    return "\n".join(lines)


def build(run_dirs: Iterable[str], glue_dir: str, z: float = Z) -> dict[str, Any]:
    from benchmarks.glue5_quality import PROFILES
    from benchmarks.provenance import git_commit

    runs, sources = load_runs(run_dirs)
    profiles = sorted({run.get("profile") for run in runs if run.get("profile") in PROFILES})
    references = {profile: compute_references(profile, glue_dir, z) for profile in profiles}
    replays, observed = [], []
    for run in runs:
        profile = run.get("profile")
        if profile not in references:
            continue
        max_steps = PROFILES[profile]["max_steps"]
        for row in replay_run(run, references[profile], max_steps):
            replays.append({**row, "source": run["_source"]})
        for row in observed_rows(run, references[profile], max_steps):
            observed.append({**row, "source": run["_source"]})
    obs_summary = summarize_rows(observed, ("rule", "profile"))
    for row in obs_summary:
        members = [o for o in observed if o["rule"] == row["rule"] and o["profile"] == row["profile"] and "replay_matches" in o]
        row["replay_checked"] = len(members)
        row["replay_matches"] = sum(1 for o in members if o["replay_matches"])
    obs_per_task = summarize_rows(observed, ("rule", "profile", "task"))
    for row in obs_per_task:
        row["near_trivial_runs"] = [
            f"{o['method']}_s{o['seed']}"
            for o in observed
            if (o["rule"], o["profile"], o["task"]) == (row["rule"], row["profile"], row["task"]) and o["near_trivial"]
        ]
    commit = git_commit(ROOT)
    return {
        "generated_by": "python -m benchmarks.convergence_replay",
        "commit": commit["commit"],
        "dirty": commit["dirty"],
        "z": z,
        "rules": {
            "old": "ConvergenceMonitor(smoothing=1, floors=None, require_improvement=True, patience/min_steps of the run)",
            "new": f"ConvergenceMonitor(smoothing=2, floors=trivial + margin at z={z:g}, require_improvement=True, patience/min_steps of the run)",
            "decline": "as new + decline_margins=margin (kd_decline_trigger: a smoothed fall below the best by more than the margin converges the task, floor or not)",
            "monitor_settings": "v1: kd_patience 2, kd_min_steps 200 // (profile max_steps / run max_steps); v2: patience 3, min_steps 0",
            "near_trivial": "converged and |teacher - trivial| <= margin; teacher = best raw selection value before convergence",
            "replayed_runs": "methods not starting with 'async_kd' and not 'imtl_g_async_kd' (single-task runs for their own task)",
        },
        "sources": sources,
        "references": references,
        "summary": summarize_rows(replays, ("rule", "profile")),
        "per_task": summarize_rows(replays, ("rule", "profile", "task")),
        "agreement": agreement(replays),
        "transitions": transitions(replays),
        "dev_summary": dev_summary(replays),
        "observed": {"summary": obs_summary, "per_task": obs_per_task, "rows": observed},
        "replays": replays,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs-dir",
        action="append",
        default=None,
        help="A per_run folder of GLUE-5 results (repeatable; default: glue5_cpu and glue5_minilm).",
    )
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("--z", type=float, default=Z)
    args = parser.parse_args(argv)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    result = build(args.runs_dir or DEFAULT_RUN_DIRS, glue_dir, args.z)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "replay.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "replay.md"), "w", encoding="utf-8") as handle:
        handle.write(render_markdown(result))
    for row in result["summary"]:
        print(
            f"replayed {row['rule']:>3} {row['profile']:>6}: {row['pairs']} pairs, {row['converged']} converged, "
            f"{row['near_trivial']} near-trivial"
        )
    for row in result["observed"]["summary"]:
        print(
            f"observed {row['rule']:>3} {row['profile']:>6}: {row['pairs']} pairs, {row['converged']} converged, "
            f"{row['near_trivial']} near-trivial, replay matches {row['replay_matches']}/{row['replay_checked']}"
        )
    print(f"wrote {os.path.relpath(args.out, ROOT)}/replay.json and replay.md")


if __name__ == "__main__":
    main()
