"""The small `python -m hf_async_mtl.<module> INPUT OUTPUT` commands (calibration, diagnostics and weight plots): usage,
`--help`, and bad input as one `error:` line with exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from .errors import InputError


def run_file_command(argv: Sequence[str] | None, usage: str, run: Callable[[str, str], str | None]) -> int:
    """Run `run(input_path, output_path)` on the command line's two arguments; a message it returns is printed.

    Returns the exit status: 0 (also for `-h` / `--help`, which prints `usage`), 2 for a wrong argument count or
    bad input (`InputError`, `OSError`, `ValueError` from `run`: one line naming the file)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(args) != 2:
        print(usage, file=sys.stderr)
        return 2
    try:
        message = run(args[0], args[1])
    except (InputError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if message:
        print(message)
    return 0
