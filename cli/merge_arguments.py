"""The options of `merge_models.py`, their parser and its preflight.

`MergeArguments` (which checkpoints, how to merge, the grid, where the selection data is, where to write);
`parse_merge_args` reads flags and turns every problem (unknown option, value outside its bound in
`cli/bounds.py` `MERGE_BOUNDS`, failed check) into a one-line `UsageError` naming the option; `plan_merge` finds each
checkpoint's task and its data source (a GLUE task under `--glue_dir`, or a task of `--custom_tasks_file`) with the
checkpoint's prompt templates, reading no data and no weights.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

from glue_tasks.specs import GLUE_TASKS
from hf_async_mtl.errors import InputError
from hf_async_mtl.merging import MERGE_METHODS, MergeGrid, read_checkpoint
from hf_async_mtl.merging.checkpoints import SingleTaskCheckpoint, check_checkpoint_set, resolve_base
from hf_async_mtl.sources import DatasetsSource, TaskDataSource
from hf_async_mtl.tasks import TaskSpec, head_mismatches

from .arguments import ArgumentParser, DataArguments, _option_in
from .bounds import MERGE_BOUNDS, check_bounds
from .errors import UsageError, did_you_mean
from .model_checks import check_output_dir
from .preflight import plan_tasks
from .task_options import as_trained_head
from .tasks_file import read_custom_tasks


@dataclass
class MergeArguments:
    """Which single-task checkpoints to merge, how, on which grid, with which selection data, and where to write."""

    checkpoints: list[str] = field(
        metadata={
            "help": "Single-task checkpoints to merge (run_glue_mtl.py --tasks X outputs, full or LoRA fine-tunes of one "
            "base encoder); the merged model's heads are in this order."
        }
    )
    output_dir: str = field(metadata={"help": "Where the merged model is written (must not exist, or be empty)."})
    method: str = field(
        default="ties",
        metadata={"help": f"Merging method: {', '.join(MERGE_METHODS)} (definitions: docs/merging.md)."},
    )
    scales: list[float] | None = field(
        default=None,
        metadata={
            "help": "The scales λ tried (merged = base + λ·direction); default 0.3 0.5 0.7 1.0 (task_arithmetic, dare), 0.5 1.0 1.5 2.0 2.5 3.0 (ties, ties_global, dare_ties: a mean, not a sum, of task vectors)."
        },
    )
    densities: list[float] | None = field(
        default=None,
        metadata={
            "help": "The densities tried by ties, ties_global, dare and dare_ties (share of each task vector kept); default 0.2 0.5 0.8."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "The base encoder, when not where the checkpoints' config (base_encoder_name_or_path) says."},
    )
    glue_dir: str | None = field(
        default_factory=lambda: os.environ.get("GLUE_DIR") or None,
        metadata={"help": "Original GLUE TSV directory the single-task runs read (default: $GLUE_DIR when set, else the Hub)."},
    )
    custom_tasks_file: str | None = field(
        default=None, metadata={"help": "The --custom_tasks_file of single-task runs of your own tasks (their data)."}
    )
    merge_seed: int = field(default=0, metadata={"help": "Seed of DARE's random masks (dare, dare_ties)."})
    do_eval: bool = field(
        default=False,
        metadata={"help": "After choosing, evaluate the dev sets of the merged model and of each single-task model (reported only)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on dev examples of every task (quick checks)."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on the CPU even when a GPU is available."})
    bf16: bool = field(
        default=False,
        metadata={
            "help": "Evaluate the grid and dev sets under bf16 autocast (as runs trained with --bf16 evaluate); merging stays float32."
        },
    )

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("--output_dir is empty.")
        MergeGrid(self.method, tuple(self.scales) if self.scales is not None else None, _tuple(self.densities))


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


@dataclass
class MergePlan:
    """What the preflight found: the checkpoints (configs only) and each one's task spec and data source."""

    checkpoints: list[SingleTaskCheckpoint]
    tasks: dict[str, tuple[TaskSpec, TaskDataSource]]


def parse_merge_args(argv: list[str] | None = None) -> MergeArguments:
    """Parse the flags of `merge_models.py`; bad options are a one-line `UsageError` naming the option."""
    parser = ArgumentParser(MergeArguments)
    argv = sys.argv[1:] if argv is None else argv
    options = {f.name for f in dataclasses.fields(MergeArguments) if f.init}
    given, _ = parser.parse_known_args(argv)
    check_bounds(vars(given), lambda name, problem: UsageError(f"--{name} {problem}.", name), MERGE_BOUNDS)
    try:
        parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except UsageError:
        raise
    except ValueError as error:  # the dataclass's own check (__post_init__, the grid)
        message = str(error)
        option = _option_in(message, options) or ("densities" if "densit" in message else "scales" if "scale" in message else None)
        raise UsageError(message if message.startswith("--") or option is None else f"--{option}: {message}", option) from None
    if remaining:
        unknown = next((a for a in remaining if a.startswith("-")), remaining[0])
        flag = unknown.split("=", 1)[0]
        hint = did_you_mean(flag, [f"--{o}" for o in options])
        raise UsageError(f"unknown option {flag}{hint}." if flag.startswith("-") else f"unexpected argument {unknown!r}.")
    return parsed


def plan_merge(args: MergeArguments) -> MergePlan:
    """Every check that needs no data and no weights: the output directory, the checkpoints' configs (one head each,
    distinct tasks, one base encoder, which can be found), and each task's description and data source."""
    check_output_dir(args.output_dir)
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        raise UsageError(f"--output_dir {os.path.abspath(args.output_dir)}: exists and is not empty; give a new directory.", "output_dir")
    checkpoints = [read_checkpoint(path) for path in args.checkpoints]
    check_checkpoint_set(checkpoints, args.base_model)
    resolve_base(checkpoints, args.base_model)
    glue = [c.task for c in checkpoints if c.task in GLUE_TASKS]
    custom = [c.task for c in checkpoints if c.task not in GLUE_TASKS]
    if custom and not args.custom_tasks_file:
        raise UsageError(
            f"task(s) {custom} of the checkpoints are not GLUE tasks: pass the --custom_tasks_file their runs were trained with.",
            "custom_tasks_file",
        )
    found: dict[str, tuple[TaskSpec, TaskDataSource]] = {}
    if glue:
        data_args = DataArguments(tasks=",".join(glue), glue_dir=args.glue_dir)
        found.update((spec.name, (spec, source)) for spec, source in plan_tasks(data_args, with_dev=args.do_eval))  # train: selection
    if args.custom_tasks_file:
        found.update(
            (spec.name, (spec, DatasetsSource(spec, source)))
            for spec, source in read_custom_tasks(args.custom_tasks_file, taken_names=glue)
            if spec.name in custom
        )
    tasks = {}
    for checkpoint in checkpoints:
        if checkpoint.task not in found:
            raise UsageError(
                f"--custom_tasks_file {args.custom_tasks_file}: has no task {checkpoint.task!r} (of {checkpoint.path}).",
                "custom_tasks_file",
            )
        spec, source = found[checkpoint.task]
        spec = as_trained_head(spec, checkpoint.head)
        problems = head_mismatches([checkpoint.head], [spec])
        if problems:
            raise InputError(
                f"{checkpoint.where('tasks')}: the head does not match task {spec.name!r}: {'; '.join(problems)}.", "checkpoints"
            )
        tasks[checkpoint.task] = (spec, source)
    return MergePlan(checkpoints=checkpoints, tasks=tasks)


__all__ = ["MergeArguments", "MergePlan", "parse_merge_args", "plan_merge"]
