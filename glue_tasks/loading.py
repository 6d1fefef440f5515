"""Load a GLUE split as a `datasets.Dataset`, from the original TSV files or from the Hub.

Both sources give the same columns: the task's text fields, `"label"` (int64 class id, or float32
for STS-B; -1 on unlabelled test rows, as on the Hub) and `"idx"` (int64).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from glue_tasks.formats import GLUE_FORMATS, GlueFormat
from glue_tasks.specs import get_glue_task
from glue_tasks.tabular import LabelParser, read_delimited
from hf_async_mtl.sources import TaskDataSource
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
        ValueError: unknown task or split, or malformed file content (one line naming the file,
            the 1-based line and the column). Blank lines are skipped (`hf_async_mtl.tabular`).
        FileNotFoundError: missing task directory or split file.
    """
    spec = get_glue_task(name)
    fmt = GLUE_FORMATS[spec.name]
    if split not in fmt.files:
        raise ValueError(f"Unknown split {split!r} for GLUE task {spec.name!r}; available splits: {', '.join(fmt.splits)}.")
    if glue_dir is None:
        return _load_from_hub(spec, split, cache_dir)
    return _load_from_tsv(spec, fmt, split, Path(glue_dir))


def _load_from_hub(spec: TaskSpec, split: str, cache_dir: str | os.PathLike[str] | None) -> datasets.Dataset:
    """Download a split from the Hub and normalise its columns and dtypes to `glue_features`."""
    # Looked up on the module at call time so tests can monkeypatch `datasets.load_dataset`.
    dataset = datasets.load_dataset(HUB_DATASET, spec.name, split=split, cache_dir=cache_dir)
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"{HUB_DATASET}/{spec.name} split {split!r}: expected a Dataset, got {type(dataset).__name__}.")
    features = glue_features(spec)
    missing = [column for column in features if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{HUB_DATASET}/{spec.name} split {split!r} lacks column(s) {missing}; it has {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError(f"{HUB_DATASET}/{spec.name} split {split!r} is empty.")
    # The Hub stores labels as ClassLabel; a plain int64 matches the TSV path (names live in the spec).
    return dataset.select_columns(list(features)).cast(features)


def _load_from_tsv(spec: TaskSpec, fmt: GlueFormat, split: str, glue_dir: Path) -> datasets.Dataset:
    """Parse `<glue_dir>/<fmt.directory>/<file>` into a Dataset with `hf_async_mtl.tabular`.

    Tab-separated, `QUOTE_NONE` (the text holds bare `"` characters), no NA parsing, a BOM dropped,
    blank lines skipped (none occur in the GLUE distribution), every row as wide as the header or
    `TsvFile.num_columns`. Errors name the file, the 1-based line and the column.
    """
    task_dir = glue_dir / fmt.directory
    if not task_dir.is_dir():
        raise FileNotFoundError(f"GLUE task directory for {spec.name!r} not found: {task_dir}")
    tsv = fmt.files[split]
    path = task_dir / tsv.file_name
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file for {spec.name!r} split {split!r} not found: {path}")

    selected: dict[str, int] = dict(zip(spec.text_fields, tsv.text_columns))
    if tsv.label_column is not None:
        selected[spec.label_field] = tsv.label_column
    if tsv.index_column is not None:
        selected["idx"] = tsv.index_column
    table = read_delimited(
        path,
        selected,
        delimiter="\t",
        quoting=False,
        has_header=tsv.has_header,
        num_columns=tsv.num_columns,
        context=f"GLUE task {spec.name!r}",
    )
    if not len(table):
        raise ValueError(f"{path}: no data rows (split {split!r} of {spec.name!r} is empty).")
    columns: dict[str, list] = {field: table.columns[field] for field in spec.text_fields}
    if tsv.label_column is None:
        columns[spec.label_field] = [_NO_LABEL] * len(table)
    else:
        parser = LabelParser.for_task(spec, label_ids=fmt.label_map, accept_ids=False)
        columns[spec.label_field] = table.parse(spec.label_field, parser)
    if tsv.index_column is None:
        columns["idx"] = list(range(len(table)))
    else:
        columns["idx"] = [_parse_index(raw, table.where(row, "idx")) for row, raw in enumerate(table.columns["idx"])]
    return datasets.Dataset.from_dict(columns, features=glue_features(spec))


def _parse_index(raw: str, where: str) -> int:
    """Parse the file's example-index column."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{where}: index {raw!r} is not an integer.") from None


class GlueTsvSource(TaskDataSource):
    """A GLUE task's data as a task source: the original TSVs under `glue_dir`, or the Hub copy (`nyu-mll/glue`) when
    `glue_dir` is None (`load_glue_task`)."""

    def __init__(self, name: str, glue_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.name, self.glue_dir, self.cache_dir = name, glue_dir, cache_dir

    def _load(self, split: str) -> datasets.Dataset:
        return load_glue_task(self.name, split, self.glue_dir, cache_dir=self.cache_dir)

    def describe(self, split: str) -> str:
        return f"GLUE {self.name} {split}" + (f" under {self.glue_dir}" if self.glue_dir else " (Hub)")
