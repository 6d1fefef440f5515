"""Plot the task weights a run logged (`train_weight_<task>` at each logging step), e.g. META-TARTAN's.

    python -m hf_async_mtl.weights_plot OUTPUT_DIR/trainer_state.json weights.png

Reads the `log_history` that `Trainer` writes into `trainer_state.json` (in the output directory and in each
checkpoint); one line per task, weight against optimizer step.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import read_json_field
from .file_command import run_file_command


def weight_series(log_history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Per task, (steps, weights) of the `train_weight_<task>` entries of a `log_history`."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("train_weight_") and "step" in entry:
                steps, values = series.setdefault(key[len("train_weight_") :], ([], []))
                steps.append(int(entry["step"]))
                values.append(float(value))
    return series


def plot_weights(state_path: str, png_path: str, title: str | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """Write the weight curves of `trainer_state.json` to `png_path`; returns the series. Errors name the file."""
    history = read_json_field(state_path, "log_history", "trainer_state.json")
    series = weight_series(history)
    if not series:
        raise ValueError(f"{state_path}: no train_weight_<task> entries in log_history (was logging_steps > 0?).")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for task, (steps, values) in series.items():
        ax.plot(steps, values, label=task)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("task weight")
    ax.set_title(title or "task weights over training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return series


def main(argv: Sequence[str] | None = None) -> int:
    def run(state: str, png: str) -> str:
        return f"{png}: weights of {', '.join(plot_weights(state, png))}"

    return run_file_command(argv, "usage: python -m hf_async_mtl.weights_plot TRAINER_STATE_JSON OUTPUT_PNG", run)


if __name__ == "__main__":
    sys.exit(main())
