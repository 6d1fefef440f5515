"""kd_signal: the convergence rule reading a mean over the selection examples (hf_async_mtl.async_kd.signals)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from transformers import TrainerCallback

from benchmarks.example_signals import replay_examples, signal_matrix, signal_values, trivial_matrix
from glue_tasks import get_glue_task
from hf_async_mtl import MultiTaskTrainer
from hf_async_mtl.async_kd.bootstrap import BootstrapNoise, resample_indices
from hf_async_mtl.async_kd.checkpoint import check_async_kd_checkpoint
from hf_async_mtl.async_kd.options import AsyncKDOptions
from hf_async_mtl.async_kd.signals import per_example, trivial_per_example
from hf_async_mtl.errors import InputError
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
