"""Where a task's data comes from, loaded through `datasets`: a Hub data set, a local data set directory, or files.

A `TaskSource` names the data of one task; `load_task(spec, source, split)` returns one split of it as a
`datasets.Dataset` with the spec's text fields, `label` and `idx` (the row number), the same columns and
types as `glue_tasks.load_glue_task`:

* `TaskSource(dataset="nyu-mll/glue", config="sst2")`: a Hub data set id, or a local directory laid out
  like a Hub data set repository (data files, optionally a README.md whose YAML `configs` name them) --
  the same `datasets.load_dataset` call for both; or a directory written by `DatasetDict.save_to_disk`.
* `TaskSource(data_files={"train": "train.parquet", "validation": "dev.csv"})`: files of any format
  `datasets` reads, by suffix -- `.csv` (csv quoting), `.tsv` / `.tab` (no quoting: `"` is text, as in the
  GLUE files), `.json` / `.jsonl`, `.parquet`, `.arrow` -- or a directory written by `Dataset.save_to_disk`.
  Delimited files are read with every column as text and no NA parsing (`NA`, `null` stay text), in UTF-8
  (a UTF-16/32 byte-order mark is an error), with a quoted `\r\n` read as `\n`; pandas' parser reads them
  (a quote closed in mid-field, `"a"b`, is read as `ab`, as Python's csv module does by default).

Everything stays Arrow-backed (memory-mapped, cached by `datasets`): labels and texts are checked and
converted with pyarrow compute in batched `map` calls, never as Python lists of rows. Every problem is one
line naming the task, the data (file or data set, config, split), the 0-based row and the field.

Labels: a `ClassLabel` feature gives its names (`spec_inference.infer_task_spec`) and is remapped by name onto the spec's
label names; string labels are label names (or integer ids written as text); integer labels are ids; a
regression task reads numbers (or numbers written as text). `infer_task_spec` also infers regression
from a float label column.
"""

from __future__ import annotations

import csv
import glob
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .labels import LabelConverter, first_true
from .tasks import TaskSpec

__all__ = ["DatasetsSource", "TaskDataSource", "TaskSource", "TextOfTask", "load_task", "load_source_split"]

# File suffix -> (datasets builder, builder options).
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".tab": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
}
DATA_SUFFIXES = tuple(_BUILDERS)
# Byte-order marks of UTF-16 / UTF-32 text, which the readers refuse (with the encoding named) rather than misread.
WIDE_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))
_BATCH = 10_000


