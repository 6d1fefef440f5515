"""Checkpoints are complete or refused: a save interrupted between two files is never resumed by mistake; a resume
compares every run-defining option; the summary's train_loss covers the whole of a resumed run."""

from __future__ import annotations

import os

import pytest

import hf_async_mtl.state as state_module
from hf_async_mtl.errors import InputError
from hf_async_mtl.state import COMPLETE_NAME
from tests.test_trainer import _losses_by_step, no_dropout_trainer

SAVING = {"max_steps": 6, "save_strategy": "steps", "save_steps": 2, "logging_steps": 1, "sampling_strategy": "round_robin"}


def _train_killed_while_saving_step_4(tmp_path, tokenizer, tiny_data, monkeypatch, options) -> None:
    """Train run "crashed" until its save at step 4 dies after the weighting state, before the rest and the marker."""
    real = state_module.save_sampler_state

    def crash_at_step_4(sampler, accumulation, directory):
        if directory.endswith("checkpoint-4"):
            raise RuntimeError("killed while saving")
        real(sampler, accumulation, directory)

    monkeypatch.setattr(state_module, "save_sampler_state", crash_at_step_4)
    crashed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", options)
    with pytest.raises(RuntimeError, match="killed while saving"):
        crashed.train()
    monkeypatch.setattr(state_module, "save_sampler_state", real)


def test_a_save_interrupted_between_two_files_is_skipped_and_refused_by_name(tmp_path, tokenizer, tiny_data, monkeypatch, caplog):
    full = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "full", SAVING)
    full.train()
    _train_killed_while_saving_step_4(tmp_path, tokenizer, tiny_data, monkeypatch, SAVING)
    out = tmp_path / "crashed" / "out"
    assert (out / "checkpoint-4" / "weighting_state.pt").is_file() and not (out / "checkpoint-4" / COMPLETE_NAME).exists()
    assert (out / "checkpoint-2" / COMPLETE_NAME).is_file()

    # Named explicitly: one line saying it was interrupted, pointing at the last complete checkpoint.
    explicit = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", SAVING)
    with pytest.raises(InputError, match=r"checkpoint-4: interrupted while saving .*resume from \S+checkpoint-2"):
        explicit.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert explicit.state.global_step == 0

    # "The last checkpoint": checkpoint-2, and the run continues exactly as the uninterrupted one.
    resumed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", SAVING)
    with caplog.at_level("WARNING", logger="hf_async_mtl.state"):
        resumed.train(resume_from_checkpoint=True)
    assert "skipping checkpoint-4, interrupted while saving" in caplog.text
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    assert resumed.state.global_step == 6 and sorted(resumed_losses) == [1, 2, 3, 4, 5, 6]
    for step in range(3, 7):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-5)
    assert (out / "checkpoint-6" / COMPLETE_NAME).is_file()


def test_train_loss_of_a_resumed_run_covers_every_step(tmp_path, tokenizer, tiny_data):
    full = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "full", SAVING)
    whole = full.train()
    resumed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "resumed", SAVING)
    output = resumed.train(resume_from_checkpoint=os.path.join(full.args.output_dir, "checkpoint-4"))
    assert output.training_loss == pytest.approx(whole.training_loss, rel=1e-5)
    assert output.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=1e-5)
    summary = [log for log in resumed.state.log_history if "train_loss" in log]
    assert summary[-1]["train_loss"] == pytest.approx(whole.training_loss, rel=1e-5)
    # Only the 2 steps after the resume: what the Trainer alone would have reported is far from the whole run's mean.
    last_two = sum(log["loss"] for log in resumed.state.log_history if "loss" in log and log["step"] > 4) / 6
    assert whole.training_loss != pytest.approx(last_two, rel=1e-3)


@pytest.mark.parametrize(
    "option, value",
    [("mtl_method", "uncertainty"), ("learning_rate", 1e-3), ("bf16", True), ("weight_decay", 0.1), ("async_kd", True)],
)
def test_resume_refuses_another_run_defining_option_before_loading_anything(tmp_path, tokenizer, tiny_data, option, value):
    first = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "first", SAVING)
    first.train()
    extra = {"eval_strategy": "steps", "eval_steps": 2} if option == "async_kd" else {}
    other = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "other", {**SAVING, **extra, option: value})
    with pytest.raises(InputError, match=rf"run_definition\.json, line \d+, field '{option}': the checkpoint was trained with {option}="):
        other.train(resume_from_checkpoint=os.path.join(first.args.output_dir, "checkpoint-2"))
    assert other.state.global_step == 0


