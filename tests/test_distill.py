"""Tests for KD losses, dataset fingerprints and the soft-label store."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from hf_async_mtl import distill
from hf_async_mtl.distill import (
    SoftLabelStore,
    dataset_fingerprint,
    distillation_loss,
    ensemble_teacher_outputs,
    kl_distillation_loss,
    load_soft_labels,
    mse_logits_distillation_loss,
    regression_distillation_loss,
    save_soft_labels,
)

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


def test_soft_label_round_trip_with_metadata(tmp_path):
    path = tmp_path / "labels" / "sst2.safetensors"
    logits = torch.randn(5, 3, dtype=torch.float64)
    fp = dataset_fingerprint([[i, i + 1] for i in range(5)])
    save_soft_labels(path, logits, task="sst2", fingerprint=fp, metadata={"best_step": 120, "best_metric": 0.91})
    loaded, meta = load_soft_labels(path, task="sst2", fingerprint=fp)
    assert loaded.dtype == torch.float32 and loaded.shape == (5, 3)
    assert torch.equal(loaded, logits.float())
    assert meta["task"] == "sst2" and meta["num_examples"] == "5" and meta["fingerprint"] == fp
    assert meta["best_step"] == "120" and float(meta["best_metric"]) == 0.91
    assert "created_at" in meta
    assert os.listdir(path.parent) == ["sst2.safetensors"]  # no temp file left


def test_regression_soft_labels_are_stored_as_column(tmp_path):
    store = SoftLabelStore(tmp_path)
    store.save("stsb", torch.tensor([1.0, 2.5, 4.0]), fingerprint="fp")
    loaded, _ = store.load("stsb", fingerprint="fp")
    assert loaded.shape == (3, 1) and loaded[:, 0].tolist() == [1.0, 2.5, 4.0]
    assert store.exists("stsb") and not store.exists("rte")


def test_mismatches_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "rte.safetensors"
    save_soft_labels(path, torch.zeros(4, 2), task="rte", fingerprint="abc")
    with pytest.raises(ValueError, match=r"rte\.safetensors.*different training set"):
        load_soft_labels(path, task="rte", fingerprint="abd")
    with pytest.raises(ValueError, match=r"rte\.safetensors.*task 'rte', not 'mrpc'"):
        load_soft_labels(path, task="mrpc", fingerprint="abc")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_soft_labels(tmp_path / "missing.safetensors", task="rte", fingerprint="abc")


def test_row_count_mismatch_is_refused(tmp_path):
    path = tmp_path / "cola.safetensors"
    distill.save_safetensors_atomic(
        path, {"soft_labels": torch.zeros(3, 2)},
        {"format": distill.SOFT_LABELS_FORMAT, "task": "cola", "fingerprint": "f", "num_examples": "4"},
    )
    with pytest.raises(ValueError, match=r"cola\.safetensors.*inconsistent"):
        load_soft_labels(path, task="cola", fingerprint="f")


def test_bad_soft_labels_and_metadata_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        save_soft_labels(tmp_path / "x.safetensors", torch.tensor([[0.0, math.nan]]), task="x", fingerprint="f")
    with pytest.raises(ValueError, match="reserved"):
        save_soft_labels(tmp_path / "x.safetensors", torch.zeros(1, 2), task="x", fingerprint="f",
                         metadata={"task": "y"})
    assert not (tmp_path / "x.safetensors").exists()


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "qnli.safetensors"

    def exploding_writer(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # a partial file, as a crash mid-write would leave
            handle.write(b"\x08\x00\x00\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(distill, "save_file", exploding_writer)
    with pytest.raises(OSError, match="disk full"):
        save_soft_labels(path, torch.zeros(2, 2), task="qnli", fingerprint="f")
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "qqp.safetensors"
    save_soft_labels(path, torch.ones(2, 2), task="qqp", fingerprint="f")

    def exploding_writer(tensors, filename, metadata=None):
        raise RuntimeError("killed")

    monkeypatch.setattr(distill, "save_file", exploding_writer)
    with pytest.raises(RuntimeError):
        save_soft_labels(path, torch.zeros(2, 2), task="qqp", fingerprint="f")
    loaded, _ = load_soft_labels(path, task="qqp", fingerprint="f")
    assert torch.equal(loaded, torch.ones(2, 2))
    assert os.listdir(tmp_path) == ["qqp.safetensors"]
