"""Writing a run's JSON files so that a crash never leaves one half-written."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json_atomic(path: str, payload: Any, **dump_options: Any) -> None:
    """Write `payload` as JSON to `path` through a temporary file and a rename (`json.dump` options pass through)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, **dump_options)
    os.replace(tmp, path)
