"""Robust convergence (issue: async-KD must never lock a task into a teacher that has learnt nothing).

A noisy plateau around the trivial predictor never converges; a real rise and decline converges at
the right step with the best step as teacher; the kept snapshot is the monitor's best step also with
min_delta > 0; teacher refresh relabels, and a resumed run equals the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

from hf_async_mtl import MultiTaskModel
from hf_async_mtl.async_kd import (
    AsyncConvergenceCallback,
    AsyncKDOptions,
    ConvergenceMonitor,
    DistillationObjective,
    TeacherLabeller,
    convergence_floor,
    noise_margin,
    trivial_predictor_value,
)
from hf_async_mtl.data import MultiTaskDataset
from tests.conftest import SENTIMENT, SIMILARITY, TASKS, make_model, paper_rule_monitor
from tests.test_trainer import _losses_by_step, make_args, no_dropout_trainer

# CoLA's selection MCC in the README main job under async-KD's old rule (steps 100..1000): a blip at step 200.
COLA_NOISE = [0.0, 0.0732, 0.0, 0.009, 0.0, 0.021, -0.012, 0.034, 0.0, 0.015, 0.041, 0.0, 0.028, -0.02, 0.0]
COLA_FLOOR = convergence_floor(0.0, ("matthews_correlation",), 500, z=2.0)


def _feed(monitor, values, task="cola"):
    converged = []
    for i, value in enumerate(values, start=1):
        converged += [(100 * i, t) for t in monitor.update(100 * i, {task: value}).newly_converged]
    return converged


def test_floor_is_the_trivial_value_plus_z_noise_units():
    assert pytest.approx(2.0 / math.sqrt(500)) == COLA_FLOOR  # MCC: sd about 1/sqrt(n)
    # MRPC's score averages F1 and accuracy (proportions, sd <= 0.5/sqrt(n)) on 367 examples.
    assert convergence_floor(0.745, ("f1", "accuracy"), 367, z=2.0) == pytest.approx(0.745 + 1.0 / math.sqrt(367))
    assert convergence_floor(0.3, ("loss",), 100, z=1.0, greater_is_better=False) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="num_examples"):
        convergence_floor(0.0, ("accuracy",), 0, z=2.0)


def test_noisy_plateau_around_the_trivial_value_never_converges():
    robust = paper_rule_monitor({"cola": True}, patience=3, require_improvement=True, smoothing=2, floors={"cola": COLA_FLOOR})
    assert _feed(robust, COLA_NOISE) == []
    assert not robust.clears_floor("cola") and robust.best_value("cola") == pytest.approx(0.0732)
    # The plain rule (the paper's, and this library's before) converges on the blip: step 500, teacher step 200.
    plain = paper_rule_monitor({"cola": True}, patience=3, require_improvement=True)
    assert _feed(plain, COLA_NOISE) == [(500, "cola")] and plain.best_step("cola") == 200


def test_a_real_rise_then_decline_converges_at_the_right_step_with_the_best_step_as_teacher():
    values = [0.0, 0.05, 0.15, 0.25, 0.32, 0.35, 0.33, 0.30, 0.28, 0.27]
    monitor = paper_rule_monitor({"cola": True}, patience=3, require_improvement=True, smoothing=2, floors={"cola": COLA_FLOOR})
    # Smoothed (window 2): ... 0.285, 0.335, 0.34 (step 700, the last improvement), 0.315, 0.29, 0.275.
    assert _feed(monitor, values) == [(1000, "cola")]
    assert monitor.best_step("cola") == 600 and monitor.best_value("cola") == 0.35
    assert monitor.best_smoothed("cola") == pytest.approx(0.34)
    state = monitor.state_dict()
    restored = ConvergenceMonitor.from_state_dict(state)
    assert restored.state_dict() == state and restored.floors == {"cola": COLA_FLOOR} and restored.smoothing == 2


def test_decline_trigger_converges_on_a_decline_the_split_can_show_even_below_the_floor():
    # MRPC-like: best near the majority class (floor 0.765 never cleared), then overfitting below it.
    values = [0.70, 0.73, 0.72, 0.66, 0.64, 0.63]
    floors, margins = {"mrpc": 0.765}, {"mrpc": 0.058}
    gated = paper_rule_monitor({"mrpc": True}, patience=3, require_improvement=True, smoothing=2, floors=floors)
    assert _feed(gated, values, "mrpc") == []
    declining = paper_rule_monitor(
        {"mrpc": True}, patience=3, require_improvement=True, smoothing=2, floors=floors, decline_margins=margins
    )
    # Smoothed: 0.70, 0.715, 0.725 (best), 0.69 (drop 0.035), 0.65 (drop 0.075 > 0.058): converges at 500.
    assert _feed(declining, values, "mrpc") == [(500, "mrpc")] and declining.best_step("mrpc") == 200
    assert ConvergenceMonitor.from_state_dict(declining.state_dict()).decline_margins == margins
    # A noisy plateau has no decline beyond the margin: CoLA's recorded curve still never converges.
    noisy = paper_rule_monitor(
        {"cola": True}, patience=3, require_improvement=True, smoothing=2, floors={"cola": COLA_FLOOR}, decline_margins={"cola": COLA_FLOOR}
    )
    assert _feed(noisy, COLA_NOISE) == []
    with pytest.raises(ValueError, match="decline margin"):
        paper_rule_monitor({"a": True}, decline_margins={"a": -1.0})


# SST-2's selection accuracy every 100 steps of the 3,000-step main job (29158d1, steps 100..1200): a slow rise
# that looks flat from step 800; under equal weighting it reaches 93 % by step 2,100.
SST2_SLOW_RISE = [0.826, 0.842, 0.832, 0.866, 0.842, 0.868, 0.880, 0.898, 0.894, 0.896, 0.896, 0.896]


def test_noise_margin_is_the_metrics_spread_at_its_own_level():
    assert noise_margin(0.9, ("accuracy",), 500, z=2.0) == pytest.approx(2 * 0.3 / math.sqrt(500))
    assert noise_margin(0.0, ("matthews_correlation",), 500, z=2.0) == pytest.approx(2 / math.sqrt(500))
    assert noise_margin(0.82, ("pearson", "spearmanr"), 500, z=2.0) == pytest.approx(2 * (1 - 0.82**2) / math.sqrt(500))
    # At a bound one changed prediction still moves the metric by 1/n; an unknown metric gets the large spread.
    assert noise_margin(1.0, ("accuracy",), 400, z=1.0) == pytest.approx(1 / 400)
    assert noise_margin(0.5, ("bleu",), 100, z=1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="num_examples"):
        noise_margin(0.5, ("accuracy",), 0, z=2.0)


def test_require_decline_keeps_a_slow_rise_training_that_the_plateau_rule_freezes():
    options = dict(patience=3, require_improvement=True, smoothing=2, full_window=True, floors={"sst2": 0.625})
    plateau = paper_rule_monitor({"sst2": True}, **options)
    # What the run did: "converged" at step 1,200 on the teacher of step 800.
    assert _feed(plateau, SST2_SLOW_RISE, "sst2") == [(1200, "sst2")] and plateau.best_step("sst2") == 800
    decline = paper_rule_monitor({"sst2": True}, **options, require_decline=True, noise={"sst2": (("accuracy",), 500)})
    assert _feed(decline, SST2_SLOW_RISE, "sst2") == []
    # Its margin sits at its own level: 2 sd of 89.6 % on 500 examples.
    assert decline.decline_margin("sst2") == pytest.approx(noise_margin(0.896, ("accuracy",), 500, 2.0))


def test_require_decline_converges_once_the_fall_exceeds_the_noise_with_the_best_step_as_teacher():
    values = [0.55, 0.60, 0.64, 0.66, 0.65, 0.62, 0.58, 0.56, 0.55]  # RTE-like on 249 selection examples
    monitor = paper_rule_monitor(
        {"rte": True},
        patience=2,
        require_improvement=True,
        smoothing=2,
        full_window=True,
        require_decline=True,
        noise={"rte": (("accuracy",), 249)},
    )
    # Smoothed from step 200: 0.575, 0.62, 0.65, 0.655 (best, step 500), 0.635, 0.60 (drop 0.055 < margin 0.060),
    # 0.57 (drop 0.085): patience was met at 700, the decline only at 800.
    assert _feed(monitor, values, "rte") == [(800, "rte")] and monitor.best_step("rte") == 400
    plateau = paper_rule_monitor({"rte": True}, patience=2, require_improvement=True, smoothing=2, full_window=True)
    assert _feed(plateau, values, "rte") == [(700, "rte")]
    # A decline alone does not converge a task that never cleared its floor, nor before patience.
    gated = paper_rule_monitor(
        {"rte": True},
        patience=2,
        require_improvement=True,
        smoothing=2,
        full_window=True,
        floors={"rte": 0.7},
        require_decline=True,
        noise={"rte": (("accuracy",), 249)},
    )
    assert _feed(gated, values, "rte") == []
    # The configuration survives a state round trip; a version-2 state (before the requirement) still loads.
    state = monitor.state_dict()
    restored = ConvergenceMonitor.from_state_dict(state)
    assert restored.state_dict() == state and restored.require_decline and restored.noise == {"rte": (("accuracy",), 249)}
    old = {**state, "version": 2}
    for key in ("require_decline", "noise", "decline_z"):
        old.pop(key)
    assert ConvergenceMonitor.from_state_dict(old).require_decline is False
    with pytest.raises(ValueError, match="selection split's size"):
        paper_rule_monitor({"rte": True}, noise={"rte": (("accuracy",), 0)})
    with pytest.raises(ValueError, match="unknown task"):
        paper_rule_monitor({"rte": True}, noise={"cola": (("accuracy",), 10)})


def test_callback_require_decline_waits_for_a_fall_beyond_the_split_noise(tmp_path, tokenizer, tiny_data):
    args = _monitor_args(
        tmp_path,
        max_steps=12,
        kd_patience=2,
        kd_smoothing=1,
        kd_trivial_gate=False,
        kd_require_decline=True,
        kd_margin_z=1.0,
    )
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    size = callback.references["sentiment"]["selection_size"]
    margin = noise_margin(0.9, ("accuracy",), size, 1.0)
    values = [0.5, 0.9, 0.9, 0.9, 0.9 - margin / 2, 0.9 - 2 * margin, 0.9 - 2 * margin]
    for step, value in enumerate(values, start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
        if "sentiment" in host.switched:
            break
    # A plateau (steps 3-5) and a fall within the noise (step 5) are not enough; a fall of 2 margins is.
    assert step == 6 and callback.records["sentiment"]["teacher_steps"] == [2]
    report = callback.report()["sentiment"]
    assert report["require_decline"] is True and report["decline_margin"] == pytest.approx(margin)
    # Under the plateau rule the report names no decline margin (the replay reads the rule from it) and the same
    # values converge at step 4, two evaluations after the best.
    plateau_args = _monitor_args(
        tmp_path / "plateau",
        max_steps=12,
        kd_patience=2,
        kd_smoothing=1,
        kd_trivial_gate=False,
        kd_require_decline=False,
    )
    host, callback, state, control = _started_callback(plateau_args, tokenizer, tiny_data)
    for step, value in enumerate(values, start=1):
        state.global_step = step
        callback.on_evaluate(plateau_args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
        if "sentiment" in host.switched:
            break
    plateau_report = callback.report()["sentiment"]
    assert step == 4 and plateau_report["decline_margin"] is None and plateau_report["require_decline"] is False
    from benchmarks.convergence_replay import report_rule

    as_default = {"smoothing": 2, "full_window": True, "floor": 0.6}  # the default rule's other settings
    assert report_rule({**plateau_report, **as_default}, {"method": "async_kd"}) == "full"
    assert report_rule({**report, **as_default}, {"method": "async_kd"}) == "decl"
    # measured noise or another signal: margins the stored score curve cannot replay, named so none is attempted
    assert report_rule({**report, **as_default, "noise": "bootstrap"}, {"method": "async_kd_boot"}) == "decl,noise=bootstrap"
    bootstrap_prob = {**report, **as_default, "noise": "bootstrap", "signal": "prob"}
    assert report_rule(bootstrap_prob, {"method": "x"}) == "decl,noise=bootstrap,signal=prob"


def test_smoothing_one_and_no_floor_is_the_plain_rule():
    values = [0.1, 0.3, 0.2, 0.25, 0.22, 0.4, 0.1, 0.1, 0.1]
    plain = paper_rule_monitor({"a": True}, patience=2)
    same = paper_rule_monitor({"a": True}, patience=2, smoothing=1, floors=None)
    assert _feed(plain, values, "a") == _feed(same, values, "a") == [(400, "a")]


def test_monitor_rejects_bad_smoothing_and_floors():
    with pytest.raises(ValueError, match="smoothing"):
        paper_rule_monitor({"a": True}, smoothing=0)
    with pytest.raises(ValueError, match="unknown tasks"):
        paper_rule_monitor({"a": True}, floors={"b": 0.1})
    with pytest.raises(ValueError, match="finite"):
        paper_rule_monitor({"a": True}, floors={"a": float("nan")})


def test_trivial_predictor_is_the_training_majority_class(tiny_data):
    train, evaluation = tiny_data
    labels = list(train["sentiment"]["labels"])
    majority = max(set(labels), key=labels.count)
    eval_labels = list(evaluation["sentiment"]["labels"])
    expected = eval_labels.count(majority) / len(eval_labels)  # accuracy; the sentiment task's score
    assert trivial_predictor_value(SENTIMENT, labels, eval_labels) == pytest.approx(expected)
    assert trivial_predictor_value(SIMILARITY, [1.0, 2.0], [3.0, 4.0]) == 0.0  # a constant has no correlation


class _Host:
    """The parts an async-KD callback is built from, without a Trainer."""

    def __init__(self, args, model, tiny_data):
        train, evaluation = tiny_data
        self.args = args
        self.train_dataset = MultiTaskDataset(train)
        self.eval_dataset = evaluation
        self.objectives, self.logs, self.model = {}, [], model

    @property
    def switched(self):
        """The tasks whose objective the callback replaced by distillation."""
        return {task for task, objective in self.objectives.items() if isinstance(objective, DistillationObjective)}

    def callback(self):
        labeller = TeacherLabeller(self.train_dataset, None, "cpu", 128, self.args.output_dir)
        return AsyncConvergenceCallback(
            TASKS,
            AsyncKDOptions.from_arguments(self.args),
            self.train_dataset,
            self.eval_dataset,
            labeller,
            self.objectives,
            log=self.logs.append,
        )


# The paper's rule: patience on raw values, no gate, no improvement or decline required.
PLAIN_RULE = dict(kd_patience=1, kd_smoothing=1, kd_trivial_gate=False, kd_require_improvement=False, kd_require_decline=False)


def _monitor_args(tmp_path, **overrides):
    """Arguments of an async-KD run that evaluates every step and labels on demand (the callback tests' setting)."""
    return make_args(tmp_path, async_kd=True, kd_soft_labels="on_demand", eval_strategy="steps", eval_steps=1, **overrides)


def _started_callback(args, tokenizer, tiny_data):
    """(host, callback, state, control) of an async-KD callback after on_train_begin, without a Trainer."""
    host = _Host(args, make_model(tokenizer), tiny_data)
    callback = host.callback()
    state, control = SimpleNamespace(global_step=0, is_world_process_zero=True), SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(args, state, control)
    return host, callback, state, control


def test_teacher_is_the_monitors_best_step_also_with_min_delta(tmp_path, tokenizer, tiny_data):
    args = _monitor_args(
        tmp_path,
        max_steps=10,
        kd_patience=3,
        kd_min_delta=0.05,
        kd_require_improvement=False,
        kd_require_decline=False,
    )
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    # 0.52 is better than 0.50 but not by min_delta: the teacher stays the step-1 parameters.
    for step, value in enumerate([0.50, 0.52, 0.40, 0.40], start=1):
        with torch.no_grad():  # the model changes between evaluations
            next(host.model.parameters()).add_(0.01)
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    assert callback.monitor.best_step("sentiment") == 1
    assert callback.records["sentiment"]["teacher_steps"] == [1] and callback.records["sentiment"]["converged_step"] == 4
    assert "sentiment" in host.switched
    report = callback.report()["sentiment"]
    assert report["teacher_metric"] == 0.50 and report["teacher_steps"] == [1]


def _fed_callback(tmp_path, tokenizer, tiny_data, values, **overrides):
    """An async-KD callback (top-2, min_delta 0.05) fed the sentiment task's selection values at steps 1, 2, ..."""
    args = make_args(
        tmp_path,
        async_kd=True,
        kd_min_delta=0.05,
        kd_top_k=2,
        kd_require_improvement=False,
        kd_require_decline=False,
        eval_strategy="steps",
        eval_steps=1,
        **overrides,
    )
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    for step, value in enumerate(values, start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    return callback, host


def test_top_k_teacher_includes_the_monitors_best_step_with_min_delta(tmp_path, tokenizer, tiny_data):
    # 0.52 and 0.53 beat 0.50 but not by min_delta: the monitor's best stays step 1, and it is in the teacher.
    callback, host = _fed_callback(
        tmp_path, tokenizer, tiny_data, [0.50, 0.52, 0.53], max_steps=10, kd_patience=2, kd_soft_labels="on_demand"
    )
    assert callback.monitor.best_step("sentiment") == 1
    record = callback.records["sentiment"]
    assert record["teacher_steps"] == [1, 3] and record["teacher_metric"] == 0.50
    assert host.logs[-1]["kd_teacher_step_sentiment"] == 1.0


def test_trivial_value_of_a_regression_task_is_scored_with_its_metric(tmp_path):
    import dataclasses

    from tests.test_metrics import write_metric

    # Correlations of a constant count as 0; an error metric gets the training mean's real error.
    assert trivial_predictor_value(SIMILARITY, [1.0, 3.0], [0.0, 4.0]) == 0.0
    spec = dataclasses.replace(
        SIMILARITY, metrics=(), evaluate_metrics=(write_metric(tmp_path, "max_error"),), main_metric="max_error", greater_is_better=False
    )
    assert trivial_predictor_value(spec, [1.0, 3.0], [0.0, 4.0]) == pytest.approx(2.0)  # mean 2 -> errors 2, 2
    # No named metric: the floor's noise scale is the larger one (1), not 0.
    assert convergence_floor(0.0, (), 100, 2.0) == pytest.approx(0.2)


def test_async_kd_skips_tasks_without_training_data_and_refuses_on_demand_labels_for_pools(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    args = make_args(tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1)
    host = _Host(args, make_model(tokenizer), tiny_data)
    host.train_dataset = MultiTaskDataset({"sentiment": train["sentiment"]})
    callback = host.callback()
    assert list(callback.specs) == ["sentiment"]
    assert list(callback.compute_references()) == ["sentiment"]  # no KeyError for the task without training data
    host.train_dataset = MultiTaskDataset({"unrelated": train["sentiment"]})
    with pytest.raises(ValueError, match="at least one task with labels and training data"):
        host.callback()
    host.train_dataset = MultiTaskDataset({"sentiment": train["sentiment"]})
    host.train_dataset.num_templates["sentiment"] = 3  # as a template pool of 3 would
    for mode in ("on_demand", "online"):  # online labelled each batch on the template it drew, unlike the table modes
        host.args = make_args(tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1, kd_soft_labels=mode)
        with pytest.raises(ValueError, match=rf"{mode}.*\['sentiment'\] have template pools"):
            host.callback()
    # mse matches logits; an averaged template pool or a predictions ensemble of classifiers is a mean probability.
    host.args = make_args(tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1, kd_loss="mse")
    with pytest.raises(ValueError, match=r"kd_loss='mse' .* task\(s\) \['sentiment'\] average their template pool's probabilities"):
        host.callback()
    host.train_dataset.num_templates["sentiment"] = 1
    host.args = make_args(
        tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1, kd_loss="mse", kd_top_k=2, kd_ensemble="predictions"
    )
    with pytest.raises(ValueError, match=r"kd_top_k 2 with kd_ensemble 'predictions' .* use kd_loss 'kl', or kd_ensemble 'parameters'"):
        host.callback()
    host.args = make_args(tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1, kd_loss="mse", kd_top_k=2)
    assert host.callback().options.loss == "mse"  # a weight-averaged teacher has logits


@pytest.mark.parametrize("gate", [True, False])
def test_gate_blocks_a_task_that_never_beats_its_trivial_predictor(gate, tmp_path, tokenizer, tiny_data):
    # the plateau rule: with a decline required the 0.01 blip could not converge the task whatever the gate does
    args = _monitor_args(tmp_path, max_steps=10, kd_patience=1, kd_smoothing=1, kd_trivial_gate=gate, kd_require_decline=False)
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    reference = callback.references["sentiment"]
    assert reference["floor"] == pytest.approx(reference["trivial_value"] + 2.0 * 0.5 / math.sqrt(reference["selection_size"]))
    at_trivial = reference["trivial_value"]
    for step, value in enumerate([at_trivial, at_trivial + 0.01, at_trivial, at_trivial, at_trivial], start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    if not gate:  # the control: without the gate the same values converge the task on its blip
        assert host.switched == {"sentiment"} and callback.report()["sentiment"]["converged"]
        return
    assert host.switched == set()
    report = callback.report()["sentiment"]
    assert report["converged"] is False and report["floor"] == reference["floor"] and report["margin"] == pytest.approx(reference["margin"])


@pytest.mark.parametrize("full_window", [True, False])
def test_reported_smoothed_history_is_the_series_the_monitor_read(full_window, tmp_path, tokenizer, tiny_data):
    args = _monitor_args(
        tmp_path,
        max_steps=10,
        kd_patience=5,
        kd_smoothing=3,
        kd_full_window=full_window,
    )
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    for step, value in enumerate([0.9, 0.3, 0.6, 0.3], start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    report = callback.report()["sentiment"]
    partial = [[1, 0.9], [2, 0.6]] if not full_window else []
    assert [[s, pytest.approx(v)] for s, v in report["smoothed_history"]] == partial + [[3, pytest.approx(0.6)], [4, pytest.approx(0.4)]]
    assert report["best_smoothed"] == pytest.approx(0.9 if not full_window else 0.6)


def test_the_report_flags_a_near_trivial_teacher_under_the_plain_rule_too(tmp_path, tokenizer, tiny_data):
    args = _monitor_args(tmp_path, max_steps=10, **PLAIN_RULE)
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    at_trivial = callback.references["sentiment"]["trivial_value"]
    for step, value in enumerate([at_trivial + 0.01, at_trivial], start=1):  # a blip, then back: the plain rule converges
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    report = callback.report()["sentiment"]
    assert report["converged"] and report["teacher_steps"] == [1] and report["trivial_value"] == pytest.approx(at_trivial)
    assert report["near_trivial"] is True and report["floor"] is not None


class _ScriptedMetric:
    """A callback placed before the async-KD one that replaces a task's selection score by a scripted value per step."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def __getattr__(self, name):  # every other TrainerCallback event: do nothing
        if name.startswith("on_"):
            return lambda args, state, control, **kwargs: control
        raise AttributeError(name)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics[self.key] = self.values[state.global_step]
        return control


# Selection score of the similarity task by step: converges at 4 (patience 1), teacher step 2 (0.5);
# with margin 0 (z = 0) it refreshes at 8 (0.7 > 0.5) and again at 12 (0.9 > 0.7); 14 is the last step.
SCRIPT = {2: 0.5, 4: 0.3, 6: 0.45, 8: 0.7, 10: 0.6, 12: 0.9, 14: 0.95}


def test_callback_decline_trigger_switches_a_task_that_declines_below_its_floor(tmp_path, tokenizer, tiny_data):
    args = _monitor_args(
        tmp_path,
        max_steps=10,
        kd_patience=3,
        kd_smoothing=2,
        kd_trivial_gate=True,
        kd_decline_trigger=True,
        kd_require_decline=False,
    )
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    reference = callback.references["sentiment"]
    top, margin = reference["trivial_value"], reference["margin"]  # the best stays at the trivial value: below the floor
    for step, value in enumerate([top, top, top - margin, top - 2 * margin, top - 2 * margin], start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
        if "sentiment" in host.switched:
            break
    # Smoothed: top, top, top - m/2, top - 1.5 m (drop 1.5 m > m): converged at step 4, teacher step 1.
    assert step == 4 and callback.records["sentiment"]["teacher_steps"] == [1]
    assert callback.report()["sentiment"]["near_trivial"] is True


REFRESH = dict(
    max_steps=14,
    async_kd=True,
    kd_patience=1,
    kd_require_improvement=False,
    kd_require_decline=False,
    kd_refresh=True,
    kd_margin_z=0.0,
    eval_strategy="steps",
    eval_steps=2,
    sampling_strategy="round_robin",
    logging_steps=1,
)


def _refresh_trainer(tmp_path, tokenizer, tiny_data, out, **overrides):
    _, evaluation = tiny_data
    return no_dropout_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        out,
        {**REFRESH, **overrides},
        eval_dataset={"similarity": evaluation["similarity"]},
        callbacks=[_ScriptedMetric("eval_similarity_score", SCRIPT)],
    )


def test_teacher_refresh_relabels_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path, tokenizer, tiny_data):
    from tests.test_trainer import teacher_pass

    train, _ = tiny_data
    full = _refresh_trainer(tmp_path, tokenizer, tiny_data, "full", save_strategy="steps", save_steps=6)
    full.train()
    record = full.async_convergence.records["similarity"]
    assert record["converged_step"] == 4
    assert [(r["step"], r["teacher_steps"], r["teacher_metric"]) for r in record["refreshes"]] == [(8, [8], 0.7), (12, [12], 0.9)]
    assert record["teacher_steps"] == [12] and full.async_convergence.report()["similarity"]["refreshes"] == record["refreshes"]
    # 0.95 at step 14 beats the teacher too, but 14 is the last step: nothing would train on new labels, none are made.
    # The refreshed teacher is the model of step 12 (saved as checkpoint-12): the soft labels are its outputs.
    at_12 = MultiTaskModel.from_pretrained(os.path.join(full.args.output_dir, "checkpoint-12"))
    assert torch.allclose(
        full.async_convergence.soft_labels["similarity"].table, teacher_pass(at_12, train["similarity"], tokenizer), atol=1e-5
    )
    resumed = _refresh_trainer(tmp_path, tokenizer, tiny_data, "resumed", save_strategy="steps", save_steps=6)
    resumed.train(resume_from_checkpoint=os.path.join(full.args.output_dir, "checkpoint-6"))
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    for step in range(7, 15):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-4, abs=1e-6)
    assert resumed.async_convergence.records == full.async_convergence.records
    assert torch.allclose(
        resumed.async_convergence.soft_labels["similarity"].table, full.async_convergence.soft_labels["similarity"].table, atol=1e-5
    )
    # The checkpoint converged tasks under the plateau rule: resuming under another rule is refused before any work.
    other_rule = _refresh_trainer(tmp_path, tokenizer, tiny_data, "other_rule", kd_require_decline=True)
    with pytest.raises(ValueError, match=r"field 'require_decline'.*--kd_require_decline false"):
        other_rule.train(resume_from_checkpoint=os.path.join(full.args.output_dir, "checkpoint-6"))
    assert other_rule.state.global_step == 0


def test_a_task_converging_at_the_last_step_is_recorded_without_labelling(tmp_path, tokenizer, tiny_data):
    """No training follows the last step: the convergence is reported ("distilled": false), no soft labels are made;
    the teacher's snapshot is kept in the checkpoint, so a run resumed from it with more steps distils at once."""
    from tests.test_trainer import teacher_pass

    script = {2: 0.5, 4: 0.6, 6: 0.55, 8: 0.5, 10: 0.5}  # patience 1: converges at 6; teacher step 4

    def trainer_for(out, max_steps):
        return no_dropout_trainer(
            tmp_path,
            tokenizer,
            tiny_data,
            out,
            {**REFRESH, "max_steps": max_steps, "kd_refresh": False, "save_strategy": "steps", "save_steps": 2},
            eval_dataset={"similarity": tiny_data[1]["similarity"]},
            callbacks=[_ScriptedMetric("eval_similarity_score", script)],
        )

    trainer = trainer_for("at_end", 6)
    trainer.train()
    callback = trainer.async_convergence
    report = callback.report()["similarity"]
    assert report["converged"] and report["converged_step"] == 6 and report["teacher_steps"] == [4]
    assert report["distilled"] is False and report["teacher_metric"] == pytest.approx(0.6)
    assert "similarity" not in callback.soft_labels and report["num_soft_labels"] is None
    assert callback.pending_tasks() == ["similarity"] and [s.step for s in callback.keeper.best("similarity")] == [4]
    logged = [entry for entry in trainer.state.log_history if "kd_converged_at_end_similarity" in entry]
    assert logged and not any("kd_converged_similarity" in entry for entry in trainer.state.log_history)
    final = os.path.join(trainer.args.output_dir, "checkpoint-6")
    assert not os.path.exists(os.path.join(final, "soft_labels", "similarity.safetensors"))
    assert os.path.isfile(os.path.join(final, "kd_snapshots", "similarity-0.safetensors"))
    # Resumed with more steps: distilled from the kept teacher (step 4's model) at the first step after the checkpoint.
    longer = trainer_for("longer", 10)
    longer.train(resume_from_checkpoint=final)
    resumed = longer.async_convergence.report()["similarity"]
    assert resumed["distilled"] is True and resumed["converged_step"] == 6 and resumed["teacher_steps"] == [4]
    at_4 = MultiTaskModel.from_pretrained(os.path.join(trainer.args.output_dir, "checkpoint-4"))
    table = longer.async_convergence.soft_labels["similarity"].table
    torch.testing.assert_close(table, teacher_pass(at_4, tiny_data[0]["similarity"], tokenizer), atol=1e-5, rtol=1e-5)
    assert isinstance(longer.objectives["similarity"], DistillationObjective)
    # The same task converging one evaluation earlier distils and says so.
    early = no_dropout_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        "before_end",
        {**REFRESH, "max_steps": 8, "kd_refresh": False},
        eval_dataset={"similarity": tiny_data[1]["similarity"]},
        callbacks=[_ScriptedMetric("eval_similarity_score", {**script, 8: 0.5})],
    )
    early.train()
    assert early.async_convergence.report()["similarity"]["distilled"] is True
    assert "similarity" in early.async_convergence.soft_labels
    # A distilling task's training batch must carry its example ids (else it would train on hard labels, silently).
    from hf_async_mtl import MultiTaskDataCollator
    from hf_async_mtl.objectives import StepContext

    rows = tiny_data[0]["similarity"]
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "task_ids", "labels") if c in rows.column_names]
    batch = MultiTaskDataCollator(tokenizer)([{k: rows[i][k] for k in columns} for i in range(4)])
    early.model.train()
    context = StepContext(model=early.model, step=8, seed=0, rank=0)
    with pytest.raises(RuntimeError, match=r"^Task 'similarity' trains by distillation, but its training batch has no 'example_ids'"):
        early.objectives["similarity"](early.model, dict(batch), "similarity", context)


def test_the_evaluation_that_stops_training_labels_nothing(tmp_path, tokenizer, tiny_data):
    """kd_stop_when_all_converged: the evaluation at which the last task converges ends training, so that task is
    recorded as converging where training ends (nothing distilled), while the earlier one distilled."""
    trainer = no_dropout_trainer(
        tmp_path,
        tokenizer,
        tiny_data,
        "stop",
        {**REFRESH, "max_steps": 12, "kd_refresh": False, "kd_stop_when_all_converged": True},
        callbacks=[
            _ScriptedMetric("eval_sentiment_score", {2: 0.6, 4: 0.5, 6: 0.5, 8: 0.5}),  # converges at 4
            _ScriptedMetric("eval_similarity_score", {2: 0.5, 4: 0.6, 6: 0.55, 8: 0.5}),  # converges at 6
        ],
    )
    trainer.train()
    assert trainer.state.global_step == 6
    report = trainer.async_convergence.report()
    assert report["sentiment"]["converged_step"] == 4 and report["sentiment"]["distilled"] is True
    assert report["similarity"]["converged_step"] == 6 and report["similarity"]["distilled"] is False
    assert set(trainer.async_convergence.soft_labels) == {"sentiment"}


def test_resumed_snapshots_keep_their_pin_and_live_in_kd_snapshot_dir(tmp_path, tokenizer, tiny_data):
    spill = tmp_path / "snapshots"
    callback, host = _fed_callback(tmp_path, tokenizer, tiny_data, [0.50, 0.52, 0.53], kd_patience=5, kd_snapshot_dir=str(spill))
    args = host.args
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    callback.save_to(str(checkpoint))
    resumed = _Host(args, make_model(tokenizer), tiny_data).callback()
    resumed.load_checkpoint(str(checkpoint))
    kept = resumed.keeper.best("sentiment")
    assert [s.step for s in kept] == [1, 3] and resumed.keeper.pinned_step("sentiment") == 1
    assert all(not s.in_memory and str(spill) in s.path for s in kept)


def test_kd_options_without_async_kd_are_refused_not_silently_ignored(tmp_path):
    with pytest.raises(ValueError, match=r"^kd_patience=5, kd_trivial_gate=False only act with async-KD, which is off"):
        make_args(tmp_path, mtl_method="imtl_g", kd_patience=5, kd_trivial_gate=False)
    assert make_args(tmp_path, mtl_method="async_kd", eval_strategy="steps", kd_patience=5).ignored_kd_options() == []
    assert make_args(tmp_path, mtl_method="imtl_g").ignored_kd_options() == []


def test_an_async_kd_trainer_without_training_data_evaluates(tmp_path, tokenizer, tiny_data):
    """Evaluation only (no train_dataset): nothing to label, so no labeller is needed and none is asked for."""
    from hf_async_mtl import MultiTaskTrainer
    from tests.conftest import TASKS, make_model

    _, evaluation = tiny_data
    args = make_args(tmp_path, async_kd=True, eval_strategy="steps", eval_steps=1)
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer), args=args, task_specs=TASKS, eval_dataset=dict(evaluation), processing_class=tokenizer
    )
    assert trainer.async_convergence is not None
    assert 0.0 <= trainer.evaluate()["eval_sentiment_accuracy"] <= 1.0


