"""What a Python caller hands MultiTaskTrainer: each misuse is one clear error when the trainer is built (before
any training step), naming the task, the dataset and the row; the mistakes that are sometimes meant are warnings."""

from __future__ import annotations

import logging

import datasets
import pytest
from transformers import BertConfig, BertForSequenceClassification

from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, TaskSpec, tokenize_task
from hf_async_mtl.sources import TaskSource
from hf_async_mtl.spec_inference import infer_task_spec
from tests.conftest import SENTIMENT, SIMILARITY, TASKS, make_model, sentiment_rows, similarity_rows
from tests.test_trainer import make_args


def build(tmp_path, tokenizer, train, evaluation=None, *, model=None, specs=TASKS, **args):
    return MultiTaskTrainer(
        model=model if model is not None else make_model(tokenizer),
        args=make_args(tmp_path, **args),
        task_specs=specs,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )


def with_column(dataset: datasets.Dataset, name: str, values) -> datasets.Dataset:
    return dataset.remove_columns(name).add_column(name, values)


def _labels(value):
    return lambda train, ev: ({**train, "sentiment": with_column(train["sentiment"], "labels", value(len(train["sentiment"])))}, ev)


CASES = [
    # (id, change (train, eval) -> (train, eval), extra args, error type, message)
    (
        "task_id_of_another_task",
        lambda train, ev: ({**train, "sentiment": with_column(train["sentiment"], "task_ids", [1] * len(train["sentiment"]))}, ev),
        {},
        ValueError,
        r"Task 'sentiment': train_dataset\['sentiment'\] holds task id\(s\) \[1\], but 'sentiment' is task 0 of task_specs",
    ),
    (
        "eval_set_under_the_other_task",
        lambda train, ev: (train, {"sentiment": ev["similarity"], "similarity": ev["sentiment"]}),
        {},
        ValueError,
        r"Task 'sentiment': eval_dataset\['sentiment'\] holds task id\(s\) \[1\], but 'sentiment' is task 0",
    ),
    (
        "fractional_class_labels",
        _labels(lambda n: [0.6] * n),
        {},
        ValueError,
        r"Task 'sentiment': train_dataset\['sentiment'\], example 0 \(0-based\): label 0.6 is outside the label set",
    ),
    (
        "class_label_out_of_range",
        _labels(lambda n: [0] * (n - 1) + [2]),
        {},
        ValueError,
        r"example 95 \(0-based\): label 2 is outside the label set \['negative', 'positive'\] \(ids 0..1\)",
    ),
    (
        "text_labels",
        _labels(lambda n: ["positive"] * n),
        {},
        ValueError,
        r"train_dataset\['sentiment'\], example 0 \(0-based\): labels is text \('positive'\); the task needs a class id 0..1",
    ),
    (
        "nan_regression_target",
        lambda train, ev: (train, {**ev, "similarity": with_column(ev["similarity"], "labels", [float("nan")] * len(ev["similarity"]))}),
        {},
        ValueError,
        r"Task 'similarity': eval_dataset\['similarity'\], example 0 \(0-based\): regression target is nan",
    ),
    (
        "numbers_as_text_labels",
        _labels(lambda n: ["1"] * n),
        {},
        ValueError,
        r"train_dataset\['sentiment'\], example 0 \(0-based\): labels is text \('1'\); the task needs a class id 0..1",
    ),
    (
        "regression_target_outside_its_range",
        lambda train, ev: ({**train, "similarity": with_column(train["similarity"], "labels", [50.0] * len(train["similarity"]))}, ev),
        {},
        ValueError,
        r"target 50.0 is outside \[0.0, 5.0\]",
    ),
    (
        "empty_train_set",
        lambda train, ev: ({**train, "sentiment": train["sentiment"].select([])}, ev),
        {},
        ValueError,
        r"Task 'sentiment': train_dataset\['sentiment'\] is empty",
    ),
    (
        "untokenized_train_set",
        lambda train, ev: ({**train, "sentiment": sentiment_rows(8, 0)}, ev),
        {},
        ValueError,
        r"train_dataset\['sentiment'\] has no input_ids \(columns: \['sentence', 'label', 'idx'\]\): pass tokenized data, "
        r"tokenize_task\(spec, dataset, tokenizer, task_id=0\)",
    ),
    (
        "untokenized_eval_split",
        lambda train, ev: (train, {**ev, "similarity": {"validation": ev["similarity"], "extra": similarity_rows(4, 0)}}),
        {},
        ValueError,
        r"Task 'similarity': eval_dataset\['similarity'\]\['extra'\] has no input_ids",
    ),
    (
        "dataset_instead_of_a_mapping",
        lambda train, ev: (train["sentiment"], ev),
        {},
        TypeError,
        r"train_dataset must map task names to tokenized datasets \(\{'task': dataset, \.\.\.\}\), got a Dataset",
    ),
    (
        "list_of_eval_sets",
        lambda train, ev: (train, list(ev.values())),
        {},
        TypeError,
        r"eval_dataset must map task names to tokenized datasets .*got a list",
    ),
    (
        "best_model_metric_not_reported",
        lambda train, ev: (train, ev),
        {"metric_for_best_model": "sentiment_f1", "eval_strategy": "steps", "eval_steps": 2},
        ValueError,
        r"metric_for_best_model 'sentiment_f1': the evaluation reports no such metric \(did you mean 'sentiment_",
    ),
    (
        "best_model_ece_without_calibration",  # it was accepted, then the first evaluation died with a KeyError
        lambda train, ev: (train, ev),
        {"metric_for_best_model": "sentiment_ece", "eval_strategy": "steps", "eval_steps": 2},
        ValueError,
        r"metric_for_best_model 'sentiment_ece': the evaluation reports no such metric",
    ),
    (
        "best_model_metric_typo",
        lambda train, ev: (train, ev),
        {"metric_for_best_model": "glue_scor", "eval_strategy": "steps", "eval_steps": 2},
        ValueError,
        r"metric_for_best_model 'glue_scor': the evaluation reports no such metric \(did you mean 'glue_score'\?\)",
    ),
]


