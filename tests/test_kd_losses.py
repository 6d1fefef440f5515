"""Tests for KD losses, dataset fingerprints and atomic safetensors writes."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from hf_async_mtl.async_kd import storage
from hf_async_mtl.async_kd.losses import (
    distillation_loss,
    ensemble_teacher_outputs,
    kl_distillation_loss,
    mse_logits_distillation_loss,
    regression_distillation_loss,
)
from hf_async_mtl.async_kd.soft_labels import SoftLabels
from hf_async_mtl.async_kd.storage import dataset_fingerprint

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]


def hand_kl(student, teacher, t):
    """T² · mean_i sum_c p_t (log p_t - log p_s), written out with exp/sum."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        zs = sum(math.exp(x / t) for x in s_row)
        zt = sum(math.exp(x / t) for x in t_row)
        for s, q in zip(s_row, t_row):
            pt, ps = math.exp(q / t) / zt, math.exp(s / t) / zs
            total += pt * (math.log(pt) - math.log(ps))
    return t * t * total / len(student)


def test_kl_is_zero_with_zero_gradient_when_student_equals_teacher():
    logits = torch.tensor(STUDENT, requires_grad=True)
    loss = kl_distillation_loss(logits, logits.detach().clone(), temperature=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(logits.grad, torch.zeros_like(logits), atol=1e-7)


def test_kl_matches_hand_computation_on_2x3():
    loss = kl_distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER))
    assert loss.item() == pytest.approx(hand_kl(STUDENT, TEACHER, 1.0), rel=1e-5)
    assert loss.item() > 0.1  # a wrong sign or reduction would not come near the hand value anyway


def test_temperature_scaling_has_t_squared_factor():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    raw_kl_t3 = F.kl_div(F.log_softmax(s / 3, -1), F.softmax(t / 3, -1), reduction="batchmean")
    assert kl_distillation_loss(s, t, temperature=3.0).item() == pytest.approx(9 * raw_kl_t3.item(), rel=1e-5)
    assert kl_distillation_loss(s, t, temperature=3.0).item() == pytest.approx(hand_kl(STUDENT, TEACHER, 3.0), rel=1e-5)


def test_teacher_gets_no_gradient():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    kl_distillation_loss(s, t).backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_mse_losses():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    expected = sum((a - b) ** 2 for r1, r2 in zip(STUDENT, TEACHER) for a, b in zip(r1, r2)) / 6
    assert mse_logits_distillation_loss(s, t).item() == pytest.approx(expected)
    pred, target = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([[1.5], [2.0], [3.0]])
    assert regression_distillation_loss(pred, target).item() == pytest.approx((0.25 + 0 + 1) / 3)
    assert regression_distillation_loss(pred[:, None], target).item() == pytest.approx((0.25 + 0 + 1) / 3)
    with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
        regression_distillation_loss(torch.zeros(3, 2), torch.zeros(3))


def test_alpha_mixes_kd_and_cross_entropy():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    labels = torch.tensor([1, 2])
    kd = kl_distillation_loss(s, t, temperature=2.0)
    ce = F.cross_entropy(s, labels)
    mixed = distillation_loss(s, t, labels, is_regression=False, temperature=2.0, alpha=0.3)
    assert mixed.item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item(), rel=1e-6)
    pure = distillation_loss(s, t, None, is_regression=False, temperature=2.0)  # alpha=1 default
    assert pure.item() == pytest.approx(kd.item(), rel=1e-6)
    only_hard = distillation_loss(s, t, labels, is_regression=False, alpha=0.0)
    assert only_hard.item() == pytest.approx(ce.item(), rel=1e-6)
    mse = distillation_loss(s, t, None, is_regression=False, loss_type="mse")
    assert mse.item() == pytest.approx(mse_logits_distillation_loss(s, t).item())


def test_regression_alpha_mixing():
    pred = torch.tensor([[1.0], [2.0]])
    teacher = torch.tensor([[0.0], [2.0]])
    gold = torch.tensor([1.0, 4.0])
    loss = distillation_loss(pred, teacher, gold, is_regression=True, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * (1 + 0) / 2 + 0.5 * (0 + 4) / 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "js"}, "loss_type"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 0.5}, "hard_labels"),
    ],
)
def test_distillation_loss_rejects_bad_arguments(kwargs, message):
    s = torch.tensor(STUDENT)
    with pytest.raises(ValueError, match=message):
        distillation_loss(s, s, None, is_regression=False, **kwargs)


def test_prediction_ensemble_is_the_mean_probability_written_by_hand():
    first, second = torch.tensor(STUDENT), torch.tensor(TEACHER)
    combined = ensemble_teacher_outputs([first, second], is_regression=False)
    for i in range(2):
        for c in range(3):
            by_hand = 0.5 * (
                math.exp(STUDENT[i][c]) / sum(math.exp(x) for x in STUDENT[i])
                + math.exp(TEACHER[i][c]) / sum(math.exp(x) for x in TEACHER[i])
            )
            assert F.softmax(combined, dim=-1)[i, c].item() == pytest.approx(by_hand, rel=1e-6)
    # One teacher: the same distribution as its own logits; confident teachers stay finite.
    assert torch.allclose(F.softmax(ensemble_teacher_outputs([first], False), -1), F.softmax(first, -1))
    confident = ensemble_teacher_outputs([torch.tensor([[200.0, -200.0]]), torch.tensor([[-200.0, 200.0]])], False)
    assert torch.isfinite(confident).all() and torch.allclose(F.softmax(confident, -1), torch.tensor([[0.5, 0.5]]))