@dataclass(frozen=True)
class TaskSource:
    """Where one task's data comes from (give `dataset` or `data_files`).

    Args:
        dataset: A Hub data set id (`"nyu-mll/glue"`), a local directory laid out like a Hub data set repo,
            or a `DatasetDict.save_to_disk` directory.
        config: The data set's configuration (subset) name, if it has several.
        data_files: Split name -> file path (or list of paths) of one format, or a `Dataset.save_to_disk`
            directory. Splits are called by these keys.
        splits: Role -> split name in the source, for `dataset` (default: `train` -> `train`,
            `validation` -> `validation`, `test` -> `test`); e.g. `{"validation": "dev"}`.
        columns: Task field -> column of the source, for columns whose names differ
            (`{"sentence": "text", "label": "sentiment"}`).
        revision: Git revision of a Hub data set.
    """

    dataset: str | None = None
    config: str | None = None
    data_files: Mapping[str, str | Sequence[str]] | None = None
    splits: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    revision: str | None = None

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.data_files is None):
            raise ValueError("TaskSource: give exactly one of `dataset` (a Hub id or a directory) and `data_files`.")
        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset.strip()):
            raise ValueError(f"TaskSource: `dataset` must be a non-empty string, got {self.dataset!r}.")
        if self.data_files is not None:
            if not isinstance(self.data_files, Mapping) or not self.data_files:
                raise ValueError(f"TaskSource: `data_files` must map split names to paths, got {self.data_files!r}.")
            files = {}
            for split, paths in self.data_files.items():
                paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
                if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
                    raise ValueError(f"TaskSource: data_files[{split!r}] must be a path or a list of paths, got {paths!r}.")
                files[str(split)] = tuple(os.fspath(p) for p in paths)
            object.__setattr__(self, "data_files", files)
            if self.splits:
                raise ValueError("TaskSource: `splits` applies to `dataset`; with `data_files` the keys are the split names.")
            if self.config is not None or self.revision is not None:
                raise ValueError("TaskSource: `config` and `revision` apply to `dataset`, not to `data_files`.")
        for name in ("splits", "columns"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
                raise ValueError(f"TaskSource: `{name}` must map names to names (strings), got {value!r}.")
            object.__setattr__(self, name, dict(value))

    def split_name(self, split: str) -> str:
        """The source's name of `split` (`train`, `validation`, `test` or another key)."""
        return split if self.data_files is not None else self.splits.get(split, split)

    def describe(self, split: str) -> str:
        """The data in error messages: the file(s), or the data set, config and split."""
        if self.data_files is not None:
            paths = self.data_files.get(split, ())
            return paths[0] if len(paths) == 1 else f"{list(paths)}"
        config = f", config {self.config!r}" if self.config else ""
        return f"data set {self.dataset!r}{config}, split {self.split_name(split)!r}"


# ---- loading -------------------------------------------------------------------------------------


def _delimited_header(path: str, options: Mapping[str, Any], context: str) -> list[str]:
    with open(path, "rb") as handle:
        start = handle.read(4)
    for bom, encoding in WIDE_BOMS:
        if start.startswith(bom):
            raise ValueError(f"{context}: {path}: the file is {encoding} text (byte-order mark); save it as UTF-8.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            quoting = options.get("quoting", csv.QUOTE_MINIMAL)
            for row in csv.reader(handle, delimiter=options.get("delimiter", ","), quoting=quoting):
                if any(cell.strip() for cell in row):
                    return row
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{context}: {path}: byte 0x{error.object[error.start]:02x} at offset {error.start} is not UTF-8 text; save the file as UTF-8."
        ) from None
    return []


def has_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def expand_data_files(paths: Sequence[str], context: str) -> list[str]:
    """A split's files: glob patterns (`reviews-*.parquet`, as `datasets` reads them) expanded in sorted order, each
    file present (a pattern matching none, or a missing file, is one `FileNotFoundError` line)."""
    expanded = []
    for path in paths:
        if has_glob(path) and not os.path.exists(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise FileNotFoundError(f"{context}: no data file matches {path}.")
            expanded.extend(matches)
        elif not os.path.exists(path):
            raise FileNotFoundError(f"{context}: data file {path} does not exist.")
        else:
            expanded.append(path)
    return expanded


def _load_files(context: str, source: TaskSource, split: str, cache_dir: str | None, streaming: bool = False) -> Any:
    assert source.data_files is not None  # TaskSource holds files or a data set: the caller chose files
    if split not in source.data_files:
        raise ValueError(f"{context}: no data file for split {split!r}; data_files has {sorted(source.data_files)}.")
    paths = expand_data_files(source.data_files[split], context)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        if not any(os.path.isfile(os.path.join(paths[0], name)) for name in ("dataset_info.json", "dataset_dict.json")):
            raise ValueError(
                f"{context}: {paths[0]} is a directory but no save_to_disk data set (no dataset_info.json): give the data "
                "files themselves, or a directory written by Dataset.save_to_disk."
            )
        loaded = datasets.load_from_disk(paths[0])
        if not isinstance(loaded, datasets.Dataset):
            raise ValueError(
                f"{context}: {paths[0]} holds a DatasetDict ({sorted(loaded)}); name it as `dataset`, or give one split's directory."
            )
        return loaded.to_iterable_dataset() if streaming else loaded
    suffixes = {os.path.splitext(p)[1].lower() for p in paths}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _BUILDERS:
        raise ValueError(
            f"{context}: {paths[0]}: unsupported file type {sorted(suffixes)}; use {', '.join(DATA_SUFFIXES)} or a save_to_disk directory."
        )
    builder, options = _BUILDERS[suffixes.pop()]
    options = dict(options)
    empty = [p for p in paths if os.path.isfile(p) and os.path.getsize(p) == 0]
    if empty:
        raise ValueError(f"{context}: {empty[0]}: the file is empty.")
    if builder == "csv":
        header = _delimited_header(paths[0], options, context)
        if not header:
            raise ValueError(f"{context}: {paths[0]}: the file has no header line.")
        for path in paths:  # a repeated name would be read as `name.1` and the task would silently train on the first
            names = header if path == paths[0] else _delimited_header(path, options, context)
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(
                    f"{context}: {path}, line 1: column {repeated[0]!r} appears {names.count(repeated[0])} times in the header; "
                    "give every column its own name."
                )
        # Every column as text, no NA parsing ("NA" in a text column is the string "NA"); a field missing from a
        # short row reads as "" (pandas 3), which `row_converter` refuses in a text field. index_col=False: a first row
        # with a field too many is an error (below), not an index column that shifts the others; later rows with too
        # many fields are parser errors.
        options.update(
            features=datasets.Features({name: datasets.Value("string") for name in header}), keep_default_na=False, index_col=False
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return datasets.load_dataset(
                builder, data_files={split: list(paths)}, split=split, cache_dir=cache_dir, streaming=streaming, **options
            )
    except Exception as error:  # datasets wraps parser errors in DatasetGenerationError; keep the parser's words
        cause = error.__cause__ or error
        if isinstance(cause, UnicodeDecodeError):
            raise ValueError(
                f"{context}: {source.describe(split)}: byte 0x{cause.object[cause.start]:02x} is not UTF-8 text; save the file as UTF-8."
            ) from None
        if "corresponds to no data" in str(error):
            raise ValueError(f"{context}: {source.describe(split)} holds no examples.") from None
        if isinstance(cause, pd.errors.ParserWarning):
            raise ValueError(
                f"{context}: {source.describe(split)}: the first row has more fields than the header {header} (a stray delimiter?)."
            ) from error
        raise ValueError(f"{context}: {source.describe(split)}: cannot read it as {builder}: {_one_line(cause)}") from error


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:300] + " ...") if len(text) > 300 else text


def _is_saved_dict(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "dataset_dict.json"))


