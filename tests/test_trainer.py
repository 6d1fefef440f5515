"""MultiTaskTrainer: trains, evaluates every task, logs per-task losses, balances tasks, resumes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from transformers import EarlyStoppingCallback

import hf_async_mtl.async_kd.objective as objective_module
from hf_async_mtl import MultiTaskTrainer, MultiTaskTrainingArguments, available_weightings
from tests.conftest import TASKS, make_model, ragged


def make_args(tmp_path, **overrides) -> MultiTaskTrainingArguments:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        max_steps=6,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=2,
        seed=7,
        use_cpu=True,
        disable_tqdm=True,
        # Mechanics tests decide convergence with the plain rule (raw values, no trivial-predictor gate);
        # the robust rule has its own tests (tests/test_convergence.py, tests/test_robust_convergence.py).
        dataloader_pin_memory=False,
    )
    if overrides.get("async_kd") or overrides.get("mtl_method") == "async_kd":
        values.update(kd_smoothing=1, kd_trivial_gate=False)
    values.update(overrides)
    return MultiTaskTrainingArguments(**values)


def make_trainer(tmp_path, tokenizer, tiny_data, model=None, **overrides) -> MultiTaskTrainer:
    train, evaluation = tiny_data
    return MultiTaskTrainer(
        model=model or make_model(tokenizer),
        args=make_args(tmp_path, **overrides),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )


def test_training_changes_parameters_and_evaluates_every_task(tmp_path, tokenizer, tiny_data):
    trainer = make_trainer(tmp_path, tokenizer, tiny_data)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any(n.startswith("encoder.") for n in changed)
    assert {"heads.sentiment.weight", "heads.similarity.weight"} <= set(changed)
    metrics = trainer.evaluate()
    for key in (
        "eval_sentiment_accuracy",
        "eval_sentiment_score",
        "eval_sentiment_loss",
        "eval_similarity_pearson",
        "eval_similarity_spearmanr",
        "eval_glue_score",
        "eval_loss",
    ):
        assert key in metrics
    expected = (metrics["eval_sentiment_score"] + metrics["eval_similarity_score"]) / 2
    assert metrics["eval_glue_score"] == pytest.approx(expected)
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert train_logs and any("train_loss_sentiment" in log for log in train_logs)
    assert any("train_loss_similarity" in log for log in train_logs)


def test_evaluation_progress_bar_counts_every_tasks_batches(tmp_path, tokenizer, tiny_data, monkeypatch):
    """transformers sizes its bar on the first loader; an evaluation runs one loader per task (32 rows each, batches of 16)."""
    from transformers.trainer_callback import ProgressCallback

    seen = []
    close = ProgressCallback.on_evaluate

    def record(self, args, state, control, **kwargs):
        seen.append((self.prediction_bar.n, self.prediction_bar.total))
        return close(self, args, state, control, **kwargs)

    monkeypatch.setattr(ProgressCallback, "on_evaluate", record)
    train, evaluation = tiny_data
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(tmp_path, disable_tqdm=False),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )
    trainer.evaluate()
    assert seen == [(4, 4)]


def test_one_task_per_step_batches_are_task_homogeneous(tmp_path, tokenizer, tiny_data):
    trainer = make_trainer(tmp_path, tokenizer, tiny_data, sampling_strategy="round_robin")
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 6
    tasks = [int(batch["task_ids"][0]) for batch in batches]
    assert tasks == [0, 1, 0, 1, 0, 1]
    assert all(bool((batch["task_ids"] == batch["task_ids"][0]).all()) for batch in batches)


def test_data_seed_alone_decides_the_batch_stream(tmp_path, tokenizer, tiny_data):
    """Trainer's convention: `data_seed` seeds the data sampler, `seed` (model init, dropout) when it is unset."""

    def stream(**seeds):
        sampler = make_trainer(tmp_path, tokenizer, tiny_data, max_steps=12, **seeds).build_train_sampler()
        return [list(batch) for batch in sampler]

    assert stream(seed=1, data_seed=5) == stream(seed=2, data_seed=5)
    assert stream(seed=1, data_seed=5) != stream(seed=1, data_seed=6)
    assert stream(seed=5) == stream(seed=1, data_seed=5)


def test_best_model_and_early_stopping_use_task_metrics(tmp_path, tokenizer, tiny_data):
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        max_steps=8,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="glue_score",
        greater_is_better=True,
    )
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=10))
    trainer.train()
    scores = [log["eval_glue_score"] for log in trainer.state.log_history if "eval_glue_score" in log]
    assert len(scores) == 4
    assert trainer.state.best_metric == pytest.approx(max(scores))


