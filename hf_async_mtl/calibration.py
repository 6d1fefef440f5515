"""Calibration of classification heads: reliability bins, expected calibration error, reliability diagrams.

Confidence = the softmax probability of the predicted class. Examples fall in `num_bins` equal-width bins of
confidence over [0, 1] (a confidence of exactly 1 goes in the last bin). Each bin reports its edges, its size,
the accuracy of its examples and their mean confidence; ECE = sum over bins of (bin size / N) ·
|accuracy − mean confidence| (Guo et al., 2017).

With `calibration_bins` set, `MultiTaskTrainer` adds `<prefix>_<task>_ece` to every evaluation's metrics and
`write_calibration` keeps the bins of every evaluation in `OUTPUT_DIR/calibration.json`; draw them with

    python -m hf_async_mtl.calibration OUTPUT_DIR/calibration.json reliability.png
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, read_json_field
from .file_command import run_file_command
from .files import write_json_atomic

FILE_NAME = "calibration.json"
DEFINITION = (
    "confidence = softmax probability of the predicted class; equal-width confidence bins over [0, 1]; "
    "ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|"
)


def reliability_bins(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> list[dict[str, float | None]]:
    """One dict per bin, empty bins included: `lower`, `upper`, `count`, `accuracy`, `confidence` (None when empty)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"calibration needs logits [N, classes >= 2], got shape {logits.shape}.")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(logits):
        raise ValueError(f"calibration: {len(logits)} rows of logits but {len(labels)} labels.")
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    bins = []
    for b in range(num_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            {
                "lower": b / num_bins,
                "upper": (b + 1) / num_bins,
                "count": count,
                "accuracy": float(correct[members].mean()) if count else None,
                "confidence": float(confidence[members].mean()) if count else None,
            }
        )
    return bins


def ece_from_bins(bins: Sequence[Mapping[str, Any]]) -> float:
    """ECE of `reliability_bins` output (or of bins pooled over runs by `pool_bins`), in [0, 1]."""
    total = sum(b["count"] for b in bins)
    if not total:
        raise ValueError("ECE of an empty set of predictions.")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Expected calibration error of a classifier, in [0, 1] (definition in the module docstring)."""
    return ece_from_bins(reliability_bins(logits, labels, num_bins))


def pool_bins(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
    """Bins of several runs with the same edges merged: counts add, accuracy and confidence are count-weighted."""
    if not runs:
        raise ValueError("pool_bins needs at least one run.")
    edges = [(b["lower"], b["upper"]) for b in runs[0]]
    if any([(b["lower"], b["upper"]) for b in run] != edges for run in runs):
        raise ValueError("pool_bins: the runs' bins have different edges.")
    pooled = []
    for position, (lower, upper) in enumerate(edges):
        members = [run[position] for run in runs if run[position]["count"]]
        count = sum(b["count"] for b in members)
        pooled.append(
            {
                "lower": lower,
                "upper": upper,
                "count": count,
                "accuracy": sum(b["count"] * b["accuracy"] for b in members) / count if count else None,
                "confidence": sum(b["count"] * b["confidence"] for b in members) / count if count else None,
            }
        )
    return pooled


OWN_SETS = "the trainer's eval_dataset"  # during training: the selection splits
GIVEN_SETS = "sets passed to evaluate()"  # e.g. run_glue_mtl.py's final evaluation of the dev sets


def write_calibration(
    output_dir: str, step: int, prefix: str, sets: Mapping[str, Sequence[Mapping[str, Any]]], data: str | None = None
) -> str:
    """Append one evaluation's bins (evaluation set key → bins) to `output_dir/calibration.json` (written atomically).

    `data` says which sets were evaluated (`OWN_SETS` or `GIVEN_SETS`): at the last step a run evaluates both its
    selection splits and its dev sets, under the same prefix."""
    path = os.path.join(output_dir, FILE_NAME)
    payload: dict[str, Any] = {"definition": DEFINITION, "evaluations": []}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    payload["evaluations"].append({"step": step, "prefix": prefix, **({"data": data} if data else {}), "sets": dict(sets)})
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(path, payload, indent=1)
    return path


def truncate_calibration(output_dir: str, step: int, keep_last: int | None = None) -> None:
    """Keep only the evaluations of `output_dir/calibration.json` at or before `step` (a run starting there); with
    `keep_last`, only that many of the newest among them (a fresh run's own evaluations before training)."""
    path = os.path.join(output_dir, FILE_NAME)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    kept = [e for e in payload.get("evaluations", []) if e.get("step", 0) <= step]
    if keep_last is not None:
        kept = kept[max(0, len(kept) - keep_last) :] if keep_last > 0 else []
    if len(kept) == len(payload.get("evaluations", [])):
        return
    payload["evaluations"] = kept
    write_json_atomic(path, payload, indent=1)


def plot_reliability(panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], out_png: str) -> None:
    """Reliability diagrams: one panel per task, one line per curve name (`{task: {name: bins}}`), with the
    diagonal (perfect calibration) and each curve's ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(panels)
    if not tasks:
        raise ValueError("plot_reliability: nothing to draw.")
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        axis.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
        for name, bins in panels[task].items():
            filled = [b for b in bins if b["count"]]
            axis.plot(
                [b["confidence"] for b in filled],
                [b["accuracy"] for b in filled],
                "o-",
                markersize=3,
                label=f"{name} (ECE {100 * ece_from_bins(bins):.1f})",
            )
        axis.set_title(task, fontsize=9)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    def run(calibration_file: str, png: str) -> None:
        evaluations = read_json_field(calibration_file, "evaluations", "calibration file")
        if not evaluations:
            raise InputError(f"{calibration_file} holds no evaluation.")
        last = evaluations[-1]  # the run's last evaluation (after training: the dev sets)
        label = f"step {last['step']}" + (f", {last['data']}" if last.get("data") else "")
        plot_reliability({key: {label: bins} for key, bins in last["sets"].items()}, png)

    return run_file_command(argv, "usage: python -m hf_async_mtl.calibration OUTPUT_DIR/calibration.json reliability.png", run)


if __name__ == "__main__":
    raise SystemExit(main())
