"""The reader of the original GLUE TSV files (headerless CoLA, columns by position) and of their labels.

Used by `glue_tasks.loading`; every other task's data is read by `datasets` (`hf_async_mtl.sources`). It
stays because GLUE's files need what `datasets`' csv reader cannot promise: byte-exact fields, row counts
and error lines:

* **Blank lines are skipped everywhere**: before the header, between rows and at the end of the
  file. A line is blank when it is empty or holds only whitespace (and, being a single field, no
  delimiter). A line of delimiters only (`"\\t\\t\\t"`) is a row of empty fields, not a blank line.
  Rows are counted after skipping (a file's `idx` numbering ignores blank lines); error messages
  cite the 1-based physical line of the file.
* **No NA parsing**: every delimited field is the string in the file, so `"NA"`, `"null"` or
  `"nan"` in a text column stay text.
* **Encoding**: UTF-8. A UTF-8 byte-order mark (MRPC's header has one) is dropped, at the start of
  the file or of any line (files glued together). A UTF-16 / UTF-32 byte-order mark, or bytes that
  are not UTF-8, are an error naming the line and column (1-based, as an editor shows them).
* **Line endings**: `\n`, `\r\n` (Windows) and `\r` end a row alike; inside a quoted field a `\r\n`
  becomes `\n`, so a file reads the same whichever line endings it was saved with.
* Quoting: `quoting=True` is csv's `QUOTE_MINIMAL` in strict mode (a `"..."` field may hold
  delimiters, line breaks and `""` for a quote: user CSV files; a quote left open to the end of the
  file, or text after a closing quote, is an error naming the line the field starts on);
  `quoting=False` is `QUOTE_NONE`, where `"` is plain text (the GLUE TSVs hold bare quotes that csv's
  default quoting would take as field delimiters, merging rows).
* Every row must have as many fields as the header (or `num_columns` when there is no header): a
  stray delimiter would silently shift the columns.
* Columns are selected by header name or by 0-based index (negative counts from the end).

`LabelParser` turns a raw label into a class id (from a label name or, when allowed, an integer
id) or a float regression target. All errors are one line naming the file, the line (or JSON
record) and, for a field's value, the column or field.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hf_async_mtl.sources import WIDE_BOMS

if TYPE_CHECKING:
    from hf_async_mtl.tasks import TaskSpec

__all__ = ["LabelParser", "Table", "iter_delimited", "read_delimited"]

_ENCODING = "utf-8-sig"
_BOM = "\ufeff"
# Undecodable bytes, kept by the `surrogateescape` error handler as lone surrogates U+DC80..U+DCFF.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_CSV_ERRORS = (
    ("unexpected end of data", 'a quoted field that starts on this line is never closed (a stray " ?)'),
    ("expected after", 'text follows a closing quote; inside a quoted field write "" for a quote'),
)
_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space"}


def _prefix(context: str | None) -> str:
    return f"{context}: " if context else ""


def _delimiter_name(delimiter: str) -> str:
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


def _check_wide_bom(path: str, context: str | None) -> None:
    """Refuse a UTF-16 / UTF-32 file (a spreadsheet's "Unicode text" export) with a clear message."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    for bom, name in WIDE_BOMS:
        if start.startswith(bom):
            raise ValueError(f"{_prefix(context)}{path}, line 1: the file is {name} text (byte-order mark); save it as UTF-8.")


def _not_utf8(path: str, line: int, column: int, byte: int, context: str | None) -> ValueError:
    return ValueError(
        f"{_prefix(context)}{path}, line {line}, column {column}: byte 0x{byte:02x} is not UTF-8 text; save the file as UTF-8."
    )


def _utf8_lines(handle: Any, path: str, context: str | None) -> Iterator[str]:
    """The file's lines (physical, as csv reads them), BOMs dropped, undecodable bytes an error naming line and column."""
    for number, line in enumerate(handle, start=1):
        if line.startswith(_BOM):
            line = line[1:]
        bad = _UNDECODABLE.search(line)
        if bad is not None:
            raise _not_utf8(path, number, bad.start() + 1, ord(bad.group()) - 0xDC00, context)
        yield line


def _read_text(path: str, context: str | None) -> str:
    """A whole UTF-8 file as text (BOM dropped); bytes that are not UTF-8 are an error naming line and column."""
    _check_wide_bom(path, context)
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        return raw.decode(_ENCODING)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - raw.rfind(b"\n", 0, error.start)
        raise _not_utf8(path, line, column, raw[error.start], context) from None


def _csv_message(error: csv.Error) -> str:
    text = str(error)
    for fragment, message in _CSV_ERRORS:
        if fragment in text:
            return message
    return text


def _is_blank(row: list[str]) -> bool:
    """An empty line (csv yields `[]`) or one holding only whitespace and no delimiter."""
    return not row or (len(row) == 1 and not row[0].strip())


@dataclass
class Table:
    """Selected columns of a file, row-aligned, with where each row came from.

    Attributes:
        path: The file.
        columns: Output key → one value per row (strings for delimited files; JSON values as parsed).
        lines: Per row, the 1-based line it starts on (delimited files, JSON lines) or its 1-based
            record number (a JSON array); `unit` says which.
        fields: Output key → how error messages name its source (`"column 'label'"`, `"column index 3"`,
            `"field 'stars'"`).
        header: The header's column names, or `None` (no header, or a JSON file).
        unit: `"line"` or `"record"`.
        context: Prefix of error messages (e.g. `"Task 'reviews'"`), or `None`.
    """

    path: str
    columns: dict[str, list[Any]]
    lines: list[int]
    fields: dict[str, str]
    header: tuple[str, ...] | None = None
    unit: str = "line"
    context: str | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int, key: str | None = None) -> str:
        """`"[context: ]<path>, line 12[, column 'label']"` for row `row` (0-based) and output column `key`."""
        location = f"{_prefix(self.context)}{self.path}, {self.unit} {self.lines[row]}"
        return f"{location}, {self.fields[key]}" if key is not None else location

    def parse(self, key: str, parser: LabelParser) -> list[int | float]:
        """Parse every value of column `key` with `parser`; errors name the file, line and column."""
        return [parser(raw, self.where(row, key)) for row, raw in enumerate(self.columns[key])]