def test_mismatched_heads_are_refused(tmp_path, tokenizer, tiny_data):
    model = make_model(tokenizer, tasks=TASKS[:1])
    with pytest.raises(ValueError, match="no head for task 'similarity'"):
        make_trainer(tmp_path, tokenizer, tiny_data, model=model)


def test_dwa_window_longer_than_the_run_is_warned(tmp_path, tokenizer, tiny_data, caplog):
    with caplog.at_level("WARNING", logger="hf_async_mtl.trainer"):
        make_trainer(tmp_path, tokenizer, tiny_data, mtl_method="dwa", max_steps=200)
    assert "window=100 steps" in caplog.text and "every weight stays 1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_async_mtl.trainer"):
        make_trainer(tmp_path, tokenizer, tiny_data, mtl_method="dwa", mtl_method_options={"window": 20}, max_steps=200)
    assert "dwa" not in caplog.text


def test_unknown_method_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown mtl_method 'nope'.*equal.*async_kd"):
        make_args(tmp_path, mtl_method="nope")


@pytest.mark.parametrize("method", sorted(available_weightings()))
def test_every_weighting_method_trains_logs_weights_and_resumes(method, tmp_path, tokenizer, tiny_data):
    options = {"weights": {"sentiment": 2.0, "similarity": 0.5}} if method == "static" else {}
    end_task = {"end_task": "sentiment"} if method in ("mt_tartan", "meta_tartan") else {}
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        mtl_method=method,
        mtl_method_options=options,
        max_steps=4,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        gradient_accumulation_steps=2,
        **end_task,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, trainer.model.parameters()))
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in logged)
    assert any("train_weight_sentiment" in log and "train_weight_similarity" in log for log in logged)
    state_file = os.path.join(trainer.args.output_dir, "checkpoint-4", "weighting_state.pt")
    saved = torch.load(state_file, weights_only=True)["weighting"]
    current = trainer.weighting.state_dict()
    assert saved.keys() == current.keys()
    for key in saved:
        assert torch.equal(saved[key], current[key])
    # Trainer zeroes only the model's gradients: the method's own parameters must not carry them over steps.
    assert all(p.grad is None for p in trainer.weighting.parameters())


def _losses_by_step(trainer):
    return {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}


def no_dropout_trainer(tmp_path, tokenizer, tiny_data, out, args, eval_dataset=None, **kwargs):
    """A trainer on the tiny tasks whose model has no dropout, so runs that draw different random numbers agree."""
    train, evaluation = tiny_data
    model = make_model(tokenizer, seed=3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return MultiTaskTrainer(
        model=model,
        args=make_args(tmp_path / out, **args),
        task_specs=TASKS,
        train_dataset=dict(train),
        eval_dataset=dict(evaluation) if eval_dataset is None else eval_dataset,
        processing_class=tokenizer,
        **kwargs,
    )


def teacher_pass(model, dataset, tokenizer):
    """`model`'s logits over every row of a tokenized task dataset, in dataset order (eval mode, no grad)."""
    from hf_async_mtl import MultiTaskDataCollator

    collator = MultiTaskDataCollator(tokenizer)
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "task_ids") if c in dataset.column_names]
    rows = [{k: dataset[i][k] for k in columns} for i in range(len(dataset))]
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**collator(rows[i : i + 8])).logits.float() for i in range(0, len(rows), 8)])


def test_async_kd_switches_converged_task_to_its_soft_labels(tmp_path, tokenizer, tiny_data, monkeypatch):
    train, evaluation = tiny_data
    kd_calls = []
    original = objective_module.distillation_loss

    def spy(student_logits, soft_targets, *args, **kwargs):
        kd_calls.append((int(soft_targets.shape[-1]), kwargs["is_regression"]))
        return original(student_logits, soft_targets, *args, **kwargs)

    monkeypatch.setattr(objective_module, "distillation_loss", spy)
    # Only the sentiment task is monitored; min_delta so large that its first evaluation stays best,
    # so it converges at the second evaluation (step 4) with its best point at step 2.
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(
            tmp_path,
            max_steps=8,
            mtl_method="async_kd",
            kd_patience=1,
            kd_min_delta=10.0,
            kd_require_improvement=False,
            kd_require_decline=False,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            sampling_strategy="round_robin",
            logging_steps=1,
        ),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset={"sentiment": evaluation["sentiment"]},
        processing_class=tokenizer,
    )
    trainer.train()
    # Round robin: sentiment trains on odd steps (1, 3, 5, 7); it converged at step 4 → KD on steps 5 and 7.
    assert kd_calls == [(2, False), (2, False)]
    soft = trainer.async_convergence.soft_labels["sentiment"].table
    assert "similarity" not in trainer.async_convergence.soft_labels
    best = type(trainer.model).from_pretrained(os.path.join(trainer.args.output_dir, "checkpoint-2")).eval()
    teacher = teacher_pass(best, train["sentiment"], tokenizer)
    assert torch.allclose(soft, teacher, atol=1e-5)
    # Row i is example i of the training set (the teacher pass runs length-sorted, then restores the order).
    rows = train["sentiment"].select(range(5))
    for i in range(5):
        single = {"input_ids": torch.tensor([rows[i]["input_ids"]]), "task_ids": torch.tensor([0])}
        with torch.no_grad():
            assert torch.allclose(best(**single).logits[0], soft[i], atol=1e-5)
    report = json.load(open(os.path.join(trainer.args.output_dir, "convergence_report.json")))
    assert report["sentiment"]["converged_step"] == 4 and report["sentiment"]["best_step"] == 2
    assert report["similarity"]["converged"] is False


