"""Convergence signals from per-example selection predictions, with bootstrap margins (#42 item 4, second half).

    python -m benchmarks.example_signals [RESULTS_DIR ...]     # default: every results folder with .selection.npz files

`benchmarks.signal_replay` replays the stored *aggregate* curves (score, mean loss) with formula or seed-spread
margins. Runs made since `benchmarks/selection_predictions.py` also store, beside their JSON, every selection
evaluation's per-example true-class probability (classification) or prediction (regression). From those this module
computes, at every evaluation, four signals and their noise over the selection examples, and replays the library's
two rule shapes on them:

- **score_formula**: the recomputed score under the library's rule as it stands (floor and decline margin from the
  binomial / Fisher formulas on the split's size): today's default, the reference;
- **score**: the task's score recomputed from the predictions, under the library's `kd_noise="bootstrap"` rule (the
  same resamples, `hf_async_mtl.async_kd.bootstrap`) (binary tasks: the predicted class is the true one when
  its probability exceeds 0.5; MCC, F1, accuracy; STS-B: mean of Pearson and Spearman);
- **loss**: minus the selection loss (cross-entropy; STS-B: MSE), so that greater is better for every signal;
- **prob**: mean probability of the true class (STS-B: minus the MSE, the same as its loss);
- **brier**: minus the Brier score (binary: 2 · mean (1 − p_true)²; STS-B: minus the MSE).

Noise is measured, not assumed: B bootstrap resamples of the selection examples, the same resamples at every
evaluation (paired). Each rule decision is made with what the run has at that evaluation (causal):

- floor (the trivial-predictor gate): the best smoothed value must exceed the trivial predictor's value of the signal
  (training-pool class prior / majority class / mean) by z bootstrap sds of their difference (paired: the trivial
  predictor's value is recomputed on each resample);
- decline (the `decl` shape, the library's default): the smoothed value must have fallen below
  the best smoothed window by more than z sds of the *paired* bootstrap difference between the two windows (the
  same examples in both, so the evaluation-to-evaluation noise, not two independent samples' noise).

The `plateau` shape (the paper's: patience on the smoothed value, first full window, improvement required, floor)
needs no decline margin. Every decision goes through `ConvergenceMonitor`, its floor and decline margin set before
each update. A larger or smaller selection split is replayed by subsampling the stored examples (a seeded subset,
the same in every run), so its effect is measured like for like on the same runs. The teacher is the best raw
value's evaluation; false convergence and recovered are judged on the run's dev curve as in `signal_replay`, and, for
a signal reading one seeded half of the split, also on the other half's score curve: a judgement from selection data
alone, the one a choice of signal may rest on (the dev sets are for reporting).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.convergence_replay import replay_curve  # noqa: E402
from benchmarks.signal_replay import TASKS, Z, judge, signal_options, summarize  # noqa: E402
from hf_async_mtl.async_kd.bootstrap import resample_indices  # noqa: E402
from hf_async_mtl.async_kd.monitor import ConvergenceMonitor, convergence_floor  # noqa: E402

# score_formula: the recomputed score under the library's rule as it is today (formula floor and decline margin,
# `noise_margin` / `convergence_floor` on the split's size), the reference every bootstrap signal is compared with
SIGNALS = ("score_formula", "score", "loss", "prob", "brier")
SHAPES = ("plateau", "decl")
BOOTSTRAPS = 400
# None: the whole stored split; an int: a seeded subset of that many examples; "half": a seeded half, judged on the
# other half's score curve instead of dev (what a choice of signal may read: selection data only)
SUBSETS: tuple[int | str | None, ...] = (None, 500, 250, "half")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
OUT_DIR = os.path.join(RESULTS, "example_signals")
_EPS = 1e-7


# ---------------------------------------------------------------------------------------- signals (vectorised)


def _binary_counts(correct: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """tp, fp, fn, tn along the last axis; `correct` [..., N] bool, `labels` [..., N] in {0, 1}."""
    positive = labels == 1
    tp = np.sum(correct & positive, axis=-1)
    tn = np.sum(correct & ~positive, axis=-1)
    fn = np.sum(~correct & positive, axis=-1)
    fp = np.sum(~correct & ~positive, axis=-1)
    return tp.astype(np.float64), fp.astype(np.float64), fn.astype(np.float64), tn.astype(np.float64)


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1, method="average")


def _correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt(np.sum(x * x, axis=-1) * np.sum(y * y, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(x * y, axis=-1) / denominator
    return np.where(denominator > 0, out, 0.0)  # a constant prediction: undefined, counts as 0 (as the library does)


def task_score(metrics: Sequence[str], values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The task's score (mean of `metrics`) along the last axis. Classification: `values` = p(true class), binary
    labels; regression: `values` = predictions."""
    parts = []
    if {"pearson", "spearmanr"} & set(metrics):
        for metric in metrics:
            if metric == "pearson":
                parts.append(_correlation(values, labels))
            elif metric == "spearmanr":
                parts.append(_correlation(_ranks(values), _ranks(labels)))
            else:
                raise ValueError(f"Metric {metric!r} is not a regression metric this replay computes.")
        return np.mean(parts, axis=0)
    correct = values > 0.5
    tp, fp, fn, tn = _binary_counts(correct, labels)
    for metric in metrics:
        if metric == "accuracy":
            parts.append((tp + tn) / (tp + fp + fn + tn))
        elif metric == "f1":
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append(np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0))
        elif metric == "matthews_correlation":
            denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append(np.where(denominator > 0, (tp * tn - fp * fn) / denominator, 0.0))
        else:
            raise ValueError(f"Metric {metric!r} is not a binary metric this replay computes.")
    return np.mean(parts, axis=0)


