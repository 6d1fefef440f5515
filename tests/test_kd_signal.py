"""kd_signal: the convergence rule reading a mean over the selection examples (hf_async_mtl.async_kd.signals)."""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainerControl

from benchmarks.example_signals import replay_examples, signal_matrix, signal_values, trivial_matrix
from glue_tasks import get_glue_task
from hf_async_mtl import MultiTaskTrainer, MultiTaskTrainingArguments
from hf_async_mtl.async_kd.bootstrap import BootstrapNoise, resample_indices
from hf_async_mtl.async_kd.callback import AsyncConvergenceCallback
from hf_async_mtl.async_kd.checkpoint import check_async_kd_checkpoint
from hf_async_mtl.async_kd.options import AsyncKDOptions
from hf_async_mtl.async_kd.signals import per_example, trivial_per_example
from hf_async_mtl.errors import InputError
from hf_async_mtl.model_card import method_settings
from hf_async_mtl.tasks import TaskSpec
from tests.conftest import TASKS, make_model
from tests.test_trainer import make_args

SST2, STSB = get_glue_task("sst2"), get_glue_task("stsb")
RNG = np.random.default_rng(3)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("signal", ["loss", "prob", "brier"])
def test_binary_signals_equal_the_replay_that_chose_them(signal):
    labels = RNG.integers(0, 2, 200)
    logits = 2.0 * RNG.standard_normal((200, 2))
    p_true = _softmax(logits)[np.arange(200), labels]
    ours = per_example(signal, SST2, logits, labels).mean()
    assert ours == pytest.approx(float(signal_values(signal, (), False, p_true, labels.astype(np.float64))), abs=1e-12)
    train = RNG.integers(0, 2, 50)
    draws = resample_indices("sst2", 200, 30)
    noise = BootstrapNoise({"sst2": SST2}, smoothing=1, z=2.0, resamples=30, signal=signal)
    assert noise.observe("sst2", 10, logits, labels, train) == pytest.approx(ours, abs=1e-12)
    np.testing.assert_allclose(
        noise.recent["sst2"][0][1], signal_matrix(signal, (), False, p_true[None, :], labels.astype(float), draws)[0]
    )
    np.testing.assert_allclose(noise.trivial["sst2"], trivial_matrix(signal, (), False, train, labels.astype(float), draws), atol=1e-12)


def test_multiclass_brier_and_the_trivial_prior_and_regression():
    spec = TaskSpec(name="three", text_fields=("sentence",), label_names=("a", "b", "c"))
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    labels = np.array([0, 1])
    # sum over classes of (p_k - [k = y])^2
    expected = [(0.3**2 + 0.2**2 + 0.1**2), (0.1**2 + 0.9**2 + 0.8**2)]
    np.testing.assert_allclose(per_example("brier", spec, logits, labels), [-e for e in expected])
    np.testing.assert_allclose(per_example("prob", spec, logits, labels), [0.7, 0.1])
    # the trivial predictor: the training prior (2:1:1) for every example
    train = np.array([0, 0, 1, 2])
    np.testing.assert_allclose(trivial_per_example("prob", spec, train, labels), [0.5, 0.25])
    np.testing.assert_allclose(trivial_per_example("loss", spec, train, labels), np.log([0.5, 0.25]))
    # regression: minus the squared error, the training mean as trivial prediction
    np.testing.assert_allclose(per_example("loss", STSB, np.array([[1.0], [3.0]]), np.array([2.0, 3.0])), [-1.0, 0.0])
    np.testing.assert_allclose(trivial_per_example("brier", STSB, np.array([1.0, 3.0]), np.array([2.0, 4.0])), [0.0, -4.0])
    with pytest.raises(ValueError, match="logits"):
        per_example("prob", spec, np.zeros((2, 2)), labels)
    for wrong in ("score", "accuracy"):
        with pytest.raises(ValueError, match="per-example parts"):
            trivial_per_example(wrong, spec, train, labels)