def test_async_kd_with_all_tasks_steps_distills_only_the_converged_task(tmp_path, tokenizer, tiny_data, monkeypatch):
    train, evaluation = tiny_data
    kd_calls = []
    original = objective_module.distillation_loss

    def spy(student_logits, soft_targets, *args, **kwargs):
        kd_calls.append(int(soft_targets.shape[-1]))
        return original(student_logits, soft_targets, *args, **kwargs)

    monkeypatch.setattr(objective_module, "distillation_loss", spy)
    # Every step has a batch of both tasks; sentiment converges at step 4 (best at 2), similarity is not monitored.
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(
            tmp_path,
            max_steps=6,
            mtl_method="async_kd",
            step_composition="all_tasks",
            kd_patience=1,
            kd_min_delta=10.0,
            kd_require_improvement=False,
            kd_require_decline=False,
            eval_strategy="steps",
            eval_steps=2,
            logging_steps=1,
        ),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset={"sentiment": evaluation["sentiment"]},
        processing_class=tokenizer,
    )
    trainer.train()
    assert kd_calls == [2, 2]  # steps 5 and 6: sentiment's batch distils, similarity's keeps its labels
    logged = [log for log in trainer.state.log_history if "train_loss_similarity" in log]
    assert len(logged) == 6 and all("train_loss_sentiment" in log for log in logged)


@pytest.mark.parametrize("ensemble", ["predictions", "parameters"])
def test_top_k_teacher_ensembles_predictions_or_parameters(ensemble, tmp_path, tokenizer, tiny_data, monkeypatch):
    import copy

    from hf_async_mtl.async_kd import callback as callback_module
    from hf_async_mtl.async_kd.losses import ensemble_teacher_outputs

    train, evaluation = tiny_data
    teachers = []
    original = callback_module.build_teacher

    def spy(snapshots, ensemble="parameters"):
        states = original(snapshots, ensemble)
        teachers.append([{k: v.clone() for k, v in state.items()} for state in states])
        return states

    monkeypatch.setattr(callback_module, "build_teacher", spy)
    # Evaluations at steps 2, 4, 6; the huge min_delta keeps step 2 best, so sentiment converges at step 6
    # (patience 2) with two kept snapshots (k = 2).
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(
            tmp_path,
            max_steps=8,
            mtl_method="async_kd",
            kd_patience=2,
            kd_min_delta=10.0,
            kd_require_improvement=False,
            kd_require_decline=False,
            kd_top_k=2,
            kd_ensemble=ensemble,
            eval_strategy="steps",
            eval_steps=2,
            sampling_strategy="round_robin",
        ),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset={"sentiment": evaluation["sentiment"]},
        processing_class=tokenizer,
    )
    trainer.train()
    soft = trainer.async_convergence.soft_labels["sentiment"].table
    record = trainer.async_convergence.records["sentiment"]
    assert record["ensemble"] == ensemble and len(record["teacher_steps"]) == 2
    (states,) = teachers
    passes = []
    for state in states:
        teacher = copy.deepcopy(trainer.model)
        teacher.load_state_dict(state, strict=False)
        passes.append(teacher_pass(teacher, train["sentiment"], tokenizer))
    if ensemble == "predictions":
        assert len(passes) == 2 and not torch.allclose(passes[0], passes[1])
        assert torch.allclose(soft, ensemble_teacher_outputs(passes, is_regression=False), atol=1e-5)
    else:
        assert len(passes) == 1 and torch.allclose(soft, passes[0], atol=1e-5)