def signal_values(signal: str, metrics: Sequence[str], is_regression: bool, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One signal along the last axis (greater is better)."""
    values = values.astype(np.float64)
    if signal in ("score", "score_formula"):
        return task_score(metrics, values, labels)
    if is_regression:  # loss, prob and brier are all minus the MSE for a regression task
        return -np.mean((values - labels) ** 2, axis=-1)
    if signal == "loss":
        return np.mean(np.log(np.clip(values, _EPS, 1.0)), axis=-1)
    if signal == "prob":
        return np.mean(values, axis=-1)
    if signal == "brier":  # binary: (1 - p)^2 for the true class + p^2 for the other = 2 (1 - p)^2
        return -2.0 * np.mean((1.0 - values) ** 2, axis=-1)
    raise ValueError(f"Unknown signal {signal!r}; expected one of {SIGNALS}.")


def trivial_signal(signal: str, metrics: Sequence[str], is_regression: bool, train_labels: Any, labels: np.ndarray) -> float:
    """The trivial predictor's value of a signal on the split: the training mean (regression), else the training
    majority class for the score and the training class prior as probabilities for loss, prob and brier."""
    train = np.asarray(train_labels, dtype=np.float64)
    if is_regression:
        return 0.0 if signal in ("score", "score_formula") else float(-np.mean((labels - train.mean()) ** 2))
    counts = np.bincount(train.astype(np.int64), minlength=2).astype(np.float64)
    prior = counts / counts.sum()
    if signal in ("score", "score_formula"):
        majority = int(counts.argmax())
        p_true = np.where(labels.astype(np.int64) == majority, 1.0, 0.0)
        return float(task_score(metrics, p_true, labels))
    p_true = prior[labels.astype(np.int64)]
    return float(signal_values(signal, metrics, False, p_true, labels))


def trivial_matrix(
    signal: str, metrics: Sequence[str], is_regression: bool, train_labels: Any, labels: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """[B + 1]: the trivial predictor's value on the split (0) and on each resample (its majority-class accuracy or F1,
    its prior's mean true-class probability vary with the resampled labels)."""
    return np.array(
        [trivial_signal(signal, metrics, is_regression, train_labels, labels)]
        + [trivial_signal(signal, metrics, is_regression, train_labels, labels[d]) for d in draws]
    )


def signal_matrix(
    signal: str, metrics: Sequence[str], is_regression: bool, values: np.ndarray, labels: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """[E, B + 1]: the signal at every evaluation on the split itself (column 0) and on each bootstrap resample."""
    out = np.empty((values.shape[0], draws.shape[0] + 1))
    out[:, 0] = signal_values(signal, metrics, is_regression, values, labels[None, :])
    resampled_labels = labels[draws]
    for e in range(values.shape[0]):
        out[e, 1:] = signal_values(signal, metrics, is_regression, values[e][draws], resampled_labels)
    return out


def replay_examples(
    steps: Sequence[int],
    matrix: np.ndarray,
    trivial: float | np.ndarray,
    *,
    shape: str,
    patience: int,
    min_steps: int,
    z: float = Z,
    smoothing: int = 2,
) -> dict[str, Any]:
    """The library's rule on one signal (greater is better) with bootstrap floor and paired decline margins.

    `matrix` [E, B + 1] from `signal_matrix`; `trivial` the trivial predictor's value, a number or [B + 1] (on the
    split, then on each resample: `trivial_matrix`). Before each update, with W the smoothed window that is the best
    once this evaluation counts (the floor is checked on the best smoothed value): floor = trivial + z · sd of
    (W − trivial) over the resamples; decline margin (shape `decl`) = z · sd of (best smoothed window − current
    window) over the same resamples.
    """
    if shape not in SHAPES:
        raise ValueError(f"Unknown rule shape {shape!r}; expected one of {SHAPES}.")
    monitor = ConvergenceMonitor(
        {"task": True},
        patience=patience,
        min_steps=min_steps,
        require_improvement=True,
        smoothing=smoothing,
        floors={"task": 0.0},  # set before every update
        full_window=True,
        require_decline=shape == "decl",
        decline_margins={"task": 0.0} if shape == "decl" else None,  # set before every update
        decline_z=z,
    )
    state = monitor._state("task")
    index = {int(s): i for i, s in enumerate(steps)}
    base = np.broadcast_to(np.asarray(trivial, dtype=np.float64), (matrix.shape[1],))

    def window_at(e: int) -> np.ndarray:
        return matrix[max(0, e - smoothing + 1) : e + 1].mean(axis=0)

    for e, step in enumerate(steps):
        window = window_at(e)
        best_window = None if state.best_smoothed_step is None else window_at(index[int(state.best_smoothed_step)])
        top = window if best_window is None or window[0] > best_window[0] else best_window
        monitor.floors["task"] = float(base[0]) + z * float(np.std((top - base)[1:], ddof=1))
        if shape == "decl" and best_window is not None:
            monitor.decline_margins["task"] = z * float(np.std((best_window - window)[1:], ddof=1))
        monitor.update(int(step), {"task": float(matrix[e, 0])})
    converged = monitor.is_converged("task")
    return {
        "converged": converged,
        "converged_step": monitor.converged_step("task"),
        "teacher_step": monitor.best_step("task") if converged else None,
        "teacher_value": monitor.best_value("task") if converged else None,
        "last_step": int(steps[-1]),
        "floor_at_end": monitor.floors["task"],
    }


# ---------------------------------------------------------------------------------------- stored runs


def _points(curves: list[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    return sorted({int(c["step"]): float(c[key]) for c in curves if c.get(key) is not None and "step" in c}.items())


def load_runs(folder: str) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """(run JSON, its npz arrays) of every true-label run in `folder` with a `.selection.npz` beside its JSON."""
    from benchmarks.convergence_replay import is_async_kd

    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.selection.npz"))):
        run_path = path.removesuffix(".selection.npz") + ".json"
        if not os.path.isfile(run_path):
            continue
        with open(run_path, encoding="utf-8") as handle:
            run = json.load(handle)
        if is_async_kd(run):
            continue
        with np.load(path) as arrays:
            out.append((run | {"_source": os.path.relpath(run_path, ROOT)}, {k: arrays[k] for k in arrays.files}))
    return out


def replay_run(
    run: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    train_labels: Mapping[str, Any],
    dev_sizes: Mapping[str, int],
    *,
    z: float = Z,
    draws: int = BOOTSTRAPS,
    subsets: Sequence[int | str | None] = SUBSETS,
    patience: int = 3,
    min_steps: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, checks): every task × signal × rule × split size of one run, and per task the largest difference
    between the recomputed score and the logged selection score (a check that the predictions are the run's)."""
    from glue_tasks import get_glue_task

    rows, checks = [], []
    curves = run.get("curves") or []
    for task in run.get("tasks") or TASKS:
        if f"{task}/values" not in arrays:
            continue
        spec = get_glue_task(task)
        metrics = tuple(spec.metrics)
        steps = [int(s) for s in arrays[f"{task}/steps"]]
        values = np.asarray(arrays[f"{task}/values"], dtype=np.float64)
        labels = np.asarray(arrays[f"{task}/labels"], dtype=np.float64)
        logged = dict(_points(curves, f"eval_{task}_score"))
        recomputed = task_score(metrics, values, labels[None, :])
        gaps = [abs(float(r) - logged[s]) for s, r in zip(steps, recomputed) if s in logged]
        checks.append({"source": run["_source"], "task": task, "evaluations": len(steps), "max_score_gap": max(gaps) if gaps else None})
        dev = _points(curves, f"eval_{task}_dev_score") or None
        order = np.random.default_rng(1234).permutation(len(labels))  # the same subset of a task's split in every run
        for size in subsets:
            if isinstance(size, int) and size >= len(labels):
                continue
            if size == "half":  # the signal reads one half; the other half's score judges it (no dev read)
                keep, held = order[: len(labels) // 2], order[len(labels) // 2 :]
                held_curve = [(s, float(v)) for s, v in zip(steps, task_score(metrics, values[:, held], labels[held][None, :]))]
                judges = [("held-out half", held_curve, len(held)), ("dev", dev, dev_sizes.get(task))]
            else:
                keep = order[:size] if size is not None else np.arange(len(labels))
                judges = [("dev", dev, dev_sizes.get(task))]
            sub_values, sub_labels = values[:, keep], labels[keep]
            resamples = resample_indices(task, len(keep), draws)  # the library's own draws (kd_noise="bootstrap")
            for signal in SIGNALS:
                matrix = signal_matrix(signal, metrics, spec.is_regression, sub_values, sub_labels, resamples)
                trivial = trivial_matrix(signal, metrics, spec.is_regression, train_labels[task], sub_labels, resamples)
                for shape in SHAPES:
                    if signal == "score_formula":  # the library's rule today: formula floor and decline margin
                        reference = {
                            "metrics": metrics,
                            "selection_size": len(keep),
                            "floor": convergence_floor(float(trivial[0]), metrics, len(keep), z),
                        }
                        options = signal_options("score", shape, reference, None, z)
                        assert options is not None  # the score always has its formula margins
                        curve = list(zip(steps, (float(v) for v in matrix[:, 0])))
                        result = replay_curve(curve, patience=patience, min_steps=min_steps, **options)
                    else:
                        result = replay_examples(steps, matrix, trivial, shape=shape, patience=patience, min_steps=min_steps, z=z)
                    rows += [
                        {
                            "run_set": os.path.basename(os.path.dirname(os.path.dirname(run["_source"]))),
                            "method": run["method"],
                            "group": "single_task" if str(run["method"]).startswith("single_") else run["method"],
                            "seed": run.get("seed"),
                            "task": task,
                            "source": run["_source"],
                            "signal": signal,
                            "rule": shape,
                            "split": len(keep),
                            "split_label": "stored" if size is None else str(size),
                            "judged_on": judged_on,
                            **{k: result[k] for k in ("converged_step", "teacher_step", "teacher_value", "last_step")},
                            **judge(result, curve, metrics, judge_size, z),
                        }
                        for judged_on, curve, judge_size in judges
                    ]
    return rows, checks


def build(folders: Sequence[str], glue_dir: str, z: float = Z, draws: int = BOOTSTRAPS) -> dict[str, Any]:
    """Replay every run with stored selection predictions in `folders` (each a results folder with `per_run/`)."""
    from benchmarks.convergence_replay import monitor_settings, selection_split_labels
    from benchmarks.glue5_quality import PROFILES
    from benchmarks.provenance import provenance
    from benchmarks.signal_replay import ceilings
    from glue_tasks import load_glue_task

    rows, checks, sets = [], [], []
    labels_cache: dict[str, dict[str, Any]] = {}
    dev_sizes = {task: len(load_glue_task(task, "validation", glue_dir)) for task in TASKS}
    for folder in folders:
        per_run = os.path.join(folder, "per_run")
        runs = load_runs(per_run)
        if not runs:
            continue
        for run, arrays in runs:
            profile = run["profile"]
            if profile not in labels_cache:
                labels_cache[profile] = {t: selection_split_labels(profile, t, glue_dir)[0] for t in TASKS}
            settings = monitor_settings(run, int(PROFILES[profile]["max_steps"]))
            run_rows, run_checks = replay_run(
                run,
                arrays,
                labels_cache[profile],
                dev_sizes,
                z=z,
                draws=draws,
                patience=settings["patience"],
                min_steps=settings["min_steps"],
            )
            rows += run_rows
            checks += run_checks
        sets.append(
            {
                "run_set": os.path.basename(folder),
                "path": os.path.relpath(per_run, ROOT),
                "runs": len(runs),
                "groups": sorted({r["group"] for r in rows if r["run_set"] == os.path.basename(folder)}),
                "ceilings": ceilings(os.path.basename(folder), per_run),
            }
        )
    return {
        "generated_by": "python -m benchmarks.example_signals",
        "provenance": provenance(ROOT),
        "z": z,
        "bootstraps": draws,
        "run_sets": sets,
        "checks": checks,
        "summary": (summary := summarize(rows, ("run_set", "group", "judged_on", "split_label", "signal", "rule"))),
        "per_task": summarize(rows, ("run_set", "group", "judged_on", "split_label", "task", "signal", "rule")),
        "choice": [choose_signal(summary, s["run_set"]) for s in sets if "equal" in s["groups"]],
        "rows": rows,
    }


REFERENCE = ("score_formula", "decl")  # the library's default rule when item 4 was declared (2026-12-02 to 12-07)
MIN_GAIN = 0.10  # GLUE-5 points a signal must recover beyond the default's (benchmarks/async_kd_regime.md)


def choose_signal(summary: Sequence[Mapping[str, Any]], run_set: str, group: str = "equal") -> dict[str, Any]:
    """The declared choice of item 4's signal (benchmarks/async_kd_regime.md), on selection data only: among the rows
    of `group` whose signal read one seeded half of each selection split and that were judged on the other half, the
    signal × rule with the largest GLUE-5 recovered (ties: fewer false convergences), chosen if it beats the default
    (`score_formula`, decl) there by at least `MIN_GAIN` with no more false convergences; else none (keep the default)."""
    rows = [r for r in summary if (r["run_set"], r["group"], r["judged_on"], r["split_label"]) == (run_set, group, "held-out half", "half")]

    def recovered(row: Mapping[str, Any]) -> float:
        return float(row["glue5_recovered"] or 0.0)

    def false(row: Mapping[str, Any]) -> int:
        return int(row["false"] or 0)

    reference = next((r for r in rows if (r["signal"], r["rule"]) == REFERENCE), None)
    if reference is None:
        return {"run_set": run_set, "group": group, "chosen": None, "reason": "no held-out-half rows of the default rule"}
    best = max(rows, key=lambda r: (recovered(r), -false(r), (r["signal"], r["rule"]) == REFERENCE))  # ties: the default
    chosen = (
        (best["signal"], best["rule"])
        if (best["signal"], best["rule"]) != REFERENCE
        and recovered(best) >= recovered(reference) + MIN_GAIN
        and false(best) <= false(reference)
        else None
    )
    describe = lambda r: {k: r[k] for k in ("signal", "rule", "curves", "converged", "false", "glue5_recovered", "glue5_seeds")}  # noqa: E731
    return {
        "run_set": run_set,
        "group": group,
        "reference": describe(reference),
        "best": describe(best),
        "chosen": list(chosen) if chosen else None,
        "reason": (
            f"{best['signal']} / {best['rule']} recovers {recovered(best):+.2f} GLUE-5 points on the held-out halves vs the "
            f"default's (the decline rule then) {recovered(reference):+.2f}, with {false(best)} false convergences vs {false(reference)}"
            + (
                ""
                if chosen
                else f": {'it is the default' if (best['signal'], best['rule']) == REFERENCE else 'not enough'}; keep the default"
            )
        ),
    }


def _f(value: Any, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def render_markdown(result: Mapping[str, Any]) -> str:
    origin = result["provenance"]
    lines = [
        "# Convergence signals from per-example selection predictions (#42 item 4)",
        "",
        f"Regenerate: `python -m benchmarks.example_signals` (reads the runs' JSON and `.selection.npz`; no model). Commit"
        f" `{origin['commit']}`" + (" (tracked files modified)" if origin.get("dirty") else "") + f". z = {result['z']:g},"
        f" {result['bootstraps']} bootstrap resamples of the selection examples (paired across evaluations).",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
        "## Run sets",
        "",
        "| run set | runs with predictions | groups | equal's GLUE-5 ceiling | largest |recomputed − logged| selection score |",
        "|---|---:|---|---:|---:|",
    ]
    for s in result["run_sets"]:
        gaps = [c["max_score_gap"] for c in result["checks"] if c["source"].startswith(s["path"]) and c["max_score_gap"] is not None]
        ceiling = (s["ceilings"].get("equal") or {}).get("ceiling")
        lines.append(
            f"| {s['run_set']} (`{s['path']}`) | {s['runs']} | {', '.join(s['groups'])} | {_f(ceiling)} | {_f(max(gaps) if gaps else None, 4)} |"
        )
    lines += ["", "## Choice of signal (declared in benchmarks/async_kd_regime.md; selection data only)", ""]
    for choice in result.get("choice") or []:
        chosen = choice.get("chosen")
        lines.append(
            f"- `{choice['run_set']}` ({choice['group']}): **{'choose ' + ' / '.join(chosen) if chosen else 'keep the default'}**. "
            + choice["reason"]
            + "."
        )
    lines += [
        "",
        "## Convergences, false convergences, ceiling recovered",
        "",
        "Split = selection examples the signal reads (stored: the run's whole split; 500 / 250: a seeded subset, the same"
        " in every run; half: a seeded half, judged both on dev and on the other half's score curve, which is what a"
        " choice of signal may read). Converged = before the last evaluation; false = teacher's dev below the final dev beyond noise;"
        " recovered / conv. = mean (dev at teacher − final dev) ×100 over converged curves; GLUE-5 recovered = per seed"
        " Σ over tasks / 5, mean over seeds.",
        "",
        "| run set | group | judged on | split | signal | rule | curves | converged | false | recovered / conv. | GLUE-5 recovered | mean conv. step |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        lines.append(
            f"| {row['run_set']} | {row['group']} | {row['judged_on']} | {row['split_label']} | {row['signal']} | {row['rule']} | {row['curves']} | {row['converged']} |"
            f" {false} | {_f(row['mean_recovered_per_convergence'], 2, True)} | {_f(row['glue5_recovered'], 2, True)} |"
            f" {_f(row['mean_converged_step'], 0)} |"
        )
    lines += [
        "",
        "### Per task (stored split)",
        "",
        "| run set | group | task | signal | rule | curves | converged | false | recovered / conv. |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in result["per_task"]:
        if row["split_label"] != "stored" or row["judged_on"] != "dev":
            continue
        false = "–" if row["false"] is None else f"{row['false']}/{row['judged']}"
        lines.append(
            f"| {row['run_set']} | {row['group']} | {row['task']} | {row['signal']} | {row['rule']} | {row['curves']} | {row['converged']} | {false} |"
            f" {_f(row['mean_recovered_per_convergence'], 2, True)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="Results folders (default: every benchmarks/results/* with .selection.npz files).")
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("--z", type=float, default=Z)
    parser.add_argument("--bootstraps", type=int, default=BOOTSTRAPS)
    args = parser.parse_args(argv)
    folders = args.folders or sorted(
        {os.path.dirname(os.path.dirname(p)) for p in glob.glob(os.path.join(RESULTS, "*", "per_run", "*.selection.npz"))}
    )
    if not folders:
        raise SystemExit("No run with stored selection predictions (<run>.selection.npz) under benchmarks/results/*/per_run.")
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    result = build(folders, glue_dir, args.z, args.bootstraps)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "replay.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "replay.md"), "w", encoding="utf-8") as handle:
        handle.write(render_markdown(result))
    print(f"wrote {os.path.relpath(args.out, ROOT)}/replay.json and replay.md ({len(result['rows'])} replays)")


if __name__ == "__main__":
    main()