def test_options_refuse_a_signal_without_measured_noise_and_with_refresh():
    with pytest.raises(ValueError, match="kd_noise bootstrap"):
        AsyncKDOptions(signal="prob")
    with pytest.raises(ValueError, match="kd_refresh"):
        AsyncKDOptions(signal="loss", noise="bootstrap", refresh=True)
    with pytest.raises(ValueError, match="kd_signal must be one of"):
        AsyncKDOptions(signal="accuracy", noise="bootstrap")
    noise = BootstrapNoise({"sst2": SST2}, smoothing=1, z=2.0, resamples=5, signal="prob")
    with pytest.raises(ValueError, match="signal 'prob', this run 'score'"):
        BootstrapNoise({"sst2": SST2}, smoothing=1, z=2.0, resamples=5).load_state_dict(noise.state_dict())


def test_training_arguments_name_the_signal_when_async_kd_is_off(tmp_path):
    """With async-KD off, a signal is reported as doing nothing (not as missing its noise); a typo is still a typo."""
    for options in ({"kd_signal": "prob"}, {"kd_signal": "loss", "kd_refresh": True}):
        with pytest.raises(ValueError, match=r"kd_signal='(prob|loss)'.* only acts? with async-KD, which is off"):
            MultiTaskTrainingArguments(output_dir=str(tmp_path), **options)
    with pytest.raises(ValueError, match="kd_signal must be one of"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), kd_signal="accuracy")
    with pytest.raises(ValueError, match="kd_noise bootstrap"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), async_kd=True, kd_signal="prob")


def test_model_card_lists_every_option_of_the_rule(tmp_path):
    """A run's card shows the noise and the signal its rule read (not only the score-rule options)."""
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), async_kd=True, kd_noise="bootstrap", kd_signal="brier", kd_snapshot_dir=str(tmp_path / "s")
    )
    settings = method_settings(args)
    assert settings["kd_noise"] == "bootstrap" and settings["kd_signal"] == "brier"
    rule = set(AsyncKDOptions.from_arguments(args).rule())
    assert {f"kd_{name}" for name in rule} <= set(settings)
    assert "kd_snapshot_dir" not in settings and "kd_label_batch_size" not in settings


class _KeepSelectionOutputs(TrainerCallback):
    """Copies the selection predictions the trainer hands the async-KD callback at every evaluation."""

    def __init__(self) -> None:
        self.trainer = None
        self.seen: list[tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]] = []

    def on_evaluate(self, args, state, control, **kwargs):
        outputs = self.trainer.selection_outputs
        self.seen.append((state.global_step, {t: (np.array(p), np.array(y)) for t, (p, y) in outputs.items()}))
        return control


