"""Model cards and Hub pushes for multi-task models.

`MultiTaskTrainer.create_model_card` (hence `trainer.push_to_hub()`), `MultiTaskModel.push_to_hub` and
`MultiTaskModel.push_task_to_hub` write a `README.md` built here: the tasks (name, kind, labels), the metrics of
the trainer's last evaluation, the multi-task method and its settings, and the base checkpoint, with Hub
metadata (`library_name`, `tags`, `base_model`, `datasets` for GLUE tasks, `pipeline_tag`).

Nothing secret goes into a card: it is built from the model config and a fixed list of training options (never
`hub_token` or other credentials), and local checkpoint paths are reduced to their last component.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .async_kd.options import AsyncKDOptions
from .bi_encoder import COSINE_HEAD, is_bi_encoder
from .checkpoints import packaged_hub_id

LIBRARY_TAG = "hf_async_mtl"
GLUE_TASK_NAMES = frozenset({"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"})
GLUE_DATASET = "nyu-mll/glue"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SPEED_KEYS = ("runtime", "samples_per_second", "steps_per_second")

__all__ = [
    "base_model_id",
    "build_model_card",
    "build_task_card",
    "last_evaluation",
    "merging_section",
    "method_settings",
]


# ---- pieces ---------------------------------------------------------------------------------------


def base_model_id(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id of a base checkpoint, or `None` when it is a local directory with no known Hub origin."""
    if not name_or_path:
        return None
    name = os.fspath(name_or_path)
    hub_id = packaged_hub_id([name, *re.split(r"[\\/]", os.path.normpath(name))])
    if hub_id is not None:
        return hub_id
    if os.path.isabs(name) or os.path.isdir(name) or name.startswith("."):
        return None
    return name if _HUB_ID.match(name) else None


def _base_model_display(name_or_path: str | None) -> str:
    if not name_or_path:
        return "not recorded"
    hub_id = base_model_id(name_or_path)
    if hub_id is not None:
        return f"[`{hub_id}`](https://huggingface.co/{hub_id})"
    # A local directory: its path says nothing to readers of the card and may reveal the author's file system.
    return f"a local checkpoint (`{os.path.basename(os.path.normpath(name_or_path))}`)"


