"""run_glue_mtl.py end to end on tiny GLUE-format data, and its bad-input errors."""

from __future__ import annotations

import json
import os
import re

import pytest

import run_glue_mtl

COLA_ROWS = [
    ("gj04", "1", "", "The book is on the table ."),
    ("gj04", "0", "*", "Book the on is table ."),
    ("gj04", "1", "", 'She said "hello" to him .'),
    ("gj04", "0", "*", "Him said she ."),
]
RTE_ROWS = [
    ("entailment", "A man sleeps .", "A person sleeps ."),
    ("not_entailment", "A cat runs .", "NA is here ."),
    ("entailment", "It rains today .", "It rains ."),
    ("not_entailment", "The sun is up .", "null"),
]


def write_glue(root, copies: int = 6, bad_rte_label: bool = False):
    cola, rte = root / "CoLA", root / "RTE"
    cola.mkdir(parents=True)
    rte.mkdir()
    for split, n in (("train", copies), ("dev", 2)):
        (cola / f"{split}.tsv").write_text("\n".join("\t".join(r) for r in COLA_ROWS * n))
        lines = ["index\tsentence1\tsentence2\tlabel"]
        for i, (label, a, b) in enumerate(RTE_ROWS * n):
            lines.append(f"{i}\t{a}\t{b}\t{'maybe' if bad_rte_label and i == 3 else label}")
        (rte / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def base_args(glue_dir, checkpoint, out):
    return [
        "--model_name_or_path",
        checkpoint,
        "--tasks",
        "cola,rte",
        "--glue_dir",
        str(glue_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--eval_steps",
        "2",
        "--max_seq_length",
        "32",
        "--use_cpu",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        "--selection_split_fraction",
        "0.25",
        "--do_train",
        "--do_eval",
    ]


def test_cli_trains_and_writes_results(tmp_path, tiny_checkpoint):
    glue = write_glue(tmp_path / "glue")
    out = tmp_path / "out"
    results = run_glue_mtl.main(base_args(glue, tiny_checkpoint, out) + ["--mtl_method", "async_kd", "--kd_patience", "1"])
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("eval_cola_matthews_correlation", "eval_rte_accuracy", "eval_glue_score", "train_runtime"):
        assert saved[key] == results[key]  # what was returned is what was written
    assert saved["eval_glue_score"] == (saved["eval_cola_score"] + saved["eval_rte_score"]) / 2
    assert 0.0 <= saved["eval_rte_accuracy"] <= 1.0 and saved["train_runtime"] > 0
    assert set(saved["convergence"]) == {"cola", "rte"}
    per_task = json.loads((out / "eval_results_rte.json").read_text())
    assert per_task == {k: v for k, v in saved.items() if k.startswith("eval_rte")}  # the task's own slice of the results
    assert os.path.isfile(out / "model.safetensors") and os.path.isfile(out / "config.json")


def test_cli_dev_curves_log_the_dev_sets_beside_the_selection_split_that_selects(tmp_path, tiny_checkpoint, capsys):
    glue = write_glue(tmp_path / "glue")
    out = tmp_path / "out"
    run_glue_mtl.main(base_args(glue, tiny_checkpoint, out) + ["--dev_curves", "--mtl_method", "async_kd", "--kd_patience", "1"])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    during = [log for log in history if "eval_rte_dev_accuracy" in log]
    assert [log["step"] for log in during] == [2, 4]
    # The selection split stays the task's own score (what convergence reads); dev is logged beside it.
    assert all("eval_rte_accuracy" in log and "eval_cola_dev_matthews_correlation" in log for log in during)
    report = json.loads((out / "convergence_report.json").read_text())
    # The monitor read the selection scores, never the dev ones; eval_loss (what `loss` selection reads) is the
    # selection splits' mean loss.
    for task in ("cola", "rte"):
        assert report[task]["history"] == [[log["step"], log[f"eval_{task}_score"]] for log in during]
    for log in during:
        assert log["eval_loss"] == pytest.approx((log["eval_cola_loss"] + log["eval_rte_loss"]) / 2)
        assert log["eval_loss"] != pytest.approx((log["eval_cola_dev_loss"] + log["eval_rte_dev_loss"]) / 2)
    # Without a selection split the dev sets already are the evaluation split: refused before any work.
    args = base_args(glue, tiny_checkpoint, tmp_path / "refused")
    args[args.index("--selection_split_fraction") + 1] = "0"
    assert "--dev_curves" in run_cli_error(capsys, args + ["--dev_curves"])
    assert not (tmp_path / "refused").exists()


def test_dev_curve_split_names_and_clashes_with_task_names(tmp_path, tiny_checkpoint, capsys):
    assert run_glue_mtl.dev_split_names(["validation"]) == ["dev"]
    assert run_glue_mtl.dev_split_names(["validation_matched", "validation_mismatched"]) == ["dev_matched", "dev_mismatched"]
    assert run_glue_mtl.dev_split_names(["validation_x", "x"]) == ["dev_validation_x", "dev_x"]
    rows = "\n".join(f'{{"text": "review {i}", "label": "{"pos" if i % 2 else "neg"}"}}' for i in range(24))
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "dev.jsonl").write_text(rows)
    (tmp_path / "tasks.json").write_text(
        json.dumps(
            [
                {
                    "name": "cola_dev",
                    "text_fields": ["text"],
                    "label_names": ["neg", "pos"],
                    "train_file": "train.jsonl",
                    "validation_file": "dev.jsonl",
                }
            ]
        )
    )
    glue = write_glue(tmp_path / "glue")
    args = base_args(glue, tiny_checkpoint, tmp_path / "out")
    args[args.index("--tasks") + 1] = "cola"
    line = run_cli_error(capsys, args + ["--custom_tasks_file", str(tmp_path / "tasks.json"), "--dev_curves"])
    assert "['cola_dev'] would clash" in line and not (tmp_path / "out").exists()


def tiny_glue5(root, rows: int = 16):
    """The first `rows` examples of each GLUE-5 train/dev file (real formats), under `root`."""
    from tests.conftest import GLUE_DIR

    for task in ("CoLA", "SST-2", "MRPC", "STS-B", "RTE"):
        (root / task).mkdir(parents=True)
        for split in ("train", "dev"):
            with open(os.path.join(GLUE_DIR, task, f"{split}.tsv"), encoding="utf-8") as handle:
                lines = [next(handle) for _ in range(rows + 1)]
            (root / task / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    return root


def test_cli_async_kd_composes_with_a_gradient_method_on_glue5(tmp_path, tiny_checkpoint):
    # IMTL-G takes one batch of every task per step; async-KD switches converged tasks to distillation on top.
    glue = tiny_glue5(tmp_path / "glue")
    out = tmp_path / "out"
    argv = [
        "--model_name_or_path",
        tiny_checkpoint,
        "--tasks",
        "cola,sst2,mrpc,stsb,rte",
        "--glue_dir",
        str(glue),
        "--output_dir",
        str(out),
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "4",
        "--eval_steps",
        "2",
        "--max_seq_length",
        "32",
        "--use_cpu",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        "--selection_split_fraction",
        "0.25",
        "--do_train",
        "--do_eval",
        "--mtl_method",
        "imtl_g",
        "--async_kd",
        "--kd_patience",
        "1",
        "--kd_min_delta",
        "10",
        "--kd_require_improvement",
        "false",
        "--kd_require_decline",
        "false",
        "--kd_smoothing",
        "1",
        "--kd_trivial_gate",
        "false",
        "--logging_steps",
        "1",
    ]
    _, _, training_args = run_glue_mtl.parse_args(argv)
    assert training_args.mtl_method == "imtl_g" and training_args.async_kd
    run_glue_mtl.main(argv)
    report = json.loads((out / "convergence_report.json").read_text())
    # Every task's first evaluation (step 2) stays best under the huge min_delta: all converge at step 4.
    assert {t: (r["converged_step"], r["teacher_steps"]) for t, r in report.items()} == {
        t: (4, [2]) for t in ("cola", "sst2", "mrpc", "stsb", "rte")
    }
    state = json.loads((out / "trainer_state.json").read_text())
    weights = [log for log in state["log_history"] if "train_weight_cola" in log]
    assert weights and all(f"train_loss_{t}" in weights[-1] for t in ("cola", "sst2", "mrpc", "stsb", "rte"))
    from hf_async_mtl.model_card import method_settings

    settings = method_settings(training_args, "all_tasks")
    assert settings["mtl_method"] == "imtl_g" and settings["async_kd"] is True


def test_cli_json_config_equals_flags(tmp_path, tiny_checkpoint):
    glue = write_glue(tmp_path / "glue")
    from_flags = run_glue_mtl.parse_args(base_args(glue, tiny_checkpoint, tmp_path / "out"))
    config = {
        "model_name_or_path": tiny_checkpoint,
        "tasks": "cola,rte",
        "glue_dir": str(glue),
        "output_dir": str(tmp_path / "out"),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "eval_steps": 2,
        "max_seq_length": 32,
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "selection_split_fraction": 0.25,
        "do_train": True,
        "do_eval": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from_json = run_glue_mtl.parse_args([str(path)])
    assert from_json[0] == from_flags[0]
    assert from_json[1].task_list == from_flags[1].task_list == ["cola", "rte"]
    assert from_json[2].to_dict() == from_flags[2].to_dict()
    # lists for comma-separated options and objects for JSON options, as a JSON file would naturally hold them
    path.write_text(
        json.dumps(
            {
                **config,
                "tasks": ["cola", "rte"],
                "bi_encoder_tasks": ["rte"],
                "mtl_method_options": {"lr": 0.01},
                "max_train_samples_per_task": {"cola": 8},
            }
        )  # fmt: skip
    )
    model_args, data_args, training_args = run_glue_mtl.parse_args([str(path)])
    assert data_args.task_list == ["cola", "rte"] and data_args.bi_encoder_tasks == "rte"
    assert data_args.per_task_caps == {"cola": 8} and training_args.mtl_method_options == {"lr": 0.01}


def run_cli_error(capsys, argv) -> str:
    """`main(argv)` on bad input: exit status 2 and one line `error: ...` on stderr (no traceback); returns the line."""
    with pytest.raises(SystemExit) as info:
        run_glue_mtl.main(argv)
    assert info.value.code == 2
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(
    "change,message",
    [
        (["--tasks", "cola,nope"], "Unknown GLUE task 'nope'"),
        (["--glue_dir", "/nonexistent/glue"], "/nonexistent/glue"),
        (["--mtl_method", "bogus"], "--mtl_method must be one of cagrad, dwa, equal"),
    ],
)
def test_cli_bad_input_fails_before_writing(tmp_path, tiny_checkpoint, capsys, change, message):
    glue = write_glue(tmp_path / "glue")
    out = tmp_path / "out"
    args = base_args(glue, tiny_checkpoint, out)
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert message in run_cli_error(capsys, args)
    assert not out.exists()
    # The Python entry point raises the error itself, with the same message.
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_glue_mtl.run(args)


def test_cli_label_outside_label_set_names_file_and_line(tmp_path, tiny_checkpoint, capsys):
    glue = write_glue(tmp_path / "glue", bad_rte_label=True)
    out = tmp_path / "out"
    assert re.search(
        r"RTE.*train\.tsv, line 5, column 'label': label 'maybe'", run_cli_error(capsys, base_args(glue, tiny_checkpoint, out))
    )
    assert not out.exists()


def test_cli_checkpoint_with_other_heads_is_refused(tmp_path, tiny_checkpoint, capsys):
    glue = write_glue(tmp_path / "glue")
    first = tmp_path / "first"
    run_glue_mtl.main(base_args(glue, tiny_checkpoint, first))
    (tmp_path / "glue" / "SST-2").mkdir()
    (tmp_path / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "a good film\t1\nbad\t0\n" * 8)
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n" + "a good film\t1\nbad\t0\n")
    args = base_args(glue, str(first), tmp_path / "second")
    args[args.index("--tasks") + 1] = "cola,sst2"
    assert "no head for task 'sst2'" in run_cli_error(capsys, args)
    assert not (tmp_path / "second").exists()


def test_custom_tasks_from_files(tmp_path, tiny_checkpoint):
    rows = "\n".join(f'{{"text": "review {i} {"good" if i % 2 else "bad"}", "stars": "{"pos" if i % 2 else "neg"}"}}' for i in range(24))
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "dev.jsonl").write_text(rows)
    (tmp_path / "tasks.json").write_text(
        json.dumps(
            [
                {
                    "name": "reviews",
                    "text_fields": ["text"],
                    "label_field": "stars",
                    "label_names": ["neg", "pos"],
                    "train_file": "train.jsonl",
                    "validation_file": "dev.jsonl",
                }
            ]
        )
    )
    out = tmp_path / "out"
    args = base_args(tmp_path, tiny_checkpoint, out)
    args[args.index("--tasks") + 1] = ""
    results = run_glue_mtl.main(args + ["--custom_tasks_file", str(tmp_path / "tasks.json")])
    assert "eval_reviews_accuracy" in results


def test_evaluating_custom_tasks_needs_no_training_file(tmp_path, tiny_checkpoint, capsys):
    """A run that only evaluates reads each custom task's validation_file: no train_file is needed, and labels left
    out come from the saved model's head (not the training data); with no head to take them from, one line names
    label_names."""
    rows = "\n".join(f'{{"text": "review {i} {"good" if i % 3 else "bad"}", "stars": "{"pos" if i % 3 else "neg"}"}}' for i in range(24))
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "dev.jsonl").write_text(rows)
    task = {"name": "reviews", "text_fields": ["text"], "label_field": "stars", "validation_file": "dev.jsonl"}
    (tmp_path / "tasks.json").write_text(json.dumps([{**task, "train_file": "train.jsonl"}]))  # labels inferred
    trained = tmp_path / "trained"
    args = base_args(tmp_path, tiny_checkpoint, trained)
    args[args.index("--tasks") + 1] = ""
    run_glue_mtl.main(args + ["--custom_tasks_file", str(tmp_path / "tasks.json")])
    os.rename(tmp_path / "train.jsonl", tmp_path / "train.away")
    with_train = base_args(tmp_path, str(trained), tmp_path / "eval_a")
    with_train[with_train.index("--tasks") + 1] = ""
    with_train = [a for a in with_train if a != "--do_train"] + ["--custom_tasks_file", str(tmp_path / "tasks.json")]
    first = run_glue_mtl.main(with_train)  # the tasks file names a train_file that is gone: not read
    (tmp_path / "eval.json").write_text(json.dumps([task]))
    second = run_glue_mtl.main([a.replace("eval_a", "eval_b").replace("tasks.json", "eval.json") for a in with_train])
    assert first["eval_reviews_accuracy"] == second["eval_reviews_accuracy"]
    # Labels declared in another order than the head's: refused, naming both.
    (tmp_path / "eval.json").write_text(json.dumps([{**task, "label_names": ["pos", "neg"]}]))
    line = run_cli_error(capsys, [a.replace("eval_a", "eval_c").replace("tasks.json", "eval.json") for a in with_train])
    assert "head labels ['neg', 'pos'], the task's labels ['pos', 'neg']" in line
    # A pretrained encoder has no head to take the labels from, and there is no training file.
    (tmp_path / "eval.json").write_text(json.dumps([task], indent=1))
    pretrained = [
        a.replace("eval_a", "eval_d").replace("tasks.json", "eval.json").replace(str(trained), tiny_checkpoint) for a in with_train
    ]
    line = run_cli_error(capsys, pretrained)
    assert re.search(r"eval\.json, line \d+, field 'label_names' \(task 'reviews'\): missing, and this run reads no training set", line)
    # Training still needs the training file.
    training = base_args(tmp_path, tiny_checkpoint, tmp_path / "train_c")
    training[training.index("--tasks") + 1] = ""
    line = run_cli_error(capsys, training + ["--custom_tasks_file", str(tmp_path / "eval.json")])
    assert "field 'train_file' (task 'reviews'): missing (a task read from files needs train_file and validation_file)" in line
    assert not any((tmp_path / name).exists() for name in ("eval_c", "eval_d", "train_c"))


def test_shipped_json_configs_parse():
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    names = sorted(n for n in os.listdir(configs) if n.endswith(".json"))
    assert "glue5_minilm_async_kd.json" in names
    for name in names:
        model_args, data_args, training_args = run_glue_mtl.parse_args([os.path.join(configs, name)])
        assert data_args.task_list == ["cola", "sst2", "mrpc", "stsb", "rte"]
        assert training_args.mtl_method == "equal"
    # Flags after the file override its values (a GPU run of the CPU config, another seed); the rest stays the file's.
    path = os.path.join(configs, "glue5_minilm_async_kd.json")
    _, data_args, overridden = run_glue_mtl.parse_args([path, "--use_cpu", "false", "--bf16", "false", "--seed", "3", "--tasks", "rte"])
    _, _, original = run_glue_mtl.parse_args([path])
    assert (original.use_cpu, original.bf16, original.seed) == (True, True, 42)
    assert (overridden.use_cpu, overridden.bf16, overridden.seed, data_args.task_list) == (False, False, 3, ["rte"])
    assert (overridden.max_steps, overridden.async_kd, overridden.output_dir) == (
        original.max_steps,
        original.async_kd,
        original.output_dir,
    )


MULTI_TASK_OPTIONS = (
    "sampling_strategy",
    "step_composition",
    "mtl_method",
    "mtl_method_options",
    "async_kd",
    "kd_patience",
    "kd_min_delta",
    "kd_smoothing",
    "kd_trivial_gate",
    "kd_margin_z",
    "kd_decline_trigger",
    "kd_refresh",
    "kd_min_steps",
    "kd_temperature",
    "kd_loss",
    "kd_alpha",
    "kd_top_k",
    "kd_ensemble",
    "kd_snapshot_dir",
    "kd_stop_when_all_converged",
    "glue_dir",
    "selection_split_fraction",
    "custom_tasks_file",
)


def test_cli_help_lists_every_multi_task_option():
    import dataclasses
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, os.path.join(root, "run_glue_mtl.py"), "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    helps = {
        f.name: f.metadata.get("help", "")
        for cls in (run_glue_mtl.DataArguments, run_glue_mtl.MultiTaskTrainingArguments)
        for f in dataclasses.fields(cls)
    }
    # argparse re-wraps help text (and may break after hyphens): compare without whitespace.
    flat = "".join(done.stdout.split())
    for name in MULTI_TASK_OPTIONS:
        assert f"--{name}" in done.stdout, name
        assert helps[name] and "".join(helps[name].split()) in flat, name


