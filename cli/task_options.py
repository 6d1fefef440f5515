"""The command line's task add-ons: MLM auxiliary tasks (`--mlm_tasks`), prompt templates
(`--prompt_templates_file`, `--prompt_pool_size`, `--prompt_eval`), bi-encoder pair tasks (`--bi_encoder_tasks`) and
streamed tasks (`--streaming_tasks`), applied to the planned tasks.

Each takes and returns the planned `[(TaskSpec, source), ...]` of `run_glue_mtl.plan_tasks`; problems are a
one-line `UsageError` naming the option (and file, task).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from glue_tasks.prompts import glue_template_candidates
from hf_async_mtl.bi_encoder import BI_ENCODER
from hf_async_mtl.sources import DatasetsSource, TaskDataSource, TextOfTask
from hf_async_mtl.streaming import StreamingSource
from hf_async_mtl.tasks import TaskSpec
from hf_async_mtl.template_pool import build_template_pool

from .errors import UsageError, did_you_mean, read_json_file

logger = logging.getLogger("run_glue_mtl")

Planned = list[tuple[TaskSpec, TaskDataSource]]


def add_mlm_tasks(tasks: Planned, names: Sequence[str]) -> Planned:
    """`tasks` plus an MLM task `mlm_<name>` over the text fields of each named trained task (listed last)."""
    tasks = list(tasks)
    for name in names:
        base = next(((spec, source) for spec, source in tasks if spec.name == name), None)
        if base is None:
            raise UsageError(
                f"--mlm_tasks: task {name!r} is not trained{did_you_mean(name, [s.name for s, _ in tasks])}; "
                "an MLM task reads the training text of a trained task.",
                "mlm_tasks",
            )
        # Its dev text is the base task's, split for split (MNLI's are validation_matched / validation_mismatched).
        mlm = TaskSpec(name=f"mlm_{name}", text_fields=base[0].text_fields, objective="mlm", validation_splits=base[0].validation_splits)
        if mlm.name in {spec.name for spec, _ in tasks}:
            raise UsageError(f"--mlm_tasks: task name {mlm.name!r} is taken.", "mlm_tasks")
        tasks.append((mlm, TextOfTask(name, base[1], base[0].text_fields)))
    return tasks


def _read_templates_file(path: str, names: set[str]) -> dict[str, tuple[str, ...]]:
    entries, _ = read_json_file(path, "prompt templates file")
    if not isinstance(entries, dict):
        raise UsageError(
            f"--prompt_templates_file {path}: expected a JSON object {{task: template or [templates]}}.", "prompt_templates_file"
        )
    given = {}
    for task, value in entries.items():
        if task not in names:
            raise UsageError(
                f"--prompt_templates_file {path}: task {task!r} is not trained{did_you_mean(task, names)}.", "prompt_templates_file"
            )
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise UsageError(
                f"--prompt_templates_file {path}: task {task!r}: give a template or a non-empty list of templates.", "prompt_templates_file"
            )
        given[task] = tuple(value)
    return given


def apply_prompt_options(tasks: Planned, templates_file: str | None, pool_size: int | None, prompt_eval: str | None) -> Planned:
    """The tasks with the templates of `--prompt_templates_file` / `--prompt_pool_size` / `--prompt_eval` applied."""
    given = _read_templates_file(templates_file, {spec.name for spec, _ in tasks}) if templates_file else {}
    result = []
    for spec, source in tasks:
        if spec.is_mlm:  # an auxiliary MLM objective reads plain text
            if spec.name in given:
                raise UsageError(
                    f"--prompt_templates_file {templates_file}: task {spec.name!r} is an MLM "
                    "objective; prompt templates apply to supervised tasks.",
                    "prompt_templates_file",
                )
            result.append((spec, source))
            continue
        templates = given.get(spec.name, spec.prompt_templates)
        option = "prompt_templates_file" if spec.name in given else "prompt_pool_size"
        where = f"--prompt_templates_file {templates_file}" if spec.name in given else "--prompt_pool_size"
        try:
            if pool_size is not None:
                if not templates:
                    templates = glue_template_candidates(spec.name)
                if pool_size > len(templates):
                    raise ValueError(f"a pool of {pool_size} templates needs that many candidates; task {spec.name!r} has {len(templates)}")
                templates = tuple(build_template_pool(templates, pool_size))
            spec = dataclasses.replace(spec, prompt_templates=templates, prompt_eval=prompt_eval or spec.prompt_eval)
        except ValueError as error:
            raise UsageError(f"{where}: {str(error).rstrip('.')}.", option) from None
        if spec.prompt_templates:
            logger.info("Task %s: prompt templates %s (evaluation: %s)", spec.name, list(spec.prompt_templates), spec.prompt_eval)
        result.append((spec, source))
    return result


def as_trained_head(spec: TaskSpec, head: dict) -> TaskSpec:
    """`spec` as the checkpoint's head was trained: its prompt templates (and their evaluation), and a bi-encoder
    head's pair encoding and pair head (a merge has no --bi_encoder_tasks to restate them)."""
    if head.get("prompt_templates"):
        spec = dataclasses.replace(
            spec, prompt_templates=tuple(head["prompt_templates"]), prompt_eval=head.get("prompt_eval", spec.prompt_eval)
        )
    if head.get("pair_encoding") == BI_ENCODER and not spec.is_bi_encoder:
        spec = dataclasses.replace(spec, pair_encoding=BI_ENCODER, pair_head=head.get("pair_head", spec.pair_head))
    return spec