def _load_dataset(context: str, source: TaskSource, split: str, cache_dir: str | None, streaming: bool = False) -> Any:
    name = source.split_name(split)
    assert source.dataset is not None  # TaskSource holds files or a data set: the caller chose a data set
    path = os.path.expanduser(source.dataset)
    if _is_saved_dict(path):
        if source.config is not None:
            raise ValueError(f"{context}: {path} is a save_to_disk directory; it has no configs (got {source.config!r}).")
        loaded = datasets.load_from_disk(path)
        if name not in loaded:
            raise ValueError(f"{context}: {path} has no split {name!r}; splits: {sorted(loaded)}.")
        return loaded[name].to_iterable_dataset() if streaming else loaded[name]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "state.json")):
        raise ValueError(f"{context}: {path} is one saved split (Dataset.save_to_disk); give it in data_files.")
    files = _local_data_files(path) if source.config is None else None
    if files is not None:  # a directory of data files: read as data_files are (the same checks, no NA parsing)
        if name not in files:
            raise ValueError(f"{context}: {path} has no split {name!r}; splits found (datasets' file naming): {sorted(files)}.")
        return _load_files(context, TaskSource(data_files={name: files[name]}), name, cache_dir, streaming)
    try:
        return datasets.load_dataset(path, source.config, split=name, revision=source.revision, cache_dir=cache_dir, streaming=streaming)
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(f"{context}: {source.describe(split)}: {_one_line(error)}") from None
        raise ValueError(f"{context}: cannot load {source.describe(split)}: {_one_line(error)}") from error
    except Exception as error:  # not found, offline, bad config: one line naming the data set
        raise ValueError(f"{context}: cannot load {source.describe(split)}: {type(error).__name__}: {_one_line(error)}") from error