def _task_rows(config: Any, task_specs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for head in config.tasks:
        spec = (task_specs or {}).get(head["name"])
        labels: list[str]
        if head["problem_type"] == "masked_lm":
            kind, labels = "masked-LM auxiliary objective (not a classifier; no export)", []
        elif head["problem_type"] == "regression":
            bounds = getattr(spec, "regression_range", None)
            kind = "regression" + (f" (range {bounds[0]:g} to {bounds[1]:g})" if bounds else "")
            labels = []
        else:
            kind = f"classification ({head['num_labels']} classes)"
            labels = [str(head["id2label"][key]) for key in sorted(head["id2label"], key=int)]
        if head.get("prompt_templates"):
            kind += f"; mask-token head, prompt templates {head['prompt_templates']} (evaluation: {head.get('prompt_eval', 'first')})"
        if is_bi_encoder(head):
            kind += "; " + _bi_encoder_kind(head)
        rows.append({"name": head["name"], "kind": kind, "labels": labels, "metrics": list(getattr(spec, "metrics", ()) or ())})
    return rows


def _bi_encoder_kind(head: Mapping[str, Any]) -> str:
    if head.get("pair_head") == COSINE_HEAD:
        low, high = head["label_range"]
        return f"bi-encoder, cosine head (each text encoded alone; score = {low:g} + {high - low:g} × cosine)"
    return "bi-encoder, sbert head (each text encoded alone; linear classifier on u, v, |u − v|, u * v)"


def last_evaluation(
    log_history: Sequence[Mapping[str, Any]] | None,
    task_names: Sequence[str],
    task_specs: Mapping[str, Any] | None = None,
    prefix: str = "eval",
) -> tuple[int | None, dict[str, dict[str, float]], dict[str, float]]:
    """Metrics of the last evaluation in a trainer's log history.

    Returns `(step, per_task, overall)`: `per_task[key]` maps metric names to values for each task (and for a
    task's extra evaluation splits, as `"<task> (<split>)"`), `overall` holds `glue_score` and `loss`.
    """
    for entry in reversed(list(log_history or [])):
        if not any(key.startswith(f"{prefix}_{task}_") for key in entry for task in task_names):
            continue
        per_task: dict[str, dict[str, float]] = {}
        claimed: set[str] = set()
        # Longest names first, so task "mnli_mm" does not read as split "mm" of task "mnli".
        for task in sorted(task_names, key=len, reverse=True):
            spec = (task_specs or {}).get(task)
            splits = list(getattr(spec, "validation_splits", ())[1:]) if spec is not None else []
            for split in [None, *splits]:
                head = f"{prefix}_{task}_" + (f"{split}_" if split else "")
                keys = [k for k in entry if k.startswith(head) and k not in claimed]
                if split is None:
                    keys = [k for k in keys if not any(k.startswith(f"{head}{s}_") for s in splits)]
                values = {}
                for key in keys:
                    value = entry[key]
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        values[key[len(head) :]] = float(value)
                        claimed.add(key)
                if values:
                    per_task[task if split is None else f"{task} ({split})"] = values
        overall = {
            name: float(entry[f"{prefix}_{name}"])
            for name in ("glue_score", "loss")
            if isinstance(entry.get(f"{prefix}_{name}"), (int, float))
        }
        order = {task: i for i, task in enumerate(task_names)}
        per_task = dict(sorted(per_task.items(), key=lambda item: (order.get(item[0].split(" ")[0], len(order)), item[0])))
        step = entry.get("step")
        return (int(step) if isinstance(step, (int, float)) else None), per_task, overall
    return None, {}, {}


def method_settings(args: Any, step_composition: str | None = None) -> dict[str, Any]:
    """The multi-task method and its settings from `MultiTaskTrainingArguments`, in display order.

    Only a fixed list of options is read: credentials (`hub_token`, ...) and local paths never appear.
    """
    if args is None:
        return {}
    settings: dict[str, Any] = {"mtl_method": args.mtl_method, "mtl_method_options": dict(args.mtl_method_options or {})}
    if getattr(args, "async_kd", False):
        settings["async_kd"] = True
        # Every option of the rule and the distillation (AsyncKDOptions), in its order; not where snapshots go or
        # how many examples a labelling batch holds (local paths and speed, not the method).
        for name in AsyncKDOptions.argument_names():
            if name in ("kd_snapshot_dir", "kd_label_batch_size"):
                continue
            settings[name] = getattr(args, name)
    settings["sampling_strategy"] = args.sampling_strategy
    if args.sampling_strategy == "temperature":
        settings["sampling_temperature"] = args.sampling_temperature
    settings["step_composition"] = step_composition or args.step_composition
    settings["length_aware_batching"] = args.length_aware_batching
    settings["learning_rate"] = args.learning_rate
    settings["per_device_train_batch_size"] = args.per_device_train_batch_size
    if args.gradient_accumulation_steps != 1:
        settings["gradient_accumulation_steps"] = args.gradient_accumulation_steps
    if args.max_steps and args.max_steps > 0:
        settings["max_steps"] = args.max_steps
    else:
        settings["num_train_epochs"] = args.num_train_epochs
    settings["seed"] = args.seed
    if getattr(args, "load_best_model_at_end", False):
        settings["metric_for_best_model"] = args.metric_for_best_model
    return settings


def _merge_values(merging: Mapping[str, Any]) -> str:
    values = f"λ = {_fmt(merging.get('scale'))}"
    if merging.get("density") is not None:
        values += f", density = {_fmt(merging.get('density'))}"
    return values


def merging_section(merging: Mapping[str, Any]) -> list[str]:
    """The card's "Merging" section: how the encoder was merged, from which checkpoints, and how λ was chosen.

    Checkpoint paths are reduced to their last component (a path says nothing to readers and may reveal the author's
    file system)."""
    lines = [
        "## Merging",
        "",
        f"This model was not trained as one: its encoder is the merge of single-task fine-tunes of one base encoder by "
        f"`{merging.get('method')}` ({merging.get('definition', '')}), with {_merge_values(merging)}; each task's head is "
        "copied unchanged from its single-task model.",
        "",
        "| task | single-task checkpoint | fine-tuning | selection score alone | selection score merged |",
        "|---|---|---|---|---|",
    ]
    alone, merged = merging.get("single_task_selection") or {}, merging.get("chosen_selection") or {}
    for checkpoint in merging.get("checkpoints") or []:
        task = checkpoint.get("task")
        name = os.path.basename(os.path.normpath(str(checkpoint.get("path", ""))))
        lines.append(
            f"| {_cell(task)} | `{_cell(name)}` | {_cell(checkpoint.get('kind', ''))} | "
            f"{_fmt(alone[task]) if task in alone else '—'} | {_fmt(merged[task]) if task in merged else '—'} |"
        )
    grid = merging.get("grid") or {}
    lines += [
        "",
        f"λ{' and the density' if merging.get('density') is not None else ''} were chosen on each task's selection split "
        "(held out of its training data by its single-task run), never on dev: "
        f"{merging.get('selection_rule', '')}. Grid: λ ∈ {_fmt(grid.get('scales'))}"
        + (f", density ∈ {_fmt(grid.get('densities'))}" if grid.get("densities") else "")
        + f" ({len(merging.get('grid_scores') or [])} points; every point's scores are in `config.merging`)."
        + (
            f" The chosen λ is the grid's {merging['scale_at_grid_edge']}: a grid that goes further may score higher."
            if merging.get("scale_at_grid_edge")
            else ""
        ),
    ]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return str(value).replace(".0", "")
        if abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.4g}"
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _card_data(
    config: Any,
    *,
    tags: Sequence[str] | str | None,
    base_model: str | None,
    datasets: Sequence[str] | str | None,
    language: Any = None,
    license: str | None = None,
    extra_tags: Sequence[str] = (),
    library_name: str = "transformers",
    pipeline_tag: str = "text-classification",
) -> ModelCardData:
    task_names = config.task_names
    if datasets is None and task_names and set(task_names) <= GLUE_TASK_NAMES:
        datasets = [GLUE_DATASET]
    tag_list = [LIBRARY_TAG, pipeline_tag, *extra_tags, *([tags] if isinstance(tags, str) else list(tags or []))]
    return ModelCardData(
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(tag_list)),
        base_model=base_model,
        datasets=[datasets] if isinstance(datasets, str) else (list(datasets) if datasets else None),
        language=language,
        license=license,
    )


