"""Layout of the original GLUE distribution files (`glue_data/<DIR>/<split>.tsv`).

Every per-task quirk of the TSVs (missing header, column positions, label spellings, float
targets, MNLI's matched/mismatched files) is described here as data, so the loader in
`glue_tasks.loading` and the leaderboard writer in `glue_tasks.submission` have no task-specific
branches. Column indices are 0-based; negative indices count from the end, as in Python (MNLI's
gold label is the last of 12 columns in train and of 16 in dev).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["TsvFile", "GlueFormat", "GLUE_FORMATS"]


@dataclass(frozen=True)
class TsvFile:
    """One TSV file of a task's GLUE directory.

    Args:
        file_name: File name inside the task directory, e.g. `"dev_matched.tsv"`.
        text_columns: Column of each text field, in the order of the task spec's `text_fields`.
        label_column: Column of the raw label, or `None` for an unlabelled test file.
        index_column: Column holding the example index (`idx`), or `None` to number the data rows
            from 0.
        has_header: Whether the first line is a header line (CoLA train/dev have none).
        num_columns: Columns every row must have when there is no header; with a header, rows
            must have as many columns as the header. A different count means a stray tab, which
            would silently shift the text and label columns.
    """

    file_name: str
    text_columns: tuple[int, ...]
    label_column: int | None
    index_column: int | None = None
    has_header: bool = True
    num_columns: int | None = None

    def __post_init__(self) -> None:
        if not self.has_header and self.num_columns is None:
            raise ValueError(f"{self.file_name}: a file without a header must declare num_columns.")

    @property
    def is_labelled(self) -> bool:
        """True when the file carries gold labels (train/dev), False for the test files."""
        return self.label_column is not None

    def min_columns(self) -> int:
        """Smallest row width for which every referenced column index is valid."""
        used = [*self.text_columns, self.label_column, self.index_column]
        return max((i + 1 if i >= 0 else -i) for i in used if i is not None)


@dataclass(frozen=True)
class GlueFormat:
    """How one GLUE task is stored in the original distribution.

    Args:
        task: Task name, as in `glue_tasks.GLUE_TASKS` (e.g. `"sst2"`).
        directory: Directory name under the GLUE root (e.g. `"SST-2"`).
        files: Split name (as on the Hub: `"train"`, `"validation"`, `"test_matched"`, ...) to file
            description.
        label_map: Raw label string to label id, or `None` when the label is a float target
            (STS-B's similarity score). The leaderboard submission spells predictions the same way
            (see `label_strings`).
        submission_files: Unlabelled test split to the file name the GLUE leaderboard expects for
            its predictions (e.g. `{"test": "SST-2.tsv"}`; MNLI has one per test split).
    """

    task: str
    directory: str
    files: Mapping[str, TsvFile] = field(hash=False)
    label_map: Mapping[str, int] | None = field(default=None, hash=False)
    submission_files: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Read-only views: the descriptions are shared module-level constants.
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        if self.label_map is not None:
            object.__setattr__(self, "label_map", MappingProxyType(dict(self.label_map)))
            ids = sorted(self.label_map.values())
            if ids != list(range(len(ids))):
                raise ValueError(f"{self.task}: label_map must map one raw label to each id 0..n-1, got {dict(self.label_map)}.")
        object.__setattr__(self, "submission_files", MappingProxyType(dict(self.submission_files)))
        for split in self.submission_files:
            if split not in self.files or self.files[split].is_labelled:
                raise ValueError(f"{self.task}: submission split {split!r} is not an unlabelled split of {self.splits}.")

    @property
    def label_strings(self) -> tuple[str, ...] | None:
        """Raw spelling of each label id, in id order (the inverse of `label_map`); `None` for a score."""
        if self.label_map is None:
            return None
        return tuple(sorted(self.label_map, key=self.label_map.__getitem__))

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names this task's directory provides."""
        return tuple(self.files)


_BINARY_01 = {"0": 0, "1": 1}
_RTE_QNLI = {"entailment": 0, "not_entailment": 1}


def _pair_task(task: str, directory: str, label_map: Mapping[str, int], submission_file: str) -> GlueFormat:
    """RTE/QNLI/WNLI layout: `index, text_a, text_b, label` with a header; test lacks the label."""
    return GlueFormat(
        task=task,
        directory=directory,
        files={
            "train": TsvFile("train.tsv", text_columns=(1, 2), label_column=3, index_column=0),
            "validation": TsvFile("dev.tsv", text_columns=(1, 2), label_column=3, index_column=0),
            "test": TsvFile("test.tsv", text_columns=(1, 2), label_column=None, index_column=0),
        },
        label_map=label_map,
        submission_files={"test": submission_file},
    )


def _mnli_file(file_name: str, labelled: bool) -> TsvFile:
    """MNLI: `index, promptID, pairID, genre, 4 parses, sentence1, sentence2, [labels..., gold_label]`."""
    return TsvFile(file_name, text_columns=(8, 9), label_column=-1 if labelled else None, index_column=0)


GLUE_FORMATS: dict[str, GlueFormat] = {
    fmt.task: fmt
    for fmt in (
        GlueFormat(
            task="cola",
            directory="CoLA",
            files={
                # train/dev: source, label, original label (often empty), sentence — no header.
                "train": TsvFile("train.tsv", (3,), label_column=1, has_header=False, num_columns=4),
                "validation": TsvFile("dev.tsv", (3,), label_column=1, has_header=False, num_columns=4),
                "test": TsvFile("test.tsv", (1,), label_column=None, index_column=0),
            },
            label_map=_BINARY_01,
            submission_files={"test": "CoLA.tsv"},
        ),
        GlueFormat(
            task="sst2",
            directory="SST-2",
            files={
                "train": TsvFile("train.tsv", (0,), label_column=1),
                "validation": TsvFile("dev.tsv", (0,), label_column=1),
                "test": TsvFile("test.tsv", (1,), label_column=None, index_column=0),
            },
            label_map=_BINARY_01,
            submission_files={"test": "SST-2.tsv"},
        ),
        GlueFormat(
            task="mrpc",
            directory="MRPC",
            files={
                # Quality, #1 ID, #2 ID, #1 String, #2 String (header starts with a UTF-8 BOM).
                "train": TsvFile("train.tsv", (3, 4), label_column=0),
                "validation": TsvFile("dev.tsv", (3, 4), label_column=0),
                "test": TsvFile("test.tsv", (3, 4), label_column=None, index_column=0),
            },
            label_map=_BINARY_01,
            submission_files={"test": "MRPC.tsv"},
        ),
        GlueFormat(
            task="stsb",
            directory="STS-B",
            files={
                # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score
                "train": TsvFile("train.tsv", (7, 8), label_column=9, index_column=0),
                "validation": TsvFile("dev.tsv", (7, 8), label_column=9, index_column=0),
                "test": TsvFile("test.tsv", (7, 8), label_column=None, index_column=0),
            },
            label_map=None,
            submission_files={"test": "STS-B.tsv"},
        ),
        GlueFormat(
            task="qqp",
            directory="QQP",
            files={
                # id, qid1, qid2, question1, question2, is_duplicate; test: id, question1, question2.
                # The train/dev `id` is a pair id, not a row number, so idx numbers rows like the Hub.
                "train": TsvFile("train.tsv", (3, 4), label_column=5),
                "validation": TsvFile("dev.tsv", (3, 4), label_column=5),
                "test": TsvFile("test.tsv", (1, 2), label_column=None, index_column=0),
            },
            label_map=_BINARY_01,
            submission_files={"test": "QQP.tsv"},
        ),
        GlueFormat(
            task="mnli",
            directory="MNLI",
            files={
                "train": _mnli_file("train.tsv", labelled=True),
                "validation_matched": _mnli_file("dev_matched.tsv", labelled=True),
                "validation_mismatched": _mnli_file("dev_mismatched.tsv", labelled=True),
                "test_matched": _mnli_file("test_matched.tsv", labelled=False),
                "test_mismatched": _mnli_file("test_mismatched.tsv", labelled=False),
            },
            label_map={"entailment": 0, "neutral": 1, "contradiction": 2},
            submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        ),
        _pair_task("qnli", "QNLI", _RTE_QNLI, "QNLI.tsv"),
        _pair_task("rte", "RTE", _RTE_QNLI, "RTE.tsv"),
        # WNLI's raw label 1 means entailment, and the Hub's ClassLabel has id 1 = entailment too.
        _pair_task("wnli", "WNLI", _BINARY_01, "WNLI.tsv"),
    )
}
