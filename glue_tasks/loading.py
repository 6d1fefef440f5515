"""Load a GLUE split as a `datasets.Dataset`, from the original TSV files or from the Hub.

Both sources give the same columns: the task's text fields, `"label"` (int64 class id, or float32
for STS-B; -1 on unlabelled test rows, as on the Hub) and `"idx"` (int64).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from pathlib import Path

import datasets

from glue_tasks.formats import GLUE_FORMATS, GlueFormat, TsvFile
from glue_tasks.specs import get_glue_task
from hf_async_mtl.tasks import TaskSpec

__all__ = ["HUB_DATASET", "glue_features", "load_glue_task"]

HUB_DATASET = "nyu-mll/glue"

# Label of an unlabelled (test) row, the Hub's convention.
_NO_LABEL = -1


def glue_features(spec: TaskSpec) -> datasets.Features:
    """The `datasets.Features` every loaded split of `spec` has: text fields, `label`, `idx`."""
    features = {field: datasets.Value("string") for field in spec.text_fields}
    features[spec.label_field] = datasets.Value("float32" if spec.is_regression else "int64")
    features["idx"] = datasets.Value("int64")
    return datasets.Features(features)


def load_glue_task(
    name: str,
    split: str,
    glue_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """Load one split of a GLUE task.

    Args:
        name: Task name, e.g. `"sst2"` (see `glue_tasks.GLUE_TASKS`).
        split: `"train"`, one of the task's `validation_splits` (`"validation"`, or MNLI's
            `"validation_matched"` / `"validation_mismatched"`), or `"test"` (MNLI:
            `"test_matched"` / `"test_mismatched"`).
        glue_dir: Root of the original GLUE distribution (`<glue_dir>/SST-2/train.tsv`, ...). When
            `None`, the split is downloaded from the Hub dataset `nyu-mll/glue`.
        cache_dir: `datasets` cache directory for the Hub download; unused for local files.

    Returns:
        A `Dataset` with the spec's text fields, `label` and `idx` (see `glue_features`).

    Raises:
        ValueError: unknown task or split, or malformed file content (the message names the file
            and the 1-based line).
        FileNotFoundError: missing task directory or split file.
    """
    spec = get_glue_task(name)
    fmt = GLUE_FORMATS[spec.name]
    if split not in fmt.files:
        raise ValueError(
            f"Unknown split {split!r} for GLUE task {spec.name!r}; available splits: {', '.join(fmt.splits)}."
        )
    if glue_dir is None:
        return _load_from_hub(spec, split, cache_dir)
    return _load_from_tsv(spec, fmt, split, Path(glue_dir))


def _load_from_hub(spec: TaskSpec, split: str, cache_dir: str | os.PathLike[str] | None) -> datasets.Dataset:
    """Download a split from the Hub and normalise its columns and dtypes to `glue_features`."""
    # Looked up on the module at call time so tests can monkeypatch `datasets.load_dataset`.
    dataset = datasets.load_dataset(HUB_DATASET, spec.name, split=split, cache_dir=cache_dir)
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            f"{HUB_DATASET}/{spec.name} split {split!r}: expected a Dataset, got {type(dataset).__name__}."
        )
    features = glue_features(spec)
    missing = [column for column in features if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{HUB_DATASET}/{spec.name} split {split!r} lacks column(s) {missing}; it has {dataset.column_names}."
        )
    if len(dataset) == 0:
        raise ValueError(f"{HUB_DATASET}/{spec.name} split {split!r} is empty.")
    # The Hub stores labels as ClassLabel; a plain int64 matches the TSV path (names live in the spec).
    return dataset.select_columns(list(features)).cast(features)


def _load_from_tsv(spec: TaskSpec, fmt: GlueFormat, split: str, glue_dir: Path) -> datasets.Dataset:
    """Parse `<glue_dir>/<fmt.directory>/<file>` into a Dataset."""
    task_dir = glue_dir / fmt.directory
    if not task_dir.is_dir():
        raise FileNotFoundError(f"GLUE task directory for {spec.name!r} not found: {task_dir}")
    tsv = fmt.files[split]
    path = task_dir / tsv.file_name
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file for {spec.name!r} split {split!r} not found: {path}")

    columns: dict[str, list] = {field: [] for field in spec.text_fields}
    labels: list[int | float] = []
    indices: list[int] = []
    for row_number, (line, row) in enumerate(_read_rows(path, tsv)):
        for field, column in zip(spec.text_fields, tsv.text_columns):
            columns[field].append(row[column])
        if tsv.label_column is None:
            labels.append(_NO_LABEL)
        else:
            labels.append(_parse_label(row[tsv.label_column], spec, fmt, path, line))
        if tsv.index_column is None:
            indices.append(row_number)
        else:
            indices.append(_parse_index(row[tsv.index_column], path, line))
    if not labels:
        raise ValueError(f"{path}: no data rows (split {split!r} of {spec.name!r} is empty).")
    columns[spec.label_field] = labels
    columns["idx"] = indices
    return datasets.Dataset.from_dict(columns, features=glue_features(spec))


def _read_rows(path: Path, tsv: TsvFile) -> Iterator[tuple[int, list[str]]]:
    """Yield `(1-based line number, fields)` for each data row, checking the column count.

    `QUOTE_NONE` because the text holds bare `"` characters that csv's default quoting would treat
    as field delimiters, merging rows. `utf-8-sig` strips MRPC's byte-order mark. The csv module
    does no NA parsing, so "NA", "null" or "nan" stay text.
    """
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        expected = tsv.num_columns
        if tsv.has_header:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: file is empty (expected a header line).")
            expected = len(header)
            if expected < tsv.min_columns():
                raise ValueError(
                    f"{path}, line 1: header has {expected} column(s), but the {path.parent.name} layout "
                    f"needs at least {tsv.min_columns()}."
                )
        for row in reader:
            if len(row) != expected:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected {expected} tab-separated columns, "
                    f"found {len(row)}."
                )
            yield reader.line_num, row


def _parse_label(raw: str, spec: TaskSpec, fmt: GlueFormat, path: Path, line: int) -> int | float:
    """Turn a raw label string into a class id, or a float target for regression tasks."""
    if fmt.label_map is not None:
        try:
            return fmt.label_map[raw]
        except KeyError:
            raise ValueError(
                f"{path}, line {line}: label {raw!r} is not one of {sorted(fmt.label_map)} ({spec.name})."
            ) from None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{path}, line {line}: score {raw!r} is not a number ({spec.name}).") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}: score {raw!r} is not a finite number ({spec.name}).")
    if spec.regression_range is not None:
        low, high = spec.regression_range
        if not low <= value <= high:
            raise ValueError(f"{path}, line {line}: score {value} is outside [{low}, {high}] ({spec.name}).")
    return value


def _parse_index(raw: str, path: Path, line: int) -> int:
    """Parse the file's example-index column."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{path}, line {line}: index {raw!r} is not an integer.") from None
