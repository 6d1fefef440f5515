"""Bi-encoder pair heads (hf_async_mtl.bi_encoder): zero-shot start, loss convention, SBERT features, data path,
save/reload, exports, errors, async-KD and the command line, on tiny random BERTs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from transformers import AutoModel, AutoModelForSequenceClassification

import hf_async_mtl.async_kd.objective as objective_module
import run_glue_mtl
from hf_async_mtl import (
    HardLabelObjective,
    MultiTaskConfig,
    MultiTaskDataCollator,
    MultiTaskDataset,
    MultiTaskModel,
    MultiTaskTrainer,
    MultiTaskTrainingArguments,
    StepContext,
    TaskSpec,
    distillation_loss,
    tokenize_task,
)
from hf_async_mtl.bi_encoder import SbertClassificationHead
from hf_async_mtl.data import length_order
from hf_async_mtl.model_card import build_model_card, build_task_card
from hf_async_mtl.pooling import pool
from hf_async_mtl.tasks import head_mismatches
from tests.conftest import SENTIMENT, SIMILARITY, make_model, sentiment_rows, similarity_rows
from tests.test_cli import run_cli_error, tiny_glue5

SIMILARITY_BI = dataclasses.replace(SIMILARITY, pair_encoding="bi_encoder")  # cosine head, labels 0..5
PARAPHRASE_BI = TaskSpec("paraphrase", ("sentence1", "sentence2"), label_names=("different", "same"), pair_encoding="bi_encoder")
PAIR_TASKS = [SENTIMENT, SIMILARITY_BI, PARAPHRASE_BI]

FIRST = ["a good movie", "the story was bad and long", "fine", "the food was really quite nice"]
SECOND = ["a great movie indeed", "story", "the day was fine and happy", "nice food"]


def paraphrase_rows(n: int, seed: int) -> datasets.Dataset:
    rows = similarity_rows(n, seed)
    return rows.map(lambda row: {"label": int(row["label"] >= 3)}).cast_column("label", datasets.Value("int64"))


def pair_batch(tokenizer, spec: TaskSpec, first=FIRST, second=SECOND) -> dict[str, torch.Tensor]:
    """The model inputs of some pairs, as training builds them (tokenize_task + MultiTaskDataCollator)."""
    label = [0.0] * len(first) if spec.is_regression else [0] * len(first)
    raw = datasets.Dataset.from_dict({"sentence1": first, "sentence2": second, "label": label})
    rows = tokenize_task(spec, raw, tokenizer, 0, max_seq_length=32)
    batch = MultiTaskDataCollator(tokenizer)([rows[i] for i in range(len(rows))])
    for key in ("task_ids", "labels"):  # the model reads the task's name; tests pass labels themselves
        batch.pop(key)
    return batch


def pooled_alone(model: MultiTaskModel, tokenizer, text: str) -> torch.Tensor:
    """One text encoded alone (batch of one, no padding) and mean-pooled: what sentence-transformers computes."""
    inputs = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return pool("mean", model.encoder(**inputs), inputs["attention_mask"])[0]


def alone_cosines(model: MultiTaskModel, tokenizer, first, second) -> torch.Tensor:
    """The cosine of each pair's two texts, each encoded and pooled alone."""
    pairs = [(pooled_alone(model, tokenizer, a), pooled_alone(model, tokenizer, b)) for a, b in zip(first, second)]
    return torch.stack([torch.cosine_similarity(u, v, dim=0) for u, v in pairs])


# ---- the model -------------------------------------------------------------------------------------------------