def _usage(repo_id: str | None, task_names: Sequence[str]) -> list[str]:
    repo = repo_id or "<repo_id>"
    task = task_names[0] if task_names else "<task>"
    return [
        "## Usage",
        "",
        "```python",
        "import hf_async_mtl  # registers the multi-task model type with the transformers Auto classes",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        f'model = AutoModel.from_pretrained("{repo}")  # a hf_async_mtl.MultiTaskModel',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")  # if the tokenizer was pushed with the model',
        'inputs = tokenizer(["an example sentence"], return_tensors="pt", padding=True)',
        f'logits = model(**inputs, task_name="{task}").logits',
        "```",
        "",
        f'`model.export_task("{task}", "{task}-model")` writes a single-task checkpoint that '
        '`AutoModelForSequenceClassification` and `pipeline("text-classification")` load.',
    ]


# ---- cards ----------------------------------------------------------------------------------------


def build_model_card(
    config: Any,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    args: Any = None,
    task_specs: Mapping[str, Any] | Sequence[Any] | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    step_composition: str | None = None,
    convergence: Mapping[str, Mapping[str, Any]] | None = None,
    base_model: str | None = None,
    tags: Sequence[str] | str | None = None,
    datasets: Sequence[str] | str | None = None,
    language: Any = None,
    license: str | None = None,
    evaluation_source: str | None = None,
) -> ModelCard:
    """The model card of a multi-task model.

    Args:
        config: The model's `MultiTaskConfig` (tasks, pooling, encoder, `base_encoder_name_or_path`).
        repo_id: Hub id the card is pushed to (used in the usage snippet).
        model_name: Card title; defaults to the repo name.
        args: `MultiTaskTrainingArguments` of the run, for the method and its settings.
        task_specs: The `TaskSpec`s (metric names, regression ranges, extra evaluation splits).
        log_history: `trainer.state.log_history`; the last evaluation's metrics are reported.
        step_composition: The composition the trainer resolved (`auto` → `one_task` / `all_tasks`).
        convergence: `AsyncConvergenceCallback.report()` for `async_kd` runs.
        base_model: Base checkpoint; defaults to `config.base_encoder_name_or_path`.
        tags, datasets, language, license: Extra Hub metadata (GLUE tasks imply `datasets: [nyu-mll/glue]`).
        evaluation_source: What produced `log_history`'s last evaluation when it is not a trainer's (e.g. a merge's
            dev evaluation); the Evaluation section names it.
    """
    if task_specs is not None and not isinstance(task_specs, Mapping):
        task_specs = {spec.name: spec for spec in task_specs}
    base = base_model or getattr(config, "base_encoder_name_or_path", None)
    settings = method_settings(args, step_composition)
    title = model_name or (repo_id.split("/")[-1] if repo_id else "Multi-task text classifier")
    encoder_type = getattr(config.encoder_config, "model_type", "unknown")
    extra_tags = (
        ["multi-task"] + ([f"mtl-{settings['mtl_method']}"] if settings else []) + (["mtl-async_kd"] if settings.get("async_kd") else [])
    )
    data = _card_data(
        config, tags=tags, base_model=base_model_id(base), datasets=datasets, language=language, license=license, extra_tags=extra_tags
    )

    lines = [
        f"# {title}",
        "",
        f"A multi-task text-classification model built with `{LIBRARY_TAG}`: one shared `{encoder_type}` encoder "
        f"and one head per task ({len(config.tasks)} tasks), pooling `{config.pooling}`.",
        "",
        f"- **Base checkpoint:** {_base_model_display(base)}",
        f"- **Tasks:** {', '.join(f'`{name}`' for name in config.task_names)}",
    ]
    layers = getattr(config.encoder_config, "num_hidden_layers", None)
    if layers is not None:  # a --num_encoder_layers cut shows here: the base checkpoint line names the full model
        lines.append(f"- **Encoder layers:** {layers} (hidden size {getattr(config.encoder_config, 'hidden_size', '?')})")
    if settings:
        lines.append(f"- **Multi-task method:** `{settings['mtl_method']}`")
    bi_encoders = [f"`{head['name']}` ({head.get('pair_head')})" for head in config.tasks if is_bi_encoder(head)]
    if bi_encoders:
        lines.append(f"- **Bi-encoder pair heads** (each text encoded alone, text b as `pair_input_ids`): {', '.join(bi_encoders)}")
    if getattr(config, "peft_config", None):
        peft = config.peft_config
        lines.append(f"- **Adapters:** {peft.get('peft_type', 'PEFT')} on the shared encoder (r = {peft.get('r', '?')})")
    if getattr(config, "task_adapters", None):
        adapters = config.task_adapters
        base = "trained" if getattr(config, "task_adapters_train_base", False) else "frozen"
        lines.append(
            f"- **Task-specific capacity:** one {adapters.get('peft_type', 'PEFT')} adapter per task (r = {adapters.get('r', '?')}), base encoder {base}"
        )
    if getattr(config, "unshared_layers", 0):
        lines.append(f"- **Task-specific capacity:** each task has its own copy of the encoder's last {config.unshared_layers} layers")
    merging = getattr(config, "merging", None)
    if merging:
        lines.append(
            f"- **Merged:** from {len(merging.get('checkpoints') or [])} single-task models by `{merging.get('method')}` ({_merge_values(merging)})"
        )
    lines += ["", "## Tasks", "", "| task | kind | labels |", "|---|---|---|"]
    for row in _task_rows(config, task_specs):
        labels = ", ".join(row["labels"]) if row["labels"] else "one score"
        lines.append(f"| {_cell(row['name'])} | {row['kind']} | {_cell(labels)} |")

    step, per_task, overall = last_evaluation(log_history, config.task_names, task_specs)
    lines += ["", "## Evaluation", ""]
    if per_task:
        where = f"at step {step}" if step is not None else "at the end of training"
        intro = f"Metrics of {evaluation_source}:" if evaluation_source else f"Metrics of the trainer's last evaluation ({where}):"
        lines += [intro, "", "| task | metric | value |", "|---|---|---|"]
        for task, values in per_task.items():
            for metric, value in values.items():
                lines.append(f"| {_cell(task)} | {_cell(metric)} | {_fmt(value)} |")
        if overall:
            summary = ", ".join(f"{'mean task score' if k == 'glue_score' else 'mean loss'} {_fmt(v)}" for k, v in overall.items())
            lines += ["", f"Overall: {summary}."]
    else:
        lines.append("No evaluation results were recorded with this upload (`trainer.push_to_hub()` after an evaluation adds them).")

    if settings:
        lines += ["", "## Multi-task training", "", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(_fmt(value))} |" for name, value in settings.items()]
        if settings.get("async_kd"):
            lines += [
                "",
                "`async_kd` is asynchronous convergence (Lu et al., NAACL 2022 industry track): once a task "
                "has converged on its validation metric, it trains against soft labels from its best parameters "
                "(self-distillation) while the other tasks keep their true labels.",
            ]
    if merging:
        lines += ["", *merging_section(merging)]
    if convergence:
        lines += [
            "",
            "### Convergence",
            "",
            "| task | converged | at step | metric at convergence | final metric |",
            "|---|---|---|---|---|",
        ]
        signals = sorted({str(r.get("signal")) for r in convergence.values() if r.get("signal", "score") != "score"})
        if signals:  # the rule read another kd_signal: the two columns are in its unit
            lines[-2] = lines[-2].replace("metric at", f"{'/'.join(signals)} signal at").replace("final metric", "final signal")
        for task, record in convergence.items():
            lines.append(
                f"| {_cell(task)} | {_fmt(bool(record.get('converged')))} | {_fmt(record.get('converged_step') or '—')} | "
                # a task that did not converge has no value at convergence (the report keeps its best so far)
                f"{_fmt(record['metric_at_convergence']) if record.get('converged') and record.get('metric_at_convergence') is not None else '—'} | "
                f"{_fmt(record.get('final_metric')) if record.get('final_metric') is not None else '—'} |"
            )
    lines += ["", *_usage(repo_id, config.task_names), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def build_task_card(
    config: Any,
    task_name: str,
    *,
    exported_class: str,
    repo_id: str | None = None,
    base_model: str | None = None,
    tags: Sequence[str] | str | None = None,
    datasets: Sequence[str] | str | None = None,
    language: Any = None,
    license: str | None = None,
) -> ModelCard:
    """The card of one task exported from a multi-task model (`MultiTaskModel.push_task_to_hub`)."""
    head = config.task(task_name)
    base = base_model or getattr(config, "base_encoder_name_or_path", None)
    if datasets is None and task_name in GLUE_TASK_NAMES:
        datasets = [GLUE_DATASET]
    title = repo_id.split("/")[-1] if repo_id else f"{task_name} classifier"
    native = exported_class != "MultiTaskModel"
    # A cosine pair task is pushed as a sentence-transformers directory: the Hub's widget and "Use this model" follow
    # library_name / pipeline_tag (a text-classification pipeline cannot run its plain encoder).
    sentence_transformers = is_bi_encoder(head) and native
    data = _card_data(
        config,
        tags=tags,
        base_model=base_model_id(base),
        datasets=datasets or [],
        language=language,
        license=license,
        extra_tags=["multi-task", "single-task-export", *(["sentence-transformers"] if sentence_transformers else [])],
        library_name="sentence-transformers" if sentence_transformers else "transformers",
        pipeline_tag="sentence-similarity" if sentence_transformers else "text-classification",
    )
    row = next(r for r in _task_rows(config, None) if r["name"] == task_name)
    repo = repo_id or "<repo_id>"
    if is_bi_encoder(head):  # a cosine task exports as a sentence-transformers directory (its encoder's class)
        usage = _bi_encoder_usage(head, repo, sentence_transformers=native)
        exported_class = f"sentence-transformers model ({exported_class})" if native else exported_class
    else:
        usage = _task_usage(head, repo, native)
    others = [name for name in config.task_names if name != task_name]
    merging = getattr(config, "merging", None)
    if merging and others:
        shared = (
            f" The encoder was merged by `{merging.get('method')}` ({_merge_values(merging)}) from single-task models of: "
            f"{', '.join(f'`{n}`' for n in [task_name, *others])}."
        )
    else:
        shared = f" The encoder was trained jointly with: {', '.join(f'`{n}`' for n in others)}." if others else ""
    lines = [
        f"# {title}",
        "",
        f"The `{task_name}` head of a multi-task `{LIBRARY_TAG}` model, exported as a standalone "
        f"`{exported_class}` (shared encoder + this task's head)." + shared,
        "",
        f"- **Base checkpoint:** {_base_model_display(base)}",
        f"- **Kind:** {row['kind']}",
        f"- **Labels:** {', '.join(row['labels']) if row['labels'] else 'one score'}",
        "",
        *usage,
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _task_usage(head: Mapping[str, Any], repo: str, native: bool) -> list[str]:
    return [
        "## Usage",
        "",
        "```python",
        *([] if native else ["import hf_async_mtl  # registers this model type with the transformers Auto classes"]),
        "from transformers import AutoModelForSequenceClassification, pipeline",
        "",
        f'model = AutoModelForSequenceClassification.from_pretrained("{repo}")',
        (
            f'classifier = pipeline("text-classification", model="{repo}", trust_remote_code=True)  # applies the prompt templates'
            if head.get("prompt_templates")
            else f'classifier = pipeline("text-classification", model="{repo}")  # when the tokenizer was pushed too'
        ),
        "```",
        "",
    ]


def _bi_encoder_usage(head: Mapping[str, Any], repo: str, *, sentence_transformers: bool) -> list[str]:
    if sentence_transformers:  # a cosine task: a sentence-transformers directory
        low, high = head["label_range"]
        return [
            "## Usage",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("{repo}")',
            'embeddings = model.encode(["A man is playing a guitar.", "Someone plays a guitar."])',
            f"cosine = model.similarity(embeddings[:1], embeddings[1:])  # score in label units: {low:g} + {high - low:g} * cosine",
            "```",
            "",
            "Plain `transformers.AutoModel` loads the same encoder: encode each text alone, pool as `1_Pooling/config.json` "
            "says, and take the cosine.",
            "",
        ]
    return [
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("text-classification", model="{repo}", trust_remote_code=True)  # each text encoded alone',
        'classifier({"text": "A man is playing a guitar.", "text_pair": "Someone plays a guitar."})',
        "```",
        "",
    ]
