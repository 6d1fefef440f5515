"""Misuse of the Python entry points other than the trainer (tests/test_trainer_inputs.py): one clear error before
any work, nothing written, instead of a silent wrong result or a crash after work started."""

from __future__ import annotations

import pytest
from transformers import BertConfig, BertModel

from hf_async_mtl import MultiTaskModel, MultiTaskTrainingArguments
from hf_async_mtl.async_kd.options import AsyncKDOptions
from hf_async_mtl.data import build_task_datasets, carve_validation_split
from hf_async_mtl.finetune import finetune_each_task
from hf_async_mtl.merging.merge import merge_single_task_models
from hf_async_mtl.sources import DatasetsSource, TaskSource
from tests.conftest import SENTIMENT, TASKS, make_model, sentiment_rows


@pytest.mark.parametrize(
    "fraction, max_examples, message",
    [
        (0.5, -3, r"max_examples must be None or an int >= 1, got -3"),  # it held out 17 of 20 rows
        (0.5, 0, r"max_examples must be None or an int >= 1, got 0"),  # it held out none
        (0.5, 2.5, r"max_examples must be None or an int >= 1, got 2.5"),
        ("0.1", None, r"validation fraction must be a number in \(0, 1\), got '0.1'"),
        (True, None, r"validation fraction must be a number in \(0, 1\), got True"),
    ],
)
def test_carve_validation_split_refuses_sizes_that_flip_or_empty_it(fraction, max_examples, message):
    with pytest.raises(ValueError, match=message):
        carve_validation_split(sentiment_rows(20, 0), fraction, max_examples)


def test_build_task_datasets_checks_its_options_before_reading_data(tmp_path, tokenizer, caplog):
    path = tmp_path / "train.csv"
    sentiment_rows(12, 0).to_csv(str(path), index=False)
    files = TaskSource(data_files={"train": str(path), "validation": str(path)})
    source = DatasetsSource(SENTIMENT, files)
    for options, message in [
        ({"selection_fraction": -0.1}, r"selection_fraction must be a number in \[0, 1\), got -0.1"),
        ({"eval_cap": 0}, r"eval_cap must be None or an int >= 1, got 0"),
        ({"default_cap": -1}, r"default_cap must be None or an int >= 1, got -1"),
        ({"caps": {"sentiment": 0}}, r"caps\['sentiment'\] must be None or an int >= 1, got 0"),
        ({"max_seq_length": 0}, r"max_seq_length must be an int >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_task_datasets([(SENTIMENT, source)], tokenizer, **options)
    with pytest.raises(ValueError, match=r"task\(s\) \['sentiment'\] are given twice"):
        build_task_datasets([(SENTIMENT, source), (SENTIMENT, source)], tokenizer)
    with pytest.raises(
        TypeError, match=r"task 'sentiment''s source is a TaskSource, not a TaskDataSource: wrap it, DatasetsSource\(spec, source\)"
    ):
        build_task_datasets([(SENTIMENT, files)], tokenizer)
    data = build_task_datasets([(SENTIMENT, source)], tokenizer, caps={"sentimnt": 5}, selection_fraction=0.25)
    assert "caps names 'sentimnt', which is no task here (did you mean 'sentiment'?): ignored" in caplog.text
    assert len(data.train["sentiment"]) == 9


def test_on_off_options_must_be_booleans_and_numbers_finite(tmp_path):
    for options, message in [
        ({"async_kd": "false"}, r"async_kd must be True or False, got 'false'"),  # it trained with async-KD
        ({"sampling_temperature": float("nan")}, r"sampling_temperature must be a finite number > 0, got nan"),
        ({"mtl_method_options": "[1, 2]"}, r"mtl_method_options must be a JSON object of the method's options, got \[1, 2\]"),
        ({"async_kd": True, "eval_strategy": "steps", "kd_snapshot_dir": ""}, r"kd_snapshot_dir must be a directory path"),
    ]:
        with pytest.raises(ValueError, match=message):
            MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), **options)
    with pytest.raises(ValueError, match=r"kd_require_improvement must be True or False, got 'no'"):
        AsyncKDOptions(require_improvement="no")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"kd_snapshot_dir .*file is a file, not a directory"):
        AsyncKDOptions(snapshot_dir=str(tmp_path / "file"))


def test_from_pretrained_names_a_checkpoint_that_is_not_multi_task(tmp_path):
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(
        ValueError, match=r"bert holds a 'bert' checkpoint, not a MultiTaskModel: build one on it with MultiTaskModel.from_encoder"
    ):
        MultiTaskModel.from_pretrained(tmp_path / "bert")