def test_untrained_cosine_head_gives_the_cosine_of_independently_pooled_embeddings(tmp_path, tokenizer):
    """Step 0 is the zero-shot bi-encoder: 0 + 5 * cos(u, v), u and v each text's mean-pooled encoding alone."""
    model = make_model(tokenizer, tasks=PAIR_TASKS).eval()
    with torch.no_grad():
        scores = model(**pair_batch(tokenizer, SIMILARITY_BI), task_name="similarity").logits
    assert scores.shape == (4, 1)
    cosines = alone_cosines(model, tokenizer, FIRST, SECOND)
    assert torch.allclose(scores[:, 0], 5.0 * cosines, atol=1e-5)
    # The same through the library's evaluation: its Pearson is the zero-shot cosine's.
    raw = similarity_rows(24, 5)
    expected = alone_cosines(model, tokenizer, raw["sentence1"], raw["sentence2"]).tolist()
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, report_to=[], per_device_eval_batch_size=5)
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        task_specs=PAIR_TASKS,
        eval_dataset={"similarity": tokenize_task(SIMILARITY_BI, raw, tokenizer, 1, 32)},
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_similarity_pearson"] == pytest.approx(pearsonr(expected, raw["label"])[0], abs=1e-5)


def test_cosine_loss_is_mse_between_cosine_and_labels_rescaled_by_the_range(tokenizer):
    shifted = dataclasses.replace(SIMILARITY_BI, name="shifted", regression_range=(1.0, 3.0))
    model = make_model(tokenizer, tasks=[SIMILARITY_BI, shifted]).eval()
    labels = torch.tensor([4.5, 0.5, 2.0, 5.0])
    batch = pair_batch(tokenizer, SIMILARITY_BI)
    cosines = alone_cosines(model, tokenizer, FIRST, SECOND)
    expected = sum((float(c) - float(y) / 5.0) ** 2 for c, y in zip(cosines, labels)) / 4  # by hand
    with torch.no_grad():
        output = model(**batch, task_name="similarity", labels=labels)
        assert float(output.loss) == pytest.approx(expected, abs=1e-6)
        # The trainer's loss (the task's objective) is the same number.
        loss, _ = HardLabelObjective(SIMILARITY_BI)(model, {**batch, "labels": labels}, "similarity", StepContext(model, 0, 0))
        assert float(loss) == pytest.approx(expected, abs=1e-6)
        # Another range: outputs 1 + 2 cos, labels (y - 1) / 2.
        shifted_labels = torch.tensor([1.0, 3.0, 2.0, 2.5])
        output = model(**batch, task_name="shifted", labels=shifted_labels)
    assert torch.allclose(output.logits[:, 0], 1.0 + 2.0 * cosines, atol=1e-5)
    by_hand = sum((float(c) - (float(y) - 1.0) / 2.0) ** 2 for c, y in zip(cosines, shifted_labels)) / 4
    assert float(output.loss) == pytest.approx(by_hand, abs=1e-6)
    # A distilled cosine task keeps the scale: KD on rescaled outputs, mixed with the rescaled hard loss.
    student, teacher = torch.tensor([[4.0], [1.0]]), torch.tensor([[3.0], [2.0]])
    kd = distillation_loss(student, teacher, torch.tensor([5.0, 0.0]), is_regression=True, alpha=0.5, label_range=(0.0, 5.0))
    assert float(kd) == pytest.approx(0.5 * ((0.2**2 + 0.2**2) / 2) + 0.5 * ((0.2**2 + 0.2**2) / 2))


def test_cosine_head_has_no_parameters_and_sbert_head_reads_u_v_difference_and_product(tokenizer):
    model = make_model(tokenizer, tasks=PAIR_TASKS).eval()
    assert list(model.heads["similarity"].parameters()) == []
    head = model.heads["paraphrase"]
    assert isinstance(head, SbertClassificationHead)
    assert sum(p.numel() for p in head.parameters()) == 4 * 32 * 2 + 2
    assert float(head.weight.detach().std()) == pytest.approx(0.02, rel=0.3) and not head.bias.any()  # as the linear heads
    with torch.no_grad():
        logits = model(**pair_batch(tokenizer, PARAPHRASE_BI), task_name="paraphrase").logits
        for row, (a, b) in enumerate(zip(FIRST, SECOND)):
            u, v = pooled_alone(model, tokenizer, a), pooled_alone(model, tokenizer, b)
            features = torch.cat([u, v, (u - v).abs(), u * v])
            assert torch.allclose(logits[row], head.weight @ features + head.bias, atol=1e-5)
        labels = torch.tensor([1, 0, 0, 1])
        loss = model(**pair_batch(tokenizer, PARAPHRASE_BI), task_name="paraphrase", labels=labels).loss
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels))