def _local_data_files(path: str) -> dict[str, list[str]] | None:
    """`{split: files}` of a local directory of data files laid out as on the Hub (`train.csv`, `data/dev-*.parquet`,
    ...; `datasets`' own split patterns), when all are of a kind `_load_files` reads; None for anything else (a Hub id,
    a loading script, a README that declares configs, other file types), which `load_dataset` reads as it is."""
    if not os.path.isdir(path) or any(name.endswith(".py") for name in os.listdir(path)):
        return None
    readme = os.path.join(path, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8", errors="replace") as handle:
            if "configs:" in handle.read():
                return None
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        resolved = DataFilesDict.from_patterns(get_data_patterns(path), base_path=path)
    except Exception:  # noqa: BLE001 - no recognisable layout: load_dataset says what it makes of the directory
        return None
    files = {str(split): sorted(str(f) for f in found) for split, found in resolved.items()}
    suffixes = {os.path.splitext(f)[1].lower() for found in files.values() for f in found}
    return files if files and suffixes <= set(_BUILDERS) else None


def load_source_split(
    source: TaskSource, split: str, *, task: str | None = None, cache_dir: str | os.PathLike | None = None, streaming: bool = False
) -> Any:
    """One split of `source` as `datasets` loads it, with `source.columns` renamed to the task's fields: a `Dataset`, or
    with `streaming=True` an `IterableDataset` (read lazily; its features resolved from the first rows when the
    format does not declare them)."""
    context = f"Task {task!r}" if task else "TaskSource"
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    loader = _load_files if source.data_files is not None else _load_dataset
    dataset = loader(context, source, split, cache_dir, streaming)
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):  # a builder that ignored `split`
        dataset = dataset[source.split_name(split)]
    if streaming and dataset.features is None:
        try:
            dataset = dataset._resolve_features()  # reads the first rows: a column check needs the names
        except Exception as error:
            raise ValueError(f"{context}: {source.describe(split)}: cannot read it: {_one_line(error.__cause__ or error)}") from error
    renames = {column: task_field for task_field, column in source.columns.items() if column != task_field}
    missing = [column for column in renames if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{context}: {source.describe(split)} has no column {missing[0]!r} (named in columns); columns: {dataset.column_names}."
        )
    clash = [f for f in renames.values() if f in dataset.column_names and f not in renames]
    if clash:
        raise ValueError(
            f"{context}: columns maps a column onto {clash[0]!r}, but {source.describe(split)} already has a "
            f"column {clash[0]!r}; map that one too, or name another field."
        )
    return dataset.rename_columns(renames) if renames else dataset


# ---- labels ---------------------------------------------------------------------------------------


def load_task(
    spec: TaskSpec, source: TaskSource, split: str = "train", *, labelled: bool = True, cache_dir: str | os.PathLike | None = None
) -> datasets.Dataset:
    """One split of a task: its text fields, `label` (int64 class id / float32 target) and `idx` (row number).

    `labelled=False` (test sets) keeps a missing or -1 label as -1 without checking it. Raises
    `ValueError` / `FileNotFoundError` with one line naming the task, the data, the row and the field.
    """
    raw = load_source_split(source, split, task=spec.name, cache_dir=cache_dir)
    where = f"Task {spec.name!r}: {source.describe(split)}"
    needed = [*spec.text_fields, *([spec.label_field] if labelled else [])]
    missing = [column for column in needed if column not in raw.column_names]
    if missing:
        raise ValueError(
            f"{where} has no column {missing}; columns: {raw.column_names} (`columns` maps a task field to a column of another name)."
        )
    if len(raw) == 0:
        raise ValueError(f"{where} holds no examples.")
    convert = row_converter(spec, raw.features, where, labelled=labelled, delimited=_is_delimited(source, split))
    converted = raw.with_format("arrow").map(
        convert,
        batched=True,
        batch_size=_BATCH,
        with_indices=True,
        remove_columns=raw.column_names,
        features=task_features(spec),
        desc=f"Checking {spec.name} {split}",
    )
    return converted.with_format(None)


def task_features(spec: TaskSpec) -> datasets.Features:
    """The columns of a loaded task split: its text fields (string), `label` (int64 / float32) and `idx` (int64)."""
    label_type = datasets.Value("float32" if spec.is_regression else "int64")
    return datasets.Features(
        {**{name: datasets.Value("string") for name in spec.text_fields}, "label": label_type, "idx": datasets.Value("int64")}
    )


def _is_delimited(source: TaskSource, split: str) -> bool:
    return source.data_files is not None and any(
        _BUILDERS.get(os.path.splitext(p)[1].lower(), ("",))[0] == "csv" for p in source.data_files.get(split, ())
    )