def apply_bi_encoder_tasks(tasks: Planned, names: Sequence[str]) -> Planned:
    """The tasks with each named one encoded as a bi-encoder (`TaskSpec(pair_encoding="bi_encoder")`, its pair head from
    its kind: cosine for regression, sbert for classification). Unknown names, single-text or MLM tasks, tasks with
    prompt templates and a cosine task without a label range are a one-line `UsageError`."""
    trained = {spec.name for spec, _ in tasks}
    unknown = [name for name in names if name not in trained]
    if unknown:
        raise UsageError(f"--bi_encoder_tasks: task {unknown[0]!r} is not trained{did_you_mean(unknown[0], trained)}.", "bi_encoder_tasks")
    if len(set(names)) != len(names):
        raise UsageError(f"--bi_encoder_tasks names a task twice: {list(names)}.", "bi_encoder_tasks")
    result = []
    for spec, source in tasks:
        if spec.name in names and not spec.is_bi_encoder:
            try:
                spec = dataclasses.replace(spec, pair_encoding="bi_encoder")
            except ValueError as error:
                raise UsageError(f"--bi_encoder_tasks: {str(error).rstrip('.')}.", "bi_encoder_tasks") from None
            logger.info("Task %s: bi-encoder, %s pair head", spec.name, spec.pair_head)
        result.append((spec, source))
    return result


def parse_streaming_tasks(value: str | None) -> dict[str, int | None]:
    """`--streaming_tasks 'reviews=10000000,logs'` → {task: declared row count or None}."""
    parsed: dict[str, int | None] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, _, rows = item.partition("=")
        name = name.strip()
        if name in parsed:
            raise UsageError(f"--streaming_tasks names task {name!r} twice.", "streaming_tasks")
        if rows.strip() and not (rows.strip().isdigit() and int(rows) >= 2):
            raise UsageError(
                f"--streaming_tasks {item.strip()!r}: the row count must be an integer >= 2, e.g. {name}=1000000.", "streaming_tasks"
            )
        parsed[name] = int(rows) if rows.strip() else None
    return parsed


def apply_streaming_tasks(tasks: Planned, streamed: dict[str, int | None], block_size: int) -> Planned:
    """The tasks with each named custom task's training split streamed (`StreamingSource`); a GLUE task (read by its
    own TSV reader), an MLM task or an unknown name is a one-line `UsageError`."""
    trained = {spec.name: source for spec, source in tasks}
    for name in streamed:
        if name not in trained:
            raise UsageError(f"--streaming_tasks: task {name!r} is not trained{did_you_mean(name, trained)}.", "streaming_tasks")
        if not isinstance(trained[name], DatasetsSource):
            raise UsageError(
                f"--streaming_tasks: task {name!r} is not read through datasets (a GLUE TSV or a derived task): stream a "
                "custom task (--custom_tasks_file with train_file or dataset).",
                "streaming_tasks",
            )
    result: Planned = []
    for spec, source in tasks:
        if spec.name in streamed:
            try:
                source = StreamingSource(spec, source.source, num_rows=streamed[spec.name], block_size=block_size)  # type: ignore[attr-defined]
            except ValueError as error:
                raise UsageError(f"--streaming_tasks: {error}", "streaming_tasks") from None
            logger.info("Task %s: training split streamed (blocks of %d rows)", spec.name, block_size)
        result.append((spec, source))
    return result
