#!/usr/bin/env python
"""Convergence *signals* compared by replay on every stored curve (issue #42 item 4, as far as the files allow).

    python -m benchmarks.signal_replay      # -> benchmarks/results/signal_replay/replay.{json,md}

`convergence_replay` compares convergence *rules* on one signal, the selection-split score. This module holds
the rule shapes fixed and compares *signals*: what the monitor reads at every evaluation.

- **score**: the task's selection-split score (today's signal), greater is better. Floor = the trivial
  predictor's score + z · scale / √n (`convergence_floor`); decline margin = `noise_margin` at the best smoothed
  level (the library's binomial / Fisher formula on the selection split's size).
- **loss**: the selection-split loss (cross-entropy; STS-B: MSE), lower is better. Floor = the trivial
  predictor's loss − margin (training-pool class prior: cross-entropy of the selection labels under it; STS-B:
  MSE of the training-label mean). Margin = z · s, s = the **seed-to-seed** spread of the selection loss: per
  (run set, method, evaluation step) the sample standard deviation of the loss over the method's seeds, and s =
  the median of those over every method with ≥ 2 seeds and every step, per (run set, task). It is not the
  sampling noise of one model on the split (that needs per-example predictions); it also holds the training
  randomness between seeds, so it is if anything larger. It is estimated from the curves it is replayed on (a
  fixed number per task, not causal).
- **loss_nofloor**: the loss with the same margin but no floor. Fine-tuning makes the classifiers overconfident:
  the selection loss of RTE, CoLA and MRPC rises above the trivial predictor's while their scores are well above
  trivial, so the floor keeps the loss signal from converging most of them; this variant shows what the loss alone does.

Two rule shapes of the library, each with `patience` / `min_steps` of the run (v1: 2 and 200 ÷ the step divisor;
v2, the anchor, regime_cap: 3 and 0): **plateau** = patience on the smoothed value (smoothing 2, first full
window, require_improvement, floor: `convergence_replay`'s "full"; the default on 2026-12-07 between #42's items 4
and 3); **decl** = plateau + a decline of the smoothed value beyond the margin required (`kd_require_decline`, the
library's default).

Per signal × rule × run set: **convergences** = task curves the rule converges before the run's last evaluation
(a convergence at the last one changes nothing); **false convergences** = converged and the dev score at the
teacher step (the best raw signal value before convergence, the parameters async-KD freezes) below the task's
final dev score by more than `noise_margin(final dev, metrics, dev size, z)`; **recovered** = dev at teacher −
final dev (×100). Recovered assumes async-KD keeps the teacher's dev score after convergence (distillation from
the frozen teacher); it is the replayed rule's share of the ceiling, not a measured async-KD result. GLUE-5
recovered = per seed, the sum over the five tasks (0 where not converged) / 5, mean over seeds, beside the run
set's ceiling (`benchmarks.ceiling`: best − final of the seed-mean dev curve) and per-seed oracle gap.

Not computable from the stored files: a bootstrap margin over the selection examples and continuous scores
(mean probability of the true class, Brier score) need per-example selection predictions, which no run stores.
v1 runs logged no dev curves (no false convergences, no recovered); the 3,000-step anchor stored score curves only
(no loss signal).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.convergence_replay import RULES, is_async_kd, monitor_settings, replay_curve, task_curve  # noqa: E402
from benchmarks.glue5_quality import ITEM3_PROFILES, REGIME_PROFILES  # noqa: E402
from hf_async_mtl.async_kd.monitor import noise_margin  # noqa: E402

Z = 2.0
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
SIGNALS = ("score", "loss", "loss_nofloor")  # loss_nofloor: the loss without its trivial-predictor floor
SHAPES = {"plateau": "full", "decl": "decl"}  # rule shape -> the convergence_replay rule it is
RESULTS = os.path.join(ROOT, "benchmarks", "results")
OUT_DIR = os.path.join(RESULTS, "signal_replay")
# (run set, label, per_run folder or the anchor JSON, profile of its selection split)
RUN_SETS = (
    ("v1", "v1 (cpu profile, no dev curves)", os.path.join(RESULTS, "glue5_cpu", "per_run"), "cpu"),
    ("v2", "v2 (minilm, 1800 steps)", os.path.join(RESULTS, "glue5_minilm", "per_run"), "minilm"),
    (
        "anchor_3000",
        "3,000-step anchor (equal, 1 seed, score curves only)",
        os.path.join(RESULTS, "anchor_3000", "anchor_3000.json"),
        "minilm",
    ),
    # Every #42 regime candidate (the search's equal runs) and every item-3 profile (its true-label runs), where stored.
    *(
        (
            name,
            f"{name} (#42 {'item 3' if name in ITEM3_PROFILES else 'search candidate'})",
            os.path.join(RESULTS, f"glue5_{name}", "per_run"),
            name,
        )
        for name in (*REGIME_PROFILES, *ITEM3_PROFILES)
    ),
)


# ---------------------------------------------------------------------------------------- pure parts


def group_name(method: str) -> str:
    """The ceiling's method groups: the five `single_<task>` runs make one `single_task` group."""
    return "single_task" if str(method).startswith("single_") else str(method)