def test_kd_ensemble_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="kd_ensemble must be one of"):
        make_args(tmp_path, mtl_method="async_kd", kd_ensemble="vote")


def test_resume_after_convergence_matches_uninterrupted_run(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    common = dict(
        max_steps=10,
        mtl_method="async_kd",
        kd_patience=1,
        kd_min_delta=10.0,
        kd_require_improvement=False,
        kd_require_decline=False,
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
            eval_dataset={"sentiment": evaluation["sentiment"]},
            processing_class=tokenizer,
        )

    full = build("full")
    full.train()
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-6")
    assert os.path.isfile(os.path.join(checkpoint, "soft_labels", "sentiment.safetensors"))
    resumed = build("resumed")
    resumed.train(resume_from_checkpoint=checkpoint)
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    for step in range(7, 11):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-4, abs=1e-6)
    assert torch.allclose(resumed.async_convergence.soft_labels["sentiment"].table, full.async_convergence.soft_labels["sentiment"].table)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_evaluation_runs_longest_first_with_the_metrics_of_dataset_order(tmp_path, tokenizer, tiny_data):
    """Length-sorted evaluation batches change padding, not results: the metrics equal those of a pass in
    dataset order, one example at a time; a 64-example default eval batch and the teacher-pass size."""
    from hf_async_mtl.metrics import compute_task_metrics

    evaluation = {name: ragged(dataset) for name, dataset in tiny_data[1].items()}
    trainer = make_trainer(tmp_path, tokenizer, (tiny_data[0], evaluation))
    seen = []
    original = trainer.evaluation_loop

    def spy(dataloader, *args, **kwargs):
        seen.append([len(ids) for ids in dataloader.dataset["input_ids"]])
        return original(dataloader, *args, **kwargs)

    trainer.evaluation_loop = spy
    metrics = trainer.evaluate()
    assert seen and all(lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1 for lengths in seen)
    model = trainer.model.eval()
    for name, spec in trainer.task_specs.items():
        dataset = evaluation[name]
        with torch.no_grad():
            logits = torch.cat(
                [
                    model(
                        **trainer.data_collator([{k: dataset[i][k] for k in ("input_ids", "attention_mask", "token_type_ids", "task_ids")}])
                    ).logits
                    for i in range(len(dataset))
                ]
            )
        expected = compute_task_metrics(spec, logits.numpy(), np.asarray(dataset["labels"]))
        for metric, value in expected.items():
            assert metrics[f"eval_{name}_{metric}"] == pytest.approx(value, abs=1e-5), (name, metric)
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path)).per_device_eval_batch_size == 64
    with pytest.raises(ValueError, match="kd_label_batch_size must be an integer >= 1"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), kd_label_batch_size=0)


def test_a_tasks_evaluation_loss_is_the_mean_over_its_examples(tmp_path, tokenizer, tiny_data):
    """32 rows in batches of 12, 12 and 8: each task's loss is the mean over its examples, as one pass in dataset
    order, one example at a time, computes it (several processes: tests/test_distributed.py)."""
    from hf_async_mtl.losses import task_loss

    trainer = make_trainer(tmp_path, tokenizer, tiny_data, per_device_eval_batch_size=12)
    metrics = trainer.evaluate()
    model = trainer.model.eval()
    columns = ("input_ids", "attention_mask", "token_type_ids", "task_ids")
    for name, spec in trainer.task_specs.items():
        dataset = tiny_data[1][name]
        assert len(dataset) % 12
        with torch.no_grad():
            logits = torch.cat([model(**trainer.data_collator([{k: row[k] for k in columns}])).logits for row in dataset])
        expected = float(task_loss(logits, torch.tensor(dataset["labels"]), spec.is_regression))
        assert metrics[f"eval_{name}_loss"] == pytest.approx(expected, rel=1e-5), name
    assert metrics["eval_loss"] == pytest.approx((metrics["eval_sentiment_loss"] + metrics["eval_similarity_loss"]) / 2)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("kd_temperature", float("inf"), "kd_temperature must be a finite number > 0"),
        ("kd_temperature", float("nan"), "kd_temperature must be a finite number > 0"),
        ("kd_min_steps", -1, "kd_min_steps must be an integer >= 0"),
        ("kd_min_delta", float("nan"), "kd_min_delta must be a finite number >= 0"),
        ("kd_margin_z", float("inf"), "kd_margin_z must be a finite number >= 0"),
        ("sampling_strategy", "annealed", "anneals from proportional to uniform over max_steps"),
    ],
)
def test_async_kd_options_are_checked_before_training(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), **{option: value})