@pytest.mark.parametrize("last_value, lost", [(0.10, True), (0.88, False)])
def test_the_report_and_the_log_say_when_a_distilled_task_lost_its_teacher(last_value, lost, tmp_path, tokenizer, tiny_data, caplog):
    args = _monitor_args(tmp_path, max_steps=10, **PLAIN_RULE)
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    # converges at step 2 on its step-1 teacher (0.9) and is distilled; its selection score then ends at last_value
    for step, value in enumerate([0.9, 0.5, last_value], start=1):
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    margin = callback.references["sentiment"]["margin"]
    assert 0.02 < margin < 0.8 - 0.02  # the two cases fall on either side of it
    with caplog.at_level("WARNING", logger="hf_async_mtl.async_kd.callback"):
        callback.on_train_end(args, state, control)
    report = json.loads((tmp_path / "out" / "convergence_report.json").read_text())["sentiment"]
    assert report["distilled"] and report["teacher_steps"] == [1]
    assert report["retention"] == pytest.approx(last_value - 0.9) and report["lost_teacher"] is lost
    assert ("distilling did not keep its teacher's level" in caplog.text) is lost
    assert report["history"][-1] == [3, pytest.approx(last_value)]
    # a task that never converged is not judged
    assert callback.report()["similarity"]["lost_teacher"] is None


def test_a_task_with_no_evaluation_after_its_convergence_is_not_judged(tmp_path, tokenizer, tiny_data):
    """Under the decline rule a task has already fallen when it converges: that fall is the rule's evidence, not
    distillation's doing, so only evaluations after the convergence can show what distilling kept."""
    args = _monitor_args(tmp_path, max_steps=10, **PLAIN_RULE)
    host, callback, state, control = _started_callback(args, tokenizer, tiny_data)
    for step, value in enumerate([0.9, 0.1], start=1):  # converges at step 2 (distilled: steps remain), far below
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_sentiment_score": value}, model=host.model)
    report = callback.report()["sentiment"]
    assert report["distilled"] and report["converged_step"] == 2 and report["retention"] == pytest.approx(-0.8)
    assert report["lost_teacher"] is None
