"""The command line shared by the benchmarks that run a declared matrix one run per result file.

`--list` prints the matrix in run order (with `done` where the file exists), `--run FIELDS...` runs one entry,
`--queue` runs every missing entry in order, `--summarize` regenerates the tables and plots.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any


def matrix_main(
    description: str,
    fields: Sequence[str],
    matrix: Callable[[], list[tuple]],
    run_path: Callable[..., str],
    write_run: Callable[..., str],
    summarize: Callable[[], str],
    parse: Callable[[list[str]], tuple],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` and do what it asks; `parse` turns the `--run` strings into a matrix entry (or raises ValueError)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", nargs=len(fields), metavar=tuple(fields))
    parser.add_argument("--queue", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.list:
        for entry in matrix():
            print(*entry, "done" if os.path.isfile(run_path(*entry)) else "")
    if args.run:
        try:
            entry: Any = parse(list(args.run))
        except ValueError as error:
            parser.error(str(error))
        print(write_run(*entry))
    if args.queue:
        for entry in matrix():
            if not os.path.isfile(run_path(*entry)):
                start = time.time()
                print(write_run(*entry), f"{time.time() - start:.0f} s", flush=True)
    if args.summarize:
        print(summarize())
    return 0