def test_save_and_reload_rebuild_the_pair_heads_bitwise(tmp_path, tokenizer):
    model = make_model(tokenizer, tasks=PAIR_TASKS).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["tasks"]
    assert saved[1] == {
        "name": "similarity",
        "num_labels": 1,
        "problem_type": "regression",
        "id2label": {"0": "LABEL_0"},
        "pair_encoding": "bi_encoder",
        "pair_head": "cosine",
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0.0, 5.0],
    }
    assert saved[2]["pair_head"] == "sbert" and "label_range" not in saved[2] and "pair_encoding" not in saved[0]
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for spec in (SIMILARITY_BI, PARAPHRASE_BI):
        batch = pair_batch(tokenizer, spec)
        with torch.no_grad():
            assert torch.equal(loaded(**batch, task_name=spec.name).logits, model(**batch, task_name=spec.name).logits)
    loaded.check_tasks(PAIR_TASKS)


def test_pair_encoding_differences_are_head_mismatches(tokenizer):
    heads = [spec.head_config() for spec in PAIR_TASKS]
    cross = [SENTIMENT, SIMILARITY, dataclasses.replace(PARAPHRASE_BI, pair_encoding="cross_encoder", pair_head=None)]
    problems = head_mismatches(heads, cross)
    assert problems == [
        "task 'similarity': head is a bi-encoder (cosine head, labels 0 to 5), the task asks for a cross-encoder",
        "task 'paraphrase': head is a bi-encoder (sbert head), the task asks for a cross-encoder",
    ]
    wider = dataclasses.replace(SIMILARITY_BI, regression_range=(0.0, 10.0))
    assert head_mismatches(heads, [SENTIMENT, wider, PARAPHRASE_BI]) == [
        "task 'similarity': head is a bi-encoder (cosine head, labels 0 to 5), the task asks for a bi-encoder (cosine head, labels 0 to 10)"
    ]
    with pytest.raises(ValueError, match="bi-encoder"):
        make_model(tokenizer, tasks=PAIR_TASKS).check_tasks(cross)


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(text_fields=("sentence",), label_names=None, regression_range=(0, 5)), "has 1 text field"),
        (dict(label_names=("a", "b"), pair_head="cosine"), "a cosine pair head scores similarity"),
        (dict(label_names=None, regression_range=(0, 5), pair_head="sbert"), "an sbert pair head is a classifier"),
        (dict(label_names=None), "declare regression_range=\\(low, high\\)"),
        (dict(label_names=("a", "b"), prompt_templates=("{sentence1} {mask} {sentence2}",)), "prompt templates put both texts"),
        (dict(label_names=("a", "b"), pair_head="dot"), "pair_head must be one of"),
        (dict(label_names=("a", "b"), pair_encoding="siamese"), "pair_encoding must be one of"),
        (dict(label_names=("a", "b"), pair_encoding="cross_encoder", pair_head="sbert"), "applies to pair_encoding='bi_encoder' only"),
    ],
)
def test_pair_heads_that_do_not_fit_the_task_are_one_clear_error(fields, message):
    values = {"name": "pair", "text_fields": ("sentence1", "sentence2"), "pair_encoding": "bi_encoder", "metrics": ("accuracy",), **fields}
    if values.get("label_names") is None:
        values["metrics"] = ("pearson",)
    with pytest.raises(ValueError, match=message) as info:
        TaskSpec(**values)
    assert "\n" not in str(info.value) and str(info.value).startswith("Task 'pair': ")


def test_a_saved_bi_encoder_head_refuses_mask_pooling(tokenizer):
    with pytest.raises(ValueError, match="mask pooling reads a prompt's mask token"):
        MultiTaskConfig(encoder_config=make_model(tokenizer).config.encoder_config, tasks=[SIMILARITY_BI.head_config()], pooling="mask")