def test_cli_report_to_tensorboard_logs_task_scalars_and_convergence(tmp_path, tiny_checkpoint, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    glue = write_glue(tmp_path / "glue")
    logs = tmp_path / "tb"
    # transformers 5 has no --logging_dir: the TensorBoard callback reads TENSORBOARD_LOGGING_DIR
    # (default <output_dir>/runs/<date_host>).
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logs))
    # kd_min_delta 10: no evaluation after the first improves, so both tasks converge at the second (step 4), before
    # the last step (6): a convergence at the last step distils nothing and logs kd_converged_at_end_<task> instead.
    run_glue_mtl.main(
        base_args(glue, tiny_checkpoint, tmp_path / "out")
        + [
            "--max_steps",
            "6",
            "--report_to",
            "tensorboard",
            "--logging_steps",
            "1",
            "--mtl_method",
            "async_kd",
            "--kd_patience",
            "1",
            "--kd_min_delta",
            "10",
            "--kd_require_improvement",
            "false",
            "--kd_require_decline",
            "false",
            "--kd_smoothing",
            "1",
            "--kd_trivial_gate",
            "false",
        ]
    )
    scalars = {}
    for directory, _, names in os.walk(logs):
        if any(n.startswith("events.out.tfevents") for n in names):
            accumulator = EventAccumulator(directory, size_guidance={"scalars": 0})
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    for tag in (
        "eval/cola_matthews_correlation",
        "eval/rte_accuracy",
        "eval/glue_score",
        "train/train_loss_cola",
        "train/train_loss_rte",
        "train/kd_converged_cola",
        "train/kd_converged_rte",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert scalars["train/kd_converged_cola"] == [(4, 4.0)]
    assert [step for step, _ in scalars["eval/cola_matthews_correlation"]][:2] == [2, 4]


def test_the_final_model_is_never_half_written(tmp_path, tiny_checkpoint, monkeypatch):
    """The model was saved straight into output_dir: killed while saving, a new config.json sat beside truncated weights.
    Now it is staged inside output_dir and moved up, config.json last; a failure leaves no config.json and no staging."""
    glue = write_glue(tmp_path / "glue")
    real_replace = os.replace

    def failing_replace(source, target, *args, **kwargs):
        if run_glue_mtl.FINAL_STAGING in str(source) and str(source).endswith(".safetensors"):
            raise OSError("disk full")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        run_glue_mtl.main(base_args(glue, tiny_checkpoint, out))
    assert not (out / "config.json").exists() and not (out / run_glue_mtl.FINAL_STAGING).exists()
    monkeypatch.setattr(os, "replace", real_replace)
    done = tmp_path / "done"
    run_glue_mtl.main(base_args(glue, tiny_checkpoint, done))
    assert (done / "config.json").is_file() and (done / "model.safetensors").is_file()
    assert not (done / run_glue_mtl.FINAL_STAGING).exists()
