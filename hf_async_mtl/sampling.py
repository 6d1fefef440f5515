"""Task-mixing batch sampler for multi-task training.

`MultiTaskBatchSampler` is a batch sampler over a dataset that concatenates the tasks' datasets in
the order of `task_sizes` (example `j` of task `k` has the global index `offsets[k] + j`). Use it
as `DataLoader(multitask_dataset, batch_sampler=sampler, collate_fn=...)`.

Each task has its own endless *stream*: seeded permutations of its (possibly capped) examples,
concatenated, and cut into global batches of `batch_size * world_size`. A step takes the next
global batch of the task(s) chosen for it, so batches are always full and every example of a
permutation is used exactly once before any is repeated. Everything is a pure function of
`(seed, epoch)`: all ranks draw the same global batch and keep their own slice of it, and resuming
by skipping the first `k` batches of a fresh iteration reproduces an uninterrupted run. This module
deliberately imports nothing from transformers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .files import write_json_atomic

SAMPLING_STRATEGIES: tuple[str, ...] = ("proportional", "temperature", "uniform", "round_robin", "annealed")
COMPOSITIONS: tuple[str, ...] = ("one_task", "all_tasks")

# Distinct first words of the seed sequences so that stream, schedule and cap RNGs never collide
# (e.g. (seed, epoch=0) for the schedule vs (seed, task=0) for a cap).
logger = logging.getLogger(__name__)
_STREAM_SALT, _SCHEDULE_SALT, _CAP_SALT, _TEMPLATE_SALT = 0x5E7, 0x5C4, 0xCA9, 0x7E3
TASK_STREAMS: tuple[str, ...] = ("by_position", "by_name")
# Global indices a streamed task occupies (`hf_async_mtl.streaming`): positions 0 .. 2**40 - 1 of its endless stream.
STREAM_SPAN = 1 << 40
# Mega-chunk of length-grouped batching, in global batches (transformers' LengthGroupedSampler uses 50).
LENGTH_GROUPING_FACTOR = 50


def task_stream_key(name: str) -> int:
    """A task's stream key under `task_streams="by_name"`: a stable 32-bit hash of its name (CRC-32)."""
    return zlib.crc32(name.encode("utf-8"))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class MultiTaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields, at each step, this rank's list of global indices into the concatenated dataset.

    Args:
        task_sizes: Number of examples of each task, in the order the dataset concatenates them.
        batch_size: Per-rank, per-task batch size.
        strategy: How the task of a step is chosen (`composition="one_task"` only), one of
            `SAMPLING_STRATEGIES`: `"proportional"` p ∝ n; `"temperature"` p ∝ n^(1/temperature);
            `"uniform"`; `"round_robin"` (tasks cycled in order); `"annealed"`
            p ∝ n^(1 - s/(S-1)), proportional at step 0 and uniform at the last step S-1, where
            S = `len(self)` is the number of steps of the epoch (with `num_batches` set by the
            trainer to `max_steps * grad_accum`, the annealing spans the whole run). n is the
            effective size after caps.
        temperature: Temperature of the `"temperature"` strategy (> 0; 1 = proportional).
        composition: `"one_task"`: a step is one batch of one task; `"all_tasks"`: a step is one
            batch of every task concatenated in task order (length `batch_size * num_tasks`).
        num_batches: Steps per epoch. Default: one_task: ceil(sum n / global batch); all_tasks:
            ceil(max n / global batch), global batch = `batch_size * world_size`.
        lengths: Per task, the length of each example in local index order; turns on
            length-grouped batching (see `_global_batches`) to reduce padding.
        max_examples_per_task: Cap on the examples used per task (one int, or per task name): a
            fixed random subset that depends on `seed` only, not on the epoch.
        seed: Base seed of every random draw.
        rank: This process's rank in `[0, world_size)`.
        world_size: Number of data-parallel processes.
        length_grouping_factor: Mega-chunk size, in global batches, sorted by length together.
        num_templates: Per task, the size of its prompt-template pool (DynaMaR; default 1). When a
            task has more than one, every index is yielded as `(global index, template)`: each pass
            over a task's examples draws one template per example, uniformly, from its own seeded
            generator `(seed, epoch, task, pass)` — so draws are identical after a resume and on
            every rank, and the example streams are the same as without templates.
        task_streams: What seeds a task's example stream besides the seed: `"by_position"` or `"by_name"`.
        streamed: Tasks read from a stream (`hf_async_mtl.streaming.StreamedTask`): global batch `j` of such a task
            is its stream positions `[j*g, (j+1)*g)` (epoch `e` starts at batch `e * num_batches`, so no position
            is drawn twice), its global indices span `STREAM_SPAN`, it has no lengths or caps, and its size (in
            `task_sizes`, None when unknown) only weighs it in size-aware sampling, which refuses an unknown size;
            `num_batches` must be given.
    """

    def __init__(
        self,
        task_sizes: Mapping[str, int | None],
        batch_size: int,
        *,
        strategy: str = "proportional",
        temperature: float = 2.0,
        composition: str = "one_task",
        num_batches: int | None = None,
        lengths: Mapping[str, Sequence[int]] | None = None,
        max_examples_per_task: int | Mapping[str, int] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        length_grouping_factor: int = LENGTH_GROUPING_FACTOR,
        num_templates: Mapping[str, int] | None = None,
        task_streams: str = "by_position",
        streamed: Iterable[str] = (),
    ) -> None:
        if not task_sizes:
            raise ValueError("task_sizes must name at least one task")
        self.streamed = frozenset(str(name) for name in streamed)
        unknown_streamed = self.streamed - {str(name) for name in task_sizes}
        if unknown_streamed:
            raise ValueError(f"streamed names unknown tasks {sorted(unknown_streamed)}; tasks: {list(task_sizes)}")
        unsized = sorted(str(name) for name, n in task_sizes.items() if n is None and str(name) in self.streamed)
        if unsized and composition == "one_task" and strategy not in ("uniform", "round_robin"):
            raise ValueError(
                f"{strategy} sampling weighs tasks by size, and streamed task(s) {unsized} have no declared size: declare "
                "num_rows (StreamingSource), or sample uniform or round_robin."
            )
        if self.streamed and num_batches is None:
            raise ValueError(f"streamed task(s) {sorted(self.streamed)} have no end: give num_batches (the trainer's max_steps).")
        # An unknown size weighs nothing (uniform / round_robin ignore sizes): 1 keeps every table well defined.
        sizes = {str(name): _check_int(f"task size of {name!r}", 1 if n is None else n, 1) for name, n in task_sizes.items()}
        if strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}; known: {', '.join(SAMPLING_STRATEGIES)}")
        if composition not in COMPOSITIONS:
            raise ValueError(f"unknown composition {composition!r}; known: {', '.join(COMPOSITIONS)}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be an integer in [0, world_size={self.world_size}), got {rank!r}")
        self.rank = int(rank)
        self.seed = _check_int("seed", seed, 0)
        self.length_grouping_factor = _check_int("length_grouping_factor", length_grouping_factor, 1)
        self.strategy, self.composition, self.temperature = strategy, composition, float(temperature)
        self._names = tuple(sizes)
        self._sizes = sizes
        if task_streams not in TASK_STREAMS:
            raise ValueError(f"unknown task_streams {task_streams!r}; known: {', '.join(TASK_STREAMS)}")
        # What seeds each task's example stream (and cap, template draws) besides the seed: its position among the
        # tasks, or its name (the task then draws the same batches whatever other tasks are trained beside it).
        self._stream_keys = [k if task_streams == "by_position" else task_stream_key(name) for k, name in enumerate(self._names)]
        spans = [STREAM_SPAN if name in self.streamed else n for name, n in sizes.items()]
        self._offsets = dict(zip(self._names, np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64).tolist()))

        caps = self._parse_caps(max_examples_per_task)
        # The kept subset depends on the seed only, so a capped task sees the same examples every epoch.
        self._pools: list[np.ndarray] = []
        for k, name in enumerate(self._names):
            n = sizes[name]
            if name in self.streamed and name in caps:
                raise ValueError(f"max_examples_per_task: task {name!r} is streamed; cap its stream instead (build_task_datasets' caps).")
            if name in caps and caps[name] < n:
                rng = np.random.default_rng([_CAP_SALT, self.seed, self._stream_keys[k]])
                self._pools.append(np.sort(rng.choice(n, size=caps[name], replace=False)))
            else:
                self._pools.append(np.arange(n))

        self._lengths: list[np.ndarray | None] | None = None
        if lengths is not None:
            unknown = set(lengths) - set(self._names)
            if unknown:
                raise ValueError(f"lengths name unknown tasks {sorted(unknown)}; tasks: {list(self._names)}")
            self._lengths = []
            for name in self._names:
                if name in self.streamed:  # read as drawn: no lengths up front (it groups inside its blocks)
                    if name in lengths:
                        raise ValueError(f"lengths of streamed task {name!r}: a stream has none up front")
                    self._lengths.append(None)
                    continue
                if name not in lengths:
                    raise ValueError(f"lengths is missing task {name!r}")
                arr = np.asarray(lengths[name], dtype=np.float64)  # float: safe to negate for sorting
                if arr.shape != (sizes[name],):
                    raise ValueError(f"lengths[{name!r}] must have {sizes[name]} entries (the task size), got shape {arr.shape}")
                self._lengths.append(arr)

        templates = dict(num_templates or {})
        unknown = set(templates) - set(self._names)
        if unknown:
            raise ValueError(f"num_templates names unknown tasks {sorted(unknown)}; tasks: {list(self._names)}")
        self._templates = [_check_int(f"num_templates[{name!r}]", templates.get(name, 1), 1) for name in self._names]
        self.yields_templates = any(m > 1 for m in self._templates)

        global_batch = self.batch_size * self.world_size
        n_eff = [len(p) for p in self._pools]
        small = {name: n for name, n in zip(self._names, n_eff) if n < global_batch and name not in self.streamed}
        if small and self.rank == 0:
            where = f"{self.batch_size} per process × {self.world_size} processes" if self.world_size > 1 else "the batch size"
            logger.warning(
                "Tasks with fewer training examples than one global batch (%d = %s): %s. Their batches repeat examples%s.",
                global_batch,
                where,
                ", ".join(f"{name} ({n})" for name, n in small.items()),
                " — also across processes, so every process may see the same example in one step" if self.world_size > 1 else "",
            )
        total = sum(n_eff) if composition == "one_task" else max(n_eff)
        self.num_batches = math.ceil(total / global_batch) if num_batches is None else _check_int("num_batches", num_batches, 1)
        self.epoch = 0
        self._schedule_cache: tuple[int, np.ndarray] | None = None

    def _parse_caps(self, caps: int | Mapping[str, int] | None) -> dict[str, int]:
        if caps is None:
            return {}
        if isinstance(caps, Mapping):
            unknown = set(caps) - set(self._names)
            if unknown:
                raise ValueError(f"max_examples_per_task names unknown tasks {sorted(unknown)}; tasks: {list(self._names)}")
            return {name: _check_int(f"max_examples_per_task[{name!r}]", c, 1) for name, c in caps.items()}
        cap = _check_int("max_examples_per_task", caps, 1)
        return {name: cap for name in self._names}

    # ------------------------------------------------------------------ properties
    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in dataset (concatenation) order."""
        return self._names

    @property
    def offsets(self) -> dict[str, int]:
        """Global index of each task's first example."""
        return dict(self._offsets)

    @property
    def effective_sizes(self) -> dict[str, int]:
        """Number of examples each task actually draws from, after `max_examples_per_task`."""
        return {name: len(pool) for name, pool in zip(self._names, self._pools)}

    # ------------------------------------------------------------------ schedule
    def __len__(self) -> int:
        """Number of batches (optimizer micro-steps) per epoch."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose task order and example permutations are drawn."""
        self.epoch = _check_int("epoch", epoch, 0)

    def _probability_table(self, steps: np.ndarray) -> np.ndarray:
        """Task probabilities at each of `steps`, shape `(len(steps), num_tasks)`."""
        n = np.array([len(p) for p in self._pools], dtype=np.float64)
        if self.composition == "all_tasks" or self.strategy in ("uniform", "round_robin"):
            exponent = np.zeros(len(steps))
        elif self.strategy == "temperature":
            exponent = np.full(len(steps), 1.0 / self.temperature)
        elif self.strategy == "annealed" and self.num_batches > 1:
            last = self.num_batches - 1
            exponent = 1.0 - np.clip(steps, 0, last) / last
        else:  # proportional, or annealed over a single step (stays proportional: no 0/0)
            exponent = np.ones(len(steps))
        weights = n[None, :] ** exponent[:, None]
        return weights / weights.sum(axis=1, keepdims=True)

    def task_probabilities(self, step: int) -> dict[str, float]:
        """Probability of each task being drawn at `step` of the epoch.

        For `"round_robin"` this is each task's share of a cycle (1/K), and for `"all_tasks"` each
        task's share of the step's examples (1/K): neither draws at random.
        """
        return dict(zip(self._names, self._probability_table(np.array([step]))[0].tolist()))

    def _schedule(self) -> np.ndarray:
        """Task index of each step of the current epoch (cached per epoch)."""
        if self._schedule_cache is not None and self._schedule_cache[0] == self.epoch:
            return self._schedule_cache[1]
        steps, k = self.num_batches, len(self._names)
        if self.strategy == "round_robin" or self.composition == "all_tasks":
            schedule = np.arange(steps) % k
        else:
            rng = np.random.default_rng([_SCHEDULE_SALT, self.seed, self.epoch])
            draws, schedule = rng.random(steps), np.empty(steps, dtype=np.int64)
            # Inverse-CDF draws, in blocks to bound memory for long annealed schedules; the
            # minimum guards against cumulative sums rounding just below 1.
            for start in range(0, steps, 1 << 16):
                block = np.arange(start, min(start + (1 << 16), steps))
                if self.strategy == "annealed":
                    cumulative = np.cumsum(self._probability_table(block), axis=1)
                else:
                    cumulative = np.cumsum(self._probability_table(block[:1]), axis=1)
                schedule[block] = np.minimum((cumulative < draws[block, None]).sum(axis=1), k - 1)
        self._schedule_cache = (self.epoch, schedule)
        return schedule

    def task_schedule(self) -> list[str] | list[tuple[str, ...]]:
        """Task drawn at each step of the current epoch (`"all_tasks"`: the tuple of all tasks)."""
        if self.composition == "all_tasks":
            return [self._names] * self.num_batches
        return [self._names[k] for k in self._schedule()]

    # ------------------------------------------------------------------ streams
    def _global_batches(self, k: int) -> Iterator[np.ndarray]:
        """Endless stream of global batches (local indices) of task `k` for the current epoch."""
        for indices, _ in self._global_batches_with_templates(k):
            yield indices

    def _global_batches_with_templates(self, k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless stream of `(global batch of local indices, template of each)` of task `k`.

        The stream is a concatenation of seeded permutations of the task's pool, cut into full
        global batches. A permutation's leftover `r < global batch` examples are completed by the
        first examples of the next permutation that are not among them, so permutation `i`
        occupies exactly the stream positions `[i*n, (i+1)*n)` and a global batch holds distinct
        examples (unless the task has fewer examples than a global batch). With `lengths`, the rest of each permutation is split into
        mega-chunks of `global batch * length_grouping_factor`, each sorted by length (descending)
        and cut into global batches, whose order is then shuffled within the permutation (as in
        transformers' LengthGroupedSampler): similar lengths share a batch, the order stays random.
        """
        g = self.batch_size * self.world_size
        if self._names[k] in self.streamed:  # consecutive stream positions, never repeated across epochs
            j = self.epoch * self.num_batches
            while True:
                yield np.arange(j * g, (j + 1) * g, dtype=np.int64), np.zeros(g, dtype=np.int64)
                j += 1
        rng = np.random.default_rng([_STREAM_SALT, self.seed, self.epoch, self._stream_keys[k]])
        pool = self._pools[k]
        lengths = None if self._lengths is None else self._lengths[k]
        carry, carry_templates = pool[:0], pool[:0]
        num_templates, passes = self._templates[k], 0
        while True:
            perm = rng.permutation(pool)
            if num_templates > 1:  # a separate generator: the example streams do not depend on templates
                drawn = np.random.default_rng([_TEMPLATE_SALT, self.seed, self.epoch, self._stream_keys[k], passes]).integers(
                    num_templates, size=self._sizes[self._names[k]]
                )
                templates = drawn[perm]
            else:
                templates = np.zeros(len(perm), dtype=np.int64)
            passes += 1
            if len(carry):
                need = g - len(carry)
                # Complete the batch with the first examples of the new permutation that are not
                # already in it, so a global batch never repeats an example (ranks stay disjoint);
                # impossible only for a task smaller than the global batch.
                fresh = np.flatnonzero(~np.isin(perm, carry))[:need]
                if len(fresh) == need:
                    picked = np.zeros(len(perm), dtype=bool)
                    picked[fresh] = True
                    perm = np.concatenate([perm[picked], perm[~picked]])
                    templates = np.concatenate([templates[picked], templates[~picked]])
                carry, perm = np.concatenate([carry, perm[:need]]), perm[need:]
                carry_templates, templates = np.concatenate([carry_templates, templates[:need]]), templates[need:]
                if len(carry) < g:  # task smaller than a global batch: keep filling
                    continue
                yield carry, carry_templates
            n_full = len(perm) // g
            body, carry = perm[: n_full * g], perm[n_full * g :]
            body_templates, carry_templates = templates[: n_full * g], templates[n_full * g :]
            if lengths is not None and n_full:
                mega = g * self.length_grouping_factor
                order = np.concatenate([i + np.argsort(-lengths[body[i : i + mega]], kind="stable") for i in range(0, len(body), mega)])
                body, body_templates = body[order], body_templates[order]
                shuffle = rng.permutation(n_full)
                batches, batch_templates = body.reshape(n_full, g)[shuffle], body_templates.reshape(n_full, g)[shuffle]
            else:
                batches, batch_templates = body.reshape(n_full, g), body_templates.reshape(n_full, g)
            yield from zip(batches, batch_templates)

    # list[Any]: global indices, or (index, template) pairs when `yields_templates`.
    def __iter__(self) -> Iterator[list[Any]]:
        """Yield this rank's global indices for each step of the current epoch."""
        streams = [self._global_batches_with_templates(k) for k in range(len(self._names))]
        offsets = [self._offsets[name] for name in self._names]
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for k in self._schedule():
            tasks = range(len(self._names)) if self.composition == "all_tasks" else (k,)
            # Every rank advances every stream identically; each keeps only its slice.
            drawn = [(t, next(streams[t])) for t in tasks]
            if self.yields_templates:
                yield [(int(i) + offsets[t], int(m)) for t, (ids, tpl) in drawn for i, m in zip(ids[lo:hi], tpl[lo:hi])]
            else:
                yield [int(i) + offsets[t] for t, (ids, _) in drawn for i in ids[lo:hi]]

    # ------------------------------------------------------------------ checkpointing
    def _config(self) -> dict:
        return {
            "seed": self.seed,
            "task_sizes": dict(self._sizes),
            "effective_sizes": self.effective_sizes,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "strategy": self.strategy,
            "temperature": self.temperature,
            "composition": self.composition,
            "num_batches": self.num_batches,
            "length_grouped": self._lengths is not None,
            "length_grouping_factor": self.length_grouping_factor,
            **({"streamed": sorted(self.streamed)} if self.streamed else {}),
            **({"num_templates": dict(zip(self._names, self._templates))} if self.yields_templates else {}),
        }

    def state_dict(self) -> dict:
        """The epoch plus the configuration that must match for `load_state_dict` (rank excluded)."""
        return {"epoch": self.epoch, **self._config()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the epoch; raise `ValueError` if the saved configuration differs from this one."""
        current = self._config()
        diffs = [
            f"{key}: saved {state.get(key, '<missing>')!r} != current {value!r}"
            for key, value in current.items()
            if state.get(key, "<missing>") != value
        ]
        if diffs:
            raise ValueError("sampler state does not match this sampler's configuration: " + "; ".join(diffs))
        if "epoch" not in state:
            raise ValueError("sampler state has no 'epoch'")
        self.set_epoch(state["epoch"])


def batch_padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of padded tokens when each batch is padded to its longest member.

    Args:
        batches: Batches of global indices.
        lengths: Length of every example, indexed by global index.
    Returns:
        `padding / (padding + real tokens)`, 0.0 when there are no tokens.
    """
    table = np.asarray(lengths)
    padded = real = 0
    for batch in batches:
        if len(batch):
            batch_lengths = table[np.asarray(batch)]
            padded += int(batch_lengths.max()) * len(batch_lengths)
            real += int(batch_lengths.sum())
    return (padded - real) / padded if padded else 0.0


# ---------------------------------------------------------------------- resume check
SAMPLER_STATE_NAME = "sampler_state.json"


def save_sampler_state(sampler: MultiTaskBatchSampler, gradient_accumulation_steps: int, directory: str) -> None:
    """Write the configuration of the run's batch stream into a checkpoint (read by `check_sampler_resume`)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SAMPLER_STATE_NAME)
    write_json_atomic(path, {**sampler.state_dict(), "gradient_accumulation_steps": gradient_accumulation_steps}, indent=1)


def check_sampler_resume(directory: str, sampler: MultiTaskBatchSampler, gradient_accumulation_steps: int) -> None:
    """Refuse to resume from `directory` when this run's batch stream differs from the checkpoint's.

    The Trainer resumes by skipping the micro-batches already trained on; with another seed, data, batch
    size, number of processes, gradient accumulation, sampling strategy or temperature, composition, length
    grouping or template pool it would skip them in a different stream and train on the wrong examples. The
    run length (`num_batches`) may change (e.g. to train longer), except under `annealed` sampling, whose
    schedule spans the run. A checkpoint without the file (written before it existed) is not checked.
    """
    path = os.path.join(directory, SAMPLER_STATE_NAME)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    current = json.loads(json.dumps({**sampler.state_dict(), "gradient_accumulation_steps": gradient_accumulation_steps}))
    ignored = {"epoch"} | (set() if current["strategy"] == "annealed" else {"num_batches"})
    problems = [
        f"{key}: checkpoint {saved.get(key, '<missing>')!r}, now {value!r}"
        for key, value in current.items()
        if key not in ignored and saved.get(key, "<missing>") != value
    ]
    if problems:
        raise ValueError(
            f"resume_from_checkpoint {directory}: this run's batch stream differs from the checkpoint's ("
            + "; ".join(problems)
            + "); resume with the same data, seed, sampling, batch size, processes and "
            "gradient accumulation."
        )