@pytest.mark.parametrize("signal", ["prob"])
def test_a_run_decides_on_the_signal_exactly_as_the_replay_does(tmp_path, tokenizer, tiny_data, signal):
    train, evaluation = tiny_data
    spy = _KeepSelectionOutputs()
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer, seed=3),
        args=make_args(
            tmp_path,
            max_steps=40,
            learning_rate=1e-2,
            lr_scheduler_type="constant",
            mtl_method="async_kd",
            kd_noise="bootstrap",
            kd_signal=signal,
            kd_smoothing=2,
            kd_trivial_gate=True,
            kd_require_decline=False,
            kd_patience=2,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=20,
            sampling_strategy="round_robin",
        ),
        task_specs=TASKS,
        train_dataset=dict(train),
        eval_dataset=dict(evaluation),
        processing_class=tokenizer,
        callbacks=[spy],
    )
    spy.trainer = trainer
    trainer.train()
    report = json.load(open(os.path.join(trainer.args.output_dir, "convergence_report.json")))
    converged = 0
    for spec in TASKS:
        task = spec.name
        steps = [step for step, _ in spy.seen]
        logits = np.stack([outputs[task][0] for _, outputs in spy.seen])
        labels = spy.seen[0][1][task][1].reshape(-1).astype(np.float64)
        if spec.is_regression:
            values = logits.reshape(len(steps), -1)
        else:
            values = np.stack([_softmax(lg.astype(np.float64))[np.arange(len(labels)), labels.astype(int)] for lg in logits])
        draws = resample_indices(task, len(labels))
        matrix = signal_matrix(signal, (), spec.is_regression, values, labels, draws)
        train_labels = np.asarray(train[task]["labels"])
        trivial = trivial_matrix(signal, (), spec.is_regression, train_labels, labels, draws)
        replay = replay_examples(steps, matrix, trivial, shape="plateau", patience=2, min_steps=0)
        ours = report[task]
        assert ours["signal"] == signal and ours["trivial_value"] == pytest.approx(trivial[0])
        n = len(ours["history"])  # a converged task's later evaluations are its history too
        np.testing.assert_allclose([v for _, v in ours["history"]], matrix[:n, 0], atol=1e-9)
        assert ours["converged"] == replay["converged"], task
        if replay["converged"]:
            converged += 1
            assert ours["converged_step"] == replay["converged_step"]
            assert ours["best_step"] == replay["teacher_step"]
    assert converged >= 1  # the comparison covered a decision (similarity, at step 36), not only the values
    # the checkpoint's rule holds its signal: a resume reading the score is refused, naming the option
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-20")
    score = dataclasses.replace(AsyncKDOptions.from_arguments(trainer.args), signal="score")
    with pytest.raises(InputError, match="kd_signal"):
        check_async_kd_checkpoint(checkpoint, score)


# ---- the callback's decisions on synthetic selection predictions, against the replay ------------------------------

BINARY = TaskSpec("bin", ("sentence",), label_names=("n", "p"))
REGRESSION = TaskSpec("reg", ("a", "b"), metrics=("pearson", "spearmanr"))
THREE = TaskSpec("tri", ("sentence",), label_names=("a", "b", "c"))
# a metric where lower is better: the signals stay greater-is-better
LOWER = TaskSpec("low", ("sentence",), label_names=("n", "p"), main_metric="accuracy", greater_is_better=False)


class _Rows:
    """What the callback reads of the training data: each task's labels."""

    def __init__(self, train: dict) -> None:
        self.train, self.streamed, self.num_templates = train, (), {t: 1 for t in train}

    def template_view(self, task, index=0):
        return datasets.Dataset.from_dict({"labels": list(self.train[task])})


