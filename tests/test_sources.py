"""Any data set as a task (`hf_async_mtl.sources`): Hub-style repo directories, parquet, save_to_disk,
ClassLabel inference, column mapping, and the one-line errors -- all offline."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

import run_glue_mtl
from cli.errors import UsageError
from cli.tasks_file import read_custom_tasks
from hf_async_mtl.errors import InputError
from hf_async_mtl.sources import TaskSource, load_task
from hf_async_mtl.spec_inference import infer_task_spec
from hf_async_mtl.tasks import TaskSpec
from tests.test_cli import base_args, write_glue

CLASSES = datasets.ClassLabel(names=["negative", "positive"])


def reviews(n: int = 12, offset: int = 0) -> datasets.Dataset:
    """`text` + a ClassLabel `sentiment` column (the Hub's usual shape)."""
    features = datasets.Features({"text": datasets.Value("string"), "sentiment": CLASSES})
    rows = [(f"review {offset + i} {'good' if i % 2 else 'bad'}", i % 2) for i in range(n)]
    return datasets.Dataset.from_dict({"text": [r[0] for r in rows], "sentiment": [r[1] for r in rows]}, features=features)


def repo_layout(root: Path) -> Path:
    """A directory laid out like a Hub data set repo: parquet data files named by README YAML configs."""
    (root / "data").mkdir(parents=True)
    reviews(12).to_parquet(str(root / "data" / "train.parquet"))
    reviews(6, offset=100).to_parquet(str(root / "data" / "dev.parquet"))
    pairs = datasets.Dataset.from_dict({"s1": ["a b", "c d", "e f", "g h"], "s2": ["a", "c", "x", "y"], "score": [4.5, 3.0, 0.5, 1.0]})
    pairs.to_parquet(str(root / "data" / "pairs.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: reviews\n  data_files:\n  - split: train\n    path: data/train.parquet\n"
        "  - split: dev\n    path: data/dev.parquet\n"
        "- config_name: pairs\n  data_files:\n  - split: train\n    path: data/pairs.parquet\n"
        "---\n# A local data set\n"
    )
    return root


def test_repo_layout_directory_loads_like_a_hub_id_with_classlabel_inference_and_column_mapping(tmp_path):
    source = TaskSource(
        dataset=str(repo_layout(tmp_path / "repo")), config="reviews", splits={"validation": "dev"}, columns={"label": "sentiment"}
    )
    spec = infer_task_spec("reviews", source, ["text"])
    assert spec.label_names == ("negative", "positive") and not spec.is_regression and spec.metrics == ("accuracy",)
    train, dev = load_task(spec, source, "train"), load_task(spec, source, "validation")
    assert train.column_names == ["text", "label", "idx"] and len(train) == 12 and len(dev) == 6
    assert train["label"][:4] == [0, 1, 0, 1] and dev["text"][0] == "review 100 bad" and dev["idx"] == list(range(6))
    assert train.features["label"].dtype == "int64" and train.features["idx"].dtype == "int64"
    # Regression inferred from a float column, in another config of the same directory.
    pairs = TaskSource(dataset=str(tmp_path / "repo"), config="pairs", columns={"label": "score"})
    spec = infer_task_spec("pairs", pairs, ["s1", "s2"])
    assert spec.is_regression and spec.metrics == ("pearson", "spearmanr")
    assert load_task(spec, pairs)["label"] == [4.5, 3.0, 0.5, 1.0]


def test_classlabel_is_remapped_by_name_onto_the_spec_order(tmp_path):
    path = tmp_path / "train.parquet"
    reviews(4).to_parquet(str(path))
    spec = TaskSpec("r", ("text",), label_names=("positive", "negative"), label_field="sentiment")
    assert load_task(spec, TaskSource(data_files={"train": str(path)}))["label"] == [1, 0, 1, 0]
    wrong = TaskSpec("r", ("text",), label_names=("pos", "neg"), label_field="sentiment")
    with pytest.raises(ValueError, match=r"class 'negative' is not one of the task's label_names \['pos', 'neg'\]"):
        load_task(wrong, TaskSource(data_files={"train": str(path)}))


def test_parquet_and_save_to_disk_round_trips(tmp_path):
    data = reviews(8)
    data.to_parquet(str(tmp_path / "t.parquet"))
    data.save_to_disk(str(tmp_path / "one_split"))
    datasets.DatasetDict({"train": data, "test": reviews(3)}).save_to_disk(str(tmp_path / "all"))
    spec = TaskSpec("r", ("text",), label_names=("negative", "positive"), label_field="sentiment")
    from_parquet = load_task(spec, TaskSource(data_files={"train": str(tmp_path / "t.parquet")}))
    from_split = load_task(spec, TaskSource(data_files={"train": str(tmp_path / "one_split")}))
    from_dict = load_task(spec, TaskSource(dataset=str(tmp_path / "all")))
    assert from_parquet[:] == from_split[:] == from_dict[:] == {"text": data["text"], "label": data["sentiment"], "idx": list(range(8))}
    assert len(load_task(spec, TaskSource(dataset=str(tmp_path / "all"), splits={"validation": "test"}), "validation")) == 3


def test_text_labels_integer_ids_and_inference_of_names(tmp_path):
    (tmp_path / "t.csv").write_text("sentence,label\na,spam\nb,ham\nc,spam\n")
    (tmp_path / "ids.jsonl").write_text('{"sentence": "a", "label": 2}\n{"sentence": "b", "label": 0}\n')
    text = infer_task_spec("t", TaskSource(data_files={"train": str(tmp_path / "t.csv")}), ["sentence"])
    assert text.label_names == ("ham", "spam")
    assert load_task(text, TaskSource(data_files={"train": str(tmp_path / "t.csv")}))["label"] == [1, 0, 1]
    ids = infer_task_spec("i", TaskSource(data_files={"train": str(tmp_path / "ids.jsonl")}), ["sentence"])
    assert ids.label_names == ("0", "1", "2") and not ids.is_regression
    assert infer_task_spec("i", TaskSource(data_files={"train": str(tmp_path / "ids.jsonl")}), ["sentence"], regression=True).is_regression
    (tmp_path / "one.csv").write_text("sentence,label\na,x\nb,x\n")
    with pytest.raises(ValueError, match=r"one class only \(\['x'\]\)"):
        infer_task_spec("o", TaskSource(data_files={"train": str(tmp_path / "one.csv")}), ["sentence"])


@pytest.mark.parametrize(
    ("source", "split", "message"),
    [
        (
            lambda d: TaskSource(dataset="no-such-user/no-such-dataset"),
            "train",
            r"^Task 'r': cannot load data set 'no-such-user/no-such-dataset', split 'train': ",
        ),
        (
            lambda d: TaskSource(dataset=str(d / "all")),
            "validation",
            r"^Task 'r': .*all has no split 'validation'; splits: \['test', 'train'\]\.$",
        ),
        (
            lambda d: TaskSource(dataset=str(d / "all"), columns={"text": "body"}),
            "train",
            r"has no column 'body' \(named in columns\); columns: \['text', 'sentiment'\]",
        ),
        (
            lambda d: TaskSource(dataset=str(d / "all"), columns={"sentiment": "text"}),
            "train",
            r"columns maps a column onto 'sentiment', but .* already has a column 'sentiment'",
        ),
        (
            lambda d: TaskSource(data_files={"train": str(d / "one_split")}),
            "validation",
            r"no data file for split 'validation'; data_files has \['train'\]",
        ),
        (lambda d: TaskSource(data_files={"train": str(d / "all")}), "train", r"holds a DatasetDict \(\['test', 'train'\]\)"),
        (lambda d: TaskSource(dataset=str(d / "one_split")), "train", r"is one saved split .*give it in data_files"),
        (
            lambda d: TaskSource(dataset=str(d / "unlabelled")),
            "train",
            r"^Task 'r': data set '.*unlabelled', split 'train', row 1 \(0-based\), column 'sentiment': class id -1 is not a class",
        ),
    ],
)
def test_source_errors_are_one_line_naming_data_row_and_field(tmp_path, source, split, message):
    datasets.DatasetDict({"train": reviews(4), "test": reviews(2)}).save_to_disk(str(tmp_path / "all"))
    reviews(4).save_to_disk(str(tmp_path / "one_split"))
    unlabelled = datasets.Dataset.from_dict(
        {"text": ["a", "b"], "sentiment": [1, -1]}, features=datasets.Features({"text": datasets.Value("string"), "sentiment": CLASSES})
    )
    datasets.DatasetDict({"train": unlabelled}).save_to_disk(str(tmp_path / "unlabelled"))
    spec = TaskSpec("r", ("text",), label_names=("negative", "positive"), label_field="sentiment")
    with pytest.raises(ValueError, match=message) as info:
        load_task(spec, source(tmp_path), split)
    assert "\n" not in str(info.value)


def test_task_source_rejects_bad_combinations():
    with pytest.raises(ValueError, match="exactly one of"):
        TaskSource()
    with pytest.raises(ValueError, match="exactly one of"):
        TaskSource(dataset="a/b", data_files={"train": "x.csv"})
    with pytest.raises(ValueError, match="`splits` applies to `dataset`"):
        TaskSource(data_files={"train": "x.csv"}, splits={"validation": "dev"})
    with pytest.raises(ValueError, match="`columns` must map names"):
        TaskSource(dataset="a/b", columns={"text": 3})


def test_custom_tasks_file_with_dataset_entries_infers_labels_and_reports_lines(tmp_path):
    repo_layout(tmp_path / "repo")
    reviews(10).to_parquet(str(tmp_path / "train.parquet"))
    reviews(4).to_parquet(str(tmp_path / "dev.parquet"))
    tasks = [
        {
            "name": "local_reviews",
            "text_fields": ["text"],
            "dataset": "repo",
            "config": "reviews",
            "splits": {"validation": "dev"},
            "columns": {"label": "sentiment"},
        },
        {
            "name": "pq",
            "text_fields": ["text"],
            "label_field": "sentiment",
            "train_file": "train.parquet",
            "validation_file": "dev.parquet",
        },
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks, indent=1))
    (spec_a, source_a), (spec_b, source_b) = read_custom_tasks(str(path))
    assert spec_a.label_names == spec_b.label_names == ("negative", "positive")
    assert source_a.dataset == str(tmp_path / "repo") and source_a.splits == {"validation": "dev"}
    assert source_b.data_files == {"train": (str(tmp_path / "train.parquet"),), "validation": (str(tmp_path / "dev.parquet"),)}
    for bad, message in [
        ({"dataset": "repo", "train_file": "train.parquet"}, r"field 'dataset' \(task 'x'\): give either dataset or train_file"),
        ({}, r"field 'name' \(task 'x'\): no data: give train_file and validation_file"),
        ({"train_file": "train.parquet", "validation_file": "dev.parquet", "config": "a"}, r"field 'config'.*applies to dataset"),
        ({"dataset": "repo", "splits": ["dev"]}, r"field 'splits'.*must be an object of names"),
        ({"dataset": "repo", "config": "reviews"}, r"field 'dataset' \(task 'x'\): .*has no column 'label'"),
    ]:
        path.write_text(json.dumps([{"name": "x", "text_fields": ["text"], **bad}], indent=1))
        with pytest.raises(UsageError, match=message):
            read_custom_tasks(str(path))


def test_custom_tasks_file_regression_declared_or_inferred_gets_the_same_metrics(tmp_path):
    """`"label_names": null` (declared) and no label_names (inferred from float labels) are one regression task."""
    rows = "a\tb\tlabel\n" + "".join(f"s{i}\tt{i}\t{i / 2}\n" for i in range(6))
    (tmp_path / "sim.tsv").write_text(rows)
    entry = {"name": "sim", "text_fields": ["a", "b"], "train_file": "sim.tsv", "validation_file": "sim.tsv"}
    path = tmp_path / "tasks.json"
    specs = []
    for declared in ({"label_names": None}, {}):
        path.write_text(json.dumps([{**entry, **declared}], indent=1))
        [(spec, _)] = read_custom_tasks(str(path))
        specs.append(spec)
    assert specs[0] == specs[1] and specs[0].is_regression and specs[0].metrics == ("pearson", "spearmanr")
    path.write_text(json.dumps([{**entry, "metrics": ["accuracy"]}], indent=1))
    with pytest.raises(
        UsageError, match=r"line 10, field 'metrics' \(task 'sim'\): metric 'accuracy' scores class ids, but the task is a regression"
    ):
        read_custom_tasks(str(path))


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["", "1", "0"], r"train\.csv, row 0 \(0-based\): 'label' is empty; every training row needs a label"),
        (
            ["0", "positive", "1"],
            r"'label' mixes numbers \('0'\) and names \('positive', row 1, 0-based\): use class names or ids, not both",
        ),
        (["1.5", "nan", "2"], r"row 1 \(0-based\): 'label' 'nan' is not a finite number"),
        (["0", "1000000"], r"label ids run to 1000000 but only 2 distinct values occur: pass label_names \(classes\) or regression=True"),
        (["0.0", "1.0", "1.0"], None),  # written as floats: a regression, as a float column is (and load_task reads it)
        (["0", "1", "1"], ("0", "1")),
        (["-1", "+1", "+1"], r"holds negative integer labels \(-1; -1 marks unlabelled rows"),
        (["0", "+1", "1"], ("0", "1")),  # ids written with a sign
        (["neg", " pos", "neg "], ("neg", "pos")),
    ],
)
def test_inferred_labels_refuse_what_would_be_silently_wrong(tmp_path, labels, expected):
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f"s{i},{label}\n" for i, label in enumerate(labels)))
    source = TaskSource(data_files={"train": str(tmp_path / "train.csv")})
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            infer_task_spec("t", source, ["sentence"])
        return
    spec = infer_task_spec("t", source, ["sentence"])
    assert spec.label_names == expected
    assert len(load_task(spec, source, "train")) == len(labels)


