"""The one data path: task sources → `build_task_datasets` → tokenised train / selection / dev sets."""

from __future__ import annotations

import pytest

from hf_async_mtl import TaskDataSource, TaskSpec, TextOfTask, build_task_datasets, cap_dataset, carve_validation_split
from tests.conftest import SENTIMENT, sentiment_rows


class InMemorySource(TaskDataSource):
    """A source over fixed datasets, counting how often each split is read."""

    def __init__(self, splits):
        self.splits, self.reads = splits, []

    def _load(self, split):
        self.reads.append(split)
        return self.splits[split]


def _source(n=60):
    return InMemorySource({"train": sentiment_rows(n, 1), "validation": sentiment_rows(20, 2)})


def test_caps_then_carves_with_the_seed_and_tokenises_every_split(tokenizer):
    source = _source()
    data = build_task_datasets([(SENTIMENT, source)], tokenizer, 32, default_cap=40, seed=3, selection_fraction=0.25, selection_max=None)
    expected_pool, expected_held = carve_validation_split(cap_dataset(source.load("train"), 40, 3), 0.25, None, 3)
    assert data.train["sentiment"]["idx"] == expected_pool["idx"] and data.selection["sentiment"]["idx"] == expected_held["idx"]
    assert data.train_sizes == {"sentiment": 30} and len(data.selection["sentiment"]) == 10
    assert len(data.dev["sentiment"]["validation"]) == 20 and "input_ids" in data.train["sentiment"].column_names
    assert set(data.train["sentiment"]["task_ids"]) == {0}


def test_carve_before_cap_holds_out_from_the_full_set(tokenizer):
    source = _source()
    data = build_task_datasets(
        [(SENTIMENT, source)],
        tokenizer,
        32,
        caps={"sentiment": 20},
        seed=3,
        selection_fraction=0.25,
        selection_max=None,
        carve_before_cap=True,
    )
    _, held = carve_validation_split(source.load("train"), 0.25, None, 3)
    assert data.selection["sentiment"]["idx"] == held["idx"] and data.train_sizes["sentiment"] == 20
    assert not set(data.train["sentiment"]["idx"]) & set(held["idx"])  # never trained on what selection reads


def test_a_derived_source_shares_its_tasks_cap_and_selection_split_and_reads_it_once(tokenizer):
    base = _source()
    mlm = TaskSpec(name="mlm_sentiment", text_fields=("sentence",), objective="mlm")
    data = build_task_datasets(
        [(SENTIMENT, base), (mlm, TextOfTask("sentiment", base, ("sentence",)))],
        tokenizer,
        32,
        caps={"sentiment": 40},
        seed=5,
        selection_fraction=0.25,
    )
    assert data.train["mlm_sentiment"]["idx"] == data.train["sentiment"]["idx"]  # same rows: no held-out text trained on
    assert set(data.train["mlm_sentiment"]["task_ids"]) == {1} and "labels" not in data.train["mlm_sentiment"].column_names
    assert base.reads == ["train", "validation"]


def test_bad_data_of_any_task_is_reported_before_anything_is_tokenised(tokenizer, monkeypatch):
    import hf_async_mtl.data as data_module

    bad = InMemorySource({"train": sentiment_rows(10, 1).map(lambda row: {"label": 7}), "validation": sentiment_rows(4, 2)})
    tokenised = []
    monkeypatch.setattr(data_module, "tokenize_task", lambda *args, **kwargs: tokenised.append(args[0].name))
    other = TaskSpec(name="other", text_fields=("sentence",), label_names=("neg", "pos"))
    with pytest.raises(ValueError, match="label"):
        build_task_datasets([(other, _source()), (SENTIMENT, bad)], tokenizer, 32)
    assert tokenised == []


def test_no_selection_split_when_the_fraction_is_zero(tokenizer):
    data = build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, selection_fraction=0.0)
    assert data.selection == {} and data.train_sizes["sentiment"] == 60