def test_regression_ensemble_is_the_mean_and_shapes_must_match():
    out = ensemble_teacher_outputs([torch.tensor([[1.0], [4.0]]), torch.tensor([[3.0], [0.0]])], is_regression=True)
    assert torch.equal(out, torch.tensor([[2.0], [2.0]]))
    with pytest.raises(ValueError, match="differ in shape"):
        ensemble_teacher_outputs([torch.zeros(2, 1), torch.zeros(3, 1)], is_regression=True)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_teacher_outputs([], is_regression=False)


def test_fingerprint_depends_on_split_and_order_not_container():
    a = dataset_fingerprint([[1, 2], [3]])
    assert a != dataset_fingerprint([[1], [2, 3]])
    assert a != dataset_fingerprint([[3], [1, 2]])
    assert a != dataset_fingerprint([[1, 2, 3]])
    assert a == dataset_fingerprint([torch.tensor([1, 2]), (3,)])
    assert len(a) == 64 and int(a, 16) >= 0
    with pytest.raises(ValueError, match="integers"):
        dataset_fingerprint([[1.5, 2.0]])


def _table_labels(task, table, fingerprint="f"):
    return SoftLabels(task, [], is_regression=table.shape[1] == 1, num_examples=table.shape[0], fingerprint=fingerprint, table=table)


def test_soft_label_round_trip_with_metadata(tmp_path):
    path = tmp_path / "labels" / "sst2.safetensors"
    logits = torch.randn(5, 3, dtype=torch.float64)
    fp = dataset_fingerprint([[i, i + 1] for i in range(5)])
    labels = SoftLabels("sst2", [], is_regression=False, num_examples=5, fingerprint=fp, table=logits, metadata={"teacher_steps": "120"})
    labels.save(path)
    loaded = SoftLabels.load(path, task="sst2", fingerprint=fp)
    assert loaded.table.dtype == torch.float32 and loaded.table.shape == (5, 3)
    assert torch.equal(loaded.table, logits.float())
    assert loaded.complete and loaded.metadata == {"teacher_steps": "120"}
    assert os.listdir(path.parent) == ["sst2.safetensors"]  # no temp file left


def test_mismatches_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "rte.safetensors"
    _table_labels("rte", torch.zeros(4, 2), "abc").save(path)
    with pytest.raises(ValueError, match=r"rte\.safetensors.*other training data"):
        SoftLabels.load(path, task="rte", fingerprint="abd")
    with pytest.raises(ValueError, match=r"rte\.safetensors.*holds task 'rte', expected 'mrpc'"):
        SoftLabels.load(path, task="mrpc", fingerprint="abc")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        SoftLabels.load(tmp_path / "missing.safetensors", task="rte", fingerprint="abc")


def test_row_count_mismatch_is_refused(tmp_path):
    path = tmp_path / "cola.safetensors"
    storage.save_safetensors_atomic(
        path,
        {"table": torch.zeros(3, 2)},
        {
            "format": "hf_async_mtl.soft_labels.v2",
            "task": "cola",
            "fingerprint": "f",
            "num_examples": "4",
            "is_regression": "false",
            "num_teachers": "0",
        },
    )
    with pytest.raises(ValueError, match=r"cola\.safetensors.*table of shape \(3, 2\) for 4 examples"):
        SoftLabels.load(path, task="cola", fingerprint="f")


def test_non_finite_teacher_outputs_are_refused():
    labels = SoftLabels("x", [{"w": torch.zeros(1)}], is_regression=False, num_examples=2, fingerprint="f")
    with pytest.raises(ValueError, match="non-finite"):
        labels._store(torch.tensor([0]), torch.tensor([[0.0, math.nan]]))


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "qnli.safetensors"

    def exploding_writer(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # a partial file, as a crash mid-write would leave
            handle.write(b"\x08\x00\x00\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_file", exploding_writer)
    with pytest.raises(OSError, match="disk full"):
        _table_labels("qnli", torch.zeros(2, 2)).save(path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "qqp.safetensors"
    _table_labels("qqp", torch.ones(2, 2)).save(path)

    def exploding_writer(tensors, filename, metadata=None):
        raise RuntimeError("killed")

    monkeypatch.setattr(storage, "save_file", exploding_writer)
    with pytest.raises(RuntimeError):
        _table_labels("qqp", torch.zeros(2, 2)).save(path)
    assert torch.equal(SoftLabels.load(path, task="qqp", fingerprint="f").table, torch.ones(2, 2))
    assert os.listdir(tmp_path) == ["qqp.safetensors"]
