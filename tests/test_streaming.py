"""Streamed tasks (hf_async_mtl.streaming): read as drawn, held-out first rows, exact resume, online teacher."""

from __future__ import annotations

import json
import os

import pytest
import torch

from hf_async_mtl import MultiTaskTrainer
from hf_async_mtl.data import build_task_datasets
from hf_async_mtl.errors import InputError
from hf_async_mtl.sampling import MultiTaskBatchSampler
from hf_async_mtl.sources import DatasetsSource, TaskSource
from hf_async_mtl.streaming import StreamingSource
from tests.conftest import TASKS, make_model, sentiment_rows, similarity_rows
from tests.test_trainer import _losses_by_step, make_args

SENTIMENT, SIMILARITY = TASKS


def _write_jsonl(path, dataset, label_names=None):
    with open(path, "w", encoding="utf-8") as handle:
        for row in dataset:
            row = {k: v for k, v in row.items() if k != "idx"}
            if label_names is not None:
                row["label"] = label_names[row["label"]]
            handle.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {
        "sentiment": _write_jsonl(root / "sentiment.jsonl", sentiment_rows(230, 11), SENTIMENT.label_names),
        "sentiment_dev": _write_jsonl(root / "sentiment_dev.jsonl", sentiment_rows(24, 12), SENTIMENT.label_names),
        "similarity": _write_jsonl(root / "similarity.jsonl", similarity_rows(90, 13)),
        "similarity_dev": _write_jsonl(root / "similarity_dev.jsonl", similarity_rows(24, 14)),
        "root": root,
    }


def _sources(files, block_size=64, num_rows=None, streamed=True):
    sentiment = TaskSource(data_files={"train": files["sentiment"], "validation": files["sentiment_dev"]})
    similarity = TaskSource(data_files={"train": files["similarity"], "validation": files["similarity_dev"]})
    first = (
        StreamingSource(SENTIMENT, sentiment, block_size=block_size, num_rows=num_rows)
        if streamed
        else DatasetsSource(SENTIMENT, sentiment)
    )
    return [(SENTIMENT, first), (SIMILARITY, DatasetsSource(SIMILARITY, similarity))]


def _build(files, tokenizer, **kwargs):
    options = dict(max_seq_length=32, selection_fraction=0.1, selection_max=20, seed=5)
    options.update(kwargs)
    return build_task_datasets(
        _sources(files, **{k: options.pop(k) for k in ("block_size", "num_rows") if k in options}), tokenizer, **options
    )


def test_the_first_rows_are_held_out_and_every_other_row_streams_once_per_pass_in_block_shuffled_order(files, tokenizer):
    data = _build(files, tokenizer)
    assert data.selection["sentiment"]["idx"] == list(range(20))  # the first rows of the file, never trained on
    assert data.selection_records["sentiment"]["selection_size"] == 20 and data.train_sizes["sentiment"] is None
    stream = data.train["sentiment"]
    first_pass = [row["example_ids"] for row in stream.features(range(210))]
    assert first_pass == list(range(210))
    raw = [stream._materialise(stream._block_of(p)).slice(p - stream._block_of(p).record.start, 1)["idx"][0].as_py() for p in range(210)]
    assert sorted(raw) == list(range(20, 230))  # each training row once, none of the held-out ones
    assert raw[:64] != list(range(20, 84)) and sorted(raw[:64]) == list(range(20, 84))  # shuffled inside its block
    second = [
        stream._materialise(stream._block_of(p)).slice(p - stream._block_of(p).record.start, 1)["idx"][0].as_py() for p in range(210, 420)
    ]
    assert sorted(second) == list(range(20, 230)) and second != raw  # the next pass, in another order
    # Features are the map-style tokenisation of the same rows.
    mapped = _build(files, tokenizer)  # a fresh stream object reads the same
    assert mapped.train["sentiment"].features([5, 70, 300]) == stream.features([5, 70, 300])


def test_a_stream_seeks_back_and_resumes_from_its_recorded_block_starts(files, tokenizer):
    stream = _build(files, tokenizer).train["sentiment"]
    reference = stream.features(range(140, 150))
    state = json.loads(json.dumps(stream.state_dict()))
    fresh = _build(files, tokenizer).train["sentiment"]
    fresh.load_state_dict(state)
    read_before = fresh.rows_read
    assert fresh.features(range(140, 150)) == reference
    assert fresh.rows_read - read_before == 64  # reopened at the block of position 140 (128..191), not from the start
    assert stream.features(range(3)) == fresh.features(range(3))  # back to the start
    with pytest.raises(ValueError, match="block_size"):
        _build(files, tokenizer, block_size=32).train["sentiment"].load_state_dict(state)