def iter_delimited(
    path: str | os.PathLike[str],
    *,
    delimiter: str = "\t",
    quoting: bool = False,
    has_header: bool = True,
    num_columns: int | None = None,
    context: str | None = None,
) -> Generator[tuple[int, list[str]], None, None]:
    """Yield `(line, fields)` for the header (when `has_header`) and each data row of a delimited file.

    `line` is the 1-based line the row starts on. Blank lines are skipped. The first item is the
    header when `has_header`; every later row must have its width (or `num_columns` without a
    header), otherwise a `ValueError` names the file and line. An empty file with a header raises
    too. See the module docstring for quoting and encoding.
    """
    path = os.fspath(path)
    if not has_header and num_columns is None:
        raise ValueError(f"{_prefix(context)}{path}: a file without a header needs num_columns.")
    expected = num_columns
    _check_wide_bom(path, context)
    with open(path, encoding=_ENCODING, errors="surrogateescape", newline="") as handle:
        reader = csv.reader(
            _utf8_lines(handle, path, context),
            delimiter=delimiter,
            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
            strict=quoting,
        )
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise ValueError(f"{_prefix(context)}{path}, line {start}: {_csv_message(error)}.") from None
            if _is_blank(row):
                continue
            if quoting:
                row = [field.replace("\r\n", "\n") if "\r" in field else field for field in row]
            if expected is None:
                expected = len(row)
                yield start, row
                continue
            if len(row) != expected:
                raise ValueError(
                    f"{_prefix(context)}{path}, line {start}: expected {expected} "
                    f"{_delimiter_name(delimiter)}-separated columns, found {len(row)}."
                )
            yield start, row
    if expected is None:
        raise ValueError(f"{_prefix(context)}{path}: the file is empty (expected a header line).")


def read_delimited(
    path: str | os.PathLike[str],
    columns: Mapping[str, int | str],
    *,
    delimiter: str = "\t",
    quoting: bool = False,
    has_header: bool = True,
    num_columns: int | None = None,
    context: str | None = None,
) -> Table:
    """Read the columns `columns` (output key → header name or 0-based index) of a delimited file.

    Only the selected columns are kept, so a wide file (MNLI) costs the memory of what is used.
    A name needs a header; an index may be negative (from the end). A name missing from the header
    or an index outside the row width raises a `ValueError` naming the file and the header.
    Blank lines are skipped (module docstring).
    """
    path = os.fspath(path)
    rows = iter_delimited(path, delimiter=delimiter, quoting=quoting, has_header=has_header, num_columns=num_columns, context=context)
    header: tuple[str, ...] | None = None
    header_line = 0
    values: dict[str, list[str]] = {key: [] for key in columns}
    lines: list[int] = []
    try:
        if has_header:
            header_line, header_fields = next(rows)
            header = tuple(header_fields)
            repeated = sorted({name for name in columns.values() if isinstance(name, str) and header.count(name) > 1})
            if repeated:
                raise ValueError(
                    f"{_prefix(context)}{path}, line {header_line}: column {repeated[0]!r} appears "
                    f"{header.count(repeated[0])} times in the header; give every column its own name."
                )
        width = len(header) if header is not None else int(num_columns)  # type: ignore[arg-type]
        positions, fields = _resolve_columns(path, columns, header, header_line, width, context)
        for line, row in rows:
            lines.append(line)
            for key, position in positions.items():
                values[key].append(row[position])
    finally:
        rows.close()
    return Table(path=path, columns=values, lines=lines, fields=fields, header=header, context=context)


