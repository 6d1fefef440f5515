"""Generalization gap of multi-task vs single-task training: held-out score at equal training loss.

    python -m hf_async_mtl.generalization_gap --multi_task OUT_MTL --single_task rte=OUT_RTE --single_task mrpc=OUT_MRPC \\
        --out gap/

Each run is an output directory (or checkpoint) holding `trainer_state.json`, that file itself, or a
GLUE-5 benchmark per-run JSON (`curves` + `train_logs`). For every task, the points of a run are
(step, the task's training loss logged at or just before the evaluation, the task's selection-split
score `eval_<task>_score`). The single-task curve of held-out score against training loss is linearly
interpolated at each multi-task point's training loss (only inside the single-task run's loss range):
gap = single-task score - multi-task score at equal training loss (positive: multi-task generalizes
worse at the same fit). Writes `generalization_gap.json` (every point and the mean gap per task) and
`generalization_gap.png` (held-out score against training loss, both runs, one panel per task).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import read_json_file

__all__ = ["load_log_history", "task_points", "gap_at_equal_loss", "main"]


def load_log_history(path: str) -> list[dict[str, Any]]:
    """The log history of a run: an output dir / checkpoint (trainer_state.json), that file, or a benchmark JSON."""
    if os.path.isdir(path):
        candidate = os.path.join(path, "trainer_state.json")
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{path}: no trainer_state.json (pass a run's output directory, a checkpoint or the file).")
        path = candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist.")
    data, _ = read_json_file(path, "run record")
    if isinstance(data, dict) and "log_history" in data:
        return list(data["log_history"])
    if isinstance(data, dict) and "curves" in data:
        return list(data.get("train_logs") or []) + list(data["curves"])
    raise ValueError(f"{path}: neither a trainer_state.json (log_history) nor a benchmark per-run JSON (curves).")


def task_points(history: Sequence[Mapping[str, Any]], task: str) -> list[tuple[int, float, float]]:
    """(step, training loss of `task`, selection score of `task`) at each evaluation that has both."""
    losses = sorted(
        (int(log["step"]), float(log[f"train_loss_{task}"])) for log in history if f"train_loss_{task}" in log and "step" in log
    )
    points = []
    for log in history:
        key = f"eval_{task}_score"
        if key not in log or "step" not in log:
            continue
        step = int(log["step"])
        before = [loss for s, loss in losses if s <= step]
        if before:
            points.append((step, before[-1], float(log[key])))
    return sorted(points)


def gap_at_equal_loss(multi: Sequence[tuple[int, float, float]], single: Sequence[tuple[int, float, float]]) -> dict[str, Any]:
    """Single-task score interpolated at each multi-task point's training loss, and the gap."""
    if len(single) < 2:
        return {"points": [], "mean_gap": None}
    loss = np.array([p[1] for p in single])
    score = np.array([p[2] for p in single])
    order = np.argsort(loss)
    loss, score = loss[order], score[order]
    rows = []
    for step, train_loss, value in multi:
        inside = loss[0] <= train_loss <= loss[-1]
        reference = float(np.interp(train_loss, loss, score)) if inside else None
        rows.append(
            {
                "step": step,
                "train_loss": train_loss,
                "multi_task_score": value,
                "single_task_score_at_loss": reference,
                "gap": (reference - value) if reference is not None else None,
            }
        )
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    return {"points": rows, "mean_gap": float(np.mean(gaps)) if gaps else None, "compared_points": len(gaps)}


def plot_gap(result: Mapping[str, Any], path: str) -> None:
    """Held-out (selection-split) score against training loss, multi-task vs single-task, one panel per task
    (`result["tasks"][task]`: `multi_task` and `single_task` points `(step, loss, score)`, `mean_gap`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        entry = result["tasks"][task]
        for label, points, style in (("multi-task", entry["multi_task"], "o-"), ("single-task", entry["single_task"], "s--")):
            if points:
                axis.plot([p[1] for p in points], [p[2] for p in points], style, label=label, markersize=3)
        gap = entry["mean_gap"]
        axis.set_title(f"{task}" + (f" (gap {gap:+.3f})" if gap is not None else ""))
        axis.set_xlabel("training loss")
        axis.invert_xaxis()
        axis.set_ylabel("selection-split score")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multi_task", required=True, help="The multi-task run (output dir, trainer_state.json or benchmark JSON).")
    parser.add_argument("--single_task", action="append", required=True, metavar="TASK=RUN", help="A single-task run of TASK (repeatable).")
    parser.add_argument("--out", required=True, help="Directory for generalization_gap.json and .png.")
    args = parser.parse_args(argv)
    singles = {}
    for item in args.single_task:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            parser.error(f"--single_task {item!r}: expected TASK=RUN.")
        singles[task] = path
    try:
        multi_history = load_log_history(args.multi_task)
        single_histories = {task: load_log_history(path) for task, path in singles.items()}
    except (OSError, ValueError) as error:  # a missing or unreadable run: one line
        raise SystemExit(f"error: {error}") from None
    result: dict[str, Any] = {
        "multi_task": args.multi_task,
        "single_task": singles,
        "tasks": {},
        "definition": "gap = single-task selection score interpolated at the multi-task training loss - "
        "multi-task selection score (positive: multi-task generalizes worse at equal fit)",
    }
    for task, path in singles.items():
        multi, single = task_points(multi_history, task), task_points(single_histories[task], task)
        if not multi:
            raise SystemExit(f"error: {args.multi_task} has no train_loss_{task} / eval_{task}_score logs.")
        if not single:
            raise SystemExit(f"error: {path} has no train_loss_{task} / eval_{task}_score logs.")
        result["tasks"][task] = {"multi_task": multi, "single_task": single, **gap_at_equal_loss(multi, single)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "generalization_gap.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    plot_gap(result, os.path.join(args.out, "generalization_gap.png"))
    for task, entry in result["tasks"].items():
        gap = entry["mean_gap"]
        print(
            f"{task}: mean gap at equal training loss {gap:+.4f} over {entry['compared_points']} points"
            if gap is not None
            else f"{task}: the runs' training losses do not overlap"
        )
    return result


if __name__ == "__main__":
    main()