def test_decline_trigger_and_required_decline_are_not_combined(tmp_path):
    with pytest.raises(ValueError, match="kd_decline_trigger converges a task on a decline alone"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), async_kd=True, kd_decline_trigger=True)  # the default requires a decline
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), async_kd=True, kd_decline_trigger=True, kd_require_decline=False)
    assert args.kd_decline_trigger and not args.kd_require_decline


def test_an_extra_evaluation_split_may_not_share_a_tasks_metric_names(tmp_path, tokenizer, tiny_data):
    import dataclasses

    train, evaluation = tiny_data
    specs = [*TASKS, dataclasses.replace(TASKS[0], name="sentiment_dev")]
    model = make_model(tokenizer, tasks=specs)
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path), task_specs=specs, train_dataset=train, processing_class=tokenizer)
    clash = {"sentiment": {"selection": evaluation["sentiment"], "dev": evaluation["sentiment"]}, "sentiment_dev": evaluation["sentiment"]}
    with pytest.raises(ValueError, match=r"\['sentiment_dev'\] would be reported twice"):
        trainer.evaluate(clash)


def test_persistent_eval_workers_evaluate_each_task_on_its_own_data(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    plain = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(tmp_path),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )
    persistent = MultiTaskTrainer(
        model=make_model(tokenizer),
        args=make_args(tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )
    expected, got = plain.evaluate(), persistent.evaluate()
    for task in ("sentiment", "similarity"):
        assert got[f"eval_{task}_score"] == pytest.approx(expected[f"eval_{task}_score"], abs=1e-6), task
    loaders = len(persistent.accelerator._dataloaders)
    again = persistent.evaluate()  # the same loaders and workers again, not a new set per evaluation
    assert len(persistent.accelerator._dataloaders) == loaders
    assert again["eval_sentiment_score"] == pytest.approx(got["eval_sentiment_score"], abs=1e-6)
    # The workers outlive evaluate(), one per task's loader, and the accelerator keeps every loader it prepared (in
    # reference cycles): end them now, or the garbage collector ends them inside a later test, 5 s per worker.
    for loader in persistent.accelerator._dataloaders:
        if getattr(loader, "_iterator", None) is not None:
            loader._iterator._shutdown_workers()


def test_resume_refuses_another_batch_stream_but_allows_a_longer_run(tmp_path, tokenizer, tiny_data):
    train, _ = tiny_data

    def build(out, **overrides):
        args = make_args(tmp_path / out, **{"max_steps": 4, "save_strategy": "steps", "save_steps": 2, **overrides})
        return MultiTaskTrainer(
            model=make_model(tokenizer), args=args, task_specs=TASKS, train_dataset=dict(train), processing_class=tokenizer
        )

    first = build("first")
    first.train()
    checkpoint = os.path.join(first.args.output_dir, "checkpoint-2")
    assert json.load(open(os.path.join(checkpoint, "sampler_state.json")))["seed"] == 7
    with pytest.raises(ValueError, match=r"batch stream differs.*seed: checkpoint 7, now 8"):
        build("other_seed", seed=8).train(resume_from_checkpoint=checkpoint)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps: checkpoint 1, now 2"):
        build("other_accumulation", gradient_accumulation_steps=2).train(resume_from_checkpoint=checkpoint)
    longer = build("longer", max_steps=6)
    longer.train(resume_from_checkpoint=checkpoint)
    assert longer.state.global_step == 6
    annealed = build("annealed", sampling_strategy="annealed")
    annealed.train()  # must succeed: only the resume below may fail
    with pytest.raises(ValueError, match=r"num_batches: checkpoint"):  # annealed sampling's schedule spans the run
        build("annealed_longer", sampling_strategy="annealed", max_steps=6).train(
            resume_from_checkpoint=os.path.join(annealed.args.output_dir, "checkpoint-2")
        )


@pytest.mark.parametrize("method", ["famo", "pcgrad"])
def test_a_task_without_training_data_is_not_balanced(method, tmp_path, tokenizer, tiny_data):
    """A task with no training data stayed in the method's task set: methods of all-tasks steps failed at every step
    ("missing ['similarity']"), dwa / rlw / mt_tartan normalised over it."""
    train, evaluation = tiny_data
    trainer = make_trainer(tmp_path, tokenizer, ({"sentiment": train["sentiment"]}, evaluation), mtl_method=method, max_steps=2)
    assert trainer.weighting.task_names == ("sentiment",)
    trainer.train()
    assert trainer.state.global_step == 2 and "eval_similarity_loss" in trainer.evaluate()