def _resolve_columns(
    path: str,
    columns: Mapping[str, int | str],
    header: tuple[str, ...] | None,
    header_line: int,
    width: int,
    context: str | None,
) -> tuple[dict[str, int], dict[str, str]]:
    """Output key → (0-based position, name for messages); one error lists every unresolved column."""
    where = f"{_prefix(context)}{path}" + (f", line {header_line}" if header is not None else "")
    positions: dict[str, int] = {}
    fields: dict[str, str] = {}
    missing: list[str] = []
    for key, column in columns.items():
        if isinstance(column, str):
            if header is None:
                raise ValueError(f"{where}: column {column!r} is named, but the file has no header.")
            if column not in header:
                missing.append(column)
                continue
            if header.count(column) > 1:
                raise ValueError(f"{where}: column {column!r} appears {header.count(column)} times in the header.")
            positions[key] = header.index(column)
        else:
            if not -width <= column < width:
                found = f"header has {width} column(s)" if header is not None else f"rows have {width} column(s)"
                raise ValueError(f"{where}: {found}, so column index {column} (for {key!r}) does not exist.")
            positions[key] = column % width
        position = positions[key]
        fields[key] = f"column {header[position]!r}" if header is not None else f"column index {position}"
    if missing:
        raise ValueError(f"{where}: no column {missing}; the header has {list(header or ())}.")
    return positions, fields


@dataclass(frozen=True)
class LabelParser:
    """Turns one raw label into a class id or a float target.

    Args:
        label_ids: Label spelling → class id (ids `0..n-1`) for a classification task; `None` for
            regression, where the label is a float target.
        accept_ids: Classification: also accept an integer id `0..n-1` (an `int`, or a string of
            one) when the raw value is not a label spelling. The GLUE files spell labels exactly,
            so their parser leaves this off.
        value_range: Regression: inclusive `(low, high)` bounds the target must lie in, if any.

    Calling the parser with `(raw, where)` returns the id or the float, or raises a one-line
    `ValueError` starting with `where` (`Table.where` gives file, line and column). Regression
    targets must be finite numbers (`bool` is not a number); a number given as text is parsed.
    """

    label_ids: Mapping[str, int] | None = field(default=None, hash=False)
    accept_ids: bool = True
    value_range: tuple[float, float] | None = None
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.label_ids is not None:
            object.__setattr__(self, "label_ids", MappingProxyType(dict(self.label_ids)))
            ids = sorted(self.label_ids.values())
            if ids != list(range(len(ids))):
                raise ValueError(f"label_ids must map one spelling to each id 0..n-1, got {dict(self.label_ids)}.")
            names = tuple(sorted(self.label_ids, key=self.label_ids.__getitem__))
        else:
            names = ()
        object.__setattr__(self, "_names", names)

    @classmethod
    def for_task(cls, spec: TaskSpec, *, label_ids: Mapping[str, int] | None = None, accept_ids: bool = True) -> LabelParser:
        """The parser of `spec`: its label names (or `label_ids`, a file format's own spellings), its range."""
        if spec.is_regression:
            return cls(label_ids=None, value_range=spec.regression_range)
        if label_ids is None:
            label_ids = {name: i for i, name in enumerate(spec.label_names or ())}
        return cls(label_ids=label_ids, accept_ids=accept_ids)

    @property
    def is_regression(self) -> bool:
        """True when labels are float targets."""
        return self.label_ids is None

    def __call__(self, raw: Any, where: str) -> int | float:
        if self.label_ids is None:
            return self._target(raw, where)
        if isinstance(raw, str) and raw in self.label_ids:
            return self.label_ids[raw]
        if self.accept_ids:
            label_id = _as_int(raw)
            if label_id is not None and 0 <= label_id < len(self._names):
                return label_id
            raise ValueError(f"{where}: label {raw!r} is neither one of {list(self._names)} nor a label id 0..{len(self._names) - 1}.")
        raise ValueError(f"{where}: label {raw!r} is not one of {list(self._names)}.")

    def _target(self, raw: Any, where: str) -> float:
        value = None
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            try:
                value = float(raw)
            except ValueError:
                value = None
        if value is None:
            raise ValueError(f"{where}: regression target {raw!r} is not a number.")
        if not math.isfinite(value):
            raise ValueError(f"{where}: regression target {raw!r} is not a finite number.")
        if self.value_range is not None:
            low, high = self.value_range
            if not low <= value <= high:
                raise ValueError(f"{where}: regression target {value} is outside [{low}, {high}].")
        return value


def _as_int(raw: Any) -> int | None:
    """`raw` as an integer id: an int (not bool), an integral float, or a string of an integer."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    return None
