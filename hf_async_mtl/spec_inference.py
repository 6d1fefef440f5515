"""A task's spec read from its data: `infer_task_spec` takes the label set (or a regression) from the training split,
refusing what it would otherwise infer wrongly (empty labels, numbers mixed with names, NaN among numbers, sparse
huge or negative integer ids)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .sources import TaskSource, load_source_split
from .tasks import NAMES_FROM_TEXT, TaskSpec

_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NOT_FINITE = r"(?i)^[+-]?(nan|inf|infinity)$"


def _text_labels(column: pa.ChunkedArray, where: str, label_field: str) -> tuple[pa.ChunkedArray, bool]:
    """A text label column as `(labels, written_as_floats)`: numbers cast to float64 when every value is one (names
    kept as trimmed text otherwise); an empty label, a NaN / infinity among numbers, or numbers mixed with names refused."""
    trimmed = pc.utf8_trim_whitespace(column)

    def first(mask: Any) -> int:
        return int(np.flatnonzero(np.asarray(pc.fill_null(mask, True).to_numpy(zero_copy_only=False)))[0])

    blank = pc.or_(pc.is_null(trimmed), pc.equal(pc.fill_null(trimmed, ""), ""))
    if pc.any(blank).as_py():
        raise ValueError(f"{where}, row {first(blank)} (0-based): {label_field!r} is empty; every training row needs a label.")
    numeric = pc.match_substring_regex(trimmed, _NUMBER)
    if not pc.all(numeric).as_py():
        if pc.any(numeric).as_py():
            names = pc.invert(numeric)
            row = first(names)
            if pc.match_substring_regex(pa.array([trimmed[row].as_py()]), _NOT_FINITE)[0].as_py():
                raise ValueError(f"{where}, row {row} (0-based): {label_field!r} {trimmed[row].as_py()!r} is not a finite number.")
            raise ValueError(
                f"{where}: {label_field!r} mixes numbers ({trimmed[first(numeric)].as_py()!r}) and names "
                f"({trimmed[row].as_py()!r}, row {row}, 0-based): use class names or ids, not both."
            )
        return trimmed, False
    return pc.cast(trimmed, pa.float64()), bool(pc.any(pc.match_substring_regex(trimmed, r"[.eE]")).as_py())


def infer_task_spec(
    name: str,
    source: TaskSource,
    text_fields: Sequence[str],
    *,
    label_field: str = "label",
    regression: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    **spec_fields: Any,
) -> TaskSpec:
    """A `TaskSpec` whose label set comes from the training split.

    A `ClassLabel` label column gives its names; a float column (or text holding non-integral numbers)
    makes a regression task; integer ids give names `"0"`..`"k-1"`; other text labels give their sorted
    distinct values. `regression=True/False` overrides the inference. Other `TaskSpec` fields pass
    through; `metrics` defaults by the kind inferred (`TaskSpec`'s default: accuracy, or Pearson / Spearman).
    """
    raw = load_source_split(source, "train", task=name, cache_dir=cache_dir)
    if label_field not in raw.column_names:
        raise ValueError(f"Task {name!r}: {source.describe('train')} has no column {label_field!r}; columns: {raw.column_names}.")
    feature = raw.features[label_field]
    label_names: tuple[str, ...] | None
    if isinstance(feature, datasets.ClassLabel):
        if regression:
            raise ValueError(f"Task {name!r}: regression was declared, but {label_field!r} is a ClassLabel {feature.names}.")
        label_names = tuple(feature.names)
    else:
        column = raw.data.column(label_field)
        float_text = False
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column, float_text = _text_labels(column, f"Task {name!r}: {source.describe('train')}", label_field)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if regression:
                raise ValueError(f"Task {name!r}: regression was declared, but {label_field!r} holds text labels.")
            label_names = tuple(sorted(v for v in pc.unique(column).to_pylist() if v is not None))
            # Ids in another split would follow this sorted order, not the file's: the loaders refuse them.
            spec_fields["extra"] = {**spec_fields.get("extra", {}), NAMES_FROM_TEXT: True}
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            values = values[np.isfinite(values)]
            integral = bool(values.size) and bool(np.all(values == np.round(values))) and values.min() >= 0
            integer_typed = not pa.types.is_floating(raw.data.column(label_field).type)
            if regression is None and integer_typed and values.size and values.min() < 0 and np.all(values == np.round(values)):
                raise ValueError(
                    f"Task {name!r}: {source.describe('train')}, column {label_field!r} holds negative integer labels "
                    f"({int(values.min())}; -1 marks unlabelled rows in GLUE test splits): class ids run 0..k-1 (map them so), or pass "
                    'regression=True (a tasks file: "label_names": null) if they are regression targets.'
                )
            float_typed = float_text or pa.types.is_floating(raw.data.column(label_field).type)
            if regression is None and integral and not float_typed and values.max() + 1 > max(1000, 2 * len(np.unique(values))):
                raise ValueError(
                    f"Task {name!r}: {source.describe('train')}, column {label_field!r}: label ids run to {int(values.max())} but "
                    f'only {len(np.unique(values))} distinct values occur: pass label_names (classes) or regression=True (targets; a tasks file: "label_names": null).'
                )
            if regression is None:  # text written as floats ("0.0", "2.5") is read as a float column is
                regression = not integral or float_typed
            if regression:
                label_names = None
            elif not integral:
                raise ValueError(f"Task {name!r}: classification was declared, but {label_field!r} holds non-integral numbers.")
            else:
                label_names = tuple(str(i) for i in range(int(values.max()) + 1))
        else:
            raise ValueError(f"Task {name!r}: cannot infer labels from column {label_field!r} of type {column.type}.")
    if label_names is not None and len(label_names) < 2:
        raise ValueError(
            f"Task {name!r}: the training labels hold one class only ({list(label_names)}); a classification task needs two or more."
        )
    return TaskSpec(name=name, text_fields=tuple(text_fields), label_names=label_names, label_field=label_field, **spec_fields)