@pytest.mark.parametrize("global_batch", [4, 6])  # 6: batches straddle the 64-row blocks
def test_length_grouping_sorts_whole_batches_inside_each_block_and_keeps_its_rows(files, tokenizer, global_batch):
    plain = _build(files, tokenizer).train["sentiment"]
    grouped = _build(files, tokenizer).train["sentiment"]
    grouped.group_by_length(global_batch, 16)  # mega-chunks of a whole block
    positions = range(0, 2 * 210)  # two passes
    rows_plain, rows_grouped = plain.features(positions), grouped.features(positions)

    def block_rows(rows, start, size):
        return sorted(tuple(r["input_ids"]) for r in rows[start : start + size])

    blocks = [(p + s, min(64, 210 - s)) for p in (0, 210) for s in range(0, 210, 64)]  # 210 training rows per pass
    for start, size in blocks:  # each block holds the same rows, in another order
        assert block_rows(rows_grouped, start, size) == block_rows(rows_plain, start, size)
    assert rows_grouped != rows_plain

    def padding(rows):
        batches = [rows[j : j + global_batch] for j in range(0, len(rows) - global_batch + 1, global_batch)]
        longest = sum(max(len(r["input_ids"]) for r in b) * len(b) for b in batches)
        return 1 - sum(len(r["input_ids"]) for b in batches for r in b) / longest

    assert padding(rows_grouped) < 0.5 * padding(rows_plain)
    again = _build(files, tokenizer).train["sentiment"]  # the same order on another process / after a restart
    again.group_by_length(global_batch, 16)
    assert again.features(range(300, 320)) == grouped.features(range(300, 320))
    with pytest.raises(ValueError, match="must be >= 1"):
        again.group_by_length(0, 2)


def test_a_grouped_block_is_read_and_tokenised_once(files, tokenizer):
    stream = _build(files, tokenizer).train["sentiment"]  # the build checked (read and converted) the first block
    calls: list[int] = []
    encode = stream._encode
    stream._encode = lambda batch: calls.append(len(batch["label"])) or encode(batch)
    read = stream.rows_read
    stream.group_by_length(4, 16)
    rows = stream.features(range(0, 64))
    assert stream.rows_read == read  # the checked first block is ordered again, not read again
    stream.features(range(64, 128))
    assert calls == [64, 64]  # each block encoded once, whole: its lengths order it and its rows feed the batches
    plain = _build(files, tokenizer).train["sentiment"]
    by_row = {tuple(r["input_ids"]): r for r in plain.features(range(0, 64))}
    for row in rows:  # the same encodings (and labels) as the ungrouped path's per-batch tokenisation
        assert {k: v for k, v in row.items() if k != "example_ids"} == {
            k: v for k, v in by_row[tuple(row["input_ids"])].items() if k != "example_ids"
        }


def test_bad_rows_fail_with_the_file_and_row_in_the_first_block_at_build_and_later_when_drawn(files, tokenizer, tmp_path):
    rows = [json.loads(line) for line in open(files["sentiment"], encoding="utf-8")]
    for where, expected_when in ((40, "build"), (200, "drawn")):
        broken = [dict(r) for r in rows]
        broken[where]["label"] = "maybe"
        path = tmp_path / f"broken{where}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in broken))
        source = StreamingSource(
            SENTIMENT, TaskSource(data_files={"train": str(path), "validation": files["sentiment_dev"]}), block_size=64
        )
        tasks = [(SENTIMENT, source)]
        if expected_when == "build":
            with pytest.raises(ValueError, match=r"broken40.jsonl.*row 40 \(0-based\).*'maybe'"):
                build_task_datasets(tasks, tokenizer, max_seq_length=32, selection_max=20)
        else:
            stream = build_task_datasets(tasks, tokenizer, max_seq_length=32, selection_max=20).train["sentiment"]
            with pytest.raises(InputError, match=r"broken200.jsonl.*row 200 \(0-based\).*'maybe'"):  # bad input: one line
                stream.features(range(210))