def test_cli_run_mixes_a_glue_task_a_parquet_task_and_a_repo_layout_task(tmp_path, tiny_checkpoint):
    glue = write_glue(tmp_path / "glue")
    repo_layout(tmp_path / "repo")
    reviews(16).to_parquet(str(tmp_path / "train.parquet"))
    reviews(8, offset=50).to_parquet(str(tmp_path / "dev.parquet"))
    (tmp_path / "tasks.json").write_text(
        json.dumps(
            [
                {
                    "name": "pq",
                    "text_fields": ["text"],
                    "label_field": "sentiment",
                    "train_file": "train.parquet",
                    "validation_file": "dev.parquet",
                },
                {
                    "name": "local_reviews",
                    "text_fields": ["text"],
                    "dataset": "repo",
                    "config": "reviews",
                    "splits": {"validation": "dev"},
                    "columns": {"label": "sentiment"},
                },
            ]
        )
    )
    args = base_args(glue, tiny_checkpoint, tmp_path / "out")
    args[args.index("--tasks") + 1] = "rte"
    results = run_glue_mtl.main(args + ["--custom_tasks_file", str(tmp_path / "tasks.json")])
    for key in ("eval_rte_accuracy", "eval_pq_accuracy", "eval_local_reviews_accuracy"):
        assert key in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [t["id2label"] for t in config["tasks"] if t["name"] == "local_reviews"] == [{"0": "negative", "1": "positive"}]