def test_save_total_limit_deletes_older_checkpoints_only_once_the_new_one_is_complete(tmp_path, tokenizer, tiny_data, monkeypatch):
    """transformers rotates before the callbacks write their state and the marker: with save_total_limit 1 a kill in
    between left only the incomplete checkpoint, so nothing could be resumed."""
    limited = {**SAVING, "save_total_limit": 1}
    whole = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "whole", limited)
    whole.train()
    assert sorted(os.listdir(whole.args.output_dir)) == ["checkpoint-6"]  # rotation still happens
    _train_killed_while_saving_step_4(tmp_path, tokenizer, tiny_data, monkeypatch, limited)
    out = tmp_path / "crashed" / "out"
    assert (out / "checkpoint-2" / COMPLETE_NAME).is_file() and not (out / "checkpoint-4" / COMPLETE_NAME).exists()
    resumed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", limited)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6 and sorted(os.listdir(out)) == ["checkpoint-6"]


def test_a_save_into_an_existing_checkpoint_drops_its_marker_first(tmp_path, tokenizer, tiny_data, monkeypatch):
    """An earlier run's complete checkpoint-4, re-saved by a run killed mid-save: its old marker made the mix of new and
    old files pass as complete."""
    no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", SAVING).train()
    out = tmp_path / "crashed" / "out"
    assert (out / "checkpoint-4" / COMPLETE_NAME).is_file()
    _train_killed_while_saving_step_4(tmp_path, tokenizer, tiny_data, monkeypatch, SAVING)
    assert not (out / "checkpoint-4" / COMPLETE_NAME).exists()
    with pytest.raises(InputError, match=r"checkpoint-4: interrupted while saving .*resume from \S+checkpoint-2"):
        no_dropout_trainer(tmp_path, tokenizer, tiny_data, "crashed", SAVING).train(resume_from_checkpoint=str(out / "checkpoint-4"))


def test_a_resumed_run_keeps_early_stoppings_count(tmp_path, tokenizer, tiny_data):
    """Learning rate 0: no evaluation after the first improves. The count of evaluations without improvement was
    restarted at 0 on resume (transformers restores it only with restore_callback_states_from_checkpoint), so the
    resumed run would stop later than the run it continues."""
    from transformers import EarlyStoppingCallback

    options = {**SAVING, "learning_rate": 0.0, "eval_strategy": "steps", "eval_steps": 1, "early_stopping_patience": 100}
    options["metric_for_best_model"] = "glue_score"

    def count(trainer):
        return next(c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)).early_stopping_patience_counter

    full = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "full", options)
    full.train()
    resumed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "resumed", options)
    resumed.train(resume_from_checkpoint=os.path.join(full.args.output_dir, "checkpoint-4"))
    assert count(full) == 5 and count(resumed) == count(full)


def test_resume_compares_the_adapters_schedule_and_carve_not_only_their_presence(tmp_path):
    """LoRA of another alpha or other target modules (a non-strict load: new adapters, silently), another scheduler
    option, another carve of the selection split: each was resumed as if it were the same run."""
    import json
    from types import SimpleNamespace

    from hf_async_mtl.resume import _check_same_model
    from hf_async_mtl.state import RUN_DEFINING_OPTIONS

    lora = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}
    saved = {"pooling": "mean", "peft_config": lora, "selection_splits": {"cola": {"seed": 42, "selection_size": 10}}}
    text = json.dumps(saved, indent=1)
    same = SimpleNamespace(pooling="mean", peft_config=dict(lora), selection_splits={"cola": {"seed": 42, "selection_size": 10}})
    _check_same_model("config.json", text, saved, same)
    for change, message in (
        (
            {"peft_config": {**lora, "lora_alpha": 16}},
            r"field 'peft_config': cannot resume: the checkpoint's peft_config lora_alpha=8, .* 16",
        ),
        ({"peft_config": {**lora, "target_modules": ["query"]}}, r"peft_config target_modules=\['query', 'value'\]"),
        ({"selection_splits": {"cola": {"seed": 42, "selection_size": 11}}}, r"selection split of task 'cola' had selection_size=10"),
    ):
        with pytest.raises(InputError, match=message):
            _check_same_model("config.json", text, saved, SimpleNamespace(**{**vars(same), **change}))
    assert "lr_scheduler_kwargs" in RUN_DEFINING_OPTIONS


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_hub_strategies_that_upload_unfinished_checkpoints_are_refused(tmp_path, strategy):
    from hf_async_mtl import MultiTaskTrainingArguments

    with pytest.raises(ValueError, match=rf"hub_strategy '{strategy}' uploads each checkpoint before its multi-task state"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_model_id="me/x", hub_strategy=strategy)
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_model_id="me/x", hub_strategy="end").push_to_hub
