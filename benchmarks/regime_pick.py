"""The outcome of #42's declared regime search: the selection rule of `benchmarks/regime_search.md`, applied as written.

    python -m benchmarks.regime_pick [--cpu-log LOG ...]   # -> benchmarks/results/regime_search/outcome.{json,md}

For every candidate (`REGIME_ORDER`) with both seeds of equal weighting: its GLUE-5 **ceiling** (best − final of the
seed-mean dev curves, `benchmarks.ceiling`), the per-seed oracle gap, and its **soundness**:

- above trivial: every task's seed-mean final dev score above its trivial predictor's dev score (`glue5_minilm`'s
  references; RTE held to the better of its two constant predictors, 52.71, since a cap can change RTE's majority);
- no divergence: every logged training loss (total and per task) finite, and in each seed the last logged total
  training loss below the first.

Pick: the sound candidate with the largest ceiling; two within 0.05 of each other: the one with fewer steps. If no
sound candidate reaches 1.5, the outcome says so and the pick is the largest sound one, with that caveat. A candidate
without both seeds is reported as not run (the search's CPU budget, 15 CPU-hours, may end it).

CPU time is what the chain's bash `time` printed (user + sys) per run, parsed from the runner's logs (`--cpu-log`, kept
in `cpu_seconds.json` so the outcome regenerates without the logs); the two `regime_cap` runs, made before the
budget was counted in CPU time, count 2 × 13 min each (the declaration's amendment).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.ceiling import _load, regime_rows  # noqa: E402

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
OUT_DIR = os.path.join(RESULTS, "regime_search")
TARGET = 1.5  # GLUE-5 ceiling the search hopes for
TIE = 0.05
RTE_TRIVIAL = 52.71  # the better of RTE's two constant predictors on dev
BUDGET_CPU_SECONDS = 15 * 3600
# regime_cap seeds 0-1 ran before the budget was counted in CPU time: 2 cores x 13 min each (the amendment)
FIXED_CPU_SECONDS = {("regime_cap", 0): 2 * 13 * 60, ("regime_cap", 1): 2 * 13 * 60}
SEEDS = (0, 1)


def trivial_scores(results: str = RESULTS) -> dict[str, float]:
    with open(os.path.join(results, "glue5_minilm", "references.json"), encoding="utf-8") as handle:
        refs = json.load(handle)["trivial_predictor"]
    out = {t: float(refs[t]["score"]) for t in TASKS}
    out["rte"] = max(out["rte"], RTE_TRIVIAL)
    return out


def soundness(runs: list[dict[str, Any]], trivial: dict[str, float]) -> dict[str, Any]:
    """The two checks of the selection rule on one candidate's equal runs."""
    finals: dict[str, list[float]] = {t: [] for t in TASKS}
    diverged: list[str] = []
    for run in runs:
        curves = [c for c in run.get("curves") or [] if "eval_glue_score" in c]
        for task in TASKS:
            values = [c[f"eval_{task}_dev_score"] for c in curves if f"eval_{task}_dev_score" in c]
            if values:
                finals[task].append(100 * float(values[-1]))
        logs = run.get("train_logs") or []
        for log in logs:
            for key, value in log.items():
                if (key == "loss" or key.startswith("train_loss_")) and not math.isfinite(float(value)):
                    diverged.append(f"seed {run['seed']}: {key} = {value} at step {log.get('step')}")
        totals = [float(log["loss"]) for log in logs if "loss" in log]
        if len(totals) >= 2 and not totals[-1] < totals[0]:
            diverged.append(f"seed {run['seed']}: last training loss {totals[-1]:.4f} not below the first {totals[0]:.4f}")
    means = {t: (sum(v) / len(v) if v else None) for t, v in finals.items()}
    below = [t for t in TASKS if means[t] is None or not means[t] > trivial[t]]
    return {
        "final_dev_mean": means,
        "trivial": trivial,
        "below_trivial": below,
        "divergence": diverged,
        "sound": not below and not diverged,
    }


def parse_cpu_logs(paths: list[str]) -> dict[str, float]:
    """`profile/seed` -> user + sys seconds of the last completed run of that profile and seed in the logs."""
    out: dict[str, float] = {}
    current = None
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("==="):  # any job's header ends the run before it (a killed run has no time line)
                    start = re.match(r"=== run (\S+) equal seed (\d+) ", line)
                    current = f"{start.group(1)}/{start.group(2)}" if start else None
                    continue
                cpu = re.match(r"cpu: real [\d.]+ s, user ([\d.]+) s, sys ([\d.]+) s", line)
                if cpu and current:
                    out[current] = float(cpu.group(1)) + float(cpu.group(2))
                    current = None
    return out