def loss_spread(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Per task: median over (method, step) of the sample sd of the selection loss over the method's seeds."""
    by_key: dict[tuple, list[float]] = defaultdict(list)
    for rec in records:
        for step, value in rec.get("loss") or []:
            by_key[(rec["task"], rec["method"], step)].append(value)
    sds: dict[str, list[float]] = defaultdict(list)
    for (task, _, _), values in by_key.items():
        if len(values) >= 2:
            sds[task].append(statistics.stdev(values))
    return {task: (statistics.median(sds[task]) if sds.get(task) else None) for task in TASKS}


def trivial_loss(is_regression: bool, num_labels: int, train_labels: Any, selection_labels: Any) -> float:
    """The trivial predictor's selection loss: cross-entropy under the training class prior (STS-B: MSE of the
    training-label mean)."""
    import numpy as np

    train, selection = np.asarray(train_labels, dtype=np.float64), np.asarray(selection_labels, dtype=np.float64)
    if is_regression:
        return float(np.mean((selection - train.mean()) ** 2))
    counts = np.bincount(train.astype(np.int64), minlength=num_labels).astype(np.float64)
    prior = counts / counts.sum()
    return float(-np.mean(np.log(prior[selection.astype(np.int64)])))


def signal_options(signal: str, shape: str, reference: Mapping[str, Any], loss_margin: float | None, z: float = Z) -> dict[str, Any] | None:
    """`replay_curve` keyword arguments of one signal under one rule shape; None when the signal has no margin."""
    spec = RULES[SHAPES[shape]]
    if signal == "score":
        noise = (tuple(reference["metrics"]), int(reference["selection_size"])) if spec.get("require_decline") else None
        return {
            "smoothing": spec["smoothing"],
            "floor": float(reference["floor"]),
            "require_improvement": True,
            "full_window": True,
            "require_decline": bool(spec.get("require_decline")),
            "noise": noise,
            "decline_z": z,
            "greater_is_better": bool(reference.get("greater_is_better", True)),
        }
    if loss_margin is None or (signal == "loss" and reference.get("trivial_loss") is None):
        return None
    return {
        "smoothing": spec["smoothing"],
        "floor": float(reference["trivial_loss"]) - loss_margin if signal == "loss" else None,
        "require_improvement": True,
        "full_window": True,
        "require_decline": bool(spec.get("require_decline")),
        "decline_margin": loss_margin if spec.get("require_decline") else None,
        "greater_is_better": False,
    }


def judge(
    result: Mapping[str, Any], dev: list[tuple[int, float]] | None, metrics: tuple[str, ...], dev_size: int | None, z: float = Z
) -> dict[str, Any]:
    """Convergence before the last evaluation, and against the dev curve: the teacher's dev score, the final dev score,
    the noise margin at the final level, false convergence and recovered (×100)."""
    early = bool(result["converged"]) and result["converged_step"] < result["last_step"]
    out: dict[str, Any] = {
        "converged_early": early,
        "dev_at_teacher": None,
        "dev_final": None,
        "dev_margin": None,
        "false": None,
        "recovered": None,
    }
    if not dev:
        return out
    final = dev[-1][1]
    out["dev_final"] = final
    if dev_size:
        out["dev_margin"] = noise_margin(final, metrics, dev_size, z)
    if early:
        at = dict(dev).get(int(result["teacher_step"]))
        out["dev_at_teacher"] = at
        if at is not None:
            out["recovered"] = 100.0 * (at - final)
            if out["dev_margin"] is not None:
                out["false"] = at < final - out["dev_margin"]
    return out


def summarize(rows: Sequence[Mapping[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per group: curves, convergences (before the last evaluation), false convergences, mean recovered per
    convergence (task points) and GLUE-5 recovered (per seed: sum over tasks / 5; mean over seeds with all tasks)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]
        conv = [r for r in members if r["converged_early"]]
        judged = [r for r in conv if r["false"] is not None]
        recovered = [r["recovered"] for r in conv if r["recovered"] is not None]
        has_dev = any(r["dev_final"] is not None for r in members)
        per_seed: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in members:
            if r["dev_final"] is not None:
                per_seed[(r["group"], r["seed"])][r["task"]] = r["recovered"] if r["recovered"] is not None else 0.0
        glue = [sum(v.values()) / len(TASKS) for v in per_seed.values() if set(v) >= set(TASKS)]
        out.append(
            {
                **dict(zip(keys, key)),
                "curves": len(members),
                "converged": len(conv),
                "false": sum(1 for r in judged if r["false"]) if has_dev else None,
                "judged": len(judged),
                "mean_recovered_per_convergence": (sum(recovered) / len(recovered)) if recovered else None,
                "glue5_recovered": (sum(glue) / len(glue)) if glue else None,
                "glue5_seeds": len(glue),
                "mean_converged_step": (sum(r["converged_step"] for r in conv) / len(conv)) if conv else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------- stored files


def _points(log_curves: list[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    return sorted({int(c["step"]): float(c[key]) for c in log_curves if key in c and c[key] is not None and "step" in c}.items())


def load_records(run_set: str, path: str, profile: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(curve records, runs used): one record per (true-label run, task) with its score, loss and dev curves."""
    from benchmarks.glue5_quality import PROFILES

    records, used = [], []
    if path.endswith(".json"):  # the anchor: the equal run's stored selection and dev score curves
        with open(path, encoding="utf-8") as handle:
            equal = json.load(handle).get("equal_run") or {}
        for task in TASKS:
            score = [(int(s), float(v)) for s, v in (equal.get("curves") or {}).get(task) or []]
            dev = [(int(s), float(v)) for s, v in (equal.get("dev_curves") or {}).get(task) or []]
            if score:
                records.append(
                    {"run_set": run_set, "method": "equal", "group": "equal", "seed": 0, "task": task, "patience": 3, "min_steps": 0}
                    | {"score": score, "loss": None, "dev": dev or None, "source": os.path.relpath(path, ROOT)}
                )
        used.append({"source": os.path.relpath(path, ROOT), "method": "equal", "seed": 0})
        return records, used
    import glob

    for file in sorted(glob.glob(os.path.join(path, "*.json"))):
        with open(file, encoding="utf-8") as handle:
            run = json.load(handle)
        if "curves" not in run or "method" not in run or is_async_kd(run) or run.get("profile") != profile:
            continue
        settings = monitor_settings(run, int(PROFILES[profile]["max_steps"]))  # type: ignore[index]
        for task in run.get("tasks") or TASKS:
            score = task_curve(run, task)
            if not score:
                continue
            records.append(
                {
                    "run_set": run_set,
                    "method": run["method"],
                    "group": group_name(run["method"]),
                    "seed": run.get("seed"),
                    "task": task,
                    **settings,
                    "score": score,
                    "loss": _points(run["curves"], f"eval_{task}_loss") or None,
                    "dev": _points(run["curves"], f"eval_{task}_dev_score") or None,
                    "source": os.path.relpath(file, ROOT),
                }
            )
        used.append({"source": os.path.relpath(file, ROOT), "method": run["method"], "seed": run.get("seed")})
    return records, used


def references(profile: str, glue_dir: str, z: float = Z) -> dict[str, dict[str, Any]]:
    """`convergence_replay.compute_references` + the trivial predictor's selection loss + the dev set's size."""
    from benchmarks.convergence_replay import compute_references, selection_split_labels
    from glue_tasks import get_glue_task, load_glue_task

    refs = compute_references(profile, glue_dir, z)
    for task, ref in refs.items():
        spec = get_glue_task(task)
        train_labels, selection_labels = selection_split_labels(profile, task, glue_dir)
        ref["trivial_loss"] = trivial_loss(spec.is_regression, spec.num_labels, train_labels, selection_labels)
        ref["dev_size"] = len(load_glue_task(task, "validation", glue_dir))
    return refs


def ceilings(run_set: str, path: str) -> dict[str, dict[str, Any]]:
    """Group -> GLUE-5 ceiling and per-seed oracle gap of the run set's dev curves (`benchmarks.ceiling`)."""
    from benchmarks import ceiling as ce

    if path.endswith(".json"):
        rows = ce.anchor_rows(path)
        return {"equal": {"ceiling": (rows[0][1].get("glue5") or {}).get("value"), "oracle_gap": rows[0][2].get("mean")}} if rows else {}
    runs = [r for r in ce._load(os.path.dirname(path)) if not is_async_kd(r)]
    out = {}
    for name, result, gap in ce.regime_rows(runs, "eval_{task}_dev_score"):
        glue = result.get("glue5") or {}
        out[name] = {"ceiling": glue.get("value"), "interval": glue.get("interval"), "oracle_gap": gap.get("mean")}
    return out


def replay_all(records: Sequence[Mapping[str, Any]], refs: Mapping[str, Mapping[str, Any]], z: float = Z) -> tuple[list[dict], dict]:
    """Every record under every signal and rule shape; also the loss margins used."""
    spread = loss_spread(records)
    margins = {task: (z * s if s is not None else None) for task, s in spread.items()}
    cleared: dict[str, list[int]] = {task: [0, 0] for task in TASKS}  # curves whose smoothed loss clears its floor, curves
    for rec in records:
        loss, margin = [v for _, v in rec.get("loss") or []], margins.get(rec["task"])
        if len(loss) >= 2 and margin is not None and refs[rec["task"]].get("trivial_loss") is not None:
            smoothed = min((a + b) / 2 for a, b in zip(loss, loss[1:]))
            cleared[rec["task"]][0] += smoothed < refs[rec["task"]]["trivial_loss"] - margin
            cleared[rec["task"]][1] += 1
    rows = []
    for rec in records:
        ref = refs[rec["task"]]
        metrics = tuple(ref["metrics"])
        for signal in SIGNALS:
            curve = rec["loss" if signal.startswith("loss") else signal]
            if not curve:
                continue
            for shape in SHAPES:
                options = signal_options(signal, shape, ref, margins.get(rec["task"]), z)
                if options is None:
                    continue
                result = replay_curve(curve, patience=rec["patience"], min_steps=rec["min_steps"], **options)
                verdict = judge(result, rec["dev"], metrics, ref.get("dev_size"), z)
                rows.append(
                    {
                        **{k: rec[k] for k in ("run_set", "method", "group", "seed", "task", "source")},
                        "signal": signal,
                        "rule": shape,
                        "converged_step": result["converged_step"],
                        "teacher_step": result["teacher_step"],
                        "teacher_value": result["teacher_value"],
                        "last_step": result["last_step"],
                        **verdict,
                    }
                )
    return rows, {"loss_sd": spread, "loss_margin": margins, "loss_floor_cleared": cleared}


def build(glue_dir: str, z: float = Z, run_sets: Iterable[tuple[str, str, str, str]] = RUN_SETS) -> dict[str, Any]:
    from benchmarks.provenance import provenance

    origin = provenance(ROOT)
    sets, all_rows = [], []
    ref_cache: dict[str, dict] = {}
    for key, label, path, profile in run_sets:
        if not os.path.exists(path):
            continue
        records, used = load_records(key, path, profile)
        if profile not in ref_cache:
            ref_cache[profile] = references(profile, glue_dir, z)
        rows, noise = replay_all(records, ref_cache[profile], z)
        all_rows += rows
        sets.append(
            {
                "run_set": key,
                "label": label,
                "path": os.path.relpath(path, ROOT),
                "profile": profile,
                "runs": len(used),
                "groups": sorted({r["group"] for r in records}),
                "has_loss": any(r["loss"] for r in records),
                "has_dev": any(r["dev"] for r in records),
                "noise": noise,
                "ceilings": ceilings(key, path),
            }
        )
    return {
        "generated_by": "python -m benchmarks.signal_replay",
        "provenance": origin,
        "z": z,
        "signals": {
            "score": "selection-split score; floor trivial + z*scale/sqrt(n); decl margin noise_margin(best smoothed, metrics, n, z)",
            "loss": "selection-split loss (CE; STS-B MSE), lower is better; floor trivial loss - margin; margin = z * median over "
            "(method, step) of the sd of the loss over the method's seeds (per run set and task)",
            "loss_nofloor": "as loss, without the floor",
        },
        "rules": {
            "plateau": "convergence_replay 'full' (smoothing 2, full window, require_improvement, floor)",
            "decl": "plateau + decline beyond the margin required (kd_require_decline; the library's default)",
        },
        "false_convergence": "converged before the last evaluation and dev(teacher step) < final dev - noise_margin(final dev, metrics, dev size, z)",
        "references": ref_cache,
        "run_sets": sets,
        "summary": summarize(all_rows, ("run_set", "group", "signal", "rule")),
        "summary_all": summarize(all_rows, ("run_set", "signal", "rule")),
        "per_task": summarize(all_rows, ("run_set", "task", "signal", "rule")),
        "rows": all_rows,
    }


# ---------------------------------------------------------------------------------------- markdown


def _f(value: Any, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return str(value)


def render_markdown(result: Mapping[str, Any], recommendation: str = "") -> str:
    origin = result["provenance"]
    lines = [
        "# Convergence signals compared by replay on the stored curves (#42 item 4)",
        "",
        f"Regenerate: `python -m benchmarks.signal_replay` (reads stored JSON and the GLUE label columns; no model). "
        f"Commit `{origin['commit']}`" + (" (tracked files modified)" if origin.get("dirty") else "") + f". z = {result['z']:g}.",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
        "## Run sets and noise",
        "",
        "| run set | runs (true-label) | groups | loss curves | dev curves | loss margin z·s per task (cola, sst2, mrpc, stsb, rte) |",
        "|---|---:|---|---|---|---|",
    ]
    for s in result["run_sets"]:
        margins = s["noise"]["loss_margin"]
        lines.append(
            f"| {s['label']} (`{s['path']}`) | {s['runs']} | {', '.join(s['groups'])} | {'yes' if s['has_loss'] else 'no'} | "
            f"{'yes' if s['has_dev'] else 'no'} | {', '.join(_f(margins.get(t), 3) for t in TASKS)} |"
        )
    lines += [
        "",
        "## Convergences, false convergences, ceiling recovered",
        "",
        "Curves = (run, task) pairs; converged = before the last evaluation; false = of the converged, teacher's dev"
        " below the final dev beyond noise; recovered/conv. = mean (dev at teacher − final dev) ×100 over converged"
        " curves (task points); GLUE-5 recovered = per seed Σ over tasks / 5, mean over seeds; ceiling = best − final"
        " of the seed-mean dev curve (GLUE-5), oracle = per-seed oracle gap. – = not computable (no dev / no loss curves).",
        "",
        "| run set | signal | rule | curves | converged | false | recovered / conv. | GLUE-5 recovered | ceiling (equal) | mean conv. step |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ceil = {s["run_set"]: s["ceilings"] for s in result["run_sets"]}
    for row in result["summary_all"]:
        c = ceil.get(row["run_set"], {}).get("equal", {})
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        lines.append(
            f"| {row['run_set']} | {row['signal']} | {row['rule']} | {row['curves']} | {row['converged']} | {false} | "
            f"{_f(row['mean_recovered_per_convergence'], 2, True)} | {_f(row['glue5_recovered'], 2, True)} | {_f(c.get('ceiling'))} | "
            f"{_f(row['mean_converged_step'], 0)} |"
        )
    lines += [
        "",
        "All true-label groups of a run set pooled (GLUE-5 recovered: mean over every (group, seed) with all five tasks;"
        " v1's steps differ by group, so its mean step mixes scales). Per group, with each group's own ceiling:",
        "",
        "| run set | group | signal | rule | curves | converged | false | recovered / conv. | GLUE-5 recovered | ceiling | oracle gap | mean conv. step |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        c = ceil.get(row["run_set"], {}).get(row["group"], {})
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        lines.append(
            f"| {row['run_set']} | {row['group']} | {row['signal']} | {row['rule']} | {row['curves']} | {row['converged']} | {false} | "
            f"{_f(row['mean_recovered_per_convergence'], 2, True)} | {_f(row['glue5_recovered'], 2, True)} | {_f(c.get('ceiling'))} | "
            f"{_f(c.get('oracle_gap'))} | {_f(row['mean_converged_step'], 0)} |"
        )
    lines += [
        "",
        "### Per task (all groups of a run set)",
        "",
        "| run set | task | signal | rule | curves | converged | false | recovered / conv. |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in sorted(result["per_task"], key=lambda r: (r["run_set"], TASKS.index(r["task"]), r["signal"], r["rule"])):
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        lines.append(
            f"| {row['run_set']} | {row['task']} | {row['signal']} | {row['rule']} | {row['curves']} | {row['converged']} | {false} | "
            f"{_f(row['mean_recovered_per_convergence'], 2, True)} |"
        )
    lines += [
        "",
        "## Trivial predictor per profile (selection split)",
        "",
        "| profile | task | n | trivial score | score floor | trivial loss | dev n |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for profile, refs in result["references"].items():
        for task, ref in refs.items():
            lines.append(
                f"| {profile} | {task} | {ref['selection_size']} | {ref['trivial_value']:.4f} | {ref['floor']:.4f} | "
                f"{ref['trivial_loss']:.4f} | {ref['dev_size']} |"
            )
    lines += [
        "",
        "## Missing evidence, and the smallest change that would supply it",
        "",
        "- **Bootstrap margins and continuous scores.** A bootstrap over the selection examples (for the score and the"
        " loss) and the continuous scores (mean probability of the true class, Brier score) need per-example"
        " selection predictions at every evaluation; the runs store only aggregate metrics and the mean loss. Smallest"
        " change: in `benchmarks/glue5_quality.run_one_v2`, a `TrainerCallback.on_evaluate` (or `compute_metrics`"
        " wrapper) that, for the selection split only, appends per evaluation `{step, task: [p(true class) or the"
        " STS-B prediction, float16, in the split's fixed order]}` to a `selection_predictions` field of the run JSON"
        " (≤ 1000 × 5 numbers per evaluation, ~45k per run); training, data and evaluation stay as they are. With it a"
        " replay computes loss, true-class probability, Brier and any bootstrap margin offline.",
        "- **A larger selection split.** Only regime_cap carved one (30 %, ≤ 1000 vs v2's 10 %, ≤ 500), in a different"
        " regime and with 2 seeds: no like-for-like comparison. Needs the same regime run with both splits, or the"
        " per-example predictions above (subsample the split offline).",
        "- **v1** logged no dev curves (dev at the end only): convergences are counted, false convergences and"
        " recovered are not computable. **The 3,000-step anchor** stored score curves only: no loss signal.",
        "",
    ]
    if recommendation:
        lines += ["## Recommendation", "", recommendation, ""]
    return "\n".join(lines)


def recommendation(result: Mapping[str, Any]) -> str:
    """The recommendation paragraph, its numbers read from `result` (the reasoning was written from the 2026-12-06
    tables; a regeneration on other files keeps the numbers right and may make the reasoning stale: re-read it)."""
    cells = {(r["run_set"], r["signal"], r["rule"]): r for r in result["summary_all"]}
    ceil = {s["run_set"]: (s["ceilings"].get("equal") or {}).get("ceiling") for s in result["run_sets"]}
    dev_sets = [s["run_set"] for s in result["run_sets"] if s["has_dev"]]
    best_pooled = max(
        (r["glue5_recovered"] for r in result["summary_all"] if r["run_set"] in dev_sets and r["glue5_recovered"] is not None), default=None
    )

    def cell(run_set: str, signal: str, rule: str) -> str:
        row = cells.get((run_set, signal, rule))
        if not row:
            return "n/a"
        false = "" if row["false"] is None else f", {row['false']} false"
        glue = "" if row["glue5_recovered"] is None else f", GLUE-5 {_f(row['glue5_recovered'], 2, True)}"
        return f"{row['converged']}/{row['curves']} converged{false}{glue}"

    def listing(signal: str, rule: str) -> str:
        return "; ".join(f"{rs} {cell(rs, signal, rule)}" for rs in dev_sets if (rs, signal, rule) in cells)

    equal_v2 = next(
        (r for r in result["summary"] if (r["run_set"], r["group"], r["signal"], r["rule"]) == ("v2", "equal", "loss_nofloor", "decl")),
        None,
    )
    return " ".join(
        [
            "**On these stored aggregate curves the selection score under the decl rule is the safe one.** (Item 4's"
            " choice was made elsewhere, as declared: on the per-example selection predictions of the pick's five equal runs,"
            " held-out halves, `benchmarks.example_signals`: the score under the plateau rule, the library's default from then until item 3's runs.)"
            " On the run sets with dev curves (ceilings of equal"
            " weighting: " + ", ".join(f"{rs} {_f(ceil.get(rs))}" for rs in dev_sets) + " GLUE-5 points) it is the only"
            " signal/rule with no false convergence and no loss anywhere: "
            + listing("score", "decl")
            + " (v1, no dev: "
            + cell("v1", "score", "decl")
            + "). It recovers nothing because it almost never converges: in these regimes"
            " async-KD under the decl rule trains like equal weighting. The plateau shape on the score converges more and"
            " loses: "
            + listing("score", "plateau")
            + ". The selection loss under decl is the one candidate: "
            + listing("loss", "decl")
            + ". It cannot converge the tasks whose loss rises most: fine-tuning makes them overconfident, and their"
            " smoothed loss often never clears the trivial predictor's loss − margin while their score is well above trivial"
            " (curves clearing the loss floor: "
            + "; ".join(
                f"{s['run_set']} " + ", ".join(f"{t} {c[0]}/{c[1]}" for t, c in s["noise"]["loss_floor_cleared"].items() if c[1])
                for s in result["run_sets"]
                if s["has_loss"] and s["has_dev"]
            )
            + "). Without the floor (require_improvement still blocks a loss that rises from its first full window on): "
            + listing("loss_nofloor", "decl")
            + (
                f" (v2 equal alone: {equal_v2['converged']}/{equal_v2['curves']}, GLUE-5 {_f(equal_v2['glue5_recovered'], 2, True)}"
                "; the other v2 groups: "
                + ", ".join(
                    f"{r['group']} {_f(r['glue5_recovered'], 2, True)}"
                    for r in result["summary"]
                    if r["run_set"] == "v2" and r["group"] != "equal" and (r["signal"], r["rule"]) == ("loss_nofloor", "decl")
                )
                + ")"
                if equal_v2
                else ""
            )
            + f". Pooled over each run set's true-label groups, the best any signal/rule recovers is {_f(best_pooled, 2, True)}"
            " GLUE-5 points, nothing beside the ceilings, so none earns the default on this evidence; and the loss margin"
            " here is not causal (estimated from the same curves). **Missing:** per-example selection predictions (bootstrap margins, mean"
            " true-class probability, Brier score; the change to `glue5_quality.py` above), the loss under a causal"
            " margin, a regime with a ceiling well above its noise and ≥ 3 seeds (regime_cap has 2), and a like-for-like"
            " larger selection split.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("--z", type=float, default=Z)
    args = parser.parse_args(argv)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    result = build(glue_dir, args.z)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "replay.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "replay.md"), "w", encoding="utf-8") as handle:
        handle.write(render_markdown(result, recommendation(result)))
    for row in result["summary_all"]:
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        print(
            f"{row['run_set']:>12} {row['signal']:>5} {row['rule']:>7}: {row['curves']} curves, {row['converged']} converged, "
            f"false {false}, recovered/conv {_f(row['mean_recovered_per_convergence'], 2, True)}"
        )
    print(f"wrote {os.path.relpath(args.out, ROOT)}/replay.json and replay.md")


if __name__ == "__main__":
    main()
