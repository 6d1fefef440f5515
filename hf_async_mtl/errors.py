"""The library's input errors: bad input or misuse found before any work, as one line naming the file, line and field.

`InputError` (a `ValueError`) is what the library's own checks raise (e.g. a resume checkpoint that does not
continue the run); `run_glue_mtl.py` prints its message as `error: <message>` and exits with status 2, Python
callers get the exception with the same message. The JSON helpers place a problem at its line.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from typing import Any


class InputError(ValueError):
    """Bad input or misuse, found before any work; the message is one line naming the file, line and field.

    `option` names the option (or JSON config field) at fault, when there is one.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(one_line(message))
        self.option = option


def one_line(text: Any) -> str:
    """`text` with every run of whitespace (line breaks included) as one space."""
    return " ".join(str(text).split())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest of `choices` (ties: 'x' or 'y'), a choice `word` extends, or `""`."""
    choices = sorted(set(choices))
    scored = sorted(((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in choices), key=lambda item: -item[0])
    close = [c for score, c in scored if score >= 0.6 and score >= scored[0][0] - 0.02][:3]
    head = word.split("_", 1)[0]
    if "_" in word and len(close) < 3:  # 'label_column' → also the 'label_...' fields
        close += [c for score, c in scored if c not in close and score >= 0.5 and c.split("_", 1)[0] == head][: 3 - len(close)]
    if not close:  # 'f1_macro' → 'f1'
        close = sorted((c for c in choices if word.startswith(c) and len(c) > 1), key=len, reverse=True)[:1]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def line_of(text: str, offset: int) -> int:
    """1-based line of character `offset` of `text`."""
    return text.count("\n", 0, offset) + 1


def key_line(text: str, key: str, start: int = 0, end: int | None = None) -> int | None:
    """1-based line of the first `"key":` of a JSON text between `start` and `end`, or None."""
    match = re.compile(r'"' + re.escape(key) + r'"\s*:').search(text, start, len(text) if end is None else end)
    return line_of(text, match.start()) if match else None


def read_json_file(path: str, what: str = "JSON file") -> tuple[Any, str]:
    """`(value, text)` of a UTF-8 JSON file; a missing file, bytes that are not UTF-8 or bad syntax are a `InputError`."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: {what} does not exist." if not os.path.isdir(path) else f"{path}: is a directory, not a {what}.")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(f"{path}, line {line}: byte 0x{raw[error.start]:02x} is not UTF-8 text; save the file as UTF-8.") from None
    if not text.strip():
        raise InputError(f"{path}, line 1: the {what} is empty.")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as error:
        raise InputError(f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}).") from None


def read_json_field(path: str, field: str, what: str) -> Any:
    """`field` of the JSON object in `path` (a file this package wrote); anything else is one `InputError` line."""
    value, _ = read_json_file(path, what)
    if not isinstance(value, dict) or field not in value:
        raise InputError(f"{path}: not a {what} (no {field!r} field).")
    return value[field]