def outcome(cpu_seconds: dict[str, float], results: str = RESULTS, order: tuple[str, ...] | None = None) -> dict[str, Any]:
    from benchmarks.glue5_quality import PROFILES, REGIME_ORDER

    trivial = trivial_scores(results)
    rows, spent = [], 0.0
    for name in order or REGIME_ORDER:
        runs = [r for r in _load(os.path.join(results, f"glue5_{name}")) if r.get("method") == "equal" and r.get("seed") in SEEDS]
        seeds = sorted(int(r["seed"]) for r in runs)
        cpu = {}
        for seed in seeds:
            value = FIXED_CPU_SECONDS.get((name, seed), cpu_seconds.get(f"{name}/{seed}"))
            cpu[str(seed)] = value
            spent += value or 0.0
        entry: dict[str, Any] = {
            "candidate": name,
            "steps": int(PROFILES[name]["max_steps"]),
            "seeds": seeds,
            "wall_seconds": {str(r["seed"]): r.get("wall_seconds") for r in runs},
            "cpu_seconds": cpu,
            "complete": seeds == list(SEEDS),
        }
        if runs:
            table = {method: (result, gap) for method, result, gap in regime_rows(runs, "eval_{task}_dev_score")}
            result, gap = table.get("equal", (None, None))
            if result:
                entry["ceiling"] = {"glue5": result.get("glue5"), "tasks": result.get("tasks")}
                entry["oracle_gap"] = (gap or {}).get("mean")
            entry["soundness"] = soundness(runs, trivial)
        rows.append(entry)
    eligible = [r for r in rows if r["complete"] and r.get("soundness", {}).get("sound") and (r.get("ceiling") or {}).get("glue5")]
    pick = None
    if eligible:
        top = max(r["ceiling"]["glue5"]["value"] for r in eligible)
        close = [r for r in eligible if r["ceiling"]["glue5"]["value"] >= top - TIE]
        pick = min(close, key=lambda r: (r["steps"], -r["ceiling"]["glue5"]["value"]))["candidate"]
    # the target is about any sound candidate (the tie rule may pick one just below it over a longer one just above)
    reaches = any(r["ceiling"]["glue5"]["value"] >= TARGET for r in eligible)
    from benchmarks.provenance import provenance

    return {
        "generated_by": "python -m benchmarks.regime_pick",
        "provenance": provenance(ROOT),
        "candidates": rows,
        "pick": pick,
        "reaches_target": reaches,
        "target": TARGET,
        "cpu_seconds_spent": spent,
        "budget_cpu_seconds": BUDGET_CPU_SECONDS,
        "finished": all(r["complete"] for r in rows),
    }


def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Regime search (#42 item 2): outcome",
        "",
        "Declared in [`benchmarks/regime_search.md`](../../regime_search.md); regenerate with `python -m benchmarks.regime_pick`."
        " Equal weighting, seeds 0–1 per candidate, bf16, dev ×100.",
        "",
        "| candidate | steps | seeds | GLUE-5 ceiling [bootstrap over seeds] | per-seed oracle gap | cola | sst2 | mrpc | stsb | rte |"
        " sound | why not | CPU min (user + sys) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in result["candidates"]:
        glue = (r.get("ceiling") or {}).get("glue5") or {}
        tasks = (r.get("ceiling") or {}).get("tasks") or {}
        interval = glue.get("interval")
        ceiling = "–" if not glue else f"{glue['value']:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
        sound = r.get("soundness") or {}
        why = "; ".join(
            ([f"below trivial: {', '.join(sound['below_trivial'])}"] if sound.get("below_trivial") else [])
            + list(sound.get("divergence") or [])
        )
        cpu = [v for v in r["cpu_seconds"].values() if v is not None]
        lines.append(
            f"| {r['candidate']} | {r['steps']} | {', '.join(map(str, r['seeds'])) or 'not run'} | {ceiling} | {_f(r.get('oracle_gap'))} | "
            + " | ".join(_f((tasks.get(t) or {}).get("value")) for t in TASKS)
            + f" | {'yes' if sound.get('sound') else ('no' if sound else '–')} | {why or '–'} | {_f(sum(cpu) / 60, 0) if cpu else '–'} |"
        )
    spent = result["cpu_seconds_spent"] / 3600
    lines += [
        "",
        f"CPU spent: {spent:.2f} of {result['budget_cpu_seconds'] / 3600:.0f} CPU-hours"
        + ("" if result["finished"] else " (search not finished: candidates without both seeds are not eligible yet)")
        + ".",
        "",
    ]
    if result["pick"]:
        pick = next(r for r in result["candidates"] if r["candidate"] == result["pick"])
        value = pick["ceiling"]["glue5"]["value"]
        lines.append(
            f"**Pick{'' if result['finished'] else ' so far'}: `{result['pick']}`**, GLUE-5 ceiling {value:.2f}"
            + (
                f" (a sound candidate reaches the {result['target']} the search hoped for"
                + ("" if value >= result["target"] else "; the pick is within 0.05 of it with fewer steps")
                + ")."
                if result["reaches_target"]
                else f": no sound candidate reaches {result['target']}; this is the largest found."
            )
        )
    else:
        lines.append("No eligible candidate yet.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-log", nargs="*", default=[], help="Runner/chain logs with the runs' `time` lines.")
    parser.add_argument("--out", default=OUT_DIR)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cpu_path = os.path.join(args.out, "cpu_seconds.json")
    cpu = json.load(open(cpu_path, encoding="utf-8")) if os.path.isfile(cpu_path) else {}
    cpu.update(parse_cpu_logs(args.cpu_log))
    result = outcome(cpu)  # before writing anything: its provenance reads the tree as it is
    with open(cpu_path, "w", encoding="utf-8") as handle:
        json.dump(dict(sorted(cpu.items())), handle, indent=1)
    with open(os.path.join(args.out, "outcome.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    text = markdown(result)
    with open(os.path.join(args.out, "outcome.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
