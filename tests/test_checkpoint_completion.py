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
