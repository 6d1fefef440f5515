"""GLUE leaderboard submission: per-task formatting, atomic writing, `predict_tasks` and `--do_predict`."""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile

import datasets
import numpy as np
import pytest
import torch

import run_glue_mtl
from glue_tasks import GLUE_FORMATS, GLUE_TASKS
from glue_tasks.submission import (
    SUBMISSION_DIR,
    format_predictions,
    submission_file_name,
    submission_splits,
    write_glue_submission,
)
from hf_async_mtl import MultiTaskTrainer, MultiTaskTrainingArguments
from hf_async_mtl.data import length_order
from tests.conftest import TASKS, make_model, ragged

OFFICIAL_FILES = {
    "CoLA.tsv",
    "SST-2.tsv",
    "MRPC.tsv",
    "STS-B.tsv",
    "QQP.tsv",
    "MNLI-m.tsv",
    "MNLI-mm.tsv",
    "QNLI.tsv",
    "RTE.tsv",
    "WNLI.tsv",
}

# ---- formatting -------------------------------------------------------------------------------


def test_every_glue_task_has_its_official_file_names():
    names = {submission_file_name(task, split) for task in GLUE_TASKS for split in submission_splits(task)}
    assert names == OFFICIAL_FILES
    assert submission_splits("mnli") == ("test_matched", "test_mismatched")
    assert submission_file_name("mnli", "test_mismatched") == "MNLI-mm.tsv"
    assert submission_splits("my_custom_task") == ()
    with pytest.raises(ValueError, match="no leaderboard split 'test'"):
        submission_file_name("mnli", "test")


@pytest.mark.parametrize(
    "task,expected",
    [
        ("cola", ["0", "1", "1"]),
        ("sst2", ["0", "1", "1"]),
        ("mrpc", ["0", "1", "1"]),
        ("qqp", ["0", "1", "1"]),
        ("wnli", ["0", "1", "1"]),  # WNLI id 1 = entailment = raw "1"
        ("rte", ["entailment", "not_entailment", "not_entailment"]),
        ("qnli", ["entailment", "not_entailment", "not_entailment"]),
        ("mnli", ["entailment", "neutral", "neutral"]),
    ],
)
def test_class_ids_are_spelled_like_the_raw_labels(task, expected):
    assert format_predictions(task, np.array([0, 1, 1])) == expected
    # The spelling round-trips through the loader's label map, so submissions mean what the training labels meant.
    assert [GLUE_FORMATS[task].label_map[s] for s in expected] == [0, 1, 1]