def test_cross_encoder_tasks_refuse_pair_inputs_and_bi_encoder_tasks_need_them(tokenizer):
    model = make_model(tokenizer, tasks=PAIR_TASKS)
    batch = pair_batch(tokenizer, SIMILARITY_BI)
    with pytest.raises(ValueError, match="cross-encoder"):
        model(**batch, task_name="sentiment")
    with pytest.raises(ValueError, match="pass text a as input_ids .* and text b as pair_input_ids"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], task_name="similarity")


# ---- data ------------------------------------------------------------------------------------------------------


def test_pairs_are_tokenized_apart_truncated_padded_apart_and_length_sorted_by_both_texts(tokenizer):
    long_text = " ".join(["word"] * 40)
    raw = datasets.Dataset.from_dict(
        {"sentence1": ["short", long_text, "a b"], "sentence2": [long_text, "short", "a b c d e"], "label": [1.0, 2.0, 3.0]}
    )
    rows = tokenize_task(SIMILARITY_BI, raw, tokenizer, 1, max_seq_length=16)
    assert rows[0]["input_ids"] == tokenizer("short")["input_ids"] and rows[1]["pair_input_ids"] == tokenizer("short")["input_ids"]
    assert len(rows[0]["pair_input_ids"]) == 16 and len(rows[1]["input_ids"]) == 16  # each text truncated to max_seq_length
    assert rows[2]["pair_input_ids"] == tokenizer("a b c d e")["input_ids"]
    batch = MultiTaskDataCollator(tokenizer)([rows[i] for i in (0, 2)])
    assert batch["input_ids"].shape == (2, 4) and batch["pair_input_ids"].shape == (2, 16)  # padded to each text's longest
    assert batch["pair_attention_mask"].sum(dim=1).tolist() == [16, 7]
    assert batch["labels"].tolist() == [1.0, 3.0] and batch["task_ids"].tolist() == [1, 1]
    # Length-aware batching and length-sorted evaluation count both texts.
    assert MultiTaskDataset({"similarity": rows}).lengths() == {"similarity": [19, 19, 11]}
    assert length_order(rows).tolist() == [0, 1, 2]


def test_length_aware_training_batches_a_bi_encoder_task(tmp_path, tokenizer):
    train = {
        "sentiment": tokenize_task(SENTIMENT, sentiment_rows(24, 1), tokenizer, 0, 32),
        "similarity": tokenize_task(SIMILARITY_BI, similarity_rows(24, 2), tokenizer, 1, 32),
        "paraphrase": tokenize_task(PARAPHRASE_BI, paraphrase_rows(24, 3), tokenizer, 2, 32),
    }
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, report_to=[], max_steps=6, per_device_train_batch_size=4,
        learning_rate=1e-3, length_aware_batching=True, save_strategy="no", eval_strategy="no", sampling_strategy="round_robin",
    )  # fmt: skip
    model = make_model(tokenizer, tasks=PAIR_TASKS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(model=model, args=args, task_specs=PAIR_TASKS, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert "heads.paraphrase.weight" in changed and any(n.startswith("encoder.") for n in changed)


# ---- async-KD ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft_labels", ["precompute", "on_demand"])
def test_async_kd_converges_and_distills_a_bi_encoder_task(soft_labels, tmp_path, tokenizer, monkeypatch):
    """The cosine task converges (plain rule, huge min_delta: its first evaluation stays best) and trains against its
    teacher's cosine scores, looked up through the pair inputs, on the rescaled scale."""
    kd_calls = []
    original = objective_module.distillation_loss

    def spy(student_logits, soft_targets, *args, **kwargs):
        kd_calls.append(kwargs["label_range"])
        return original(student_logits, soft_targets, *args, **kwargs)

    monkeypatch.setattr(objective_module, "distillation_loss", spy)
    tasks = [SENTIMENT, SIMILARITY_BI]
    train = {
        "sentiment": tokenize_task(SENTIMENT, sentiment_rows(32, 1), tokenizer, 0, 32),
        "similarity": tokenize_task(SIMILARITY_BI, similarity_rows(32, 2), tokenizer, 1, 32),
    }
    evaluation = {"similarity": tokenize_task(SIMILARITY_BI, similarity_rows(16, 3), tokenizer, 1, 32)}
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, disable_tqdm=True, report_to=[], max_steps=8, per_device_train_batch_size=8,
        learning_rate=5e-3, sampling_strategy="round_robin", eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        logging_steps=1, seed=7, mtl_method="async_kd", kd_patience=1, kd_min_delta=10.0, kd_require_improvement=False,
        kd_require_decline=False, kd_smoothing=1, kd_trivial_gate=False, kd_soft_labels=soft_labels,
    )  # fmt: skip
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer, tasks=tasks), args=args, task_specs=tasks, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    report = json.loads((tmp_path / "out" / "convergence_report.json").read_text())
    assert report["similarity"]["converged_step"] == 4 and report["similarity"]["best_step"] == 2
    # Round robin: similarity trains on even steps; converged at 4, it distils at steps 6 and 8, on the [0, 1] scale.
    assert kd_calls == [(0.0, 5.0), (0.0, 5.0)]
    table = trainer.async_convergence.soft_labels["similarity"].table
    teacher = type(trainer.model).from_pretrained(tmp_path / "out" / "checkpoint-2").eval()
    rows = train["similarity"]
    labelled = ~torch.isnan(table[:, 0])
    assert int(labelled.sum()) == (32 if soft_labels == "precompute" else 16)  # on demand: the two batches it drew
    for i in torch.nonzero(labelled)[:, 0].tolist()[:6]:
        single = MultiTaskDataCollator(tokenizer)([{k: rows[i][k] for k in rows.column_names if k != "idx"}])
        single.pop("labels")
        with torch.no_grad():
            assert torch.allclose(teacher(**single).logits[0], table[i], atol=1e-5)


