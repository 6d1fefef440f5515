"""Tests for best-parameter snapshots and the best-k keeper."""

import os

import pytest
import torch

from hf_async_mtl.async_kd.snapshots import ParameterSnapshot, SnapshotKeeper, average_snapshots


class TinyMTL(torch.nn.Module):
    """Shared encoder + two heads + a BatchNorm (so there are buffers)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(4, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 2), "b": torch.nn.Linear(8, 3)})

    def forward(self, x, task):
        return self.heads[task](self.norm(self.encoder(x)))


def encoder_and_head_a(name, tensor):
    return not name.startswith("heads.") or name.startswith("heads.a.")


def train_a_bit(model, steps=3):
    # Plain SGD by hand: torch.optim's first use costs ~1 s of lazy imports.
    model.train()
    for _ in range(steps):
        x = torch.randn(6, 4)
        loss = model(x, "a").pow(2).mean() + model(x, "b").pow(2).mean()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyMTL()


@pytest.mark.parametrize("on_disk", [False, True])
def test_restore_gives_back_exact_captured_values(model, tmp_path, on_disk):
    before = state(model)
    snap = ParameterSnapshot.capture(model, encoder_and_head_a, step=7, metric=0.8, directory=str(tmp_path) if on_disk else None)
    train_a_bit(model)
    after = state(model)
    assert not torch.equal(after["encoder.weight"], before["encoder.weight"])
    assert not torch.equal(after["norm.running_mean"], before["norm.running_mean"])

    snap.restore_into(model)
    restored = model.state_dict()
    for name in snap.names:
        assert torch.equal(restored[name], before[name]), name
    # Not selected: head b keeps its trained values.
    assert torch.equal(restored["heads.b.weight"], after["heads.b.weight"])
    assert snap.step == 7 and snap.metric == 0.8


def test_snapshot_is_independent_of_later_in_place_updates(model):
    snap = ParameterSnapshot.capture(model, lambda n, p: True, step=1, metric=0.0)
    original = snap.tensors()["encoder.weight"].clone()
    with torch.no_grad():
        model.encoder.weight.add_(1.0)
    assert torch.equal(snap.tensors()["encoder.weight"], original)


def test_disk_mode_writes_file_and_frees_memory(model, tmp_path):
    snap = ParameterSnapshot.capture(model, lambda n, p: True, step=3, metric=0.5, directory=str(tmp_path / "s"))
    assert not snap.in_memory
    assert snap.path is not None and os.path.isfile(snap.path) and snap.path.endswith(".safetensors")
    assert os.listdir(tmp_path / "s") == [os.path.basename(snap.path)]  # no temp files
    expected = sum(t.numel() * t.element_size() for t in state(model).values())
    assert snap.nbytes == expected
    assert torch.equal(snap.tensors()["heads.b.bias"], model.heads.b.bias.detach())
    other = ParameterSnapshot.capture(model, lambda n, p: True, step=3, metric=0.5, directory=str(tmp_path / "s"))
    assert other.path != snap.path
    snap.release()
    assert not os.path.exists(snap.path) and snap.released
    with pytest.raises(RuntimeError, match="released"):
        snap.tensors()
    snap.release()  # idempotent


def test_release_frees_in_memory_tensors(model):
    snap = ParameterSnapshot.capture(model, lambda n, p: True, step=1, metric=1.0)
    assert snap.in_memory
    snap.release()
    assert not snap.in_memory


def test_include_filter_keeps_only_selected(model):
    snap = ParameterSnapshot.capture(model, encoder_and_head_a, step=1, metric=0.0)
    assert set(snap.names) == {
        "encoder.weight",
        "encoder.bias",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
        "heads.a.weight",
        "heads.a.bias",
    }
    # PEFT-style: only trainable parameters (buffers never require grad) + head a.
    model.encoder.requires_grad_(False)
    peft = ParameterSnapshot.capture(
        model,
        lambda n, p: p.requires_grad and (not n.startswith("heads.") or n.startswith("heads.a.")),
        step=1,
        metric=0.0,
    )
    assert set(peft.names) == {"norm.weight", "norm.bias", "heads.a.weight", "heads.a.bias"}
    assert peft.nbytes == 4 * (8 + 8 + 16 + 2)
    with pytest.raises(ValueError, match="nothing to snapshot"):
        ParameterSnapshot.capture(model, lambda n, p: False, step=1, metric=0.0)


def test_restore_strict_and_shape_errors(model):
    snap = ParameterSnapshot.capture(model, lambda n, p: True, step=1, metric=0.0)
    smaller = torch.nn.Module()
    smaller.encoder = torch.nn.Linear(4, 8)
    with pytest.raises(KeyError, match="missing"):
        snap.restore_into(smaller)
    snap.restore_into(smaller, strict=False)
    assert torch.equal(smaller.encoder.weight, model.encoder.weight)
    wrong = torch.nn.Module()
    wrong.encoder = torch.nn.Linear(4, 5)
    with pytest.raises(ValueError, match="shape"):
        snap.restore_into(wrong, strict=False)


def test_average_snapshots_is_elementwise_mean(model):
    snaps = []
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step))
        snaps.append(ParameterSnapshot.capture(model, lambda n, p: True, step=step, metric=0.0))
    avg = average_snapshots(snaps)
    assert list(avg) == list(snaps[0].names)
    for name in ("encoder.weight", "heads.b.bias"):
        expected = torch.stack([s.tensors()[name] for s in snaps]).mean(0)
        assert torch.allclose(avg[name], expected)
    assert not torch.equal(avg["encoder.weight"], snaps[0].tensors()["encoder.weight"])
    assert avg["norm.num_batches_tracked"].dtype == torch.long  # integer buffer taken as is
    with pytest.raises(ValueError):
        average_snapshots([])


@pytest.mark.parametrize(
    "greater, metrics, kept",
    [
        (True, [0.5, 0.7, 0.6, 0.9, 0.55], [0.9, 0.7]),
        (False, [0.5, 0.7, 0.4, 0.9, 0.55], [0.4, 0.5]),
    ],
)
def test_keeper_keeps_best_k_per_direction_and_releases_evicted(model, tmp_path, greater, metrics, kept):
    keeper = SnapshotKeeper(k=2, directory=str(tmp_path))
    offered = []
    for step, metric in enumerate(metrics):
        offered.append(keeper.offer("a", model, encoder_and_head_a, step=step, metric=metric, greater_is_better=greater))
    best = keeper.best("a")
    assert [s.metric for s in best] == kept
    assert all(not s.released and os.path.isfile(s.path) for s in best)
    # Only the kept snapshots' files remain: evicted ones were released.
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.path.basename(s.path) for s in best)
    assert offered[0] and offered[1]  # the first k are always kept
    assert offered[-1] is False  # 0.55 ranks below the two best either way
    keeper.release("a")
    assert keeper.best("a") == [] and os.listdir(tmp_path / "a") == []
    assert all(s.released for s in best)


def test_keeper_k1_ties_and_tasks_are_separate(model):
    keeper = SnapshotKeeper()
    assert keeper.offer("a", model, encoder_and_head_a, step=1, metric=0.5, greater_is_better=True)
    first = keeper.best("a")[0]
    assert not keeper.offer("a", model, encoder_and_head_a, step=2, metric=0.5, greater_is_better=True)
    assert keeper.offer("b", model, lambda n, p: True, step=2, metric=0.1, greater_is_better=True)
    assert keeper.offer("a", model, encoder_and_head_a, step=3, metric=0.6, greater_is_better=True)
    assert first.released and keeper.best("a")[0].step == 3
    assert keeper.best("b")[0].step == 2
    with pytest.raises(ValueError, match="greater_is_better"):
        keeper.offer("a", model, encoder_and_head_a, step=4, metric=0.1, greater_is_better=False)
    with pytest.raises(ValueError, match="k must be"):
        SnapshotKeeper(k=0)


def test_save_copy_and_load_round_trip_without_owning_the_copy(model, tmp_path):
    snap = ParameterSnapshot.capture(model, encoder_and_head_a, step=5, metric=0.7)
    copy_path = str(tmp_path / "ckpt" / "a-0.safetensors")
    snap.save_copy(copy_path)
    assert snap.in_memory and os.listdir(tmp_path / "ckpt") == ["a-0.safetensors"]
    loaded = ParameterSnapshot.load(copy_path, step=5, metric=0.7)
    assert set(loaded.names) == set(snap.names) and loaded.nbytes == snap.nbytes  # file order may differ
    assert all(torch.equal(loaded.tensors()[n], snap.tensors()[n]) for n in snap.names)
    spilled = ParameterSnapshot.load(copy_path, step=5, metric=0.7, directory=str(tmp_path / "spill"))
    loaded.release()
    spilled.release()
    assert os.path.isfile(copy_path)  # the checkpoint's file is never deleted by a loaded snapshot
    assert os.listdir(tmp_path / "spill") == []
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        ParameterSnapshot.load(str(tmp_path / "nope.safetensors"), step=1, metric=0.0)


def test_keeper_adopt_orders_trims_and_releases(model):
    keeper = SnapshotKeeper(k=2)
    keeper.offer("a", model, encoder_and_head_a, step=1, metric=0.9, greater_is_better=False)
    old = keeper.best("a")[0]
    snaps = [ParameterSnapshot.capture(model, encoder_and_head_a, step=s, metric=m) for s, m in [(2, 0.3), (3, 0.1), (4, 0.2)]]
    keeper.adopt("a", snaps, greater_is_better=False)
    assert old.released
    assert [s.step for s in keeper.best("a")] == [3, 4]
    assert snaps[0].released and not snaps[1].released
    # Adopted snapshots compete with later offers as usual.
    assert keeper.offer("a", model, encoder_and_head_a, step=5, metric=0.15, greater_is_better=False)
    assert [s.step for s in keeper.best("a")] == [3, 5] and snaps[2].released


def test_keeper_pinned_snapshot_always_stays_and_comes_first(model):
    # The monitor's best with a minimum improvement (0.50 at step 1) need not be among the best raw values.
    keeper = SnapshotKeeper(k=2)
    assert keeper.offer("a", model, encoder_and_head_a, step=1, metric=0.50, greater_is_better=True, pin=True)
    assert keeper.offer("a", model, encoder_and_head_a, step=2, metric=0.52, greater_is_better=True)
    assert keeper.offer("a", model, encoder_and_head_a, step=3, metric=0.53, greater_is_better=True)
    assert [s.step for s in keeper.best("a")] == [1, 3] and keeper.pinned_step("a") == 1
    assert not keeper.offer("a", model, encoder_and_head_a, step=4, metric=0.51, greater_is_better=True)
    # A new pin frees the old one, which then competes on its value (and loses here).
    assert keeper.offer("a", model, encoder_and_head_a, step=5, metric=0.60, greater_is_better=True, pin=True)
    assert [s.step for s in keeper.best("a")] == [5, 3]
    # k=1: only a pinned offer replaces the pinned snapshot.
    single = SnapshotKeeper(k=1)
    single.offer("a", model, encoder_and_head_a, step=1, metric=0.5, greater_is_better=True, pin=True)
    assert not single.offer("a", model, encoder_and_head_a, step=2, metric=0.9, greater_is_better=True)
    assert [s.step for s in single.best("a")] == [1]
    # adopt (resume) keeps the pinned step too.
    snaps = [ParameterSnapshot.capture(model, encoder_and_head_a, step=s, metric=m) for s, m in [(1, 0.5), (2, 0.52), (3, 0.53)]]
    keeper.adopt("a", snaps, greater_is_better=True, pinned_step=1)
    assert [s.step for s in keeper.best("a")] == [1, 3] and snaps[1].released and keeper.pinned_step("a") == 1


def test_tasks_with_a_best_at_the_same_step_share_the_encoder_copy():
    import torch
    from torch import nn

    from hf_async_mtl.async_kd.snapshots import SnapshotKeeper

    model = nn.ModuleDict({"encoder": nn.Linear(8, 8), "heads": nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 1)})})

    def include(task):
        return lambda name, tensor: name.startswith("encoder.") or name.startswith(f"heads.{task}.")

    keeper = SnapshotKeeper(k=1)
    keeper.offer("a", model, include("a"), step=10, metric=0.5, greater_is_better=True)
    keeper.offer("b", model, include("b"), step=10, metric=0.7, greater_is_better=True)
    a, b = keeper.best("a")[0].tensors(), keeper.best("b")[0].tensors()
    assert a["encoder.weight"].data_ptr() == b["encoder.weight"].data_ptr()
    assert "heads.a.weight" in a and "heads.a.weight" not in b and "heads.b.weight" in b
    expected = model["encoder"].weight.detach().clone()
    with torch.no_grad():
        model["encoder"].weight.add_(1.0)
    keeper.offer("a", model, include("a"), step=20, metric=0.9, greater_is_better=True)  # evicts a's step-10 copy
    assert torch.equal(keeper.best("b")[0].tensors()["encoder.weight"], expected)
    assert keeper.best("a")[0].tensors()["encoder.weight"].data_ptr() != b["encoder.weight"].data_ptr()
