"""GLUE task specs, TSV layouts and the split loader (tiny TSVs reproducing each quirk, plus real data)."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import datasets
import pytest

from glue_tasks import GLUE_FORMATS, GLUE_TASKS, get_glue_task, glue_features, load_glue_task

REAL_GLUE_DIR = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "glue_data"))


def write_tsv(root: Path, directory: str, file_name: str, text: str, bom: bool = False) -> Path:
    """Write `text` byte-exactly (no newline translation) to `root/directory/file_name`."""
    path = root / directory / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_glue_task_specs() -> None:
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert GLUE_TASKS["cola"].metrics == ("matthews_correlation",)
    assert GLUE_TASKS["cola"].label_names == ("unacceptable", "acceptable")
    assert GLUE_TASKS["mrpc"].metrics == ("f1", "accuracy")
    assert GLUE_TASKS["qqp"].text_fields == ("question1", "question2")
    assert GLUE_TASKS["qnli"].text_fields == ("question", "sentence")
    stsb = GLUE_TASKS["stsb"]
    assert stsb.is_regression and stsb.regression_range == (0.0, 5.0) and stsb.metrics == ("pearson", "spearmanr")
    mnli = GLUE_TASKS["mnli"]
    assert mnli.text_fields == ("premise", "hypothesis")
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert mnli.validation_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["rte"].label_names == ("entailment", "not_entailment")
    assert GLUE_TASKS["wnli"].label_names == ("not_entailment", "entailment")


def test_get_glue_task() -> None:
    assert get_glue_task("rte") is GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst-2'.*cola.*wnli"):
        get_glue_task("sst-2")


@pytest.mark.parametrize("name", list(GLUE_TASKS))
def test_formats_agree_with_specs(name: str) -> None:
    spec, fmt = GLUE_TASKS[name], GLUE_FORMATS[name]
    test_splits = ("test_matched", "test_mismatched") if name == "mnli" else ("test",)
    assert fmt.splits == ("train", *spec.validation_splits, *test_splits)
    for split, tsv in fmt.files.items():
        assert len(tsv.text_columns) == len(spec.text_fields)
        assert tsv.is_labelled == (not split.startswith("test"))
    if spec.is_regression:
        assert fmt.label_map is None
    else:
        assert sorted(fmt.label_map.values()) == list(range(spec.num_labels))


def test_format_file_layouts() -> None:
    assert GLUE_FORMATS["sst2"].directory == "SST-2" and GLUE_FORMATS["stsb"].directory == "STS-B"
    assert GLUE_FORMATS["cola"].files["train"].has_header is False
    assert GLUE_FORMATS["cola"].files["test"].has_header is True
    mnli = GLUE_FORMATS["mnli"].files
    assert [mnli[s].file_name for s in mnli] == [
        "train.tsv",
        "dev_matched.tsv",
        "dev_mismatched.tsv",
        "test_matched.tsv",
        "test_mismatched.tsv",
    ]
    assert GLUE_FORMATS["wnli"].label_map["1"] == GLUE_TASKS["wnli"].label_names.index("entailment")
    assert GLUE_FORMATS["rte"].label_map["not_entailment"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        GLUE_FORMATS["cola"].directory = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        GLUE_FORMATS["cola"].label_map["2"] = 2  # type: ignore[index]


def test_cola_no_header_no_final_newline(tmp_path: Path) -> None:
    text = 'gj04\t1\t\tThe "sailors rode.\ngj04\t0\t*\tNA\nbc01\t1\t\tLast one, no newline.'
    write_tsv(tmp_path, "CoLA", "dev.tsv", text)
    ds = load_glue_task("cola", "validation", tmp_path)
    assert ds.column_names == ["sentence", "label", "idx"]
    assert ds["sentence"] == ['The "sailors rode.', "NA", "Last one, no newline."]
    assert ds["label"] == [1, 0, 1]
    assert ds["idx"] == [0, 1, 2]
    assert ds.features == glue_features(GLUE_TASKS["cola"])


def test_blank_lines_are_skipped_and_rows_numbered_without_them(tmp_path: Path) -> None:
    # Blank (or whitespace-only) lines anywhere, trailing ones included, are not rows: `idx`
    # counts data rows only, and errors still cite the physical line.
    text = "\n" + "gj04\t1\t\tFirst.\n\n  \ngj04\t0\t*\tSecond.\r\n\n\n"
    write_tsv(tmp_path, "CoLA", "train.tsv", text)
    ds = load_glue_task("cola", "train", tmp_path)
    assert ds["sentence"] == ["First.", "Second."] and ds["idx"] == [0, 1] and ds["label"] == [1, 0]
    write_tsv(tmp_path, "RTE", "train.tsv", "\n" + RTE_HEADER + "\n0\tA.\tB.\tentailment\n\n1\tA.\tB.\tmaybe\n\n")
    with pytest.raises(ValueError, match=r"train\.tsv, line 6, column 'label': label 'maybe'"):
        load_glue_task("rte", "train", tmp_path)
    # A line of tabs is a row of empty fields, not a blank line.
    write_tsv(tmp_path, "RTE", "dev.tsv", RTE_HEADER + "0\tA.\tB.\tentailment\n\t\t\n")
    with pytest.raises(ValueError, match="line 3: expected 4 tab-separated columns, found 3"):
        load_glue_task("rte", "validation", tmp_path)


def test_cola_test_has_header_and_index(tmp_path: Path) -> None:
    write_tsv(tmp_path, "CoLA", "test.tsv", "index\tsentence\n0\tBill whistled.\n1\tnull\n")
    ds = load_glue_task("cola", "test", tmp_path)
    assert ds["sentence"] == ["Bill whistled.", "null"]
    assert ds["label"] == [-1, -1] and ds["idx"] == [0, 1]


def test_mrpc_bom_header_and_bare_quotes(tmp_path: Path) -> None:
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = '1\t11\t12\tHe said " hi .\t" The pie .\n0\t21\t22\tnan\tHis " 100 percent " claim .\n'
    write_tsv(tmp_path, "MRPC", "train.tsv", header + rows, bom=True)
    ds = load_glue_task("mrpc", "train", str(tmp_path))
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds["sentence1"] == ['He said " hi .', "nan"]
    assert ds["sentence2"] == ['" The pie .', 'His " 100 percent " claim .']
    assert ds["label"] == [1, 0] and ds["idx"] == [0, 1]


def test_sst2_quotes_do_not_merge_rows_and_na_is_text(tmp_path: Path) -> None:
    # An unbalanced `"` would swallow the following rows under csv's default quoting.
    text = 'sentence\tlabel\n" a quote opens here \t1\nNA\t0\nnull\t1\nnan\t0\nends with a quote "\t1\n'
    write_tsv(tmp_path, "SST-2", "train.tsv", text)
    ds = load_glue_task("sst2", "train", tmp_path)
    assert ds["sentence"] == ['" a quote opens here ', "NA", "null", "nan", 'ends with a quote "']
    assert ds["label"] == [1, 0, 1, 0, 1]
    assert ds.features["label"].dtype == "int64"


def test_rte_string_labels_and_index_column(tmp_path: Path) -> None:
    text = "index\tsentence1\tsentence2\tlabel\n7\tA.\tB.\tnot_entailment\n9\tC.\tD.\tentailment\n"
    write_tsv(tmp_path, "RTE", "dev.tsv", text)
    ds = load_glue_task("rte", "validation", tmp_path)
    assert ds["label"] == [1, 0]
    assert ds["idx"] == [7, 9]  # taken from the file's index column, not the row number
    write_tsv(tmp_path, "RTE", "test.tsv", "index\tsentence1\tsentence2\n0\tA.\tB.\n")
    assert load_glue_task("rte", "test", tmp_path)[0] == {"sentence1": "A.", "sentence2": "B.", "label": -1, "idx": 0}


def test_wnli_raw_one_is_entailment(tmp_path: Path) -> None:
    write_tsv(tmp_path, "WNLI", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n1\tC.\tD.\t0\n")
    ds = load_glue_task("wnli", "train", tmp_path)
    names = GLUE_TASKS["wnli"].label_names
    assert [names[i] for i in ds["label"]] == ["entailment", "not_entailment"]


def test_stsb_float_scores(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = "0\tg\tf\ty\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000\n1\tg\tf\ty\t0004\tnone\tnone\tA man.\tA flute.\t0.2\n"
    write_tsv(tmp_path, "STS-B", "train.tsv", header + rows)
    ds = load_glue_task("stsb", "train", tmp_path)
    assert ds.features["label"].dtype == "float32"
    assert ds["label"] == pytest.approx([5.0, 0.2])
    assert ds["sentence2"] == ["An air plane.", "A flute."]
    write_tsv(tmp_path, "STS-B", "test.tsv", header.rsplit("\t", 1)[0] + "\n0\tg\tf\ty\t1\tn\tn\tA.\tB.\n")
    assert load_glue_task("stsb", "test", tmp_path)["label"] == [-1.0]


def test_mnli_matched_files_and_last_column_label(tmp_path: Path) -> None:
    parses = "\tbp1\tbp2\tp1\tp2"
    dev = "index\tpromptID\tpairID\tgenre" + parses + "\tsentence1\tsentence2" + "\tl1\tl2\tl3\tl4\tl5\tgold_label\n"
    dev += "0\t1\t1e\tfiction" + parses + "\tThe cat sat.\tA cat sat.\tneutral\tx\tx\tx\tx\tcontradiction\n"
    write_tsv(tmp_path, "MNLI", "dev_mismatched.tsv", dev)
    ds = load_glue_task("mnli", "validation_mismatched", tmp_path)
    assert ds[0] == {"premise": "The cat sat.", "hypothesis": "A cat sat.", "label": 2, "idx": 0}
    with pytest.raises(ValueError, match="Unknown split 'validation'.*validation_matched"):
        load_glue_task("mnli", "validation", tmp_path)


def test_qqp_idx_numbers_rows(tmp_path: Path) -> None:
    text = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t1\t2\tHow?\tWhy?\t0\n402555\t3\t4\tA?\tB?\t1\n"
    write_tsv(tmp_path, "QQP", "dev.tsv", text)
    ds = load_glue_task("qqp", "validation", tmp_path)
    assert ds["idx"] == [0, 1] and ds["label"] == [0, 1] and ds["question2"] == ["Why?", "B?"]


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_ROW = "0\tg\tf\ty\t1\tn\tn\tA.\tB.\t"


@pytest.mark.parametrize(
    ("directory", "task", "text", "line", "message"),
    [
        ("RTE", "rte", RTE_HEADER + "0\tA.\tB.\tentailment\n1\tA.\tB.\n", 3, "expected 4 tab-separated columns, found 3"),
        ("RTE", "rte", RTE_HEADER + "0\tA.\tB.\tentailment\n1\tA.\tB\tC.\tentailment\n", 3, "found 5"),
        ("RTE", "rte", RTE_HEADER + "0\tA.\tB.\tEntailment\n", 2, "column 'label': label 'Entailment' is not one of"),
        ("RTE", "rte", RTE_HEADER + "zero\tA.\tB.\tentailment\n", 2, "index 'zero' is not an integer"),
        ("CoLA", "cola", "gj04\t1\t\tOk.\ngj04\t2\t\tBad label.", 2, r"column index 1: label '2' is not one of \['0', '1'\]"),
        ("CoLA", "cola", "gj04\t1\t\tOk.\ngj04\t1\tBad row.", 2, "expected 4 tab-separated columns, found 3"),
        (
            "STS-B",
            "stsb",
            STSB_HEADER + STSB_ROW + "1.0\n" + STSB_ROW + "high\n",
            3,
            "column 'score': regression target 'high' is not a number",
        ),
        ("STS-B", "stsb", STSB_HEADER + STSB_ROW + "nan\n", 2, "target 'nan' is not a finite number"),
        ("STS-B", "stsb", STSB_HEADER + STSB_ROW + "5.5\n", 2, r"outside \[0.0, 5.0\]"),
        ("STS-B", "stsb", STSB_HEADER + STSB_ROW + "-0.1\n", 2, "outside"),
        ("RTE", "rte", "index\tsentence1\n0\tA.\n", 1, "header has 2 column"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, directory: str, task: str, text: str, line: int, message: str) -> None:
    file_name = "train.tsv"
    path = write_tsv(tmp_path, directory, file_name, text)
    with pytest.raises(ValueError, match=message) as info:
        load_glue_task(task, "train", tmp_path)
    message = str(info.value)
    assert f"GLUE task {task!r}: {path}, line {line}" in message and "\n" not in message


@pytest.mark.parametrize("text", ["", RTE_HEADER])
def test_empty_split(tmp_path: Path, text: str) -> None:
    path = write_tsv(tmp_path, "RTE", "dev.tsv", text)
    with pytest.raises(ValueError, match="empty") as info:
        load_glue_task("rte", "validation", tmp_path)
    assert str(path) in str(info.value)


def test_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="directory") as info:
        load_glue_task("rte", "train", tmp_path)
    assert str(tmp_path / "RTE") in str(info.value)
    write_tsv(tmp_path, "RTE", "train.tsv", RTE_HEADER + "0\tA.\tB.\tentailment\n")
    with pytest.raises(FileNotFoundError) as info:
        load_glue_task("rte", "validation", tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(info.value)


def test_unknown_task_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown GLUE task 'ax'"):
        load_glue_task("ax", "test", tmp_path)
    with pytest.raises(ValueError, match="Unknown split 'dev'.*train, validation, test"):
        load_glue_task("rte", "dev", tmp_path)


def test_hub_path_arguments_and_normalisation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []
    hub_features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
            "idx": datasets.Value("int32"),
            "extra": datasets.Value("string"),
        }
    )

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        data = {"sentence1": ["A."], "sentence2": ["B."], "label": [1], "idx": [0], "extra": ["x"]}
        return datasets.Dataset.from_dict(data, features=hub_features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_glue_task("rte", "validation", cache_dir=tmp_path)
    assert calls == [(("nyu-mll/glue", "rte"), {"split": "validation", "cache_dir": tmp_path})]
    assert ds.features == glue_features(GLUE_TASKS["rte"])
    assert ds[0] == {"sentence1": "A.", "sentence2": "B.", "label": 1, "idx": 0}


def test_hub_path_regression_and_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_load_dataset(path, name, split, cache_dir):
        if name == "mnli":  # drop a column to exercise the check
            return datasets.Dataset.from_dict({"premise": ["p"], "label": [0], "idx": [0]})
        return datasets.Dataset.from_dict({"idx": [3], "sentence1": ["a"], "sentence2": ["b"], "label": [4.25]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_glue_task("stsb", "train")
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds.features["label"].dtype == "float32" and ds["label"] == [4.25]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['hypothesis'\]"):
        load_glue_task("mnli", "test_matched")
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        load_glue_task("mnli", "test")


@pytest.mark.parametrize(
    ("task", "train_rows", "dev_rows", "test_rows"),
    [
        ("cola", 8551, 1043, 1063),
        ("sst2", 67349, 872, 1821),
        ("mrpc", 3668, 408, 1725),
        ("stsb", 5749, 1500, 1379),
        ("rte", 2490, 277, 3000),
        ("wnli", 635, 71, 146),
    ],
)
def test_real_glue_row_counts(task: str, train_rows: int, dev_rows: int, test_rows: int) -> None:
    assert len(load_glue_task(task, "train", REAL_GLUE_DIR)) == train_rows
    assert len(load_glue_task(task, "validation", REAL_GLUE_DIR)) == dev_rows
    test = load_glue_task(task, "test", REAL_GLUE_DIR)
    assert len(test) == test_rows
    assert set(test["label"]) == {-1}
    assert test["idx"] == list(range(test_rows))


def test_real_glue_label_distributions() -> None:
    cola = load_glue_task("cola", "train", REAL_GLUE_DIR)
    assert Counter(cola["label"]) == {1: 6023, 0: 2528}
    rte = load_glue_task("rte", "train", REAL_GLUE_DIR)
    names = GLUE_TASKS["rte"].label_names
    assert Counter(names[i] for i in rte["label"]) == {"entailment": 1249, "not_entailment": 1241}
    mrpc = load_glue_task("mrpc", "validation", REAL_GLUE_DIR)
    assert Counter(mrpc["label"]) == {1: 279, 0: 129}
    wnli = load_glue_task("wnli", "train", REAL_GLUE_DIR)
    assert Counter(wnli["label"]) == {1: 312, 0: 323}
    stsb = load_glue_task("stsb", "validation", REAL_GLUE_DIR)
    assert min(stsb["label"]) == 0.0 and max(stsb["label"]) == 5.0
