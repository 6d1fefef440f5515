"""Streamed tasks: a training set read as training needs it, never loaded or tokenised whole.

A `StreamingSource` is a `TaskDataSource` whose training split is read through `datasets` streaming (local files of
any format `datasets` reads, a `save_to_disk` directory, or a Hub data set), so a task of tens of millions of rows
costs the memory of one block of rows. `build_task_datasets` (`hf_async_mtl.data`) makes of it:

* a **selection split**: the first `n` rows of the training stream, held out and never trained on (`n` =
  `selection_max`, or `selection_fraction` of a declared `num_rows` when smaller), tokenised like any split;
* a **training stream** (`StreamedTask`): the rows after them, at stream positions 0, 1, 2, ... — pass after pass
  over the source, each block of `block_size` rows in a seeded random order (a block shuffle: rows further apart than
  a block keep the source's order, so a source sorted by label should be shuffled once on disk), converted and
  checked (`sources.row_converter`: one line naming the file, row and field) and tokenised only when a batch draws them.
* the dev splits, loaded as usual (they are small).

The batch sampler (`hf_async_mtl.sampling`) gives a streamed task consecutive positions: global batch `j` is
positions `[j*g, (j+1)*g)`; each process tokenises only its slice of it, so processes never train on the same row
and a multi-process run draws the same global batches as one process. Resuming is exact: the sampler skips the
positions already trained on, and the stream seeks to them from the `datasets` state (`IterableDataset.state_dict`)
recorded at the start of each block, saved in every checkpoint (`StreamStateCallback`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
from transformers import PreTrainedTokenizerBase, TrainerCallback

from .encoding import EXAMPLE_IDS_COLUMN, MODEL_INPUT_COLUMNS, PAIR_IDS_COLUMN, TASK_IDS_COLUMN, batch_encoder
from .errors import InputError
from .files import write_json_atomic
from .sources import TaskDataSource, TaskSource, _one_line, load_source_split, load_task, row_converter, task_features
from .tasks import TaskSpec


def read_block(iterator: Any, where: str) -> Any:
    """The next table of a streamed source's iterator (None at its end). A file that cannot be read (a parser error, a
    bad byte, a first row with a field more than the header: pandas' warning, made an error as `load_task` makes it)
    is an `InputError` starting with `where`, at whatever row training has reached (exit status 2, no traceback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return next(iterator, None)
    except Exception as error:  # noqa: BLE001 - whatever the reader raised is one line naming the data and the row
        cause = error.__cause__ or error
        if isinstance(cause, pd.errors.ParserWarning):
            raise InputError(f"{where}: a row has more fields than the header (a stray delimiter?): {_one_line(cause)}") from error
        raise InputError(f"{where}: {_one_line(cause)}") from error


logger = logging.getLogger(__name__)

STREAM_BLOCK_SIZE = 10_000
STREAM_STATE_NAME = "stream_state.json"
_KEPT_RECORDS = 16  # block starts kept for seeking back (a resume needs the block of the first untrained position)
_BLOCK_SALT = 0xB10C


class StreamingSource(TaskDataSource):
    """A task whose training split is streamed (`TaskSource` files or data set, read lazily by `datasets`).

    Args:
        spec: The task.
        source: Where its data is (`TaskSource`); every split but `train` is loaded whole (dev sets are small).
        num_rows: The training split's row count when known (declared): needed by size-aware sampling
            (`proportional`, `temperature`, `annealed`) and to carve a selection *fraction*; without it use `uniform`
            or `round_robin` sampling and a selection split of `selection_max` rows.
        block_size: Rows read, checked and shuffled together (memory: one block per streamed task: its raw text, or under
            length grouping its token ids, about 10 MB per 10k rows of 40 tokens).
        cache_dir: `datasets` cache directory.
    """

    streaming = True

    def __init__(
        self,
        spec: TaskSpec,
        source: TaskSource,
        *,
        num_rows: int | None = None,
        block_size: int = STREAM_BLOCK_SIZE,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if spec.is_mlm or spec.prompt_templates:
            raise ValueError(
                f"Task {spec.name!r}: a streamed task is a classification, regression or pair task (no MLM, no prompt templates)."
            )
        if num_rows is not None and (isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 2):
            raise ValueError(f"Task {spec.name!r}: num_rows must be an integer >= 2 (the training rows), got {num_rows!r}.")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"Task {spec.name!r}: block_size must be an integer >= 1, got {block_size!r}.")
        self.spec, self.source, self.num_rows, self.block_size, self.cache_dir = spec, source, num_rows, block_size, cache_dir
        self._where = f"Task {spec.name!r}: {source.describe('train')}"

    def _load(self, split: str) -> datasets.Dataset:
        return load_task(self.spec, self.source, split, cache_dir=self.cache_dir)

    def describe(self, split: str) -> str:
        return self.source.describe(split)

    def raw_stream(self) -> datasets.IterableDataset:
        """The training split as `datasets` streams it (columns renamed, features resolved), checked for the task's
        columns."""
        raw = load_source_split(self.source, "train", task=self.spec.name, cache_dir=self.cache_dir, streaming=True)
        missing = [c for c in (*self.spec.text_fields, self.spec.label_field) if c not in (raw.column_names or ())]
        if missing:
            raise ValueError(
                f"{self._where} has no column {missing}; columns: {raw.column_names} (`columns` maps a task field to a column of another name)."
            )
        return raw

    def converter(self, raw: datasets.IterableDataset) -> Callable[[pa.Table, Sequence[int]], pa.Table]:
        delimited = self.source.data_files is not None and any(
            p.lower().endswith((".csv", ".tsv", ".tab")) for p in self.source.data_files.get("train", ())
        )
        return row_converter(self.spec, raw.features, self._where, delimited=delimited)

    def selection_count(self, selection_fraction: float, selection_max: int | None) -> int:
        """How many first rows are held out for selection: `selection_max`, or `selection_fraction` of a declared
        `num_rows` when that is smaller."""
        if self.num_rows is None and selection_max is None:
            raise ValueError(
                f"{self._where} is streamed with no declared num_rows: give selection_max (the first rows held out for selection)."
            )
        counts = [selection_max, None if self.num_rows is None else max(1, math.floor(self.num_rows * selection_fraction))]
        count = min(c for c in counts if c is not None)
        if self.num_rows is not None and count >= self.num_rows:
            raise ValueError(f"{self._where}: holding out {count} of {self.num_rows} rows for selection would leave nothing to train on.")
        return count

    def held_out(self, count: int) -> datasets.Dataset:
        """The first `count` training rows, converted and checked (the selection split; never trained on)."""
        raw = self.raw_stream()
        convert = self.converter(raw)
        # The first batch of `count` rows, the reader closed at once (`IterableDataset.take` over several files held
        # a second read unit of the source alive: +100 MB with ten 1M-row parquet files).
        iterator = raw.with_format("arrow").iter(batch_size=max(1, count))
        try:
            table = read_block(iterator, f"{self._where}: cannot read the {count} rows held out for selection")
        finally:
            iterator.close()
        if table is None or table.num_rows < count:
            got = 0 if table is None else table.num_rows
            raise ValueError(f"{self._where} has {got} rows: fewer than the {count} held out for selection, and none left to train on.")
        return datasets.Dataset.from_dict(convert(table, range(count)).to_pydict(), features=task_features(self.spec))

    def training_stream(
        self,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        task_id: int,
        max_seq_length: int,
        *,
        first_row: int,
        limit: int | None,
        seed: int,
    ) -> StreamedTask:
        """The rows from `first_row` on (at most `limit` of them per pass) as a `StreamedTask` encoded for `spec` (the
        run's spec of this task, e.g. made a bi-encoder pair task after the source was built); its first block is read
        and checked now, so a bad file fails before any training."""
        raw = self.raw_stream()
        convert = self.converter(raw)

        def open_stream() -> datasets.IterableDataset:
            stream = self.raw_stream().skip(first_row) if first_row else self.raw_stream()
            return (stream.take(limit) if limit is not None else stream).with_format("arrow")

        stream = StreamedTask(
            self.spec.name,
            open_stream,
            convert,
            batch_encoder(spec, tokenizer, task_id, max_seq_length),
            first_row=first_row,
            limit=limit,
            block_size=self.block_size,
            seed=seed,
            num_rows=None if self.num_rows is None else min(self.num_rows - first_row, limit or self.num_rows),
            description=self._where,
        )
        stream.check()
        return stream


@dataclass(frozen=True)
class BlockRecord:
    """Where a block starts: its first stream position, its pass over the source, its first row in the pass, and the
    `datasets` state to reopen the source there (None: the start of the pass)."""

    start: int
    epoch: int
    row: int
    state: dict[str, Any] | None


@dataclass
class _Block:
    record: BlockRecord
    size: int
    # The block's rows in its order (None until a position inside it is drawn): converted rows, or, under length
    # grouping (`encoded`), their model inputs: the lengths that order them need the encoding, kept for the batches.
    table: pa.Table | None
    raw: pa.Table | None = None  # the rows as read, until converted
    order: np.ndarray | None = None  # the permutation `table` was taken in
    encoded: bool = False
    unordered: pa.Table | None = None  # `table` back in reading order, when the order must be made again


class StreamedTask:
    """A streamed task's training rows, addressed by stream position (endless: pass after pass over the source).

    `features(positions)` returns the tokenised rows at `positions` (what `MultiTaskDataset` hands the collator),
    reading forward as needed; positions are drawn in increasing order, and a position behind the current block is
    reached by reopening the source at a recorded block start (`state_dict` / `load_state_dict` carry them across a
    checkpoint). Memory: one block of rows. `group_by_length` makes the global batches inside each block
    length-grouped, as `length_aware_batching` does for a map-style task.
    """

    def __init__(
        self,
        name: str,
        open_stream: Callable[[], datasets.IterableDataset],
        convert: Callable[[pa.Table, Sequence[int]], pa.Table],
        encode: Callable[[Mapping[str, list[Any]]], dict[str, Any]],
        *,
        first_row: int,
        limit: int | None,
        block_size: int,
        seed: int,
        num_rows: int | None,
        description: str,
    ) -> None:
        self.name, self._open, self._convert, self._encode = name, open_stream, convert, encode
        self.first_row, self.limit, self.block_size, self.seed = first_row, limit, block_size, seed
        self.num_rows, self.description = num_rows, description
        self._records: dict[int, BlockRecord] = {0: BlockRecord(0, 0, 0, None)}
        self._block: _Block | None = None
        self._cursor: tuple[BlockRecord, Any, Any] | None = None  # (record the iterator is at, dataset, iterator)
        self._grouping: tuple[int, int] | None = None  # (global batch, mega-chunk in global batches)
        self.rows_read = 0

    def group_by_length(self, global_batch: int, factor: int) -> None:
        """Group the global batches inside each block by length (the trainer calls it under `length_aware_batching`).

        A block's shuffled rows that fill whole global batches (batch `j` = positions `[j*g, (j+1)*g)`, `g` =
        `global_batch`) are cut into mega-chunks of `g * factor` rows, each sorted by token length (longest first) and cut
        into batches, whose order is then shuffled within the block, as `MultiTaskBatchSampler` does for a map-style
        task; the rows of a batch that straddles two blocks keep the shuffled order. Which rows a block holds is
        unchanged, so the block starts a checkpoint records stay valid; the order is a function of the seed, the block
        and `g`, identical on every process and after a resume.
        """
        if global_batch < 1 or factor < 1:
            raise ValueError(f"group_by_length: global_batch and factor must be >= 1, got {global_batch}, {factor}")
        block = self._block
        if block is not None and block.table is not None and block.order is not None:
            # ordered under the old grouping (e.g. the first block, read by `check`): back to reading order, no re-read
            block.unordered = block.table.take(pa.array(np.argsort(block.order)))
            block.table, block.order = None, None
        self._grouping = (int(global_batch), int(factor))

    @property
    def declared_size(self) -> int | None:
        """Training rows per pass when the source's size was declared (`StreamingSource.num_rows`), else None."""
        return self.num_rows

    def check(self) -> None:
        """Read and convert the first block (a bad file or label fails here, before training)."""
        block = self._read(self._records[0])
        self._materialise(block)

    # ---- reading -----------------------------------------------------------------------------------------------

    def _read(self, record: BlockRecord) -> _Block:
        """The block starting at `record` (its rows not converted yet); records where the next one starts."""
        if self._cursor is None or self._cursor[0] != record:
            dataset = self._open()
            if record.state is not None:
                dataset.load_state_dict(copy.deepcopy(record.state))
            self._cursor = (record, dataset, iter(dataset.iter(batch_size=self.block_size)))
        _, dataset, iterator = self._cursor
        table = read_block(iterator, f"{self.description}: cannot read the rows from row {self.first_row + record.row}")
        if table is None or table.num_rows == 0:
            if record.row == 0:
                raise ValueError(f"{self.description}: no training rows after the {self.first_row} held out.")
            self._cursor = None
            return self._read(BlockRecord(record.start, record.epoch + 1, 0, None))  # the pass ended on a block boundary
        size = table.num_rows
        self.rows_read += size
        if size == self.block_size:
            following = BlockRecord(record.start + size, record.epoch, record.row + size, copy.deepcopy(dataset.state_dict()))
            self._cursor = (following, dataset, iterator)
        else:  # the pass ended inside this block
            following, self._cursor = BlockRecord(record.start + size, record.epoch + 1, 0, None), None
        self._remember(following)
        self._block = _Block(record, size, None, table)
        return self._block

    def _materialise(self, block: _Block) -> pa.Table:
        if block.table is None:
            if block.unordered is not None:
                base, encoded = block.unordered, block.encoded
            else:
                rows = range(self.first_row + block.record.row, self.first_row + block.record.row + block.size)
                base, encoded = self._convert(block.raw, rows), False
            key = zlib.crc32(self.name.encode("utf-8"))
            rng = np.random.default_rng([_BLOCK_SALT, self.seed, key, block.record.epoch, block.record.row])
            order = rng.permutation(block.size)
            if self._grouping is not None:  # encoded once: its lengths order the batches, its rows feed them
                base, encoded = (base, True) if encoded else (self._encode_table(base), True)
                order = self._length_grouped(order, base, block.record.start, rng)
            block.table, block.order, block.encoded = base.take(pa.array(order)), order, encoded
            block.raw, block.unordered = None, None
        return block.table

    def _encode_table(self, table: pa.Table) -> pa.Table:
        """A converted block's model inputs, `labels` and `task_ids` as one table (encoded in slices of 1024 rows)."""
        parts = [pa.Table.from_pydict(dict(self._encode(table.slice(start, 1024).to_pydict()))) for start in range(0, table.num_rows, 1024)]
        return pa.concat_tables(parts) if parts else table

    @staticmethod
    def _token_lengths(encoded: pa.Table) -> np.ndarray:
        """Tokens per row of an encoded block (a bi-encoder pair: its two texts')."""
        import pyarrow.compute as pc

        counts = np.asarray(pc.list_value_length(encoded["input_ids"]).to_numpy(zero_copy_only=False), dtype=np.int64)
        if PAIR_IDS_COLUMN in encoded.column_names:
            counts = counts + np.asarray(pc.list_value_length(encoded[PAIR_IDS_COLUMN]).to_numpy(zero_copy_only=False), dtype=np.int64)
        return counts

    def _length_grouped(self, order: np.ndarray, encoded: pa.Table, start: int, rng: np.random.Generator) -> np.ndarray:
        """`order` (the block's shuffle) with its whole global batches length-grouped (see `group_by_length`)."""
        assert self._grouping is not None
        g, factor = self._grouping
        head = (-start) % g  # rows before the block's first whole global batch
        whole = max(0, len(order) - head) // g
        if whole == 0:
            return order
        lengths = self._token_lengths(encoded)
        body = order[head : head + whole * g]
        mega = g * factor
        body = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.split(body, range(mega, len(body), mega))])
        body = body.reshape(whole, g)[rng.permutation(whole)].reshape(-1)
        return np.concatenate([order[:head], body, order[head + whole * g :]])

    def _remember(self, record: BlockRecord) -> None:
        self._records[record.start] = record
        if len(self._records) > _KEPT_RECORDS:
            for start in sorted(self._records)[: len(self._records) - _KEPT_RECORDS]:
                if start != 0:
                    del self._records[start]

    def _block_of(self, position: int) -> _Block:
        block = self._block
        if block is not None and block.record.start <= position < block.record.start + block.size:
            return block
        if block is None or position < block.record.start:  # behind: reopen at the nearest recorded block start
            start = max(s for s in self._records if s <= position)
            block = self._read(self._records[start])
        while position >= block.record.start + block.size:  # ahead: read on (blocks skipped are never converted)
            block = self._read(self._records[block.record.start + block.size])
        return block

    def features(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """The tokenised rows at stream `positions` (each with `example_ids` = its position)."""
        out: list[dict[str, Any]] = []
        at = 0
        while at < len(positions):  # one `take` per run of positions inside one block
            if positions[at] < 0:
                raise IndexError(f"Task {self.name!r}: stream position {positions[at]} < 0.")
            block = self._block_of(int(positions[at]))
            end, inside = block.record.start + block.size, []
            while at < len(positions) and block.record.start <= positions[at] < end:
                inside.append(int(positions[at]) - block.record.start)
                at += 1
            columns = self._materialise(block).take(pa.array(inside, type=pa.int64())).to_pydict()
            encoded = columns if block.encoded else self._encode(columns)  # a grouped block was encoded once, whole
            kept = [k for k in (*MODEL_INPUT_COLUMNS, "labels", TASK_IDS_COLUMN) if k in encoded]
            first = at - len(inside)
            out += [{**{k: encoded[k][i] for k in kept}, EXAMPLE_IDS_COLUMN: int(positions[first + i])} for i in range(len(inside))]
        return out

    # ---- checkpoints -----------------------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {"first_row": self.first_row, "limit": self.limit, "block_size": self.block_size, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        """The recorded block starts (JSON), and what must match to use them."""
        return {**self._config(), "records": [asdict(self._records[s]) for s in sorted(self._records)]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Use the block starts of a checkpoint (raises `ValueError` when the stream is another one)."""
        problems = [f"{k}: checkpoint {state.get(k)!r}, now {v!r}" for k, v in self._config().items() if state.get(k) != v]
        if problems:
            raise ValueError(f"Task {self.name!r}: the streamed task differs from the checkpoint's ({'; '.join(problems)}).")
        self._records = {
            int(r["start"]): BlockRecord(int(r["start"]), int(r["epoch"]), int(r["row"]), r["state"]) for r in state["records"]
        }
        self._records.setdefault(0, BlockRecord(0, 0, 0, None))
        self._block = self._cursor = None


class StreamStateCallback(TrainerCallback):
    """Saves every streamed task's block starts in each checkpoint (`stream_state.json`) and restores them on resume
    (a `CheckpointPart`), so a resumed run reopens each stream at the block of its first untrained row."""

    def __init__(self, streams: Mapping[str, StreamedTask]) -> None:
        self.streams = dict(streams)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(directory, exist_ok=True)
            write_json_atomic(os.path.join(directory, STREAM_STATE_NAME), {t: s.state_dict() for t, s in self.streams.items()})

    def _read(self, directory: str) -> dict[str, Any]:
        path = os.path.join(directory, STREAM_STATE_NAME)
        if not os.path.isfile(path):
            raise ValueError(
                f"resume_from_checkpoint {directory}: no {STREAM_STATE_NAME}; the checkpoint was not made with streamed tasks {sorted(self.streams)}."
            )
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def check_checkpoint(self, directory: str) -> None:
        saved = self._read(directory)
        if sorted(saved) != sorted(self.streams):
            raise ValueError(
                f"resume_from_checkpoint {directory}: streamed tasks {sorted(saved)} in the checkpoint, {sorted(self.streams)} now."
            )
        for task, stream in self.streams.items():
            problems = [f"{k}: {saved[task].get(k)!r} != {v!r}" for k, v in stream._config().items() if saved[task].get(k) != v]
            if problems:
                raise ValueError(
                    f"resume_from_checkpoint {directory}: task {task!r} streams otherwise than the checkpoint ({'; '.join(problems)})."
                )

    def load_checkpoint(self, directory: str) -> None:
        for task, state in self._read(directory).items():
            self.streams[task].load_state_dict(state)


def check_streamed_run(streamed: Mapping[str, int | None], args: Any, *, needs_dev_gradient: bool = False, all_tasks: bool = False) -> None:
    """Refuse, before any work and in one line, what a run with streamed tasks (name → declared size or None) cannot
    do: the trainer checks its data with it, the command line its plan before loading anything."""
    if not streamed:
        return
    names = sorted(streamed)
    unsized = sorted(name for name, size in streamed.items() if size is None)
    if unsized and not all_tasks and args.sampling_strategy not in ("uniform", "round_robin"):
        raise ValueError(
            f"{args.sampling_strategy} sampling weighs tasks by size, and streamed task(s) {unsized} have no declared size: "
            "declare the row count (StreamingSource(num_rows=...), --streaming_tasks name=N), or sample uniform or round_robin."
        )
    if args.max_steps is None or args.max_steps <= 0:
        raise ValueError(f"Streamed task(s) {names} have no end: set max_steps (a stream has no epochs).")
    if args.dataloader_num_workers:
        raise ValueError(
            f"Streamed task(s) {names} are read in the training process (their position is what a checkpoint resumes): "
            "set dataloader_num_workers=0; tokenising a drawn batch costs little beside a training step."
        )
    if args.diagnostics_steps:
        raise ValueError(f"diagnostics_steps samples batches from every task's training set; streamed task(s) {names} have none at hand.")
    if needs_dev_gradient:
        raise ValueError(f"META-TARTAN carves dev slices from the training sets; streamed task(s) {names} cannot be carved.")
    if args.async_kd and args.kd_soft_labels != "online":
        raise ValueError(
            f"kd_soft_labels={args.kd_soft_labels!r} keeps a table over a task's training set; streamed task(s) {names} have no "
            "end to label: use kd_soft_labels='online' (--kd_soft_labels online)."
        )
