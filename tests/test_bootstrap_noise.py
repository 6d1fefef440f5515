"""kd_noise='bootstrap': the selection split's noise measured by resampling its examples (hf_async_mtl.async_kd.bootstrap)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from glue_tasks import get_glue_task
from hf_async_mtl import MultiTaskTrainer
from hf_async_mtl.async_kd.bootstrap import BootstrapNoise, resample_indices
from hf_async_mtl.async_kd.checkpoint import check_async_kd_checkpoint
from hf_async_mtl.async_kd.monitor import noise_margin
from hf_async_mtl.async_kd.options import AsyncKDOptions
from hf_async_mtl.errors import InputError
from tests.conftest import TASKS, make_model
from tests.test_trainer import _losses_by_step, make_args

SST2 = get_glue_task("sst2")


def _logits(levels: list[float], n: int = 400, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Per evaluation, logits whose true class wins when d_i + level > 0 (d_i fixed per example): a lower level
    flips exactly the examples with d_i just above -level, the same ones at every evaluation."""
    rng = np.random.default_rng(seed)
    labels, d = rng.integers(0, 2, n), rng.standard_normal(n)
    out = []
    for level in levels:
        logits = np.zeros((n, 2))
        logits[np.arange(n), labels] = d + level
        out.append(logits)
    return out, labels


def test_the_paired_margin_sees_a_decline_the_formula_margin_hides():
    (first, second, third), labels = _logits([0.50, 0.52, 0.44])
    noise = BootstrapNoise({"sst2": SST2}, smoothing=1, z=2.0)
    values = []
    for step, logits in ((100, first), (200, second), (300, third)):
        values.append(noise.observe("sst2", step, logits, labels, labels))
        if step < 300:  # what the monitor would report as its best smoothed step after these updates
            noise.keep_best("sst2", step)
    drop = values[1] - values[2]
    assert drop > 0.02
    floor, margin = noise.margins("sst2", best_smoothed_step=200)
    assert margin is not None and margin < drop  # the same examples: the flips are the whole noise
    assert noise_margin(values[1], ("accuracy",), len(labels), 2.0) > drop  # two independent samples' noise: hidden
    trivial = noise.trivial["sst2"]
    assert trivial[0] == pytest.approx(max(np.mean(labels == 0), np.mean(labels == 1)))  # the majority class's accuracy
    assert trivial[0] < floor < values[1]
    # no best yet: a floor, no decline margin
    fresh = BootstrapNoise({"sst2": SST2}, smoothing=2, z=2.0)
    fresh.observe("sst2", 100, first, labels, labels)
    assert fresh.margins("sst2", best_smoothed_step=None)[1] is None


def test_resamples_are_fixed_by_task_and_size_and_the_state_round_trips():
    assert np.array_equal(resample_indices("sst2", 50), resample_indices("sst2", 50))
    assert not np.array_equal(resample_indices("sst2", 50), resample_indices("rte", 50))
    (first, second), labels = _logits([0.5, 0.4], n=60)
    noise = BootstrapNoise({"sst2": SST2}, smoothing=2, z=2.0, resamples=50)
    noise.observe("sst2", 10, first, labels, labels)
    noise.keep_best("sst2", 10)
    noise.observe("sst2", 20, second, labels, labels)
    restored = BootstrapNoise({"sst2": SST2}, smoothing=2, z=2.0, resamples=50)
    restored.load_state_dict(json.loads(json.dumps(noise.state_dict())))
    assert restored.margins("sst2", 10) == noise.margins("sst2", 10) and restored.last == noise.last
    with pytest.raises(ValueError, match="no kept window"):
        noise.margins("sst2", 20)  # the monitor's best must be a window this noise kept
    with pytest.raises(ValueError, match="labels changed"):
        noise.observe("sst2", 30, second, labels[::-1].copy(), labels)
    with pytest.raises(ValueError, match="not after"):
        noise.observe("sst2", 20, second, labels, labels)
    with pytest.raises(ValueError, match="predictions for"):
        noise.observe("sst2", 30, second[:10], labels, labels)
    with pytest.raises(ValueError, match="resamples"):
        BootstrapNoise({"sst2": SST2}, smoothing=2, z=2.0, resamples=400).load_state_dict(noise.state_dict())


def test_a_run_with_bootstrap_noise_records_it_and_resumes_exactly(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    common = dict(
        max_steps=10,
        mtl_method="async_kd",
        kd_noise="bootstrap",
        kd_smoothing=2,
        kd_trivial_gate=True,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=6,
        sampling_strategy="round_robin",
        logging_steps=1,
    )

    def build(out):
        return MultiTaskTrainer(
            model=make_model(tokenizer, seed=3),
            args=make_args(tmp_path / out, **common),
            task_specs=TASKS,
            train_dataset=dict(train),
            eval_dataset=dict(evaluation),
            processing_class=tokenizer,
        )

    full = build("full")
    full.train()
    report = json.load(open(os.path.join(full.args.output_dir, "convergence_report.json")))
    for task in ("sentiment", "similarity"):
        assert report[task]["noise"] == "bootstrap" and report[task]["floor"] is not None
        assert [step for step, _ in full.async_convergence.noise.recent[task]] == [8, 10]  # the smoothing window
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-6")
    state = json.load(open(os.path.join(checkpoint, "async_kd_state.json")))
    assert [step for step, _ in state["bootstrap"]["recent"]["sentiment"]] == [4, 6]
    assert os.path.getsize(os.path.join(checkpoint, "async_kd_state.json")) < 60_000  # resampled values kept compact
    resumed = build("resumed")
    resumed.train(resume_from_checkpoint=checkpoint)
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    for step in range(7, 11):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-4, abs=1e-6)
    resumed_report = json.load(open(os.path.join(resumed.args.output_dir, "convergence_report.json")))
    for task in ("sentiment", "similarity"):
        for field in ("floor", "margin", "decline_margin", "converged", "history"):
            assert resumed_report[task][field] == report[task][field], (task, field)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    # the checkpoint's rule holds its noise: a resume under the formula is refused, naming the option
    formula = dataclasses.replace(AsyncKDOptions.from_arguments(full.args), noise="formula")
    with pytest.raises(InputError, match="kd_noise"):
        check_async_kd_checkpoint(checkpoint, formula)
