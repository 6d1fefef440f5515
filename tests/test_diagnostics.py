"""Gradient-conflict diagnostics and calibration (expected calibration error)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from hf_async_mtl.calibration import expected_calibration_error
from hf_async_mtl.diagnostics import FILE_NAME, conflict_summary
from tests.test_trainer import no_dropout_trainer


def test_conflict_summary_on_a_hand_made_gradient_matrix():
    grads = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 3.0]])
    summary = conflict_summary(grads, ["a", "b", "c"])
    assert summary["cosine"] == [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert summary["conflict_fraction"] == pytest.approx(1 / 3)
    assert summary["grad_norm"] == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert summary["grad_norm_ratio"]["c"] == pytest.approx(1.5)


def test_expected_calibration_error_by_hand():
    # Confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right), 10 bins:
    # bin 9: |0.5 - 0.9| * 2/4, bin 6: |1.0 - 0.6| * 2/4 -> ECE 0.4.
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert expected_calibration_error(np.log(p), np.array([0, 1, 1, 1]), num_bins=10) == pytest.approx(0.4)
    # Always right with confidence 1: perfectly calibrated.
    assert expected_calibration_error(np.array([[50.0, 0.0], [0.0, 50.0]]), np.array([0, 1])) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error(np.zeros(3), np.zeros(3))


def test_reliability_bins_and_pooling_by_hand():
    from hf_async_mtl.calibration import ece_from_bins, pool_bins, reliability_bins

    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    bins = reliability_bins(np.log(p), np.array([0, 1, 1, 1]), num_bins=10)
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins[9]["accuracy"] == pytest.approx(0.5) and bins[9]["confidence"] == pytest.approx(0.9)
    assert bins[0]["accuracy"] is None and (bins[6]["lower"], bins[6]["upper"]) == (0.6, 0.7)
    # Pooled with a run whose 4 examples at 0.9 are all right: bin 9 holds 6, accuracy 5/6.
    other = reliability_bins(np.log(np.array([[0.9, 0.1]] * 4)), np.zeros(4), num_bins=10)
    pooled = pool_bins([bins, other])
    assert pooled[9]["count"] == 6 and pooled[9]["accuracy"] == pytest.approx(5 / 6)
    assert ece_from_bins(pooled) == pytest.approx(6 / 8 * abs(5 / 6 - 0.9) + 2 / 8 * 0.4)
    with pytest.raises(ValueError, match="edges"):
        pool_bins([bins, reliability_bins(np.log(p), np.array([0, 1, 1, 1]), num_bins=5)])
    with pytest.raises(ValueError, match="labels"):
        reliability_bins(np.log(p), np.zeros(3), num_bins=10)


def test_diagnostics_are_logged_saved_and_leave_training_unchanged(tmp_path, tokenizer, tiny_data):
    common = {"max_steps": 4, "logging_steps": 1, "save_strategy": "no"}
    plain = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "plain", common)
    plain.train()
    watched = no_dropout_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        "watched",
        {**common, "diagnostics_steps": 2, "calibration_bins": 10, "eval_strategy": "steps", "eval_steps": 4},
    )
    watched.train()
    losses = lambda t: [log["loss"] for log in t.state.log_history if "loss" in log]  # noqa: E731
    assert losses(watched) == losses(plain)  # random state restored, .grad untouched
    for a, b in zip(plain.model.parameters(), watched.model.parameters()):
        assert torch.equal(a, b)
    saved = json.loads((tmp_path / "watched" / "out" / FILE_NAME).read_text())
    assert [r["step"] for r in saved["records"]] == [2, 4]
    record = saved["records"][0]
    assert record["tasks"] == ["sentiment", "similarity"]
    cosine = np.array(record["cosine"])
    assert np.allclose(cosine, cosine.T) and np.allclose(np.diag(cosine), 1.0, atol=1e-5)
    logged = [log for log in watched.state.log_history if "diag_conflict_fraction" in log]
    assert len(logged) == 2 and "diag_cos_sentiment__similarity" in logged[0] and "diag_grad_norm_similarity" in logged[0]
    from hf_async_mtl.diagnostics import plot_conflicts

    plot_conflicts(str(tmp_path / "watched" / "out" / FILE_NAME), str(tmp_path / "conflicts.png"))
    assert (tmp_path / "conflicts.png").stat().st_size > 1000
    evaluated = [log for log in watched.state.log_history if "eval_sentiment_accuracy" in log]
    assert 0.0 <= evaluated[-1]["eval_sentiment_ece"] <= 1.0 and "eval_similarity_ece" not in evaluated[-1]
    # Every evaluation's bins are kept for reliability diagrams; their ECE is the logged one.
    from hf_async_mtl.calibration import ece_from_bins
    from hf_async_mtl.calibration import main as calibration_main

    watched.evaluate(metric_key_prefix="dev")
    watched.evaluate(eval_dataset=tiny_data[1])  # same step, same prefix: told apart by which sets were evaluated
    kept = json.loads((tmp_path / "watched" / "out" / "calibration.json").read_text())["evaluations"]
    assert [(e["step"], e["prefix"], e["data"], sorted(e["sets"])) for e in kept] == [
        (4, "eval", "the trainer's eval_dataset", ["sentiment"]),
        (4, "dev", "the trainer's eval_dataset", ["sentiment"]),
        (4, "eval", "sets passed to evaluate()", ["sentiment"]),
    ]
    assert sum(b["count"] for b in kept[0]["sets"]["sentiment"]) == len(tiny_data[1]["sentiment"])
    assert ece_from_bins(kept[0]["sets"]["sentiment"]) == pytest.approx(evaluated[-1]["eval_sentiment_ece"])
    assert calibration_main([str(tmp_path / "watched" / "out" / "calibration.json"), str(tmp_path / "reliability.png")]) == 0
    assert (tmp_path / "reliability.png").stat().st_size > 1000


def test_resumed_run_keeps_diagnostics_and_calibration_up_to_its_checkpoint_once(tmp_path, tokenizer, tiny_data):
    """Resuming from step 2 of 4 keeps the measurements of steps 1-2 and repeats none of steps 3-4."""
    watch = {
        "max_steps": 4,
        "diagnostics_steps": 1,
        "calibration_bins": 10,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "logging_steps": 1,
    }
    no_dropout_trainer(tmp_path, tokenizer, tiny_data, "run", watch).train()
    out = tmp_path / "run" / "out"
    first = json.loads((out / FILE_NAME).read_text())["records"]
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    resumed = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "run", watch)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    again = json.loads((out / FILE_NAME).read_text())["records"]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert again[0] == first[0]
    assert [e["step"] for e in json.loads((out / "calibration.json").read_text())["evaluations"]] == [2, 4]
    # A fresh run into the same directory starts both files anew.
    no_dropout_trainer(tmp_path, tokenizer, tiny_data, "run", {**watch, "max_steps": 2}).train()
    assert [r["step"] for r in json.loads((out / FILE_NAME).read_text())["records"]] == [1, 2]
    assert [e["step"] for e in json.loads((out / "calibration.json").read_text())["evaluations"]] == [2]
    # Step-0 evaluations of another model there (an evaluate-only run) go too; a fresh run's own evaluation before
    # training stays.
    no_dropout_trainer(tmp_path, tokenizer, tiny_data, "run", watch).evaluate()
    fresh = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "run", {**watch, "max_steps": 2})
    fresh.evaluate(metric_key_prefix="before")
    fresh.train()
    kept = json.loads((out / "calibration.json").read_text())["evaluations"]
    assert [(e["step"], e["prefix"]) for e in kept] == [(0, "before"), (2, "eval")]
    # keep_last counts evaluations after step 0 too (a second train() of one trainer): never fewer than there are.
    from hf_async_mtl.calibration import truncate_calibration

    truncate_calibration(str(out), 0, keep_last=3)
    assert [(e["step"], e["prefix"]) for e in json.loads((out / "calibration.json").read_text())["evaluations"]] == [(0, "before")]


def _diagnostics_callback(trainer):
    from hf_async_mtl.diagnostics import MultiTaskDiagnosticsCallback

    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, MultiTaskDiagnosticsCallback))


def test_diagnostics_cosine_matches_autograd_on_batches_drawn_by_the_test(tmp_path, tokenizer, tiny_data):
    from hf_async_mtl.gradients import shared_and_task_parameters

    trainer = no_dropout_trainer(tmp_path, tokenizer, tiny_data, "d", {"max_steps": 1, "diagnostics_steps": 1})
    callback = _diagnostics_callback(trainer)
    model = trainer.model.train()
    train, _ = tiny_data
    # Batches chosen here (rows 3-7 of each task), not by the callback: the reference shares no batching code with it.
    batches = {task: trainer.data_collator([train[task][i] for i in range(3, 8)]) for task in ("sentiment", "similarity")}
    record = callback.measure_batches(model, batches, 5)
    shared, _ = shared_and_task_parameters(model)
    grads = []
    for task, batch in batches.items():
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "example_ids")}).logits
        loss = (
            torch.nn.functional.mse_loss(logits.view(-1), labels.float())
            if task == "similarity"
            else torch.nn.functional.cross_entropy(logits, labels)
        )
        pieces = torch.autograd.grad(loss, shared, allow_unused=True)
        grads.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(pieces, shared)]))
    expected = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert record["cosine"][0][1] == pytest.approx(float(expected), abs=1e-5)
    assert record["grad_norm"]["sentiment"] == pytest.approx(float(grads[0].norm()), rel=1e-4)
    with pytest.raises(ValueError, match="diagnostics_steps must be an integer >= 0"):
        from hf_async_mtl import MultiTaskTrainingArguments

        MultiTaskTrainingArguments(output_dir=str(tmp_path), diagnostics_steps=-1)


def test_diagnostics_batches_hold_one_task_each_and_depend_on_the_step_only(tmp_path, tokenizer, tiny_data):
    trainer = no_dropout_trainer(
        tmp_path, tokenizer, tiny_data, "d", {"max_steps": 1, "diagnostics_steps": 1, "per_device_train_batch_size": 4}
    )
    callback = _diagnostics_callback(trainer)
    first, again, other = callback._batches(5), callback._batches(5), callback._batches(6)
    assert list(first) == ["sentiment", "similarity"]
    for position, (task, batch) in enumerate(first.items()):
        assert batch["input_ids"].shape[0] == 4
        assert batch["task_ids"].eq(position).all()  # rows of that task only
        assert torch.equal(batch["input_ids"], again[task]["input_ids"])
    assert any(not torch.equal(first[t]["example_ids"], other[t]["example_ids"]) for t in first)


def test_generalization_gap_interpolates_single_task_at_equal_training_loss(tmp_path):
    from hf_async_mtl.generalization_gap import main as gap_main

    def state(points, task="rte"):
        history = []
        for step, loss, score in points:
            history.append({"step": step, f"train_loss_{task}": loss, "loss": loss})
            history.append({"step": step, f"eval_{task}_score": score})
        return {"log_history": history}

    (tmp_path / "mt").mkdir()
    (tmp_path / "mt" / "trainer_state.json").write_text(json.dumps(state([(10, 0.6, 0.55), (20, 0.4, 0.60), (30, 0.1, 0.58)])))
    # Single-task: score 0.5 + (0.7 - loss) / 2 -> at loss 0.6: 0.55, at 0.4: 0.65; loss 0.1 is outside its range.
    (tmp_path / "st.json").write_text(json.dumps(state([(10, 0.7, 0.50), (20, 0.5, 0.60), (30, 0.3, 0.70)])))
    result = gap_main(
        ["--multi_task", str(tmp_path / "mt"), "--single_task", f"rte={tmp_path / 'st.json'}", "--out", str(tmp_path / "gap")]
    )
    points = result["tasks"]["rte"]["points"]
    assert [p["single_task_score_at_loss"] for p in points] == [pytest.approx(0.55), pytest.approx(0.65), None]
    assert result["tasks"]["rte"]["mean_gap"] == pytest.approx((0.0 + 0.05) / 2)
    assert (tmp_path / "gap" / "generalization_gap.png").is_file()
    saved = json.loads((tmp_path / "gap" / "generalization_gap.json").read_text())
    assert saved["tasks"]["rte"]["compared_points"] == 2
    with pytest.raises(SystemExit, match="no train_loss_mrpc"):
        gap_main(["--multi_task", str(tmp_path / "mt"), "--single_task", f"mrpc={tmp_path / 'st.json'}", "--out", str(tmp_path / "g2")])


def test_the_plot_commands_run_as_modules_without_runpy_warning(monkeypatch, capsys):
    """`python -m hf_async_mtl.calibration`: the package imports the module first, and runpy warned about it. In
    process (a subprocess costs a whole import): the package's import, redone under the test's warning filters,
    installs what silences it."""
    import importlib
    import runpy
    import sys
    import warnings

    import hf_async_mtl

    monkeypatch.setattr(sys, "argv", ["calibration", "--help"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as done:
        importlib.reload(hf_async_mtl)  # what `python -m` does first: import the package
        runpy.run_module("hf_async_mtl.calibration", run_name="__main__")
    assert done.value.code == 0 and "usage: python -m hf_async_mtl.calibration" in capsys.readouterr().out
    assert not [w for w in caught if "found in sys.modules" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("command", ["calibration", "diagnostics", "weights_plot", "generalization_gap"])
def test_the_plot_commands_name_a_missing_or_wrong_file_in_one_line(command, tmp_path, capsys):
    """They printed tracebacks (FileNotFoundError, JSONDecodeError, KeyError) for a missing, broken or foreign file."""
    import importlib

    main = importlib.import_module(f"hf_async_mtl.{command}").main
    (tmp_path / "foreign.json").write_text('{"x": 1}')
    (tmp_path / "broken.json").write_text("{\n")
    expected = {
        "missing.json": r"missing\.json.* does not exist",
        "foreign.json": r"foreign\.json: not a .* \(no '\w+' field\)"
        if command != "generalization_gap"
        else r"foreign\.json: neither a trainer_state\.json",
        "broken.json": r"broken\.json, line 2, column 1: not valid JSON",
    }
    for name, message in expected.items():
        path = str(tmp_path / name)
        argv = ["--multi_task", path, "--single_task", f"a={path}", "--out", str(tmp_path / "gap")]
        if command != "generalization_gap":
            argv = [path, str(tmp_path / "out.png")]
        try:
            code = main(argv)
        except SystemExit as exit_:
            code, err = 2, str(exit_.code)
        else:
            err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert re.search(message, err), err
    if command != "generalization_gap":
        assert main(["--help"]) == 0 and "usage: python -m" in capsys.readouterr().out
