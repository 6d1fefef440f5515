"""Multi-task, then per-task fine-tuning (`finetune_each_task`, `--finetune_after_mtl_steps`)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_async_mtl import MultiTaskModel
from hf_async_mtl.finetune import finetune_each_task
from tests.conftest import TASKS
from tests.test_trainer import no_dropout_trainer


def _reversed_labels(dataset):
    """The same rows with labels reversed (classes swapped, scores mirrored): any choice made on them picks differently."""
    if dataset.features["labels"].dtype.startswith("float"):
        return dataset.map(lambda row: {"labels": 5.0 - row["labels"]})
    return dataset.map(lambda row: {"labels": 1 - row["labels"]})


def test_each_task_is_finetuned_alone_selected_on_its_selection_split_and_exported(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    trainer = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "mtl", {"max_steps": 4})
    trainer.train()
    model = trainer.model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Dev sets that disagree with the selection split: selecting on them would choose another step.
    dev = {name: {"validation": _reversed_labels(d)} for name, d in evaluation.items()}
    table = finetune_each_task(
        model,
        TASKS,
        train,
        evaluation,
        dev,
        trainer.args,
        tokenizer,
        max_steps=6,
        eval_steps=2,
        patience=1,
        output_dir=str(tmp_path / "ft"),
    )
    assert set(table) == {"sentiment", "similarity"}
    for spec in TASKS:
        task, row = spec.name, table[spec.name]
        assert row["before"] is not None and row["after"] is not None
        assert row["best_selection_step"] in (2, 4, 6) and row["steps_trained"] <= 6
        # The selected step is the best one on the selection split, read from the fine-tuning's own evaluations.
        # Kept: the export and the evaluation history; not the checkpoints (model + optimizer state each).
        assert sorted(p.name for p in (tmp_path / "ft" / task).iterdir()) == ["export", "trainer_state.json"]
        history = json.loads((tmp_path / "ft" / task / "trainer_state.json").read_text())["log_history"]
        key = f"eval_{task}_{spec.main_metric}"
        evaluations = [(log["step"], log[key]) for log in history if key in log]
        assert evaluations and row["best_selection_step"] == max(evaluations, key=lambda e: e[1])[0]
        # `after` is the dev score (reversed labels), not the selection split's.
        after_model = MultiTaskModel.from_pretrained(str(tmp_path / "ft" / task / "export"))
        assert row["after"] == pytest.approx(_dev_score(after_model, spec, dev[task]["validation"], trainer), abs=1e-5)
        # Mean pooling (the tiny model's) exports with its own modeling code: trust_remote_code.
        exported = AutoModelForSequenceClassification.from_pretrained(row["export"], trust_remote_code=True)
        assert exported.config.num_labels == (1 if task == "similarity" else 2)
    # The multi-task model itself is untouched (each task trains a copy).
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.detach(), frozen[name])
    assert os.path.isdir(tmp_path / "ft" / "sentiment" / "export")


def test_a_rerun_replaces_its_own_export_whole(tmp_path, tokenizer):
    """finetune writes <task>/export again on a rerun into the same output directory (the command line allows it)."""
    from hf_async_mtl.finetune import _replace_export
    from tests.conftest import make_model

    target = tmp_path / "sentiment" / "export"
    _replace_export(make_model(tokenizer, seed=0), "sentiment", str(target), tokenizer)
    first = (target / "model.safetensors").read_bytes()
    (tmp_path / "sentiment" / "export.new").mkdir()  # left by a run killed between the two steps
    _replace_export(make_model(tokenizer, seed=1), "sentiment", str(target), tokenizer)
    assert (target / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in (tmp_path / "sentiment").iterdir()) == ["export"]


def _dev_score(model, spec, dataset, trainer):
    """The task's score of `model` on `dataset`, computed here from its logits."""
    import numpy as np

    from hf_async_mtl import compute_task_metrics

    model.eval()
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "task_ids") if c in dataset.column_names]
    rows = [trainer.data_collator([{k: dataset[i][k] for k in columns}]) for i in range(len(dataset))]
    with torch.no_grad():  # the export has the task's head only: address it by name, not by the multi-task id
        logits = torch.cat([model(**{k: v for k, v in row.items() if k != "task_ids"}, task_name=spec.name).logits for row in rows])
    return float(compute_task_metrics(spec, logits.numpy(), np.asarray(dataset["labels"]))["score"])


def test_cli_finetune_after_mtl_writes_the_before_after_table(tmp_path, tiny_checkpoint):
    import run_glue_mtl
    from tests.test_cli import base_args, write_glue

    glue = write_glue(tmp_path / "glue")
    out = tmp_path / "out"
    results = run_glue_mtl.main(base_args(glue, tiny_checkpoint, out) + ["--finetune_after_mtl_steps", "2", "--finetune_eval_steps", "1"])
    table = results["finetune_after_mtl"]
    assert set(table) == {"cola", "rte"}
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["finetune_after_mtl"]["rte"]["after"] == table["rte"]["after"]
    assert (out / "finetuned" / "rte" / "export" / "config.json").is_file()


def test_finetune_arguments_select_on_main_metric_and_warm_up_on_their_own_budget(tmp_path):
    """A lower-is-better main metric selects the lowest checkpoint; warm-up is the fine-tuning's, not the run's."""
    from hf_async_mtl import MultiTaskTrainingArguments, TaskSpec
    from hf_async_mtl.finetune import _task_args

    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), warmup_steps=500, max_steps=1000, report_to="none", use_cpu=True)
    spec = TaskSpec("price", ("text",), metrics=("pearson",), evaluate_metrics=("mse",), main_metric="mse", greater_is_better=False)
    task_args = _task_args(args, str(tmp_path / "ft"), "price", 200, 20, None, spec)
    assert (task_args.metric_for_best_model, task_args.greater_is_better) == ("eval_price_mse", False)
    assert task_args.warmup_steps == 20 and task_args.max_steps == 200
    assert _task_args(args, str(tmp_path / "ft"), "price", 200, 20, None, spec, warmup_steps=0).warmup_steps == 0
