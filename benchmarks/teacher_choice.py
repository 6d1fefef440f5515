"""Which snapshot should a converged task's teacher be? Replayed on the stored curves (score signal).

The library's teacher is the parameters at the task's best *raw* selection value before convergence
(`ConvergenceMonitor.best_step`). A review asked whether the raw best inside the best *smoothed* window (the series
the convergence rule reads) would be safer against an isolated spike. This replays both on every stored run set
with dev curves (v2 and the #42 regime runs, true-label runs only), under the library's two rule shapes (plateau =
`async_kd_fw`'s; decl = the library's default), counting only convergences before the run's last evaluation, and compares the
dev score at each teacher with the task's final dev score (x100; what distillation from a frozen teacher could keep).
The dev curves judge a library design choice here; no benchmark run selects anything from this.

    python -m benchmarks.teacher_choice     # -> benchmarks/results/teacher_choice/teacher_choice.{md,json}
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import signal_replay as sr  # noqa: E402
from benchmarks.convergence_replay import replay_curve  # noqa: E402

OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "teacher_choice")
SMOOTHING = 2  # the library's kd_smoothing, full windows


def window_teacher(points: list[tuple[int, float]]) -> int:
    """The step of the raw best inside the best full smoothing window (first best window; first best point in it)."""
    windows = [(sum(v for _, v in points[i - SMOOTHING + 1 : i + 1]) / SMOOTHING, i) for i in range(SMOOTHING - 1, len(points))]
    best = max(windows, key=lambda w: (w[0], -w[1]))[1]
    inside = points[best - SMOOTHING + 1 : best + 1]
    return max(inside, key=lambda p: (p[1], -p[0]))[0]


def compare(glue_dir: str) -> list[dict[str, Any]]:
    rows = []
    for key, _, path, profile in sr.RUN_SETS:
        if key in ("v1", "anchor_3000") or not os.path.exists(path):
            continue
        records, _ = sr.load_records(key, path, profile)
        refs = sr.references(profile, glue_dir)
        for rec in records:
            if not rec.get("dev") or not rec.get("score"):
                continue
            dev = dict(rec["dev"])
            for shape in sr.SHAPES:
                options = sr.signal_options("score", shape, refs[rec["task"]], None)
                assert options is not None
                result = replay_curve(rec["score"], patience=rec["patience"], min_steps=rec["min_steps"], **options)
                if not result["converged"] or result["converged_step"] >= result["last_step"]:
                    continue
                seen = [(s, v) for s, v in rec["score"] if s <= result["converged_step"]]
                raw, window = result["teacher_step"], window_teacher(seen)
                final = rec["dev"][-1][1]
                rows.append(
                    {
                        "run_set": key,
                        "rule": shape,
                        "method": rec["method"],
                        "seed": rec["seed"],
                        "task": rec["task"],
                        "converged_step": result["converged_step"],
                        "raw_teacher_step": raw,
                        "window_teacher_step": window,
                        "raw_minus_final": 100 * (dev[raw] - final),
                        "window_minus_final": 100 * (dev[window] - final),
                    }
                )
    return rows


def markdown(rows: list[dict[str, Any]], origin: dict[str, Any]) -> str:
    lines = [
        "# Teacher choice: raw best vs raw best inside the best smoothed window (replay)",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"Regenerate: `python -m benchmarks.teacher_choice`. Commit `{origin.get('commit')}`"
        + (" (uncommitted changes)" if origin.get("dirty") else "")
        + ".",
        "",
        "| run set | rule | convergences before the end | teachers differ | dev at teacher − final, raw best | window best | where they differ: raw | window |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups = sorted({(r["run_set"], r["rule"]) for r in rows})
    for run_set, rule in groups:
        group = [r for r in rows if (r["run_set"], r["rule"]) == (run_set, rule)]
        differ = [r for r in group if r["raw_teacher_step"] != r["window_teacher_step"]]
        mean = lambda rs, k: f"{statistics.mean(r[k] for r in rs):+.2f}" if rs else "–"  # noqa: E731
        lines.append(
            f"| {run_set} | {rule} | {len(group)} | {len(differ)} | {mean(group, 'raw_minus_final')} | "
            f"{mean(group, 'window_minus_final')} | {mean(differ, 'raw_minus_final')} | {mean(differ, 'window_minus_final')} |"
        )
    differ = [r for r in rows if r["raw_teacher_step"] != r["window_teacher_step"]]
    if differ:
        better = sum(r["window_minus_final"] > r["raw_minus_final"] for r in differ)
        lines += [
            "",
            f"All run sets: the teachers differ in {len(differ)} of {len(rows)} convergences; where they do, the window's "
            f"teacher is better on dev in {better} and worse in {len(differ) - better}; mean dev at teacher − final "
            f"{statistics.mean(r['raw_minus_final'] for r in differ):+.2f} (raw best) vs "
            f"{statistics.mean(r['window_minus_final'] for r in differ):+.2f} (window).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks.provenance import provenance

    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    rows = compare(glue_dir)
    origin = provenance(ROOT)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "teacher_choice.json"), "w", encoding="utf-8") as handle:
        json.dump({"provenance": origin, "rows": rows}, handle, indent=1)
    with open(os.path.join(OUT_DIR, "teacher_choice.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(rows, origin))
    print(markdown(rows, origin))


if __name__ == "__main__":
    main()
