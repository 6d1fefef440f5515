"""The command line's usage errors: `UsageError` (an `InputError` naming the option at fault); spelling hints
(`did_you_mean`) and the JSON helpers come from `hf_async_mtl.errors`."""

from __future__ import annotations

from hf_async_mtl.errors import InputError, did_you_mean, key_line, line_of, one_line, read_json_file

__all__ = ["DEBUG_ENV", "UsageError", "did_you_mean", "key_line", "line_of", "one_line", "read_json_file"]

DEBUG_ENV = "HF_ASYNC_MTL_DEBUG"


class UsageError(InputError):
    """Bad input or misuse of the command line, found before any work (one line naming the option, file, line, field)."""