def test_each_tasks_selection_split_is_recorded_so_it_can_be_carved_again_and_checked(tokenizer):
    from hf_async_mtl.data import rows_fingerprint

    source = _source()
    options = dict(caps={"sentiment": 40}, seed=3, selection_fraction=0.25, selection_max=None)
    data = build_task_datasets([(SENTIMENT, source)], tokenizer, 32, **options)
    record = data.selection_records["sentiment"]
    _, held = carve_validation_split(cap_dataset(source.load("train"), 40, 3), 0.25, None, 3)
    assert record == {
        "seed": 3,
        "selection_fraction": 0.25,
        "selection_max": None,
        "cap": 40,
        "carve_before_cap": False,
        "subsample": "cap_dataset",
        "max_seq_length": 32,
        "selection_size": 10,
        "selection_rows_sha256": rows_fingerprint(held, ["sentence", "label", "idx"]),
    }
    # The same options carve the same rows again; another seed, other rows.
    assert build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, **options).selection_records["sentiment"] == record
    other = build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, **{**options, "seed": 4}).selection_records["sentiment"]
    assert other["selection_rows_sha256"] != record["selection_rows_sha256"]
    none = build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, selection_fraction=0.0).selection_records["sentiment"]
    assert none["selection_size"] == 0 and none["selection_rows_sha256"] is None


def test_the_tokenising_map_is_fingerprinted_by_what_its_result_depends_on(tokenizer):
    import dataclasses

    from transformers import AutoTokenizer

    from hf_async_mtl.encoding import encoding_fingerprint, tokenize_task

    rows = sentiment_rows(12, 3)
    first = tokenize_task(SENTIMENT, rows, tokenizer, 0, 32)
    assert first._fingerprint == encoding_fingerprint(rows, tokenizer, "plain", SENTIMENT, 0, 32)
    assert tokenize_task(SENTIMENT, rows, tokenizer, 0, 32)._fingerprint == first._fingerprint  # deterministic: the cache hits
    # Anything that changes the result changes the fingerprint: the input rows, the length, the task id, the task, the
    # tokenizer's definition (an added token) and its settings.
    grown = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    grown.add_tokens(["zzyzx"])
    left = AutoTokenizer.from_pretrained(tokenizer.name_or_path, truncation_side="left")
    others = {
        encoding_fingerprint(sentiment_rows(12, 4), tokenizer, "plain", SENTIMENT, 0, 32),
        encoding_fingerprint(rows, tokenizer, "plain", SENTIMENT, 0, 16),
        encoding_fingerprint(rows, tokenizer, "plain", SENTIMENT, 1, 32),
        encoding_fingerprint(rows, tokenizer, "plain", dataclasses.replace(SENTIMENT, label_names=("no", "yes")), 0, 32),
        encoding_fingerprint(rows, grown, "plain", SENTIMENT, 0, 32),
        encoding_fingerprint(rows, left, "plain", SENTIMENT, 0, 32),
    }
    assert len(others) == 6 and first._fingerprint not in others
    # The same tokens as a plain map.
    default = rows.map(lambda b: dict(tokenizer(b["sentence"], truncation=True, max_length=32)), batched=True)
    assert list(first["input_ids"]) == list(default["input_ids"])


def test_an_in_order_cap_carved_after_the_selection_split_is_rebuilt_from_its_record(tokenizer):
    """`--cap_subset in_order --carve_before_cap` (the #42 regime benchmarks' data): its record names the function,
    and a merge rebuilds the same selection split and pool from it."""
    from hf_async_mtl.data import CAP_SUBSETS, subset_in_order
    from hf_async_mtl.merging.selection import _build

    options = dict(caps={"sentiment": 30}, seed=7, selection_fraction=0.25, selection_max=None, carve_before_cap=True)
    data = build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, subsample=subset_in_order, **options)
    record = data.selection_records["sentiment"]
    assert record["subsample"] == "subset_in_order" and record["carve_before_cap"] and record["selection_size"] == 15  # 25 % of 60
    pool = subset_in_order(carve_validation_split(_source().load("train"), 0.25, None, 7)[0], 30, 7)
    assert pool["idx"] == sorted(pool["idx"]) and data.train_sizes["sentiment"] == 30  # kept in file order
    assert data.train["sentiment"]["idx"] == pool["idx"]
    rebuilt = _build(SENTIMENT, _source(), tokenizer, record, with_dev=False, eval_cap=None)
    assert rebuilt.selection_records["sentiment"] == record and rebuilt.train["sentiment"]["idx"] == pool["idx"]
    shuffled = build_task_datasets([(SENTIMENT, _source())], tokenizer, 32, subsample=CAP_SUBSETS["shuffled"], **options)
    assert shuffled.train["sentiment"]["idx"] != pool["idx"]  # the other choice keeps other rows (or another order)