def row_converter(
    spec: TaskSpec, features: Mapping[str, Any], where: str, *, labelled: bool = True, delimited: bool = False
) -> Callable[[pa.Table, Sequence[int]], pa.Table]:
    """`convert(table, rows)`: one Arrow batch of a source (rows = their 0-based row numbers) as the task's columns
    (`task_features`), or a `ValueError` naming `where`, the first bad row and its field. Shared by `load_task` and
    the streamed tasks (`hf_async_mtl.streaming`), which convert each block as they read it: a bad row is an
    `InputError` (bad input, one line) also when training draws it."""
    for name in spec.text_fields:
        feature = features[name]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"{where}, column {name!r}: a text field must hold strings, got feature {feature}.")
    converter = LabelConverter(spec, features[spec.label_field], where) if labelled else None

    def convert(table: pa.Table, rows: Sequence[int]) -> pa.Table:
        rows = list(rows)
        for name in spec.text_fields:
            bad = first_true(pc.is_null(table[name]))
            if bad is not None:
                raise InputError(f"{where}, row {rows[bad]} (0-based), column {name!r}: missing text (null, or a row with too few fields).")
            # An empty (or blank) text is refused in every format: a text classifier has nothing to read in it, and
            # pandas fills the fields missing from a short CSV / TSV row with "" (keep_default_na=False), not null.
            bad = first_true(pc.equal(pc.utf8_trim_whitespace(table[name]), ""))
            if bad is not None:
                why = "an empty field, or a row with too few fields" if delimited else "drop or fill such rows first"
                raise InputError(f"{where}, row {rows[bad]} (0-based), column {name!r}: empty text ({why}).")
        if converter is not None:
            labels = converter(table[spec.label_field], rows)
        elif spec.label_field in table.column_names and not pa.types.is_null(table[spec.label_field].type):
            column = pc.fill_null(table[spec.label_field], -1)
            labels = pc.cast(column, pa.float32() if spec.is_regression else pa.int64(), safe=False)
        else:
            labels = pa.array(np.full(len(rows), -1, dtype=np.float32 if spec.is_regression else np.int64))
        columns = {name: pc.cast(table[name], pa.string()) for name in spec.text_fields}
        if delimited:  # a quoted line break reads the same whichever line endings the file was saved with
            columns = {name: pc.replace_substring(column, "\r\n", "\n") for name, column in columns.items()}
        return pa.table({**columns, "label": labels, "idx": pa.array(rows, type=pa.int64())})

    return convert


# ---- the task-source protocol -------------------------------------------------------------------------------


class TaskDataSource:
    """One task's data, split by split: `load(split)` gives the task's text fields, `label` and `idx`.

    Every kind of data implements it — a Hub data set or local files through `datasets` (`DatasetsSource`), the
    original GLUE TSVs (`glue_tasks.GlueTsvSource`), data derived from another task (`TextOfTask`: its text, for an
    MLM auxiliary task) — and `hf_async_mtl.data.build_task_datasets` turns a list of them into the tokenised
    train / selection / dev sets of a run. A split is loaded once per source (later calls return the same
    dataset), so a derived source reads its base's splits without reading them again.

    Attributes:
        cap_group: The task whose training-set cap and selection split this source shares (a derived source:
            the task it reads), or None for its own.
    """

    cap_group: str | None = None
    streaming = False  # a streamed training split (`hf_async_mtl.streaming.StreamingSource`)

    def load(self, split: str) -> datasets.Dataset:
        """One split (`train`, `validation`, ...), loaded once."""
        loaded = self.__dict__.setdefault("_loaded_splits", {})
        if split not in loaded:
            loaded[split] = self._load(split)
        return loaded[split]

    def _load(self, split: str) -> datasets.Dataset:
        raise NotImplementedError

    def describe(self, split: str) -> str:
        """The data in error messages."""
        return f"{type(self).__name__} split {split!r}"


class DatasetsSource(TaskDataSource):
    """A task's data through `datasets`: a Hub data set, a local repo-layout or `save_to_disk` directory, or files
    (`TaskSource`), read with the task's spec (`load_task`: columns checked, labels converted)."""

    def __init__(self, spec: TaskSpec, source: TaskSource, cache_dir: str | os.PathLike | None = None) -> None:
        self.spec, self.source, self.cache_dir = spec, source, cache_dir

    def _load(self, split: str) -> datasets.Dataset:
        return load_task(self.spec, self.source, split, cache_dir=self.cache_dir)

    def describe(self, split: str) -> str:
        return self.source.describe(split)


class TextOfTask(TaskDataSource):
    """Another task's text (its `text_fields` and `idx`), e.g. for a masked-LM auxiliary task on an end task's
    training text. It shares that task's cap and selection split (`cap_group`), so it never trains on text the
    task holds out."""

    def __init__(self, task: str, base: TaskDataSource, text_fields: Sequence[str]) -> None:
        self.cap_group, self.base, self.text_fields = task, base, tuple(text_fields)

    def _load(self, split: str) -> datasets.Dataset:
        return self.base.load(split).select_columns([*self.text_fields, "idx"])

    def describe(self, split: str) -> str:
        return f"the text of task {self.cap_group!r} ({self.base.describe(split)})"