@pytest.mark.parametrize("change, args, error, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_misuse_is_refused_when_the_trainer_is_built(tmp_path, tokenizer, tiny_data, change, args, error, message):
    train, evaluation = change(*tiny_data)
    with pytest.raises(error, match=message):
        build(tmp_path, tokenizer, train, evaluation, **args)
    assert not (tmp_path / "out").exists()  # nothing written


def test_wrong_containers_and_models_are_named(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    with pytest.raises(TypeError, match=r"task_specs must be a list of TaskSpec \(e.g. list\(specs.values\(\)\)\), got a dict"):
        build(tmp_path, tokenizer, train, specs={s.name: s for s in TASKS})
    from hf_async_mtl.data import TaskDatasets

    whole = TaskDatasets(train=train, selection=evaluation, dev={}, train_sizes={})
    with pytest.raises(TypeError, match=r"got a TaskDatasets \(build_task_datasets' result: pass its .train and .selection\)"):
        build(tmp_path, tokenizer, whole)
    with pytest.raises(TypeError, match=r"task_specs\[1\] is a str, not a TaskSpec"):
        build(tmp_path, tokenizer, train, specs=[SENTIMENT, "similarity"])
    plain = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(TypeError, match=r"MultiTaskTrainer trains a MultiTaskModel .*got a BertForSequenceClassification"):
        build(tmp_path, tokenizer, train, model=plain)


def test_token_ids_and_lengths_are_checked_against_the_encoder(tmp_path, tokenizer, tiny_data):
    train, _ = tiny_data
    small = make_model(tokenizer)
    small.encoder.resize_token_embeddings(500)  # as if the model had another tokenizer
    with pytest.raises(
        ValueError,
        match=r"Task 'sentiment': train_dataset\['sentiment'\] holds token id \d+ in input_ids, but the encoder's vocabulary has 500 ids",
    ):
        build(tmp_path, tokenizer, train, model=small)
    grown = make_model(tokenizer)
    grown.config.encoder_config.vocab_size = 500  # the config lags; the embeddings decide
    build(tmp_path, tokenizer, train, model=grown)
    long = tokenize_task(
        SENTIMENT, sentiment_rows(8, 0).map(lambda r: {"sentence": r["sentence"] + " word" * 200}), tokenizer, 0, max_seq_length=256
    )
    with pytest.raises(
        ValueError,
        match=r"train_dataset\['sentiment'\], example \d+ \(0-based\) has \d+ tokens in input_ids, but the encoder takes at most 128 positions",
    ):
        build(tmp_path, tokenizer, {**train, "sentiment": long})


def test_tasks_without_data_are_warned_not_refused(tmp_path, tokenizer, tiny_data, caplog):
    """Per-task fine-tuning trains one task of a multi-task model; async-KD may watch some tasks only."""
    train, evaluation = tiny_data
    with caplog.at_level(logging.WARNING, logger="hf_async_mtl.trainer_inputs"):
        build(
            tmp_path,
            tokenizer,
            {"sentiment": train["sentiment"]},
            {"sentiment": evaluation["sentiment"]},
            async_kd=True,
            eval_strategy="steps",
            eval_steps=2,
        )
    assert "train_dataset has no data for task(s) ['similarity']: they are not trained in this run." in caplog.text
    assert (
        "eval_dataset has no set for task(s) ['similarity']: they are not evaluated, not in glue_score, and async-KD never converges them."
        in caplog.text
    )


def test_tokenize_task_checks_its_arguments_and_reads_label_field(tokenizer):
    rows = sentiment_rows(6, 0)
    with pytest.raises(
        TypeError, match=r"Task 'sentiment': tokenize_task's task_id is the task's position in task_specs \(an int >= 0\), got 'sentiment'"
    ):
        tokenize_task(SENTIMENT, rows, tokenizer, "sentiment")
    with pytest.raises(ValueError, match=r"Task 'similarity': the dataset has no text column \['sentence1', 'sentence2'\]"):
        tokenize_task(SIMILARITY, rows, tokenizer, 1)
    stars = TaskSpec("sentiment", ("sentence",), label_names=("negative", "positive"), label_field="stars")
    tokenized = tokenize_task(stars, rows.rename_column("label", "stars"), tokenizer, 0)
    assert tokenized["labels"] == rows["label"]
    with pytest.raises(ValueError, match=r"no label column 'label' \(label_field 'stars'\); columns: \['sentence', 'idx'\]"):
        tokenize_task(stars, rows.remove_columns("label"), tokenizer, 0)


def test_from_encoder_refuses_a_saved_multi_task_model(tmp_path, tokenizer):
    make_model(tokenizer).save_pretrained(tmp_path / "mtl")
    with pytest.raises(ValueError, match=r"mtl is a saved MultiTaskModel, not an encoder: load it with MultiTaskModel.from_pretrained"):
        MultiTaskModel.from_encoder(tmp_path / "mtl", [SENTIMENT])


def test_negative_integer_labels_are_not_taken_for_regression(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"row {i},{(-1, 0, 1)[i % 3]}\n" for i in range(9)))
    source = TaskSource(data_files={"train": str(tmp_path / "train.csv")})
    with pytest.raises(ValueError, match=r"column 'label' holds negative integer labels \(-1; -1 marks unlabelled rows"):
        infer_task_spec("mine", source, ["text"])
    assert infer_task_spec("mine", source, ["text"], regression=True).is_regression


def test_float32_targets_at_the_bounds_of_their_range_pass(tmp_path, tokenizer, tiny_data):
    """tokenize_task stores regression targets as float32: a bound like -0.1 is compared at that precision."""
    train, _ = tiny_data
    spec = TaskSpec("similarity", ("sentence1", "sentence2"), regression_range=(-0.1, 0.3))
    rows = similarity_rows(8, 0).map(lambda r, i: {"label": (-0.1, 0.3)[i % 2]}, with_indices=True)
    tokenized = tokenize_task(spec, rows, tokenizer, 1)
    model = make_model(tokenizer, tasks=[SENTIMENT, spec])
    build(tmp_path, tokenizer, {"sentiment": train["sentiment"], "similarity": tokenized}, model=model, specs=[SENTIMENT, spec])


def test_sets_given_to_evaluate_and_predict_are_checked_too(tmp_path, tokenizer, tiny_data):
    train, evaluation = tiny_data
    trainer = build(tmp_path, tokenizer, train, evaluation)
    with pytest.raises(ValueError, match=r"eval_dataset\['sentiment'\] holds task id\(s\) \[1\], but 'sentiment' is task 0"):
        trainer.evaluate(eval_dataset={"sentiment": evaluation["similarity"]})
    with pytest.raises(ValueError, match=r"test_sets\['similarity'\] holds task id\(s\) \[0\], but 'similarity' is task 1"):
        trainer.predict_tasks({"similarity": evaluation["sentiment"]})
    assert trainer.predict_tasks({"sentiment": evaluation["sentiment"]})["sentiment"].shape == (32,)


def test_ece_is_a_reported_metric_only_with_calibration_and_for_classification():
    from hf_async_mtl.trainer_inputs import reported_metric_problem

    assert reported_metric_problem("eval_sentiment_ece", TASKS) is not None
    assert reported_metric_problem("eval_sentiment_ece", TASKS, calibration=True) is None
    assert reported_metric_problem("similarity_ece", TASKS, calibration=True) is not None  # a regression task has no ECE


def test_strings_and_single_sets_where_collections_are_expected_are_named(tmp_path, tokenizer, tiny_data, tiny_checkpoint):
    # a string was split into its characters: 3 classes ('p', 'o', 's'), or a pair over columns 'a' and 'b'
    with pytest.raises(ValueError, match=r"label_names must be a sequence of names, e.g. \('pos',\), not the string 'pos'"):
        TaskSpec("x", ("sentence",), label_names="pos")
    with pytest.raises(ValueError, match=r"text_fields must be a sequence of names, e.g. \('ab',\)"):
        TaskSpec("x", "ab", label_names=("a", "b"))
    with pytest.raises(TypeError, match=r"from_encoder's tasks must be a list of TaskSpec, got a TaskSpec"):
        MultiTaskModel.from_encoder(tiny_checkpoint, SENTIMENT)
    train, evaluation = tiny_data
    trainer = build(tmp_path, tokenizer, train, evaluation)
    with pytest.raises(TypeError, match=r"eval_dataset must map task names to tokenized datasets .*got a Dataset"):
        trainer.evaluate(evaluation["sentiment"])
    with pytest.raises(TypeError, match=r"test_sets must map task names .*got a list"):
        trainer.predict_tasks([evaluation["sentiment"]])
    with pytest.raises(TypeError, match=r"predict takes one dataset; for a mapping task name → dataset use predict_tasks"):
        trainer.predict({"sentiment": evaluation["sentiment"]})