def test_a_streamed_csv_that_cannot_be_read_fails_in_one_line_wherever_the_row_is(tokenizer, tmp_path):
    """A row with a field too many, read while holding out the selection rows or in a later block, is an `InputError`
    naming the file (it was pandas' raw error, or a ValueError that became a traceback once training ran); a stray
    delimiter in the first row is refused as a file read whole refuses it (streamed, it cut the text silently)."""
    # datasets reads a CSV in chunks of 10,000 rows: a bad row after the first chunk is read only when training gets there.
    rows = ["sentence,label"] + [f"review {i} {'good' if i % 2 else 'bad'},{'positive' if i % 2 else 'negative'}" for i in range(10_200)]
    dev = tmp_path / "dev.csv"
    dev.write_text("\n".join(rows[:11]) + "\n")

    def build(lines, name):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        source = StreamingSource(SENTIMENT, TaskSource(data_files={"train": str(path), "validation": str(dev)}), block_size=64)
        return build_task_datasets([(SENTIMENT, source)], tokenizer, max_seq_length=32, selection_max=20)

    held_out = rows[:8] + [rows[8] + ",extra"] + rows[9:]
    with pytest.raises(InputError, match=r"held_out\.csv.*cannot read the 20 rows held out for selection: .*Expected 2 fields"):
        build(held_out, "held_out.csv")
    first = [rows[0], "Great, really,positive"] + rows[2:]
    with pytest.raises(InputError, match=r"first\.csv.*more fields than the header"):
        build(first, "first.csv")
    later = rows[:10_100] + [rows[10_100] + ",extra"] + rows[10_101:]
    stream = build(later, "later.csv").train["sentiment"]
    with pytest.raises(InputError, match=r"later\.csv.*cannot read the rows from row \d+: .*Expected 2 fields"):
        stream.features(range(len(rows) - 21))


def test_the_sampler_gives_a_stream_consecutive_positions_split_across_processes(files, tokenizer):
    sizes = {"sentiment": None, "similarity": 81}
    whole = MultiTaskBatchSampler(sizes, 4, strategy="round_robin", num_batches=6, streamed=["sentiment"], world_size=2, rank=0)
    other = MultiTaskBatchSampler(sizes, 4, strategy="round_robin", num_batches=6, streamed=["sentiment"], world_size=2, rank=1)
    streamed = [b for b in whole if b[0] < whole.offsets["similarity"]]
    assert streamed == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    assert [b for b in other if b[0] < other.offsets["similarity"]] == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]
    with pytest.raises(ValueError, match="proportional sampling weighs tasks by size.*declare num_rows"):
        MultiTaskBatchSampler(sizes, 4, strategy="proportional", num_batches=6, streamed=["sentiment"])
    with pytest.raises(ValueError, match="no end: give num_batches"):
        MultiTaskBatchSampler(sizes, 4, strategy="uniform", streamed=["sentiment"])
    sized = MultiTaskBatchSampler({"sentiment": 1000, "similarity": 81}, 4, strategy="proportional", num_batches=6, streamed=["sentiment"])
    assert sized.task_probabilities(0)["sentiment"] == pytest.approx(1000 / 1081)


