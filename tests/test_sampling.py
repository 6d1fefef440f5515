"""Tests for hf_async_mtl.sampling (pure numpy/torch, no model)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from hf_async_mtl.sampling import (
    COMPOSITIONS,
    SAMPLING_STRATEGIES,
    MultiTaskBatchSampler,
    batch_padding_fraction,
)

SIZES = {"a": 100, "b": 300, "c": 600}


def task_of(index: int, sampler: MultiTaskBatchSampler) -> str:
    """Task owning a global index: the last task whose offset is <= index."""
    assert index >= 0
    return [name for name, offset in sampler.offsets.items() if offset <= index][-1]


def frequencies(schedule: list[str], names) -> np.ndarray:
    counts = Counter(schedule)
    return np.array([counts[n] / len(schedule) for n in names])


def test_exported_names():
    assert set(SAMPLING_STRATEGIES) == {"proportional", "temperature", "uniform", "round_robin", "annealed"}
    assert set(COMPOSITIONS) == {"one_task", "all_tasks"}


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("proportional", np.array([100, 300, 600]) / 1000),
        ("uniform", np.full(3, 1 / 3)),
        ("temperature", np.sqrt([100, 300, 600]) / np.sqrt([100, 300, 600]).sum()),
    ],
)
def test_random_strategies_match_formula(strategy, expected):
    sampler = MultiTaskBatchSampler(SIZES, 4, strategy=strategy, temperature=2.0, num_batches=20000)
    assert np.allclose(list(sampler.task_probabilities(0).values()), expected)
    # 20000 draws: standard error <= 0.0036, so 0.02 is > 5 sigma yet catches any wrong formula.
    assert np.allclose(frequencies(sampler.task_schedule(), "abc"), expected, atol=0.02)


def test_temperature_formula_other_temperature():
    sampler = MultiTaskBatchSampler(SIZES, 4, strategy="temperature", temperature=4.0)
    w = np.array([100, 300, 600]) ** 0.25
    assert np.allclose(list(sampler.task_probabilities(7).values()), w / w.sum())
    t1 = MultiTaskBatchSampler(SIZES, 4, strategy="temperature", temperature=1.0)
    assert np.allclose(list(t1.task_probabilities(0).values()), [0.1, 0.3, 0.6])


def test_round_robin_is_exact_cycle():
    sampler = MultiTaskBatchSampler(SIZES, 4, strategy="round_robin", num_batches=10)
    assert sampler.task_schedule() == list("abcabcabca")
    batches = list(sampler)
    assert [task_of(b[0], sampler) for b in batches] == list("abcabcabca")
    assert all(len({task_of(i, sampler) for i in b}) == 1 for b in batches)


def test_annealed_goes_from_proportional_to_uniform():
    sampler = MultiTaskBatchSampler(SIZES, 4, strategy="annealed", num_batches=101)
    assert np.allclose(list(sampler.task_probabilities(0).values()), [0.1, 0.3, 0.6])
    assert np.allclose(list(sampler.task_probabilities(100).values()), np.full(3, 1 / 3))
    mid = np.sqrt([100, 300, 600])
    assert np.allclose(list(sampler.task_probabilities(50).values()), mid / mid.sum())
    # The schedule follows it: the small task "a" is drawn more in the last third than the first.
    schedule = MultiTaskBatchSampler(SIZES, 4, strategy="annealed", num_batches=30000).task_schedule()
    assert schedule[20000:].count("a") > 1.5 * schedule[:10000].count("a")


def test_default_num_batches_and_batch_contents():
    sampler = MultiTaskBatchSampler(SIZES, 8)
    assert len(sampler) == 125  # ceil(1000 / 8)
    batches = list(sampler)
    assert len(batches) == 125
    assert all(len(b) == 8 and len({task_of(i, sampler) for i in b}) == 1 for b in batches)
    assert len(MultiTaskBatchSampler(SIZES, 8, world_size=2)) == 63
    assert len(MultiTaskBatchSampler(SIZES, 8, composition="all_tasks")) == 75  # ceil(600 / 8)


def test_determinism_seed_and_epoch():
    first = list(MultiTaskBatchSampler(SIZES, 4, seed=3))
    assert first == list(MultiTaskBatchSampler(SIZES, 4, seed=3))
    assert first != list(MultiTaskBatchSampler(SIZES, 4, seed=4))
    sampler = MultiTaskBatchSampler(SIZES, 4, seed=3)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != first
    schedule1 = sampler.task_schedule()
    sampler.set_epoch(0)
    assert list(sampler) == first  # epoch fully determines the order (schedule cache refreshed)
    assert sampler.task_schedule() != schedule1  # the task order, not only the examples, changes


def test_resume_by_skipping_batches():
    for kwargs in ({}, {"strategy": "annealed"}, {"composition": "all_tasks"}):
        full = MultiTaskBatchSampler(SIZES, 4, seed=1, **kwargs)
        full.set_epoch(2)
        reference = list(full)
        for k in (0, 1, 37, len(reference) - 1):
            fresh = MultiTaskBatchSampler(SIZES, 4, seed=1, **kwargs)
            fresh.set_epoch(2)
            assert list(itertools.islice(fresh, k, None)) == reference[k:]


def test_state_dict_round_trip_and_mismatch():
    sampler = MultiTaskBatchSampler(SIZES, 4, seed=5)
    sampler.set_epoch(3)
    state = sampler.state_dict()
    assert state["epoch"] == 3
    restored = MultiTaskBatchSampler(SIZES, 4, seed=5)
    restored.load_state_dict(state)
    assert restored.epoch == 3 and list(restored) == list(sampler)
    for other in (
        MultiTaskBatchSampler(SIZES, 4, seed=6),
        MultiTaskBatchSampler(SIZES, 8, seed=5),
        MultiTaskBatchSampler({**SIZES, "c": 601}, 4, seed=5),
        MultiTaskBatchSampler(SIZES, 4, seed=5, strategy="uniform"),
    ):
        with pytest.raises(ValueError, match="does not match"):
            other.load_state_dict(state)
    # Rank is not part of the state: every rank loads rank 0's checkpoint.
    MultiTaskBatchSampler(SIZES, 4, seed=5, rank=1, world_size=2).load_state_dict(
        MultiTaskBatchSampler(SIZES, 4, seed=5, rank=0, world_size=2).state_dict()
    )


def stream_of(task: str, per_rank_batches: list[list[list[int]]], sampler) -> list[int]:
    """Task's global-batch stream: per step, rank 0's slice then rank 1's slice..."""
    out: list[int] = []
    for step in zip(*per_rank_batches):
        if task_of(step[0][0], sampler) == task:
            for rank_batch in step:
                out.extend(rank_batch)
    return out


