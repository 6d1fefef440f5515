"""The library's input errors: bad input or misuse found before any work, as one line naming the file, line and field.

`InputError` (a `ValueError`) is what the library's own checks raise (e.g. a resume checkpoint that does not
continue the run); `run_glue_mtl.py` prints its message as `error: <message>` and exits with status 2, Python
callers get the exception with the same message. The JSON helpers place a problem at its line.
"""

from __future__ import annotations

import json
import os
import re
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
