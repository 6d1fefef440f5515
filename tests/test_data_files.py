"""User task files (`load_task_file`, read by `datasets`) and the GLUE TSV reader / label parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from glue_tasks.tabular import LabelParser, read_delimited
from hf_async_mtl.data import load_task_file
from hf_async_mtl.tasks import TaskSpec

SENTIMENT = TaskSpec(name="reviews", text_fields=("text",), label_field="stars", label_names=("neg", "pos"))
SIMILARITY = TaskSpec(name="sim", text_fields=("a", "b"), label_field="score", regression_range=(0.0, 5.0))


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_csv_quoting_names_ids_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    text = 'id,text,stars\n1,"A film, with a comma",pos\n\n2,"Two\nlines",0\n3,"He said ""NA""",1\n4,NA,neg\n\n\n'
    ds = load_task_file(SENTIMENT, write(tmp_path / "train.csv", text))
    assert ds["text"] == ["A film, with a comma", "Two\nlines", 'He said "NA"', "NA"]
    assert ds["label"] == [1, 0, 1, 0]
    assert ds["idx"] == [0, 1, 2, 3]
    assert ds.column_names == ["text", "label", "idx"]


def test_tsv_bare_quotes_are_text(tmp_path: Path) -> None:
    ds = load_task_file(SENTIMENT, write(tmp_path / "dev.tsv", 'text\tstars\n" opens\tpos\nnull\tneg\n'))
    assert ds["text"] == ['" opens', "null"] and ds["label"] == [1, 0]


def test_json_array_and_json_lines(tmp_path: Path) -> None:
    rows = '[{"text": "good", "stars": "pos"}, {"text": "bad", "stars": "neg"}]'
    ds = load_task_file(SENTIMENT, write(tmp_path / "a.json", rows))
    assert ds["text"] == ["good", "bad"] and ds["label"] == [1, 0]
    lines = '{"a": "x", "b": "y", "score": 4.5}\n\n{"a": "z", "b": "w", "score": 0}\n\n'
    ds = load_task_file(SIMILARITY, write(tmp_path / "b.jsonl", lines))
    assert ds["label"] == [4.5, 0.0] and ds["b"] == ["y", "w"]


