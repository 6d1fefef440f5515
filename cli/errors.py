"""The command line's usage errors: `UsageError` (an `InputError` naming the option at fault) and spelling hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from hf_async_mtl.errors import InputError, key_line, line_of, one_line, read_json_file

__all__ = ["DEBUG_ENV", "UsageError", "did_you_mean", "key_line", "line_of", "one_line", "read_json_file"]

DEBUG_ENV = "HF_ASYNC_MTL_DEBUG"


class UsageError(InputError):
    """Bad input or misuse of the command line, found before any work (one line naming the option, file, line, field)."""


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
