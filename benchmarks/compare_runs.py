"""Two v2 per-run JSONs of one method and seed, side by side: where they part and by how much.

    python -m benchmarks.compare_runs A.json B.json [--out results/DIR/NAME]   # writes NAME.md and NAME.json

A like-for-like benchmark pairs runs by seed; runs made from different commits or package versions are only
paired that way if their trajectories agree. This reads both runs' training logs and evaluations in order and
reports, for each, the first logged step at which a value differs beyond float summation noise (timings excluded), then the dev score of every task
(×100) and GLUE-5 under each view of `summarize_v2` (final, selected, per-task selected, oracle) for A, B and
B − A. Identical runs show "identical" and zero differences; a difference that starts after an evaluation and
not before is a changed random stream, not a changed objective.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from benchmarks.summarize_v2 import TASKS, VIEWS, _glue, run_views

_TIMING = ("runtime", "per_second", "wall", "seconds")


def _values(log: dict) -> dict:
    return {k: v for k, v in log.items() if isinstance(v, (int, float)) and not any(t in k for t in _TIMING)}


def _differs(x, y) -> bool:
    """Values differ beyond float summation-order noise (relative 1e-9); a missing value differs."""
    if x is None or y is None:
        return x is not y
    return not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def first_differences(a: dict, b: dict) -> dict:
    """Per log (training logs, evaluations): the first logged step at which the runs differ and the keys that do,
    or None where every value agrees."""
    result = {}
    for kind in ("train_logs", "curves"):
        result[kind] = None
        xs, ys = a.get(kind) or [], b.get(kind) or []
        for index, (x, y) in enumerate(zip(xs, ys)):
            va, vb = _values(x), _values(y)
            keys = sorted(k for k in set(va) | set(vb) if _differs(va.get(k), vb.get(k)))
            if keys:
                result[kind] = {"step": x.get("step", index), "keys": keys}
                break
        if result[kind] is None and len(xs) != len(ys):
            result[kind] = {"step": None, "keys": [f"number of entries ({len(xs)} vs {len(ys)})"]}
    return result


def compare(a: dict, b: dict) -> dict:
    """Per view: A's and B's dev scores per task and GLUE-5 (×100), the differences B − A and each run's steps."""
    ra, rb = run_views(a), run_views(b)
    tasks = [t for t in TASKS if t in ra["tasks"] and t in rb["tasks"]]
    views = {}
    for view in VIEWS:
        xa, xb = ra["views"][view], rb["views"][view]
        row = {t: {"a": xa[t], "b": xb[t], "diff": xb[t] - xa[t]} for t in tasks}
        ga, gb = _glue(xa, TASKS), _glue(xb, TASKS)
        if ga is not None and gb is not None:
            row["glue5"] = {"a": ga, "b": gb, "diff": gb - ga}
        views[view] = {"scores": row, "steps_a": ra["steps"][view], "steps_b": rb["steps"][view]}

    def prov(run):
        return {
            "commit": (run.get("provenance") or {}).get("commit"),
            "packages": (run.get("provenance") or {}).get("packages"),
            "wall_seconds": run.get("wall_seconds"),
        }

    return {
        "method": [a.get("method"), b.get("method")],
        "seed": [a.get("seed"), b.get("seed")],
        "same_settings": a.get("settings") == b.get("settings"),
        "a": prov(a),
        "b": prov(b),
        "first_differences": first_differences(a, b),
        "views": views,
    }


def markdown(result: dict, name_a: str, name_b: str) -> str:
    pa, pb = result["a"], result["b"]
    pkg = lambda p: ", ".join(f"{k} {v}" for k, v in sorted((p["packages"] or {}).items()) if k in ("transformers", "accelerate", "torch"))  # noqa: E731
    lines = [
        f"# {name_a} vs {name_b}",
        "",
        f"- A: `{name_a}` — commit {str(pa['commit'])[:8]}, {pkg(pa)}",
        f"- B: `{name_b}` — commit {str(pb['commit'])[:8]}, {pkg(pb)}",
        f"- method {result['method'][0]} / {result['method'][1]}, seed {result['seed'][0]} / {result['seed'][1]}; "
        f"settings {'identical' if result['same_settings'] else 'DIFFER'}",
    ]
    for kind, label in (("train_logs", "training logs"), ("curves", "evaluations")):
        diff = result["first_differences"][kind]
        if diff is None:
            lines.append(f"- {label}: identical (every logged value, relative tolerance 1e-9)")
        else:
            keys = ", ".join(diff["keys"][:6]) + (f" (+{len(diff['keys']) - 6} more)" if len(diff["keys"]) > 6 else "")
            lines.append(f"- {label}: first difference at step {diff['step']}: {keys}")
    lines += ["", "Dev ×100, A / B / B − A:", "", "| view | " + " | ".join(TASKS) + " | GLUE-5 |", "|---|" + "---|" * (len(TASKS) + 1)]
    for view, block in result["views"].items():
        cells = []
        for key in (*TASKS, "glue5"):
            c = block["scores"].get(key)
            cells.append("–" if c is None else f"{c['a']:.2f} / {c['b']:.2f} / {c['diff']:+.2f}")
        lines.append(f"| {view} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--out", default=None, help="Write OUT.md and OUT.json (default: print the markdown).")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.a, args.b):
        try:
            with open(path) as handle:
                runs.append(json.load(handle))
        except (OSError, json.JSONDecodeError) as err:
            print(f"compare_runs: cannot read {path}: {err}", file=sys.stderr)
            return 2
    result = compare(*runs)
    text = markdown(result, os.path.relpath(args.a), os.path.relpath(args.b))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w") as handle:
            json.dump(result, handle, indent=1)
        with open(args.out + ".md", "w") as handle:
            handle.write(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
