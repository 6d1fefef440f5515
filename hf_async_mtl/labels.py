"""A label column → a task's class ids or regression targets (`LabelConverter`): names, ids written as text or numbers,
`ClassLabel` features remapped by name; every problem one `InputError` naming the data, the 0-based row and the column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .tasks import NAMES_FROM_TEXT, TaskSpec


def _as_id(text: str) -> int:
    value = int(text)
    return value if -(2**62) < value < 2**62 else -1  # out of int64: no id, caught as out of range


def first_true(mask: pa.Array | np.ndarray) -> int | None:
    values = np.asarray(mask.to_numpy(zero_copy_only=False) if isinstance(mask, (pa.Array, pa.ChunkedArray)) else mask)
    hits = np.flatnonzero(values.astype(bool))
    return int(hits[0]) if hits.size else None


class LabelConverter:
    """Turns one batch's label column into the spec's ids / floats, or raises naming the first bad row."""

    def __init__(self, spec: TaskSpec, feature: Any, where: str) -> None:
        self.spec, self.where = spec, where
        # Read only for classification (a regression task has none): an empty tuple keeps one type.
        self.label_names: tuple[str, ...] = tuple(spec.label_names or ())
        self.kind = "classlabel" if isinstance(feature, datasets.ClassLabel) else "value"
        self.dtype = getattr(feature, "dtype", None)
        if type(feature).__name__ == "Json":
            raise ValueError(
                f"{where}, column {spec.label_field!r}: the labels mix types (e.g. text and numbers); write "
                "every label the same way (all label names, or all ids)."
            )
        if not isinstance(feature, (datasets.ClassLabel, datasets.Value)):
            raise ValueError(f"{where}, column {spec.label_field!r}: a label must be one value per row, got feature {feature}.")
        self.remap: np.ndarray | None = None
        if self.kind == "classlabel":
            if spec.is_regression:
                raise ValueError(
                    f"{where}, column {spec.label_field!r}: the data set's labels are classes {feature.names}, "
                    "but the task is a regression (label_names null)."
                )
            names = list(feature.names)
            if tuple(names) != tuple(self.label_names):
                unknown = [n for n in names if n not in self.label_names]
                if unknown:
                    raise ValueError(
                        f"{where}, column {spec.label_field!r}: the data set's class {unknown[0]!r} is not one of "
                        f"the task's label_names {list(self.label_names)} (data set classes: {names})."
                    )
                self.remap = np.array([self.label_names.index(n) for n in names], dtype=np.int64)

    def fail(self, row: int, problem: str) -> InputError:
        return InputError(f"{self.where}, row {row} (0-based), column {self.spec.label_field!r}: {problem}.")

    def __call__(self, column: pa.ChunkedArray | pa.Array, rows: Sequence[int]) -> pa.Array:
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        bad = first_true(pc.is_null(column))
        if bad is not None:
            raise self.fail(rows[bad], "missing label (null, or a row with too few fields)")
        if self.spec.is_regression:
            return self._regression(column, rows)
        return self._classes(column, rows)

    def _numbers(self, column: pa.Array, rows: Sequence[int]) -> np.ndarray:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                return pc.cast(pc.utf8_trim_whitespace(column), pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                for position, text in enumerate(column.to_pylist()):  # error path only: the first row arrow cannot read
                    try:
                        pc.cast(pa.array([text.strip()]), pa.float64())
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                        return self._not_a_number(rows[position], text)
                raise
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        raise self.fail(rows[0], f"labels of type {column.type} are not numbers or text")

    def _not_a_number(self, row: int, text: str) -> np.ndarray:
        if self.spec.is_regression:
            raise self.fail(row, f"regression target {text!r} is not a number")
        raise self.fail(row, f"label {text!r} is neither one of {list(self.label_names)} nor a label id 0..{self.spec.num_labels - 1}")

    def _regression(self, column: pa.Array, rows: Sequence[int]) -> pa.Array:
        values = self._numbers(column, rows)
        bad = first_true(~np.isfinite(values))
        if bad is not None:
            raise self.fail(rows[bad], f"regression target {column[bad].as_py()!r} is not a finite number")
        if self.spec.regression_range is not None:
            low, high = self.spec.regression_range
            bad = first_true((values < low) | (values > high))
            if bad is not None:
                raise self.fail(rows[bad], f"regression target {values[bad]:g} is outside [{low}, {high}]")
        return pa.array(values.astype(np.float32))

    def _classes(self, column: pa.Array, rows: Sequence[int]) -> pa.Array:
        names = list(self.label_names)
        if self.kind == "classlabel":
            ids = column.to_numpy(zero_copy_only=False).astype(np.int64)
            bad = first_true((ids < 0) | (ids >= (len(self.remap) if self.remap is not None else len(names))))
            if bad is not None:
                raise self.fail(rows[bad], f"class id {ids[bad]} is not a class of the data set (-1 = no label)")
            return pa.array(self.remap[ids] if self.remap is not None else ids)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            trimmed = pc.utf8_trim_whitespace(column)
            ids = pc.fill_null(pc.index_in(trimmed, value_set=pa.array(names)), -1).to_numpy(zero_copy_only=False).astype(np.int64)
            unnamed = ids < 0
            if unnamed.any():  # integer ids written as text ("0", "1")
                digits = pc.match_substring_regex(trimmed, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False)
                positions = np.flatnonzero(unnamed)
                bad = positions[~digits[positions]]
                if bad.size:
                    return self._not_a_number(rows[int(bad[0])], column[int(bad[0])].as_py())
                self._refuse_ids_of_inferred_names(rows[int(positions[0])], column[int(positions[0])].as_py())
                # int() reads "+1" and "007" as the id they are; a number too big for an id is refused by the range check.
                as_ids = np.array([_as_id(text) for text in pc.take(trimmed, pa.array(positions)).to_pylist()], dtype=np.int64)
                out = (as_ids < 0) | (as_ids >= len(names))
                if out.any():
                    first = int(positions[np.flatnonzero(out)[0]])
                    return self._not_a_number(rows[first], column[first].as_py())
                ids[positions] = as_ids
            return pa.array(ids)
        values = self._numbers(column, rows)
        bad = first_true((values < 0) | (values >= len(names)) | (values != np.round(values)))
        if bad is not None:
            raise self.fail(rows[bad], f"label {column[bad].as_py()!r} is not a label id 0..{len(names) - 1} (label_names {names})")
        if len(values):
            self._refuse_ids_of_inferred_names(rows[0], column[0].as_py())
        return pa.array(values.astype(np.int64))

    def _refuse_ids_of_inferred_names(self, row: int, label: Any) -> None:
        """Ids are positions in `label_names`; names inferred from text labels are in sorted order, which need not be
        what another file's ids meant (0 = "contradiction" or "entailment"?)."""
        if self.spec.extra.get(NAMES_FROM_TEXT):
            raise self.fail(
                row,
                f"label {label!r} is an id, but the label names {list(self.label_names)} were read from the training "
                "split's text labels (sorted), so which class an id means is unknown: write the class names, or "
                "declare label_names in the order the ids follow",
            )
