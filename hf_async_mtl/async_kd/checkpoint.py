"""The async-KD part of a checkpoint: what `AsyncConvergenceCallback` writes and how a resume is checked against it."""

from __future__ import annotations

import os
from typing import Any, cast

from ..errors import InputError, key_line, read_json_file
from ..resume import safetensors_shapes
from .options import ARGUMENT_PREFIX, AsyncKDOptions

STATE_NAME = "async_kd_state.json"
# Rule option -> the monitor state's key, for states written before the rule was stored whole.
_MONITOR_KEYS = {
    "patience": "patience",
    "min_delta": "min_delta",
    "min_steps": "min_steps",
    "require_improvement": "require_improvement",
    "smoothing": "smoothing",
    "full_window": "full_window",
    "require_decline": "require_decline",
    "margin_z": "decline_z",
}


def check_async_kd_checkpoint(directory: str, options: AsyncKDOptions) -> None:
    """Refuse to continue `directory` with async-KD unless it holds async-KD state written under the same rule.

    Every option of `AsyncKDOptions.rule()` must equal the checkpoint's (a run resumes only with the rule it was
    trained with: the report states one rule); the snapshot and soft-label files it lists must exist and be
    readable safetensors. Each problem is a one-line `InputError` naming the file and the option.
    """
    state_path = os.path.join(directory, STATE_NAME)
    if not os.path.isfile(state_path):
        raise InputError(f"{state_path} is missing: {directory} was not written by a run with async-KD.", "resume_from_checkpoint")
    state, text = read_json_file(state_path, "async-KD state")
    if not isinstance(state, dict):
        raise InputError(f"{state_path}, line 1: not an async-KD state (a JSON object expected).", "resume_from_checkpoint")
    monitor = cast(dict[str, Any], state.get("monitor")) if isinstance(state.get("monitor"), dict) else {}
    saved_rule = state.get("rule")
    if not isinstance(saved_rule, dict):
        # States written before the whole rule was stored: the monitor's own configuration (no decline
        # requirement recorded = the plateau rule).
        saved_rule = {name: monitor[key] for name, key in _MONITOR_KEYS.items() if key in monitor}
        saved_rule.setdefault("require_decline", False)
    # states written before kd_noise / kd_signal existed
    saved_rule = {**saved_rule, "noise": saved_rule.get("noise", "formula"), "signal": saved_rule.get("signal", "score")}
    for name, value in options.rule().items():
        if name in saved_rule and saved_rule[name] != value:
            option = ARGUMENT_PREFIX + name
            raise InputError(
                f"{state_path}, line {key_line(text, name) or 1}, field {name!r}: the checkpoint was trained with "
                f"{option}={saved_rule[name]!r}, this run has {option}={value!r}; resume with --{option} {_as_flag(saved_rule[name])}.",
                option,
            )
    for task, entries in (state.get("snapshots") or {}).items():
        for entry in entries:
            snapshot = os.path.join(directory, "kd_snapshots", str(entry.get("file")))
            if not os.path.isfile(snapshot):
                line = key_line(text, "snapshots") or 1
                raise InputError(f"{state_path}, line {line}, field 'snapshots': task {task!r}: snapshot file {snapshot} is missing.")
    records = state.get("records") or {}
    for task, task_state in (monitor.get("tasks") or {}).items():
        labels = os.path.join(directory, "soft_labels", f"{task}.safetensors")
        if isinstance(records.get(task), dict) and records[task].get("distilled") is False:
            # Converged where the saved run ended: no soft labels yet, its teacher's snapshots instead.
            if not (state.get("snapshots") or {}).get(task):
                raise InputError(
                    f"{state_path}, line {key_line(text, task) or 1}: task {task!r} converged where the saved run ended, "
                    "but the checkpoint keeps no snapshot of its teacher (field 'snapshots')."
                )
            continue
        if isinstance(task_state, dict) and task_state.get("converged") and not os.path.isfile(labels):
            raise InputError(
                f"{state_path}, line {key_line(text, task) or 1}: task {task!r} converged, but its soft-label file "
                f"{labels} is missing (interrupted while saving?)."
            )
    for folder in ("soft_labels", "kd_snapshots"):
        folder_path = os.path.join(directory, folder)
        for name in sorted(os.listdir(folder_path)) if os.path.isdir(folder_path) else ():
            if name.endswith(".safetensors"):
                safetensors_shapes(os.path.join(folder_path, name))


def _as_flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
