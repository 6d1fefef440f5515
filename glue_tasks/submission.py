"""GLUE leaderboard submission files (gluebenchmark.com): one `<Task>.tsv` per test split, zipped.

Each file has the header `index<TAB>prediction` and one row per test example, in test-file order.
Predictions are spelled like the labels of the task's original TSVs (`GlueFormat.label_strings`):
`0`/`1` for CoLA, SST-2, MRPC, QQP and WNLI, `entailment`/`not_entailment` for RTE and QNLI,
`entailment`/`neutral`/`contradiction` for MNLI; STS-B scores are clipped to the task's range and
written with three decimals. File names come from `GlueFormat.submission_files`, so nothing here
depends on a particular task.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from glue_tasks.formats import GLUE_FORMATS
from glue_tasks.specs import get_glue_task

__all__ = [
    "SCORE_DECIMALS",
    "SUBMISSION_DIR",
    "SUBMISSION_HEADER",
    "format_predictions",
    "submission_file_name",
    "submission_splits",
    "write_glue_submission",
    "write_submission_file",
]

SUBMISSION_DIR = "glue_submission"
SUBMISSION_HEADER = ("index", "prediction")
SCORE_DECIMALS = 3


def submission_splits(task: str) -> tuple[str, ...]:
    """The test splits of `task` that the leaderboard scores; `()` for a task that is not GLUE."""
    fmt = GLUE_FORMATS.get(task)
    return tuple(fmt.submission_files) if fmt is not None else ()


def submission_file_name(task: str, split: str) -> str:
    """Official file name of `task`'s predictions on `split`, e.g. `("mnli", "test_mismatched")` → `MNLI-mm.tsv`."""
    files = GLUE_FORMATS[get_glue_task(task).name].submission_files
    if split not in files:
        raise ValueError(f"GLUE task {task!r} has no leaderboard split {split!r}; it has {list(files)}.")
    return files[split]


def format_predictions(task: str, predictions: np.ndarray | Sequence) -> list[str]:
    """Spell one prediction per example as the leaderboard expects.

    Args:
        task: GLUE task name.
        predictions: Class ids `(n,)` or logits `(n, num_labels)` for a classification task; scores
            `(n,)` or `(n, 1)` for STS-B.

    Raises:
        ValueError: wrong shape, a class id outside the label set, or a non-finite score.
    """
    spec = get_glue_task(task)
    labels = GLUE_FORMATS[spec.name].label_strings
    values = np.asarray(predictions)
    if labels is None:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"{task}: expected one score per example, got predictions of shape {values.shape}.")
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{task}: predicted score {values[~np.isfinite(values)][0]} is not finite.")
        low, high = spec.regression_range if spec.regression_range is not None else (-np.inf, np.inf)
        return [f"{value:.{SCORE_DECIMALS}f}" for value in np.clip(values, low, high)]
    if values.ndim == 2:
        if values.shape[1] != len(labels):
            raise ValueError(f"{task}: {values.shape[1]} logits per example, the task has {len(labels)} labels.")
        values = values.argmax(axis=-1)
    if values.ndim != 1:
        raise ValueError(f"{task}: expected one class id per example, got predictions of shape {values.shape}.")
    bad = np.flatnonzero(~np.isin(values, np.arange(len(labels))))
    if bad.size:
        raise ValueError(f"{task}: predicted class id {values[bad[0]]} is outside 0..{len(labels) - 1}.")
    return [labels[int(v)] for v in values]


def write_submission_file(path: str | os.PathLike, task: str, indices: Sequence[int], predictions: np.ndarray | Sequence) -> int:
    """Write one leaderboard TSV (`index<TAB>prediction`); returns the number of rows written."""
    rows = format_predictions(task, predictions)
    indices = [int(i) for i in indices]
    if len(indices) != len(rows):
        raise ValueError(f"{task}: {len(rows)} predictions for {len(indices)} test examples.")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{task}: the test indices are not unique.")
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(SUBMISSION_HEADER) + "\n")
        handle.writelines(f"{index}\t{row}\n" for index, row in zip(indices, rows))
    return len(rows)


def write_glue_submission(
    output_dir: str | os.PathLike,
    predictions: Mapping[tuple[str, str], tuple[Sequence[int], np.ndarray | Sequence]],
) -> str:
    """Write `<output_dir>/glue_submission/<Task>.tsv` for every `(task, split)` and zip them.

    Args:
        output_dir: Where `glue_submission/` and `glue_submission.zip` (files at the zip root) go.
        predictions: `(task, test split)` → `(example indices, predictions)`; see `format_predictions`.

    Everything is written to temporary names first and renamed into place, so an error or a crash
    leaves either the previous submission or the complete new one, never a half-written one.

    Returns:
        The path of the zip file.
    """
    if not predictions:
        raise ValueError("No test predictions to write: no trained task has a GLUE test split.")
    names = {key: submission_file_name(*key) for key in predictions}
    if len(set(names.values())) != len(names):
        raise ValueError(f"Two predictions map to the same submission file: {sorted(names)}.")
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    final_dir = os.path.join(output_dir, SUBMISSION_DIR)
    final_zip = f"{final_dir}.zip"
    staging = tempfile.mkdtemp(prefix=f".{SUBMISSION_DIR}-", dir=output_dir)
    try:
        files_dir = os.path.join(staging, SUBMISSION_DIR)
        os.mkdir(files_dir)
        for (task, split), name in names.items():
            indices, values = predictions[(task, split)]
            write_submission_file(os.path.join(files_dir, name), task, indices, values)
        staged_zip = os.path.join(staging, os.path.basename(final_zip))
        with zipfile.ZipFile(staged_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(names.values()):
                archive.write(os.path.join(files_dir, name), arcname=name)
        # The directory cannot be replaced in one rename while it has files: move the old one aside first.
        old_dir = os.path.join(staging, "previous")
        if os.path.isdir(final_dir):
            os.replace(final_dir, old_dir)
        os.replace(files_dir, final_dir)
        os.replace(staged_zip, final_zip)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_zip