@pytest.mark.parametrize("sizes", [{"x": 37, "y": 64}, {"x": 37, "a": 100}])
def test_sharding_two_ranks(sizes):
    # round_robin with 40 steps guarantees >= 20 global batches (160 examples) of each task.
    samplers = [MultiTaskBatchSampler(sizes, 4, seed=2, rank=r, world_size=2, strategy="round_robin", num_batches=40) for r in range(2)]
    runs = [list(s) for s in samplers]
    assert len(runs[0]) == len(runs[1]) == len(samplers[0])
    for b0, b1 in zip(*runs):
        assert len(b0) == len(b1) == 4
        assert task_of(b0[0], samplers[0]) == task_of(b1[0], samplers[0])  # same task on both ranks
        assert len(set(b0) | set(b1)) == 8  # disjoint examples, no repeats even across permutations
    for name, n in sizes.items():
        offset = samplers[0].offsets[name]
        stream = stream_of(name, runs, samplers[0])
        assert len(stream) == 20 * 8
        # 37 is not a multiple of the global batch 8: each permutation still occupies exactly n slots.
        for start in range(0, len(stream) - n + 1, n):  # every complete permutation in the stream
            assert Counter(stream[start : start + n]) == Counter(range(offset, offset + n))
        if n == 37:
            assert stream[:n] != stream[n : 2 * n]  # reshuffled between permutations


def test_sharding_small_task_smaller_than_global_batch():
    sampler = MultiTaskBatchSampler({"t": 3}, 4, num_batches=6)
    stream = [i for b in sampler for i in b]
    assert len(stream) == 24
    for start in range(0, 24, 3):
        assert sorted(stream[start : start + 3]) == [0, 1, 2]