# ---- exports ---------------------------------------------------------------------------------------------------


def test_cosine_task_exports_a_sentence_transformers_model_reproducing_its_cosine(tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer

    model = make_model(tokenizer, tasks=PAIR_TASKS).eval()
    model.config.max_seq_length = 32
    exported = model.export_task("similarity", tmp_path / "st", tokenizer=tokenizer)
    assert type(exported).__name__ == "BertModel"
    files = set(os.listdir(tmp_path / "st"))
    assert {"modules.json", "sentence_bert_config.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling"} <= files
    assert json.loads((tmp_path / "st" / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert json.loads((tmp_path / "st" / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
    with torch.no_grad():
        cosines = model(**pair_batch(tokenizer, SIMILARITY_BI), task_name="similarity").logits[:, 0] / 5.0
    st_model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    similarity = st_model.similarity_pairwise(
        st_model.encode(FIRST, convert_to_tensor=True), st_model.encode(SECOND, convert_to_tensor=True)
    )
    assert torch.allclose(similarity, cosines, atol=1e-5)
    # The documented plain-transformers recipe: encode each text alone, mean-pool over the mask, cosine.
    encoder = AutoModel.from_pretrained(tmp_path / "st").eval()
    with torch.no_grad():
        a, b = (tokenizer(texts, padding=True, return_tensors="pt") for texts in (FIRST, SECOND))
        u, v = (pool("mean", encoder(**inputs), inputs["attention_mask"]) for inputs in (a, b))
    assert torch.allclose(torch.cosine_similarity(u, v, dim=-1), cosines, atol=1e-5)


FRESH_INTERPRETER = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):  # the export must not need hf_async_mtl
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "hf_async_mtl":
            raise ImportError("hf_async_mtl must not be imported")

sys.meta_path.insert(0, Refuse())
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

directory, first, second = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
classifier = pipeline("text-classification", model=directory, trust_remote_code=True, device="cpu", top_k=None)
scores = [{p["label"]: p["score"] for p in classifier({"text": a, "text_pair": b})} for a, b in zip(first, second)]
model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
a, b = tokenizer(first, padding=True, return_tensors="pt"), tokenizer(second, padding=True, return_tensors="pt")
logits = model(**a, pair_input_ids=b["input_ids"], pair_attention_mask=b["attention_mask"]).logits
print(json.dumps({"class": type(classifier).__name__, "scores": scores, "logits": logits.tolist(),
                  "imported": sorted(m for m in sys.modules if m.startswith("hf_async_mtl"))}))
"""


def test_sbert_task_export_runs_in_a_fresh_interpreter_with_plain_transformers(tmp_path, tokenizer):
    model = make_model(tokenizer, tasks=PAIR_TASKS).eval()
    exported = model.export_task("paraphrase", tmp_path / "export", tokenizer=tokenizer)
    assert type(exported).__name__ == "MultiTaskModel"
    assert {"modeling_hf_async_mtl.py", "bi_encoder.py", "pooling.py"} <= set(os.listdir(tmp_path / "export"))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_INTERPRETER, str(tmp_path / "export"), json.dumps(FIRST), json.dumps(SECOND)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["class"] == "PairTextClassificationPipeline" and result["imported"] == []
    with torch.no_grad():
        expected = model(**pair_batch(tokenizer, PARAPHRASE_BI), task_name="paraphrase").logits
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)
    for row, probabilities in zip(result["scores"], torch.softmax(expected, -1)):
        assert row == pytest.approx({name: float(p) for name, p in zip(PARAPHRASE_BI.label_names, probabilities)}, abs=1e-5)


def test_cosine_on_pooler_output_exports_through_the_remote_code(tmp_path, tokenizer):
    model = make_model(tokenizer, pooling="pooler", tasks=PAIR_TASKS).eval()
    assert type(model.export_task("similarity", tmp_path / "export")).__name__ == "MultiTaskModel"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    batch = pair_batch(tokenizer, SIMILARITY_BI)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch, task_name="similarity").logits, atol=1e-6)


def test_model_cards_name_the_bi_encoder_tasks(tokenizer):
    config = make_model(tokenizer, tasks=PAIR_TASKS).config
    card = str(build_model_card(config, task_specs=PAIR_TASKS))
    assert (
        "- **Bi-encoder pair heads** (each text encoded alone, text b as `pair_input_ids`): `similarity` (cosine), `paraphrase` (sbert)"
        in card
    )
    assert "| similarity | regression (range 0 to 5); bi-encoder, cosine head (each text encoded alone; score = 0 + 5 × cosine) |" in card
    task_card = str(build_task_card(config, "similarity", exported_class="BertModel"))
    assert "SentenceTransformer(" in task_card and "sentence-transformers model (BertModel)" in task_card
    # The Hub metadata of a sentence-transformers directory (its widget and "Use this model" follow them).
    assert "library_name: sentence-transformers" in task_card and "pipeline_tag: sentence-similarity" in task_card
    pair_card = str(build_task_card(config, "paraphrase", exported_class="MultiTaskModel"))
    assert '"text_pair"' in pair_card and "library_name: transformers" in pair_card and "pipeline_tag: text-classification" in pair_card


# ---- the command line ------------------------------------------------------------------------------------------


def cli_args(glue, checkpoint, out, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", checkpoint, "--tasks", "cola,mrpc,stsb", "--glue_dir", str(glue), "--output_dir", str(out),
        "--max_steps", "4", "--per_device_train_batch_size", "4", "--eval_steps", "2", "--max_seq_length", "32", "--use_cpu",
        "--disable_tqdm", "true", "--save_strategy", "steps", "--save_steps", "2", "--selection_split_fraction", "0.25",
        "--do_train", "--do_eval", "--length_aware_batching", *extra,
    ]  # fmt: skip


def test_cli_trains_bi_encoder_tasks_end_to_end_and_resume_refuses_another_pair_encoding(tmp_path, tiny_checkpoint, capsys):
    glue = tiny_glue5(tmp_path / "glue")
    out = tmp_path / "out"
    results = run_glue_mtl.main(cli_args(glue, tiny_checkpoint, out, "--bi_encoder_tasks", "stsb,mrpc", "--async_kd", "--kd_patience", "1"))
    assert {"eval_stsb_pearson", "eval_mrpc_f1", "eval_cola_matthews_correlation", "eval_glue_score"} <= set(results)
    heads = {head["name"]: head for head in json.loads((out / "config.json").read_text())["tasks"]}
    assert (heads["stsb"]["pair_head"], heads["mrpc"]["pair_head"], heads["stsb"]["label_range"]) == ("cosine", "sbert", [0.0, 5.0])
    assert "pair_encoding" not in heads["cola"]
    saved = MultiTaskModel.from_pretrained(out)
    assert list(saved.heads["stsb"].parameters()) == []
    line = run_cli_error(capsys, cli_args(glue, tiny_checkpoint, out, "--resume_from_checkpoint", str(out / "checkpoint-2")))
    assert (
        "cannot resume" in line
        and "task 'stsb': head is a bi-encoder (cosine head, labels 0 to 5), the task asks for a cross-encoder" in line
    )
    # A saved bi-encoder model continues only as one.
    line = run_cli_error(capsys, cli_args(glue, str(out), tmp_path / "again", "--bi_encoder_tasks", "stsb"))
    assert "task 'mrpc': head is a bi-encoder (sbert head), the task asks for a cross-encoder" in line


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--bi_encoder_tasks", "cola"], "--bi_encoder_tasks: Task 'cola': a bi-encoder encodes the two texts of a pair apart"),
        (["--bi_encoder_tasks", "stbs"], "--bi_encoder_tasks: task 'stbs' is not trained (did you mean 'stsb'?)"),
        (["--bi_encoder_tasks", "stsb,stsb"], "names a task twice"),
        (["--bi_encoder_tasks", "stsb", "--prompt_pool_size", "2"], "prompt templates put both texts in one sequence"),
        (["--bi_encoder_tasks", "mrpc", "--pooling", "mask"], "--pooling mask reads a prompt's mask token"),
        (["--mlm_tasks", "mrpc", "--bi_encoder_tasks", "mlm_mrpc"], "an MLM task has no pair head"),
    ],
)
def test_cli_refuses_bi_encoder_misuse_in_one_line(extra, message, tmp_path, tiny_checkpoint, capsys):
    glue = tiny_glue5(tmp_path / "glue", rows=4)
    line = run_cli_error(capsys, cli_args(glue, tiny_checkpoint, tmp_path / "out", *extra))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_custom_tasks_file_declares_a_bi_encoder_task(tmp_path):
    from cli.tasks_file import read_custom_tasks

    rows = "\n".join(json.dumps({"a": f"text {i}", "b": f"other {i}", "label": i % 5 * 1.0}) for i in range(10))
    (tmp_path / "train.jsonl").write_text(rows)
    entry = {"name": "sim", "text_fields": ["a", "b"], "label_names": None, "metrics": ["pearson"], "train_file": "train.jsonl",
             "validation_file": "train.jsonl", "pair_encoding": "bi_encoder"}  # fmt: skip
    (tmp_path / "tasks.json").write_text(json.dumps([{**entry, "regression_range": [0, 4]}]))
    [(spec, _)] = read_custom_tasks(str(tmp_path / "tasks.json"))
    assert (spec.pair_head, spec.loss_label_range) == ("cosine", (0.0, 4.0))
    (tmp_path / "tasks.json").write_text(json.dumps([entry]))
    with pytest.raises(Exception, match="field 'regression_range'.*declare regression_range") as info:
        read_custom_tasks(str(tmp_path / "tasks.json"))
    assert "\n" not in str(info.value)


def test_predictions_of_a_cosine_task_are_in_label_units(tmp_path, tokenizer):
    """GLUE submission files read `predict_tasks`: a cosine task's predictions are low + span * cosine."""
    model = make_model(tokenizer, tasks=[SIMILARITY_BI]).eval()
    raw = similarity_rows(6, 9).remove_columns("label").add_column("label", [-1.0] * 6)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, report_to=[], eval_strategy="no")
    trainer = MultiTaskTrainer(model=model, args=args, task_specs=[SIMILARITY_BI], processing_class=tokenizer)
    predictions = trainer.predict_tasks({"similarity": tokenize_task(SIMILARITY_BI, raw, tokenizer, 0, 32)})["similarity"]
    expected = 5.0 * alone_cosines(model, tokenizer, raw["sentence1"], raw["sentence2"]).numpy()
    assert np.allclose(predictions, expected, atol=1e-5)