def test_ids_in_another_split_are_refused_when_the_names_came_from_text(tmp_path):
    """Names inferred from text labels are sorted; a dev file of ids 0/1/2 was read in that order (0 = contradiction),
    whatever its writer meant. Declared label_names give ids their order; ids beside inferred id names stay ids.
    A target Python reads but arrow does not ("1_000") is one line naming the row, not a raw pyarrow error."""
    (tmp_path / "train.csv").write_text(
        "sentence,label\n" + "".join(f"s{i},{['entailment', 'neutral', 'contradiction'][i % 3]}\n" for i in range(9))
    )
    (tmp_path / "dev.csv").write_text("sentence,label\n" + "".join(f"s{i},{i % 3}\n" for i in range(6)))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"sentence": f"s{i}", "label": i % 3}) + "\n" for i in range(6)))
    for dev in ("dev.csv", "dev.jsonl"):
        source = TaskSource(data_files={"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / dev)})
        spec = infer_task_spec("nli", source, ["sentence"])
        assert spec.label_names == ("contradiction", "entailment", "neutral")
        with pytest.raises(InputError, match=rf"{dev}, row 0 \(0-based\), column 'label': label '?0'? is an id, but the label names"):
            load_task(spec, source, "validation")
        declared = TaskSpec("nli", ("sentence",), label_names=spec.label_names)
        assert load_task(declared, source, "validation")["label"] == [0, 1, 2, 0, 1, 2]
    entry = {"name": "nli", "text_fields": ["sentence"], "train_file": "train.csv", "validation_file": "dev.csv"}
    (tmp_path / "tasks.json").write_text(json.dumps([entry], indent=1))
    (tmp_path / "reg.csv").write_text("sentence,label\na,1.5\nb,1_000\n")
    with pytest.raises(InputError, match=r"reg\.csv, row 1 \(0-based\), column 'label': regression target '1_000' is not a number"):
        load_task(TaskSpec("reg", ("sentence",)), TaskSource(data_files={"train": str(tmp_path / "reg.csv")}), "train")
    # A label set mixing ids and names names the training file (it named field 'name': "names" held that word).
    (tmp_path / "train.csv").write_text("sentence,label\na,0\nb,positive\n")
    with pytest.raises(UsageError, match=r"tasks\.json, line \d+, field 'train_file' \(task 'nli'\): .*mixes numbers"):
        read_custom_tasks(str(tmp_path / "tasks.json"))


def test_data_files_take_glob_patterns_as_datasets_does(tmp_path):
    """docs/streaming.md's `reviews-*.parquet`: a pattern was refused as a file that does not exist."""
    for part in range(3):
        rows = [{"sentence": f"p{part} r{i}", "label": ["neg", "pos"][i % 2]} for i in range(4)]
        (tmp_path / f"reviews-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = TaskSpec("reviews", ("sentence",), label_names=("neg", "pos"))
    loaded = load_task(spec, TaskSource(data_files={"train": str(tmp_path / "reviews-*.jsonl")}), "train")
    assert loaded["sentence"][:5] == ["p0 r0", "p0 r1", "p0 r2", "p0 r3", "p1 r0"] and len(loaded) == 12
    with pytest.raises(FileNotFoundError, match=r"no data file matches \S+/other-\*\.jsonl"):
        load_task(spec, TaskSource(data_files={"train": str(tmp_path / "other-*.jsonl")}), "train")
    entry = {"name": "reviews", "text_fields": ["sentence"], "label_names": ["neg", "pos"], "validation_file": "reviews-0.jsonl"}
    (tmp_path / "tasks.json").write_text(json.dumps([{**entry, "train_file": "reviews-*.jsonl"}]))
    [(_, source)] = read_custom_tasks(str(tmp_path / "tasks.json"))
    assert len(load_task(spec, source, "train")) == 12
    (tmp_path / "tasks.json").write_text(json.dumps([{**entry, "train_file": "nothing-*.jsonl"}], indent=1))
    with pytest.raises(UsageError, match=r"field 'train_file' \(task 'reviews'\): no data file matches"):
        read_custom_tasks(str(tmp_path / "tasks.json"))


def test_a_directory_of_data_files_is_read_as_data_files_are(tmp_path):
    """A local directory laid out as a Hub data set (`train.csv`, `data/dev-0.tsv`) went through load_dataset's defaults:
    "NA" became a missing text, a quote in a TSV a parser error without its cause. Now its files are read as
    data_files are: every column text, TSV without quoting, the same one-line errors."""
    (tmp_path / "repo" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "train.csv").write_text("sentence,label\nNA,pos\nnull,neg\n")
    (tmp_path / "repo" / "data" / "dev-0.tsv").write_text('sentence\tlabel\n"quoted\tpos\n')
    spec = TaskSpec("t", ("sentence",), label_names=("neg", "pos"))
    source = TaskSource(dataset=str(tmp_path / "repo"))
    assert load_task(spec, source, "train")["sentence"] == ["NA", "null"]
    assert load_task(spec, source, "validation")["sentence"] == ['"quoted']
    with pytest.raises(ValueError, match=r"repo has no split 'test'; splits found \(datasets' file naming\): \['train', 'validation'\]"):
        load_task(spec, TaskSource(dataset=str(tmp_path / "repo"), splits={"validation": "test"}), "validation")
    (tmp_path / "repo" / "train.csv").write_text("sentence,label\nfine,pos\nGreat, really,pos\n")
    with pytest.raises(ValueError, match=r"train\.csv.*row|train\.csv.*fields"):
        load_task(spec, source, "train")


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_empty_text_is_refused_in_every_format(tmp_path, suffix):
    """A CSV's empty text was refused, the same row in JSON Lines or Parquet trained on an empty input."""
    rows = {"sentence": ["fine", "  ", "good"], "label": ["pos", "neg", "pos"]}
    path = tmp_path / f"train.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps({"sentence": s, "label": y}) + "\n" for s, y in zip(rows["sentence"], rows["label"])))
    else:
        datasets.Dataset.from_dict(rows).to_parquet(str(path))
    spec = TaskSpec("t", ("sentence",), label_names=("neg", "pos"))
    with pytest.raises(
        InputError, match=rf"train\.{suffix}, row 1 \(0-based\), column 'sentence': empty text \(drop or fill such rows first\)"
    ):
        load_task(spec, TaskSource(data_files={"train": str(path)}), "train")