def test_tasks_smaller_than_a_global_batch_are_warned_about_once(caplog):
    with caplog.at_level("WARNING", logger="hf_async_mtl.sampling"):
        MultiTaskBatchSampler({"big": 100, "tiny": 5}, 4, world_size=2, rank=0)
        MultiTaskBatchSampler({"big": 100, "tiny": 5}, 4, world_size=2, rank=1)  # only the main process warns
        MultiTaskBatchSampler({"big": 100, "tiny": 8}, 4, world_size=2)  # one global batch exactly: no repeats
    assert caplog.text.count("fewer training examples than one global batch") == 1
    assert "(8 = 4 per process × 2 processes): tiny (5)" in caplog.text and "across processes" in caplog.text


def test_caps_fixed_subset_independent_of_epoch():
    # round_robin: 20 steps of "b" x 5 = 100 draws = 5 full passes over its 20 kept examples.
    kwargs = dict(max_examples_per_task={"b": 20}, strategy="round_robin", num_batches=60)
    sampler = MultiTaskBatchSampler(SIZES, 5, seed=9, **kwargs)
    assert sampler.effective_sizes == {"a": 100, "b": 20, "c": 600}
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen.append({i for b in sampler for i in b if task_of(i, sampler) == "b"})
    assert len(seen[0]) == 20 and seen[0] == seen[1] == seen[2]
    assert seen[0] <= set(range(100, 400))
    other = MultiTaskBatchSampler(SIZES, 5, seed=10, **kwargs)
    assert {i for b in other for i in b if task_of(i, other) == "b"} != seen[0]
    # An int caps every task; a cap above the size keeps the whole task.
    assert MultiTaskBatchSampler(SIZES, 5, max_examples_per_task=200).effective_sizes == {"a": 100, "b": 200, "c": 200}


def test_caps_change_probabilities():
    sampler = MultiTaskBatchSampler(SIZES, 4, max_examples_per_task={"c": 100})
    assert np.allclose(list(sampler.task_probabilities(0).values()), [0.2, 0.6, 0.2])
    assert len(sampler) == 125  # ceil(500 / 4)


def test_all_tasks_composition():
    sampler = MultiTaskBatchSampler(SIZES, 4, composition="all_tasks", strategy="uniform", num_batches=30)
    assert sampler.task_schedule() == [("a", "b", "c")] * 30
    for batch in sampler:
        assert len(batch) == 12
        assert [task_of(i, sampler) for i in batch] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    # The strategy is irrelevant: per-task streams decide everything.
    other = MultiTaskBatchSampler(SIZES, 4, composition="all_tasks", strategy="proportional", num_batches=30)
    assert list(other) == list(sampler)