def test_mnli_logits_are_argmaxed_to_three_labels():
    logits = np.array([[0.1, 0.2, 3.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    assert format_predictions("mnli", logits) == ["contradiction", "entailment", "neutral"]


def test_stsb_scores_are_clipped_and_have_three_decimals():
    assert format_predictions("stsb", np.array([5.7, -0.2, 2.34567, 3.0])) == ["5.000", "0.000", "2.346", "3.000"]
    assert format_predictions("stsb", np.array([[1.0], [4.9999]])) == ["1.000", "5.000"]


@pytest.mark.parametrize(
    "task,predictions,message",
    [
        ("rte", [0, 2], "class id 2 is outside 0..1"),
        ("mnli", [[0.1, 0.9]], "2 logits per example, the task has 3 labels"),
        ("cola", [0.5], "class id 0.5"),
        ("stsb", [1.0, float("nan")], "not finite"),
        ("stsb", [[1.0, 2.0]], "one score per example"),
        ("nope", [0], "Unknown GLUE task 'nope'"),
    ],
)
def test_bad_predictions_are_refused(task, predictions, message):
    with pytest.raises(ValueError, match=message):
        format_predictions(task, np.array(predictions))


# ---- writing ----------------------------------------------------------------------------------


def read_zip(path) -> dict[str, list[str]]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name).decode("utf-8").splitlines() for name in archive.namelist()}


def test_write_glue_submission_writes_directory_and_flat_zip(tmp_path):
    path = write_glue_submission(
        tmp_path,
        {("rte", "test"): ([0, 1, 2], np.array([1, 0, 1])), ("stsb", "test"): ([0, 1], np.array([2.5, 7.0]))},
    )
    assert path == str(tmp_path / "glue_submission.zip")
    files = read_zip(path)
    assert files == {
        "RTE.tsv": ["index\tprediction", "0\tnot_entailment", "1\tentailment", "2\tnot_entailment"],
        "STS-B.tsv": ["index\tprediction", "0\t2.500", "1\t5.000"],
    }
    assert sorted(os.listdir(tmp_path / SUBMISSION_DIR)) == ["RTE.tsv", "STS-B.tsv"]
    assert (tmp_path / SUBMISSION_DIR / "RTE.tsv").read_text().splitlines() == files["RTE.tsv"]
    assert sorted(os.listdir(tmp_path)) == ["glue_submission", "glue_submission.zip"]  # no temp leftovers


def test_a_failed_write_keeps_the_previous_submission(tmp_path):
    write_glue_submission(tmp_path, {("cola", "test"): ([0, 1], np.array([1, 0]))})
    before = read_zip(tmp_path / "glue_submission.zip")
    with pytest.raises(ValueError, match="3 predictions for 2 test examples"):
        # CoLA is fine, SST-2 is not: nothing of the new submission may appear.
        write_glue_submission(tmp_path, {("cola", "test"): ([0, 1], np.array([0, 0])), ("sst2", "test"): ([0, 1], np.array([0, 1, 1]))})
    assert read_zip(tmp_path / "glue_submission.zip") == before
    assert os.listdir(tmp_path / SUBMISSION_DIR) == ["CoLA.tsv"]
    assert sorted(os.listdir(tmp_path)) == ["glue_submission", "glue_submission.zip"]
    # A successful rewrite replaces the whole submission (no stale files of tasks no longer trained).
    write_glue_submission(tmp_path, {("sst2", "test"): ([5, 6], np.array([1, 1]))})
    assert read_zip(tmp_path / "glue_submission.zip") == {"SST-2.tsv": ["index\tprediction", "5\t1", "6\t1"]}
    assert os.listdir(tmp_path / SUBMISSION_DIR) == ["SST-2.tsv"]


def test_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="not unique"):
        write_glue_submission(tmp_path, {("wnli", "test"): ([0, 0], np.array([1, 0]))})
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="No test predictions"):
        write_glue_submission(tmp_path, {})


# ---- MultiTaskTrainer.predict_tasks -----------------------------------------------------------


def test_length_order_is_longest_first_and_stable():
    dataset = datasets.Dataset.from_dict({"input_ids": [[1], [1, 2, 3], [1, 2], [4, 5, 6], [7]]})
    assert list(length_order(dataset)) == [1, 3, 2, 0, 4]
    assert list(length_order(dataset.select([4, 0, 2]))) == [2, 0, 1]


def test_predict_tasks_returns_ids_and_scores_in_dataset_order(tmp_path, tokenizer, tiny_data):
    evaluation = {name: ragged(dataset) for name, dataset in tiny_data[1].items()}
    model = make_model(tokenizer)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=5, use_cpu=True, disable_tqdm=True, eval_strategy="no"
    )
    trainer = MultiTaskTrainer(model=model, args=args, task_specs=TASKS, eval_dataset=evaluation, processing_class=tokenizer)
    # Test sets carry label -1, as GLUE test splits do.
    test_sets = {name: d.map(lambda _: {"labels": -1}) for name, d in evaluation.items()}
    predictions = trainer.predict_tasks(test_sets)
    assert set(predictions) == {"sentiment", "similarity"}
    assert predictions["sentiment"].shape == (len(evaluation["sentiment"]),)
    assert predictions["sentiment"].dtype.kind == "i"
    assert predictions["similarity"].shape == (len(evaluation["similarity"]),)
    assert predictions["similarity"].dtype.kind == "f"
    model.eval()
    with torch.no_grad():
        for name, dataset in evaluation.items():
            # Prediction runs longest first (length_order); the results come back in dataset order.
            assert len(set(len(ids) for ids in dataset["input_ids"])) > 1
            assert list(length_order(dataset)) != list(range(len(dataset)))
            expected = []
            for i in range(len(dataset)):  # one row at a time: no padding, no reordering
                batch = trainer.data_collator([{k: dataset[i][k] for k in ("input_ids", "attention_mask", "token_type_ids", "task_ids")}])
                logits = model(**batch).logits
                expected.append(logits.view(-1).numpy() if name == "similarity" else logits.argmax(-1).numpy())
            np.testing.assert_allclose(predictions[name], np.concatenate(expected), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="without a TaskSpec"):
        trainer.predict_tasks({"nope": evaluation["sentiment"]})