@pytest.mark.parametrize(
    ("name", "text", "spec", "message"),
    [
        (
            "bad.csv",
            "text,stars\nok,pos\nbad,maybe\n",
            SENTIMENT,
            r"Task 'reviews': .*bad\.csv, row 1 \(0-based\), column 'stars': "
            r"label 'maybe' is neither one of \['neg', 'pos'\] nor a label id 0\.\.1",
        ),
        ("id.csv", "text,stars\nok,2\n", SENTIMENT, r"id\.csv, row 0 \(0-based\), column 'stars': label '2' is neither"),
        ("wide.csv", "text,stars\nok,pos,extra\n", SENTIMENT, r"wide\.csv: the first row has more fields than the header"),
        (
            "wider.csv",
            "text,stars\nok,pos\nok,pos,x\n",
            SENTIMENT,
            r"wider\.csv: cannot read it as csv: .*Expected 2 fields in line 3, saw 3",
        ),
        ("short.csv", "text,stars\nok,pos\nshort\n", SENTIMENT, r"short\.csv, row 1 \(0-based\), column 'stars'"),
        ("cols.tsv", "text\tlabel\nok\tpos\n", SENTIMENT, r"cols\.tsv has no column \['stars'\]; columns: \['text', 'label'\]"),
        ("empty.csv", "", SENTIMENT, r"empty\.csv: the file is empty"),
        ("header.csv", "text,stars\n", SENTIMENT, r"header\.csv holds no examples"),
        (
            "nan.tsv",
            "a\tb\tscore\nx\ty\tnan\n",
            SIMILARITY,
            r"nan\.tsv, row 0 \(0-based\), column 'score': regression target 'nan' is not a finite",
        ),
        (
            "range.tsv",
            "a\tb\tscore\nx\ty\t1\nx\ty\t6\n",
            SIMILARITY,
            r"range\.tsv, row 1 \(0-based\), column 'score': regression target 6 is outside \[0\.0, 5\.0\]",
        ),
        (
            "word.jsonl",
            '{"a": "x", "b": "y", "score": "high"}\n',
            SIMILARITY,
            r"word\.jsonl, row 0 \(0-based\), column 'score': regression target 'high' is not a number",
        ),
        (
            "null.json",
            '[{"a": "x", "b": "y", "score": 1}, {"a": null, "b": "y", "score": 1}]',
            SIMILARITY,
            r"null\.json, row 1 \(0-based\), column 'a': missing text",
        ),
        (
            "nolabel.jsonl",
            '{"a": "x", "b": "y", "score": 1}\n{"a": "x", "b": "y"}\n',
            SIMILARITY,
            r"nolabel\.jsonl, row 1 \(0-based\), column 'score': missing label",
        ),
        ("broken.jsonl", '{"a": "x", "b": "y", "score": 1}\n\n{"a": \n', SIMILARITY, r"broken\.jsonl: cannot read it as json"),
        ("number.jsonl", '{"a": 7, "b": "y", "score": 1}\n', SIMILARITY, r"number\.jsonl, column 'a': a text field must hold strings"),
    ],
)
def test_errors_name_task_file_row_and_field_in_one_line(tmp_path: Path, name: str, text: str, spec: TaskSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_task_file(spec, write(tmp_path / name, text))
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'reviews'"):
        load_task_file(SENTIMENT, tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"unsupported file type \['.txt'\]"):
        load_task_file(SENTIMENT, write(tmp_path / "x.txt", "text,stars\n"))


def test_read_delimited_selects_by_name_or_index(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "\ufeffq\tx\ty\tlabel\n1\ta\tb\t0\n\n2\tc\td\t1\n")
    table = read_delimited(path, {"first": "x", "last": -1, "q": 0})
    assert table.header == ("q", "x", "y", "label")
    assert table.columns == {"first": ["a", "c"], "last": ["0", "1"], "q": ["1", "2"]}
    assert table.lines == [2, 4] and len(table) == 2
    assert table.where(1, "last") == f"{path}, line 4, column 'label'"
    headerless = read_delimited(path, {"y": 2}, has_header=False, num_columns=4, context="Task 't'")
    assert headerless.columns["y"] == ["y", "b", "d"]
    assert headerless.where(0, "y") == f"Task 't': {path}, line 1, column index 2"
    with pytest.raises(ValueError, match="header has 4 column"):
        read_delimited(path, {"z": 4})
    with pytest.raises(ValueError, match="no header"):
        read_delimited(path, {"z": "x"}, has_header=False, num_columns=4)
    dup = write(tmp_path / "dup.csv", "a,a\n1,2\n")
    with pytest.raises(ValueError, match="appears 2 times"):
        read_delimited(dup, {"a": "a"}, delimiter=",")


def test_label_parser() -> None:
    parse = LabelParser.for_task(SENTIMENT)
    assert [parse(raw, "here") for raw in ("neg", "pos", 0, "1", " 1", 1.0)] == [0, 1, 0, 1, 1, 1]
    for raw in (True, 1.5, 2, -1, None, "Pos"):
        with pytest.raises(ValueError, match=r"^here: label .* is neither"):
            parse(raw, "here")
    strict = LabelParser({"entailment": 0, "not_entailment": 1}, accept_ids=False)
    assert strict("not_entailment", "x") == 1
    with pytest.raises(ValueError, match=r"^x: label '1' is not one of \['entailment', 'not_entailment'\]\.$"):
        strict("1", "x")
    target = LabelParser.for_task(SIMILARITY)
    assert target.is_regression and [target(raw, "w") for raw in ("0", " 2.5 ", 5, 4.0)] == [0.0, 2.5, 5.0, 4.0]
    for raw, message in ((True, "not a number"), (None, "not a number"), ("inf", "not a finite"), (-0.5, "outside")):
        with pytest.raises(ValueError, match=message):
            target(raw, "w")
    with pytest.raises(ValueError, match="each id 0..n-1"):
        LabelParser({"a": 0, "b": 2})