def test_length_grouping_reduces_padding_and_uses_each_example_once():
    rng = np.random.default_rng(0)
    sizes = {"p": 2000, "q": 1200}
    lengths = {name: rng.integers(1, 513, size=n).tolist() for name, n in sizes.items()}
    global_lengths = lengths["p"] + lengths["q"]
    # 600 steps of 16 examples: ~6000 draws of "p", ~3600 of "q", i.e. >= 2 permutations each.
    kwargs = dict(seed=1, world_size=2, num_batches=600)
    plain = [list(MultiTaskBatchSampler(sizes, 8, rank=r, **kwargs)) for r in range(2)]
    grouped_samplers = [MultiTaskBatchSampler(sizes, 8, rank=r, lengths=lengths, **kwargs) for r in range(2)]
    grouped = [list(s) for s in grouped_samplers]
    plain_pad = batch_padding_fraction(plain[0] + plain[1], global_lengths)
    grouped_pad = batch_padding_fraction(grouped[0] + grouped[1], global_lengths)
    assert plain_pad > 0.3
    assert grouped_pad < 0.25 * plain_pad
    offsets = grouped_samplers[0].offsets
    for name, n in sizes.items():
        stream = [i for step in zip(*grouped) if task_of(step[0][0], grouped_samplers[0]) == name for b in step for i in b]
        assert len(stream) >= 2 * n
        for perm in range(2):  # two successive permutations, each example exactly once in each
            assert Counter(stream[perm * n : (perm + 1) * n]) == Counter(range(offsets[name], offsets[name] + n))
    # Batch order is still shuffled: within a sorted mega-chunk (50 batches) the longest length
    # would only decrease; shuffled, about half of the consecutive global batches get longer.
    p_batches = [b0 + b1 for b0, b1 in zip(*grouped) if task_of(b0[0], grouped_samplers[0]) == "p"]
    maxima = [max(global_lengths[i] for i in b) for b in p_batches[: 2000 // 16]]
    assert np.mean(np.diff(maxima) > 0) > 0.3


def test_batch_padding_fraction():
    assert batch_padding_fraction([[0, 1], [2]], [1, 3, 5]) == pytest.approx((6 + 5 - 9) / 11)
    assert batch_padding_fraction([[0, 1]], [4, 4]) == 0.0
    assert batch_padding_fraction([], [1]) == 0.0


def test_works_as_dataloader_batch_sampler():
    sampler = MultiTaskBatchSampler({"a": 10, "b": 6}, 3, seed=4)
    data = torch.arange(16)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    assert len(loader) == len(sampler) == 6
    assert [t.tolist() for t in loader] == list(sampler)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "greedy"}, "unknown sampling strategy 'greedy'; known: proportional"),
        ({"composition": "mixed"}, "unknown composition 'mixed'; known: one_task, all_tasks"),
        ({"task_sizes": {}}, "at least one task"),
        ({"task_sizes": {"a": 0}}, "task size of 'a'"),
        ({"task_sizes": {"a": -3}}, "task size of 'a'"),
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"rank": 2, "world_size": 2}, r"rank must be an integer in \[0, world_size=2\)"),
        ({"rank": -1}, "rank"),
        ({"world_size": 0}, "world_size"),
        ({"num_batches": 0}, "num_batches"),
        ({"lengths": {"a": [1] * 10}}, "lengths is missing task 'b'"),
        ({"lengths": {"a": [1] * 10, "b": [1] * 5}}, r"lengths\['b'\] must have 6 entries"),
        ({"lengths": {"a": [1] * 10, "b": [1] * 6, "z": [1]}}, "unknown tasks"),
        ({"max_examples_per_task": 0}, "max_examples_per_task"),
        ({"max_examples_per_task": {"a": 0}}, r"max_examples_per_task\['a'\]"),
        ({"max_examples_per_task": {"zz": 3}}, "unknown tasks \\['zz'\\]"),
    ],
)
def test_validation_errors(kwargs, message):
    args = {"task_sizes": {"a": 10, "b": 6}, "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiTaskBatchSampler(args.pop("task_sizes"), args.pop("batch_size"), **args)


def test_load_state_dict_requires_epoch():
    sampler = MultiTaskBatchSampler({"a": 10}, 2)
    state = sampler.state_dict()
    del state["epoch"]
    with pytest.raises(ValueError, match="epoch"):
        sampler.load_state_dict(state)


@pytest.mark.parametrize("lengths", [False, True])
def test_streams_by_name_give_a_task_the_same_batches_alone_and_beside_other_tasks(lengths):
    sizes = {"cola": 50, "sst2": 200, "rte": 37}
    rng = np.random.default_rng(0)
    lengths_of = {name: rng.integers(3, 60, size=n).tolist() for name, n in sizes.items()}

    def rte_batches(task_sizes, task_streams):
        sampler = MultiTaskBatchSampler(
            task_sizes,
            4,
            strategy="round_robin",
            num_batches=12 * len(task_sizes),
            lengths={t: lengths_of[t] for t in task_sizes} if lengths else None,
            seed=3,
            task_streams=task_streams,
        )
        offset = sampler.offsets["rte"]
        return [[i - offset for i in batch] for batch in sampler if task_of(batch[0], sampler) == "rte"]

    alone = rte_batches({"rte": 37}, "by_name")
    assert len(alone) == 12 and alone == rte_batches(sizes, "by_name")
    # By position (the default) the stream depends on where the task stands among the others.
    assert rte_batches(sizes, "by_position") != rte_batches({"rte": 37}, "by_position")
    with pytest.raises(ValueError, match="unknown task_streams"):
        MultiTaskBatchSampler(sizes, 4, task_streams="by_order")