def test_finetune_checks_every_tasks_data_before_training(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none")
    common = dict(specs=TASKS, selection_sets=evaluation, dev_sets={t: {"validation": d} for t, d in evaluation.items()}, args=args)
    with pytest.raises(ValueError, match=r"finetune: train_sets has no set for task\(s\) \['similarity'\]"):
        finetune_each_task(
            make_model(tokenizer), train_sets={"sentiment": train["sentiment"]}, tokenizer=tokenizer, max_steps=2, eval_steps=1, **common
        )
    with pytest.raises(ValueError, match=r"finetune: learning_rate must be a finite number > 0, got -1"):
        finetune_each_task(
            make_model(tokenizer), train_sets=train, tokenizer=tokenizer, max_steps=2, eval_steps=1, learning_rate=-1, **common
        )


def test_merge_checks_its_arguments_and_output_before_reading_checkpoints(tmp_path):
    (tmp_path / "afile").write_text("x")
    tasks = {"sentiment": (SENTIMENT, None)}
    for call, message in [
        (dict(checkpoints="one/path"), r"checkpoints must be a list of checkpoint directories, got 'one/path'"),
        (dict(checkpoints=["a", "b"], output_dir=str(tmp_path / "afile")), r"afile is a file; give a directory path"),
        (dict(checkpoints=["a", "b"], output_dir=str(tmp_path / "afile" / "merged")), r"afile is a file; give a directory path"),
        (dict(checkpoints=["a", "b"], eval_batch_size=0), r"eval_batch_size must be an int >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            merge_single_task_models(tasks=tasks, **call)
    with pytest.raises(ValueError, match=r"tasks must map each task's name to its \(TaskSpec, TaskDataSource\) pair"):
        merge_single_task_models(["a", "b"], {"sentiment": TaskSource(data_files={"train": "x.csv"})})


def test_empty_files_and_directories_without_data_are_named(tmp_path):
    from hf_async_mtl.sources import load_task

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "folder").mkdir()
    for path, message in [
        (tmp_path / "empty.jsonl", r"Task 'sentiment': .*empty.jsonl: the file is empty"),  # said "cannot read it as json: "
        (tmp_path / "folder", r"Task 'sentiment': .*folder is a directory but no save_to_disk data set \(no dataset_info.json\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_task(SENTIMENT, TaskSource(data_files={"train": str(path)}), "train")


def test_options_that_do_not_act_under_the_others_are_warned(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hf_async_mtl.config"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), sampling_strategy="uniform", sampling_temperature=3.0)
        MultiTaskTrainingArguments(
            output_dir=str(tmp_path), async_kd=True, eval_strategy="steps", kd_loss="mse", kd_temperature=4.0, kd_ensemble="predictions"
        )
        MultiTaskTrainingArguments(output_dir=str(tmp_path), sampling_strategy="temperature", sampling_temperature=3.0)
    assert caplog.text.count("acts only") == 2 and caplog.text.count("with kd_top_k 1 the teacher is the best one") == 1
    assert "sampling_temperature=3.0 acts only with sampling_strategy 'temperature', not 'uniform'" in caplog.text


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_is_warned(tmp_path, caplog, monkeypatch, native):
    """bf16 autocast on a CPU without oneDNN bf16 kernels (AVX2 only) trains many times slower than fp32: one warning
    naming the CPU's capability, only for bf16 on the CPU (benchmarks/results/speed/cpu_bf16.md)."""
    monkeypatch.setattr("hf_async_mtl.precision.cpu_has_native_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="hf_async_mtl.config"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
        MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert caplog.text.count("without native bf16 kernels") == (0 if native else 1)
    if not native:
        assert "Drop --bf16 on this machine" in caplog.text


def test_a_gradient_method_under_gradient_accumulation_is_warned(tmp_path, caplog):
    """A gradient method combines each micro-batch's per-task gradients: under accumulation it never sees the step's."""
    with caplog.at_level("WARNING", logger="hf_async_mtl.config"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), mtl_method="pcgrad", gradient_accumulation_steps=2)
        MultiTaskTrainingArguments(output_dir=str(tmp_path), mtl_method="uncertainty", gradient_accumulation_steps=2)
        MultiTaskTrainingArguments(output_dir=str(tmp_path), mtl_method="pcgrad")
    assert caplog.text.count("never sees the step's gradients") == 1 and "'pcgrad'" in caplog.text
