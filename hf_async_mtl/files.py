"""Writing a run's files so that a crash never leaves one half-written: JSON files and whole output directories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


def write_json_atomic(path: str, payload: Any, **dump_options: Any) -> None:
    """Write `payload` as JSON to `path` through a temporary file and a rename (`json.dump` options pass through)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, **dump_options)
    os.replace(tmp, path)


@contextlib.contextmanager
def directory_atomic(path: str) -> Iterator[str]:
    """Yield a temporary directory beside `path`; when the block succeeds it is renamed to `path`, else removed.

    `path` must not exist, or be an empty directory: then it stays (a symlink or a mount point keeps working), the
    temporary directory is made inside it (hidden) and its entries are moved up at the end, one rename each. Readers
    see nothing, or the complete directory, never a half-written file.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target) and os.listdir(target):
        raise FileExistsError(f"{target}: the directory is not empty.")
    existing = os.path.isdir(target)  # kept as it is (it may be a symlink or a mount point): staged inside, moved up
    if not existing:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(dir=target if existing else os.path.dirname(target), prefix=f".{os.path.basename(target)}.tmp-")
    try:
        yield staging
        if existing:
            for name in os.listdir(staging):
                os.rename(os.path.join(staging, name), os.path.join(target, name))
            os.rmdir(staging)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
