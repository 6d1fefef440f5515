#!/usr/bin/env python
"""Reference scores for the GLUE-5 v2 tables: what a model must beat to have learned anything.

    python -m benchmarks.glue5_references [results_dir]     # default: benchmarks/results/glue5_minilm

- **Trivial predictor** of each task on its GLUE dev set, fitted on the same training pool the benchmark
  trains on (the training set minus the seeded selection split, `carve_validation_split(train, 0.1, 500,
  seed=42)`): the majority class of the training labels for classification, the training-label mean for
  STS-B. Scored with the benchmark's own metrics (`hf_async_mtl.metrics.compute_task_metrics`, task score =
  mean of the task's metrics). A constant prediction has an undefined (0/0) correlation; the metrics report
  it as 0, so STS-B's trivial predictor scores 0.
- **Zero-shot STS-B** of the frozen encoder (all-MiniLM-L6-v2, mean pooling, cosine of the two sentences):
  measured once, not recomputed here (`../shared/anchors/stsb_zeroshot_minilm.md`, 2026-12-01).

Writes `<results_dir>/references.json` (scores ×100). Reads only the GLUE TSV files: no model, seconds.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.glue5_quality import PROFILES, TASKS  # noqa: E402  (the benchmark's task list and selection split)
from glue_tasks import get_glue_task, load_glue_task  # noqa: E402
from hf_async_mtl.data import carve_validation_split  # noqa: E402
from hf_async_mtl.metrics import compute_task_metrics  # noqa: E402

SELECTION_FRACTION, SELECTION_SEED = 0.1, 42
# Measured once with the frozen packaged encoder; see the anchor file for the exact procedure.
STSB_ZERO_SHOT = {
    "score": 86.84,
    "pearson": 86.96,
    "spearmanr": 86.72,
    "source": "../shared/anchors/stsb_zeroshot_minilm.md",
    "method": "all-MiniLM-L6-v2 (packaged), frozen, each sentence encoded alone (max 128 tokens), mean pooling "
    "over the attention mask, L2-normalised, cosine of the two sentences; STS-B dev, 1500 pairs; "
    "measured 2026-12-01, not recomputed here",
}


def default_glue_dir() -> str:
    """$GLUE_DIR, else the shared copy next to the repository (as `glue5_quality.py` reads it)."""
    return os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))


def trivial_predictor(name: str, glue_dir: str, selection_max: int = 500, profile: str | None = None) -> dict:
    """One task's constant predictor fitted on the benchmark's training pool, scored on GLUE dev (×100). With
    `profile`: that profile's pool (its selection split and caps, `convergence_replay.selection_split_labels`)."""
    spec = get_glue_task(name)
    if profile is None:
        pool, _ = carve_validation_split(load_glue_task(name, "train", glue_dir), SELECTION_FRACTION, selection_max, seed=SELECTION_SEED)
        train_labels = np.asarray(pool["label"])
    else:
        from benchmarks.convergence_replay import selection_split_labels

        train_labels = np.asarray(selection_split_labels(profile, name, glue_dir)[0])
    dev = load_glue_task(name, "validation", glue_dir)
    dev_labels = np.asarray(dev["label"])
    entry: dict = {"train_pool_size": len(train_labels), "dev_size": len(dev)}
    if spec.is_regression:
        constant = float(np.mean(train_labels))
        predictions = np.full(len(dev), constant)
        entry["predictor"] = f"training-label mean {constant:.4f}"
        entry["note"] = (
            "constant prediction: Pearson/Spearman are undefined (0/0), reported as 0 (computed_metrics: what compute_task_metrics returned)"
        )
    else:
        counts = np.bincount(train_labels.astype(np.int64), minlength=spec.num_labels)
        majority = int(np.argmax(counts))
        # compute_task_metrics takes classification predictions as logits [N, num_labels] (argmax taken).
        predictions = np.zeros((len(dev), spec.num_labels))
        predictions[:, majority] = 1.0
        label_name = spec.label_names[majority] if spec.label_names else str(majority)
        entry["predictor"] = f"majority class {majority} ({label_name}, {100 * counts[majority] / counts.sum():.1f} % of the training pool)"
        entry["dev_majority_share"] = 100 * float(np.mean(dev_labels == majority))
    metrics = compute_task_metrics(spec, predictions, dev_labels)
    if spec.is_regression:
        # The correlation of a constant is 0/0. compute_task_metrics returns ~1e-14 here, not 0: the mean of
        # 1500 copies of a float is not exactly that float, so the centred predictions are rounding noise.
        entry["computed_metrics"] = {key: 100 * value for key, value in metrics.items() if key != "score"}
        metrics = {**{name: 0.0 for name in spec.metrics}, "score": 0.0}
    entry["metrics"] = {key: 100 * value for key, value in metrics.items() if key != "score"}
    entry["score"] = 100 * metrics["score"]
    return entry


def compute_references(glue_dir: str | None = None, selection_max: int | None = None, profile: str | None = None) -> dict:
    """Every GLUE-5 task's trivial predictor, their GLUE-5 / GLUE-4 means and the STS-B zero-shot anchor (`profile`:
    fitted on that profile's training pools)."""
    glue_dir = glue_dir or default_glue_dir()
    selection_max = selection_max or PROFILES["minilm"]["selection_max"]
    trivial = {name: trivial_predictor(name, glue_dir, selection_max, profile) for name in TASKS}
    pool = (
        f"GLUE train minus the selection split: carve_validation_split(train, {SELECTION_FRACTION}, {selection_max}, seed={SELECTION_SEED})"
        if profile is None
        else f"the training pools of profile {profile!r} (its selection split carved first, then its caps: {PROFILES[profile]['caps'] or 'none'})"
    )
    return {
        "units": "dev score ×100 (task score = mean of the task's GLUE metrics)",
        "training_pool": pool,
        "trivial_predictor": trivial,
        "trivial_glue5": float(np.mean([trivial[t]["score"] for t in TASKS])),
        "trivial_glue4": float(np.mean([trivial[t]["score"] for t in TASKS if t != "rte"])),
        "stsb_zero_shot_cosine": STSB_ZERO_SHOT,
    }


def main(results_dir: str | None = None, profile: str | None = None) -> dict:
    results_dir = results_dir or os.path.join(ROOT, "benchmarks", "results", f"glue5_{profile or 'minilm'}")
    os.makedirs(results_dir, exist_ok=True)
    references = compute_references(profile=profile)
    path = os.path.join(results_dir, "references.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(references, handle, indent=1)
    for name, entry in references["trivial_predictor"].items():
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in entry["metrics"].items())
        print(f"{name}: {entry['score']:.2f} ({metrics}); {entry['predictor']}")
    print(
        f"GLUE-5 {references['trivial_glue5']:.2f}, GLUE-4 (no RTE) {references['trivial_glue4']:.2f}; "
        f"STS-B zero-shot cosine {STSB_ZERO_SHOT['score']:.2f} -> {path}"
    )
    return references


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Trivial-predictor references of a GLUE-5 results folder (references.json).")
    parser.add_argument("results_dir", nargs="?", default=None, help="Default: benchmarks/results/glue5_<profile or minilm>.")
    parser.add_argument("--profile", default=None, help="Fit on this profile's training pools (default: v2's).")
    options = parser.parse_args()
    main(options.results_dir, options.profile)