def _curve(rng, spec, n: int, evaluations: int, peak: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per evaluation (predictions, labels): the model gets better until `peak`, then worse."""
    labels = rng.uniform(0, 5, n) if spec.is_regression else rng.integers(0, spec.num_labels, n)
    margin = rng.standard_normal(n) + 0.5
    out = []
    for e in range(evaluations):
        quality = 2.0 * (1 - abs(e - peak) / peak) + 0.2 * rng.standard_normal()
        if spec.is_regression:
            out.append(((labels + (3 - quality) * 0.5 * rng.standard_normal(n)).astype(np.float32)[:, None], labels.astype(np.float32)))
        else:
            logits = 0.3 * rng.standard_normal((n, spec.num_labels))
            logits[np.arange(n), labels] += quality * margin + 0.3 * rng.standard_normal(n)
            out.append((logits.astype(np.float32), labels))
    return out


def _callback(specs, train, curves, **options):
    outputs: dict = {}
    selection = {s.name: datasets.Dataset.from_dict({"labels": list(curves[s.name][0][1])}) for s in specs}
    callback = AsyncConvergenceCallback(
        {s.name: s for s in specs},
        AsyncKDOptions(noise="bootstrap", soft_labels="online", patience=2, **options),
        _Rows(train),
        selection,
        None,
        {},
        selection_outputs=outputs,
    )
    return callback, outputs


def _drive(callback, outputs, specs, curves, steps, start=0, save_to=None):
    args, model = SimpleNamespace(should_save=False, output_dir="unused"), torch.nn.Linear(2, 2)
    if start == 0:
        callback.on_train_begin(args, None, TrainerControl())
    callback.training = True
    for e in range(start, len(steps)):
        for spec in specs:
            outputs[spec.name] = curves[spec.name][e]
        metrics = {f"eval_{s.name}_{s.main_metric}": 0.5 for s in specs}  # the metric: not what the rule reads
        callback.on_evaluate(args, SimpleNamespace(global_step=steps[e], max_steps=10**6), TrainerControl(), metrics=metrics, model=model)
        if save_to is not None and e == len(steps) - 1:
            callback.save_to(save_to)
    return callback.report()


def _replay(spec, curve, steps, train_labels, signal, shape):
    labels = curve[0][1].reshape(-1).astype(np.float64)
    if spec.is_regression:
        values = np.stack([p[:, 0] for p, _ in curve]).astype(np.float64)
    else:
        values = np.stack([_softmax(p.astype(np.float64))[np.arange(len(labels)), labels.astype(int)] for p, _ in curve])
    draws = resample_indices(spec.name, len(labels))
    matrix = signal_matrix(signal, (), spec.is_regression, values, labels, draws)
    trivial = trivial_matrix(signal, (), spec.is_regression, np.asarray(train_labels), labels, draws)
    return replay_examples(steps, matrix, trivial, shape=shape, patience=2, min_steps=0), matrix, trivial


@pytest.mark.parametrize("shape", ["decl", "plateau"])
@pytest.mark.parametrize("signal", ["loss", "prob", "brier"])
def test_the_callback_decides_as_the_replay_on_every_task_kind(signal, shape):
    specs = [BINARY, REGRESSION, LOWER] + ([THREE] if signal != "brier" else [])  # the replay's brier is binary
    converged = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        steps = [10 * (e + 1) for e in range(14)]
        curves = {s.name: _curve(rng, s, 200, len(steps), peak=int(rng.integers(3, 8))) for s in specs}
        train = {s.name: (rng.uniform(0, 5, 300) if s.is_regression else rng.integers(0, s.num_labels, 300)) for s in specs}
        callback, outputs = _callback(specs, train, curves, signal=signal, require_decline=shape == "decl")
        report = _drive(callback, outputs, specs, curves, steps)
        for spec in specs:
            replay, matrix, trivial = _replay(spec, curves[spec.name], steps, train[spec.name], signal, shape)
            ours = report[spec.name]
            np.testing.assert_allclose([v for _, v in ours["history"]], matrix[:, 0], atol=1e-9)
            assert ours["converged"] == replay["converged"], (seed, spec.name)
            assert ours["trivial_value"] == pytest.approx(trivial[0]) and ours["floor"] == pytest.approx(replay["floor_at_end"])
            if replay["converged"]:
                converged += 1
                assert (ours["converged_step"], ours["best_step"]) == (replay["converged_step"], replay["teacher_step"]), (seed, spec.name)
                assert ours["teacher_metric"] == pytest.approx(matrix[steps.index(replay["teacher_step"]), 0])
    assert converged >= 6  # classification, the lower-is-better metric and regression tasks among them


def test_a_resumed_signal_run_decides_as_the_uninterrupted_one(tmp_path):
    specs = [BINARY, REGRESSION]
    rng = np.random.default_rng(7)
    steps = [10 * (e + 1) for e in range(14)]
    curves = {s.name: _curve(rng, s, 200, len(steps), peak=8) for s in specs}
    train = {"bin": rng.integers(0, 2, 300), "reg": rng.uniform(0, 5, 300)}
    options = dict(signal="loss", require_decline=True)
    full = _drive(*_callback(specs, train, curves, **options), specs, curves, steps)
    first, first_outputs = _callback(specs, train, curves, **options)
    _drive(first, first_outputs, specs, curves, steps[:6], save_to=str(tmp_path))
    resumed, resumed_outputs = _callback(specs, train, curves, **options)
    resumed.load_checkpoint(str(tmp_path))
    again = _drive(resumed, resumed_outputs, specs, curves, steps, start=6)
    for task in ("bin", "reg"):
        for field in ("converged", "converged_step", "best_step", "history", "floor", "trivial_value", "decline_margin", "teacher_metric"):
            assert again[task][field] == full[task][field], (task, field)
    assert any(full[task]["converged"] for task in ("bin", "reg"))


def test_two_snapshot_teacher_keeps_the_signals_best_even_where_the_metric_is_lower_is_better():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        steps = [10 * (e + 1) for e in range(14)]
        curves = {"low": _curve(rng, LOWER, 200, len(steps), peak=4)}
        callback, outputs = _callback([LOWER], {"low": rng.integers(0, 2, 300)}, curves, signal="prob", require_decline=False, top_k=2)
        report = _drive(callback, outputs, [LOWER], curves, steps)["low"]
        if report["converged"]:
            seen = [(value, step) for step, value in report["history"] if step <= report["converged_step"]]
            assert sorted(report["teacher_steps"]) == sorted(step for _, step in sorted(seen, reverse=True)[:2])
            return
    raise AssertionError("no seed converged: the test checked nothing")


def test_the_floor_reads_the_best_window_unless_the_new_one_beats_it_by_min_delta():
    labels = RNG.integers(0, 2, 300)
    logits = [np.zeros((300, 2)) for _ in range(2)]
    logits[0][np.arange(300), labels] = RNG.standard_normal(300) + 0.50
    logits[1][np.arange(300), labels] = logits[0][np.arange(300), labels] + 0.01  # a little better: less than min_delta
    noise = BootstrapNoise({"sst2": SST2}, smoothing=1, z=2.0, signal="prob", min_delta=0.05)
    noise.observe("sst2", 1, logits[0], labels, labels)
    noise.keep_best("sst2", 1)
    best = noise.best["sst2"][1]
    noise.observe("sst2", 2, logits[1], labels, labels)
    assert noise.recent["sst2"][-1][1][0] > best[0]  # the new window is higher, by less than min_delta
    floor, _ = noise.margins("sst2", best_smoothed_step=1)
    trivial = noise.trivial["sst2"]
    assert floor == pytest.approx(trivial[0] + 2.0 * np.std((best - trivial)[1:], ddof=1))


def test_the_model_card_names_the_signal_its_convergence_values_are_in(tokenizer):
    from hf_async_mtl.model_card import build_model_card

    record = {"converged": True, "converged_step": 30, "metric_at_convergence": 0.71, "final_metric": 0.69}
    config = make_model(tokenizer).config
    as_score = build_model_card(config, task_specs=TASKS, convergence={"sentiment": {**record, "signal": "score"}}).content
    as_prob = build_model_card(config, task_specs=TASKS, convergence={"sentiment": {**record, "signal": "prob"}}).content
    assert "| metric at convergence | final metric |" in as_score
    assert "| prob signal at convergence | final signal |" in as_prob and "metric at convergence" not in as_prob
    assert "| sentiment | true | 30 | 0.71 | 0.69 |" in as_score
    # a task that never converged has no value at convergence (the report's field holds its best value so far)
    open_task = build_model_card(
        config, task_specs=TASKS, convergence={"sentiment": {**record, "converged": False, "converged_step": None}}
    )
    assert "| sentiment | false | — | — | 0.69 |" in open_task.content


def test_one_option_without_async_kd_is_named_in_the_singular(tmp_path):
    with pytest.raises(ValueError, match=r"^kd_patience=1 only acts with async-KD, which is off: .* leave it at its default\.$"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), kd_patience=1)