def _trainer(tmp_path, tokenizer, data, out, **overrides):
    args = dict(max_steps=8, sampling_strategy="round_robin", logging_steps=1, save_strategy="steps", save_steps=4, learning_rate=1e-3)
    args.update(overrides)
    model = make_model(tokenizer, seed=3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return MultiTaskTrainer(
        model=model,
        args=make_args(tmp_path / out, **args),
        task_specs=TASKS,
        train_dataset=data.train,
        eval_dataset=data.selection,
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("length_aware_batching", [False, True])
def test_a_run_with_a_streamed_task_resumes_exactly_where_it_stopped(files, tokenizer, tmp_path, length_aware_batching):
    grouping = {"length_aware_batching": length_aware_batching}
    full = _trainer(tmp_path, tokenizer, _build(files, tokenizer, block_size=16), "full", **grouping)
    full.train()
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-4")
    assert json.load(open(os.path.join(checkpoint, "stream_state.json")))["sentiment"]["records"]
    assert full.train_dataset.task_datasets["sentiment"]._grouping == ((8, 50) if length_aware_batching else None)
    # The logged example count: the in-memory rows (the stream declared no size), not the stream's index span.
    assert full.num_examples(full.get_train_dataloader()) == len(full.train_dataset.task_datasets["similarity"])
    resumed = _trainer(tmp_path, tokenizer, _build(files, tokenizer, block_size=16), "resumed", **grouping)
    resumed.train(resume_from_checkpoint=checkpoint)
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    assert [resumed_losses[s] for s in range(5, 9)] == pytest.approx([full_losses[s] for s in range(5, 9)], rel=1e-5)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    # Another stream (block size) is refused before any step.
    other = _trainer(tmp_path, tokenizer, _build(files, tokenizer, block_size=32), "other", **grouping)
    with pytest.raises(ValueError, match="streams otherwise than the checkpoint.*block_size"):
        other.train(resume_from_checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": -1, "num_train_epochs": 1}, "have no end: set max_steps"),
        ({"dataloader_num_workers": 1}, "set dataloader_num_workers=0"),
        (
            {"mtl_method": "async_kd", "kd_soft_labels": "precompute", "eval_strategy": "steps", "eval_steps": 2},
            "use kd_soft_labels='online'",
        ),
        ({"diagnostics_steps": 2}, "diagnostics_steps samples batches"),
    ],
)
def test_what_a_stream_cannot_do_is_refused_in_one_line(files, tokenizer, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, tokenizer, _build(files, tokenizer), "refused", **overrides)


def test_online_soft_labels_equal_the_table_and_distill_a_streamed_task(files, tokenizer, tmp_path):
    """On a map-style task the online teacher gives the training the same losses as the on-demand table; on a stream
    it distils with nothing stored but the teacher."""
    kd = dict(
        mtl_method="async_kd",
        kd_patience=1,
        kd_min_delta=10.0,
        kd_require_improvement=False,
        kd_require_decline=False,
        kd_trivial_gate=False,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
    )
    mapped = _build(files, tokenizer, block_size=16)
    mapped_sources = build_task_datasets(_sources(files, streamed=False), tokenizer, max_seq_length=32, selection_max=20, seed=5)
    runs = {}
    for mode in ("on_demand", "online"):
        runs[mode] = _trainer(tmp_path, tokenizer, mapped_sources, mode, kd_soft_labels=mode, **kd)
        runs[mode].train()
    assert runs["online"].async_convergence.records.keys() == runs["on_demand"].async_convergence.records.keys() != set()
    a, b = _losses_by_step(runs["on_demand"]), _losses_by_step(runs["online"])
    assert [b[s] for s in sorted(a)] == pytest.approx([a[s] for s in sorted(a)], rel=1e-4)
    streamed = _trainer(tmp_path, tokenizer, mapped, "streamed", kd_soft_labels="online", **kd)
    streamed.train()
    labels = streamed.async_convergence.soft_labels["sentiment"]
    assert labels.online and labels.table is None and labels.num_teachers == 1


def test_the_command_line_streams_a_custom_task_beside_a_glue_task_and_distils_it_online(files, tiny_checkpoint, tmp_path):
    import run_glue_mtl
    from tests.test_cli import base_args, write_glue

    glue = write_glue(tmp_path / "glue")
    task = {
        "name": "sentiment",
        "text_fields": ["sentence"],
        "label_names": list(SENTIMENT.label_names),
        "train_file": files["sentiment"],
        "validation_file": files["sentiment_dev"],
    }
    (tmp_path / "tasks.json").write_text(json.dumps([task]))
    argv = base_args(glue, tiny_checkpoint, tmp_path / "out")
    argv[argv.index("--tasks") + 1] = "rte"
    extra = ["--custom_tasks_file", str(tmp_path / "tasks.json"), "--streaming_tasks", "sentiment=230", "--stream_block_size", "16"]
    extra += ["--mtl_method", "async_kd", "--kd_patience", "1", "--kd_soft_labels", "online", "--sampling_strategy", "proportional"]
    results = run_glue_mtl.main(argv + extra)
    assert "eval_sentiment_accuracy" in results and "eval_rte_accuracy" in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # 0.25 of the declared 230 rows would be 57: selection_split_max (default 500) is larger, the fraction decides.
    assert config["selection_splits"]["sentiment"]["selection_size"] == 57
    assert config["selection_splits"]["sentiment"]["streamed"] == "the first rows of the training split"