# ---- run_glue_mtl.py --do_predict -------------------------------------------------------------

_MNLI_META = "promptID\tpairID\tgenre\tbp1\tbp2\tp1\tp2"
TEST_ROWS = {"CoLA.tsv": 5, "RTE.tsv": 7, "STS-B.tsv": 6, "MNLI-m.tsv": 4, "MNLI-mm.tsv": 3}


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_glue_with_test(root, copies: int = 6):
    """Tiny CoLA, STS-B, RTE and MNLI directories in the original layouts, test files included."""
    cola = [("1", "The book is on the table ."), ("0", "Book the on is table ."), ("1", 'She said "hi" .'), ("0", "Him said she .")]
    for split, n in (("train", copies), ("dev", 2)):
        _write(root / "CoLA" / f"{split}.tsv", [f"gj04\t{label}\t\t{text}" for label, text in cola * n])
    _write(root / "CoLA" / "test.tsv", ["id\tsentence"] + [f"{i}\t{cola[i % 4][1]}" for i in range(TEST_ROWS["CoLA.tsv"])])

    pairs = [
        ("A man sleeps .", "A person sleeps ."),
        ("A cat runs .", "NA is here ."),
        ("It rains .", "It rains today ."),
        ("Sun .", "null"),
    ]
    rte_labels = ["entailment", "not_entailment"]
    for split, n in (("train", copies), ("dev", 2)):
        _write(
            root / "RTE" / f"{split}.tsv",
            ["index\tsentence1\tsentence2\tlabel"] + [f"{i}\t{a}\t{b}\t{rte_labels[i % 2]}" for i, (a, b) in enumerate(pairs * n)],
        )
    _write(
        root / "RTE" / "test.tsv",
        ["index\tsentence1\tsentence2"] + [f"{i}\t{pairs[i % 4][0]}\t{pairs[i % 4][1]}" for i in range(TEST_ROWS["RTE.tsv"])],
    )

    sts_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    for split, n in (("train", copies), ("dev", 2)):
        _write(
            root / "STS-B" / f"{split}.tsv",
            [f"{sts_header}\tscore"]
            + [f"{i}\tg\tf\ty\t{i:04d}\tn\tn\t{a}\t{b}\t{(i * 1.3) % 5:.2f}" for i, (a, b) in enumerate(pairs * n)],
        )
    _write(
        root / "STS-B" / "test.tsv",
        [sts_header] + [f"{i}\tg\tf\ty\t{i:04d}\tn\tn\t{pairs[i % 4][0]}\t{pairs[i % 4][1]}" for i in range(TEST_ROWS["STS-B.tsv"])],
    )

    nli = ["entailment", "neutral", "contradiction"]
    base = f"index\t{_MNLI_META}\tsentence1\tsentence2"
    _write(
        root / "MNLI" / "train.tsv",
        [f"{base}\tlabel1\tgold_label"]
        + [f"{i}\t1\t1e\tfiction\tb\tb\tp\tp\t{a}\t{b}\tx\t{nli[i % 3]}" for i, (a, b) in enumerate(pairs * copies)],
    )
    for name in ("dev_matched", "dev_mismatched"):
        _write(
            root / "MNLI" / f"{name}.tsv",
            [f"{base}\tl1\tl2\tl3\tl4\tl5\tgold_label"]
            + [f"{i}\t1\t1e\tfiction\tb\tb\tp\tp\t{a}\t{b}\tx\tx\tx\tx\tx\t{nli[i % 3]}" for i, (a, b) in enumerate(pairs * 2)],
        )
    for name, key in (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")):
        _write(
            root / "MNLI" / f"{name}.tsv",
            [base] + [f"{i}\t1\t1e\tfiction\tb\tb\tp\tp\t{pairs[i % 4][0]}\t{pairs[i % 4][1]}" for i in range(TEST_ROWS[key])],
        )
    return root


def cli_args(glue_dir, checkpoint, out, tasks="cola,stsb,rte,mnli"):
    return [
        "--model_name_or_path",
        checkpoint,
        "--tasks",
        tasks,
        "--glue_dir",
        str(glue_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
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
        "--do_predict",
    ]


def test_cli_do_predict_writes_the_leaderboard_zip(tmp_path, tiny_checkpoint, caplog):
    glue = write_glue_with_test(tmp_path / "glue")
    # A custom task trains alongside but has no test split: skipped with a log line.
    rows = "\n".join(json.dumps({"text": f"review {i}", "stars": "pos" if i % 2 else "neg"}) for i in range(16))
    (tmp_path / "reviews.jsonl").write_text(rows)
    (tmp_path / "tasks.json").write_text(
        json.dumps(
            [
                {
                    "name": "reviews",
                    "text_fields": ["text"],
                    "label_field": "stars",
                    "label_names": ["neg", "pos"],
                    "train_file": "reviews.jsonl",
                    "validation_file": "reviews.jsonl",
                }
            ]
        )
    )
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="run_glue_mtl")
    run_glue_mtl.main(cli_args(glue, tiny_checkpoint, out) + ["--custom_tasks_file", str(tmp_path / "tasks.json")])
    assert "Task reviews has no GLUE test split" in caplog.text

    files = read_zip(out / "glue_submission.zip")
    assert set(files) == set(TEST_ROWS)
    allowed = {
        "CoLA.tsv": {"0", "1"},
        "RTE.tsv": {"entailment", "not_entailment"},
        "MNLI-m.tsv": {"entailment", "neutral", "contradiction"},
        "MNLI-mm.tsv": {"entailment", "neutral", "contradiction"},
    }
    for name, lines in files.items():
        assert lines[0] == "index\tprediction"
        rows = [line.split("\t") for line in lines[1:]]
        assert len(rows) == TEST_ROWS[name]
        assert [int(index) for index, _ in rows] == list(range(TEST_ROWS[name]))
        if name == "STS-B.tsv":
            scores = [float(value) for _, value in rows]
            assert all(0.0 <= s <= 5.0 for s in scores)
            assert all(len(value.split(".")[1]) == 3 for _, value in rows)
        else:
            assert {value for _, value in rows} <= allowed[name]
        assert (out / "glue_submission" / name).read_text().splitlines() == lines
    assert not [n for n in os.listdir(out) if n.startswith(".glue_submission")]


def test_cli_predict_only_from_a_trained_model_and_missing_test_file(tmp_path, tiny_checkpoint, capsys):
    glue = write_glue_with_test(tmp_path / "glue")
    first = tmp_path / "first"
    run_glue_mtl.main(cli_args(glue, tiny_checkpoint, first, tasks="cola,rte"))
    # Predict only, from the saved multi-task model.
    args = cli_args(glue, str(first), tmp_path / "second", tasks="cola,rte")
    args.remove("--do_train")
    run_glue_mtl.main(args)
    assert set(read_zip(tmp_path / "second" / "glue_submission.zip")) == {"CoLA.tsv", "RTE.tsv"}
    # Predicting into the model's own directory keeps its training record (all_results.json was overwritten by {}).
    trained = json.loads((first / "all_results.json").read_text())
    evaluated = (first / "eval_results_cola.json").read_text()
    into_first = cli_args(glue, str(first), first, tasks="cola,rte") + ["--eval_strategy", "no"]
    into_first.remove("--do_train")
    run_glue_mtl.main(into_first)
    assert json.loads((first / "all_results.json").read_text()) == trained and trained.get("train_runtime") is not None
    assert (first / "eval_results_cola.json").read_text() == evaluated
    # Predicting reads no training set and, with --eval_strategy no, no dev set: a GLUE directory of test files is enough.
    for task in ("CoLA", "RTE"):
        for name in ("train.tsv", "dev.tsv"):
            os.rename(glue / task / name, glue / task / f"{name}.away")
    only_test = cli_args(glue, str(first), tmp_path / "test_only", tasks="cola,rte") + ["--eval_strategy", "no"]
    only_test.remove("--do_train")
    run_glue_mtl.main(only_test)
    assert read_zip(tmp_path / "test_only" / "glue_submission.zip") == read_zip(tmp_path / "second" / "glue_submission.zip")
    # Training, or evaluating, still needs its files: one line naming the file, exit status 2.
    for flag, split, file in (("--do_train", "train", "train"), ("--do_eval", "validation", "dev")):
        args = [a for a in cli_args(glue, str(first), tmp_path / "nothing", tasks="cola,rte") if a != "--do_train"] + [flag]
        with pytest.raises(SystemExit) as exit_info:
            run_glue_mtl.main(args)
        assert exit_info.value.code == 2
        assert re.search(rf"'cola' split '{split}' not found: \S*CoLA/{file}\.tsv", capsys.readouterr().err)
    assert not (tmp_path / "nothing").exists()
    for task in ("CoLA", "RTE"):
        for name in ("train.tsv", "dev.tsv"):
            os.rename(glue / task / f"{name}.away", glue / task / name)
    # Predicting with a pretrained encoder (its heads would be new and random) is refused before any work.
    untrained = [a for a in cli_args(glue, tiny_checkpoint, tmp_path / "untrained", tasks="cola,rte") if a != "--do_train"]
    with pytest.raises(SystemExit) as exit_info:
        run_glue_mtl.main(untrained)
    assert exit_info.value.code == 2
    assert re.search(
        r"--do_predict without --do_train: \S+ is a pretrained encoder, .* heads of \['cola', 'rte'\]", capsys.readouterr().err
    )
    assert not (tmp_path / "untrained").exists()
    # A missing test file fails before anything is written: one line, exit status 2.
    os.remove(glue / "RTE" / "test.tsv")
    with pytest.raises(SystemExit) as exit_info:
        run_glue_mtl.main(cli_args(glue, tiny_checkpoint, tmp_path / "third", tasks="cola,rte"))
    assert exit_info.value.code == 2
    assert re.search(r"RTE.*test\.tsv.*not found|not found.*RTE.*test\.tsv", capsys.readouterr().err)
    assert not (tmp_path / "third").exists()


def test_an_mlm_task_of_mnli_reads_both_dev_splits(tmp_path):
    """`--mlm_tasks mnli`: the MLM task's dev text is MNLI's matched and mismatched dev sets (it asked for a split
    'validation' that MNLI does not have, so every run that read dev sets failed)."""
    from cli.arguments import DataArguments
    from cli.preflight import plan_tasks

    glue = write_glue_with_test(tmp_path / "glue")
    tasks = dict(
        (spec.name, (spec, source)) for spec, source in plan_tasks(DataArguments(tasks="mnli", mlm_tasks="mnli", glue_dir=str(glue)))
    )
    spec, source = tasks["mlm_mnli"]
    assert spec.is_mlm and spec.validation_splits == tasks["mnli"][0].validation_splits == ("validation_matched", "validation_mismatched")
    for split in spec.validation_splits:
        assert len(source.load(split)) == len(tasks["mnli"][1].load(split)) > 0
