"""DynaMaR: prompt templates with a mask-token head, template pools, their draws, evaluation and export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AddedToken, PreTrainedTokenizerFast, pipeline

import run_glue_mtl
from glue_tasks import get_glue_task
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, TaskSpec, tokenize_task
from hf_async_mtl.async_kd.losses import ensemble_teacher_outputs
from hf_async_mtl.async_kd.soft_labels import SoftLabels
from hf_async_mtl.data import MultiTaskDataset, num_template_views, template_view
from hf_async_mtl.modeling import MultiTaskConfig
from hf_async_mtl.prompting import check_template, combine_template_outputs, encode_prompts, mask_positions
from hf_async_mtl.sampling import MultiTaskBatchSampler
from hf_async_mtl.template_pool import build_template_pool, hamming_distance, levenshtein_distance, template_dissimilarity
from tests.conftest import sentiment_rows, similarity_rows, tiny_encoder_config
from tests.test_trainer import make_args

SENTIMENT_POOL = ("{sentence} It was {mask}.", "A {mask} one: {sentence}", "{mask}! {sentence} Really.")
PROMPT_SENTIMENT = TaskSpec("sentiment", ("sentence",), label_names=("negative", "positive"), prompt_templates=SENTIMENT_POOL)
PROMPT_SIMILARITY = TaskSpec(
    "similarity",
    ("sentence1", "sentence2"),
    metrics=("pearson",),
    regression_range=(0.0, 5.0),
    prompt_templates=("{sentence1} {mask}, {sentence2}",),
)


@pytest.fixture(scope="module")
def roberta_tokenizer():
    """A RoBERTa-style byte-level BPE tokenizer (<s> … </s>, <mask>), trained here: no download."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["the movie was great and fun", "a terrible boring film it was", "pairs of words"] * 20,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token=AddedToken("<mask>", lstrip=True),
    )


def prompt_model(tokenizer, specs=(PROMPT_SENTIMENT, PROMPT_SIMILARITY), seed=0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(
        MultiTaskConfig(
            encoder_config=tiny_encoder_config(len(tokenizer)),
            tasks=[s.head_config() for s in specs],
            pooling="mean",
            mask_token_id=tokenizer.mask_token_id,
        )
    )


@pytest.fixture(scope="module")
def prompt_data(tokenizer):
    raw = {"sentiment": (sentiment_rows(48, 1), sentiment_rows(16, 2)), "similarity": (similarity_rows(40, 3), similarity_rows(16, 4))}
    specs = (PROMPT_SENTIMENT, PROMPT_SIMILARITY)
    train = {s.name: tokenize_task(s, raw[s.name][0], tokenizer, i, max_seq_length=32) for i, s in enumerate(specs)}
    evaluation = {s.name: tokenize_task(s, raw[s.name][1], tokenizer, i, max_seq_length=32) for i, s in enumerate(specs)}
    return train, evaluation, raw


# ---- templates, rendering, truncation, the mask position ---------------------------------------------


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_mask_position_is_found_for_bert_and_roberta_style_tokenizers(which, tokenizer, roberta_tokenizer):
    tok = tokenizer if which == "bert" else roberta_tokenizer
    encoded = encode_prompts(tok, "{sentence} It was {mask}.", {"sentence": ["the movie was great", "a boring film"]}, 32)
    for ids in encoded["input_ids"]:
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and ids.count(tok.mask_token_id) == 1
    padded = tok.pad({"input_ids": encoded["input_ids"]}, return_tensors="pt")["input_ids"]
    positions = mask_positions(padded, tok.mask_token_id)
    assert positions.tolist() == [ids.index(tok.mask_token_id) for ids in encoded["input_ids"]]
    assert tok.decode(encoded["input_ids"][0][positions[0] + 1 : positions[0] + 2]).strip() == "."


def test_truncation_cuts_the_longest_text_never_the_template(tokenizer):
    long, short = " ".join(["word"] * 60), "tiny pair"
    encoded = encode_prompts(
        tokenizer, "Premise: {sentence1} Hypothesis: {sentence2} Entailed? {mask}", {"sentence1": [long], "sentence2": [short]}, 24
    )
    ids = encoded["input_ids"][0]
    assert len(ids) == 24 and ids.count(tokenizer.mask_token_id) == 1
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("[CLS] premise : word") and text.endswith("hypothesis : tiny pair entailed? [MASK] [SEP]")
    # The template's 8 tokens + 2 for the short text + 2 specials leave 12 of the long text's 60 words.
    assert text.count("word") == 24 - 2 - 2 - len(
        tokenizer("premise : hypothesis : entailed? [MASK]", add_special_tokens=False)["input_ids"]
    )
    # Both texts long: cut one token at a time from the longer, so they end equal (longest first).
    both = encode_prompts(tokenizer, "{sentence1} {mask} {sentence2}", {"sentence1": [long], "sentence2": [" ".join(["pair"] * 30)]}, 21)
    decoded = tokenizer.decode(both["input_ids"][0])
    assert decoded.count("word") == decoded.count("pair") == 9


@pytest.mark.parametrize(
    "template,message",
    [
        ("{sentence} It was good.", r"must contain \{mask\} exactly once \(found 0\)"),
        ("{sentence} {mask} {mask}", r"must contain \{mask\} exactly once \(found 2\)"),
        ("{mask} only", r"must contain \{sentence\} exactly once"),
        ("{sentence} {mask} {review}", r"names unknown fields \['review'\]"),
        ("{sentence!r} {mask}", r"must be a bare field name"),
        ("{sentence} {mask} {", r"literal braces"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template, message):
    with pytest.raises(ValueError, match=message):
        check_template(template, ("sentence",))
    with pytest.raises(ValueError, match=r"Task 'sentiment': prompt_templates: "):
        TaskSpec("sentiment", ("sentence",), label_names=("a", "b"), prompt_templates=(template,))


def test_template_alone_too_long_and_mask_in_the_text_name_the_row(tokenizer):
    with pytest.raises(
        ValueError, match=r"src, row 10 \(0-based\): the prompt template .* alone is \d+ tokens, more than max_seq_length 8"
    ):
        encode_prompts(
            tokenizer, "{sentence} this template is far too long to fit {mask}", {"sentence": ["x", "y"]}, 8, row_ids=[10, 11], source="src"
        )
    with pytest.raises(ValueError, match=r"src, row 1 \(0-based\): the prompt has 2 mask tokens \('\[MASK\]'\)"):
        encode_prompts(tokenizer, "{sentence} {mask}", {"sentence": ["fine", "a [MASK] here"]}, 32, source="src")


def test_mask_pooling_reads_the_mask_state_and_needs_exactly_one_mask(tokenizer):
    model = prompt_model(tokenizer).eval()
    encoded = encode_prompts(tokenizer, SENTIMENT_POOL[1], {"sentence": ["good day", "the food was awful today"]}, 32)
    batch = tokenizer.pad({"input_ids": encoded["input_ids"]}, return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        logits = model(**batch, task_name="sentiment").logits
    at_mask = hidden[torch.arange(2), mask_positions(batch["input_ids"], tokenizer.mask_token_id)]
    assert torch.allclose(logits, model.heads["sentiment"](at_mask), atol=1e-6)
    plain = tokenizer(["no mask here"], return_tensors="pt")
    with pytest.raises(ValueError, match=r"exactly one mask token .* row 0 of the batch has 0"):
        model(**plain, task_name="sentiment")
    with pytest.raises(ValueError, match=r"mask_token_id"):
        MultiTaskConfig(encoder_config=tiny_encoder_config(len(tokenizer)), tasks=[PROMPT_SENTIMENT.head_config()])


# ---- the pool builder ----------------------------------------------------------------------------------


def test_dissimilarity_score_on_hand_computed_pairs():
    a, b = ["{s}", "It", "was", "{mask}", "."], ["{s}", "It", "is", "{mask}", "."]
    assert hamming_distance(a, b) == pytest.approx(1 / 5) and levenshtein_distance(a, b) == pytest.approx(1 / 5)
    # A shift: every position differs (Hamming 1) but one insertion explains it (Levenshtein 1/4).
    c, d = ["{s}", "{mask}", "ok"], ["so", "{s}", "{mask}", "ok"]
    assert hamming_distance(c, d) == 1.0 and levenshtein_distance(c, d) == pytest.approx(1 / 4)
    assert template_dissimilarity("{s} {mask} ok", "so {s} {mask} ok") == pytest.approx((1 + 0.25) / 2)
    assert template_dissimilarity("x {mask}", "x {mask}") == 0.0


def test_pool_builder_picks_the_most_mutually_dissimilar_subset():
    candidates = [
        "{sentence} It was {mask} .",  # 0
        "{sentence} It is {mask} .",  # 1: near-copy of 0
        "{mask} : {sentence}",  # 2
        "A {mask} review about {sentence}",  # 3
        "{sentence} It was {mask} !",  # 4: near-copy of 0
    ]
    assert build_template_pool(candidates, 3) == [candidates[0], candidates[2], candidates[3]]
    assert build_template_pool(candidates, 1) == candidates[:1]
    assert build_template_pool(candidates, 5) == candidates
    with pytest.raises(ValueError, match=r"needs 1\.\.5"):
        build_template_pool(candidates, 6)
    with pytest.raises(ValueError, match="duplicates"):
        build_template_pool(candidates + candidates[:1], 2)


# ---- template draws: per example per pass, seeded, resumable, rank-consistent --------------------------


def _draws(sampler):
    return [list(batch) for batch in sampler]


def test_template_draws_are_seeded_resumable_and_leave_the_example_streams_unchanged():
    sizes = {"a": 10, "b": 7}
    common = dict(batch_size=4, strategy="uniform", num_batches=24, seed=3)
    with_templates = MultiTaskBatchSampler(sizes, num_templates={"a": 3}, **common)
    plain = MultiTaskBatchSampler(sizes, **common)
    drawn = _draws(with_templates)
    assert [[i for i, _ in batch] for batch in drawn] == _draws(plain)
    assert drawn == _draws(MultiTaskBatchSampler(sizes, num_templates={"a": 3}, **common))  # a resume re-iterates from scratch
    templates_a = [t for batch in drawn for i, t in batch if i < 10]
    assert set(templates_a) == {0, 1, 2} and all(t == 0 for batch in drawn for i, t in batch if i >= 10)
    # Each pass over task a redraws: example 0's templates over its passes are not all equal.
    per_example = {}
    for batch in drawn:
        for i, t in batch:
            per_example.setdefault(i, []).append(t)
    assert any(len(set(ts)) > 1 for i, ts in per_example.items() if i < 10 and len(ts) > 2)
    assert MultiTaskBatchSampler(sizes, num_templates={"a": 3}, **{**common, "seed": 4}).__iter__().__next__() is not None
    assert _draws(MultiTaskBatchSampler(sizes, num_templates={"a": 3}, **{**common, "seed": 4})) != drawn
    # Two ranks split the same global batches: their (index, template) pairs are the single process's.
    ranks = [
        _draws(MultiTaskBatchSampler(sizes, num_templates={"a": 3}, rank=r, world_size=2, **{**common, "batch_size": 2})) for r in range(2)
    ]
    assert [r0 + r1 for r0, r1 in zip(*ranks)] == drawn
    state = with_templates.state_dict()
    assert state["num_templates"] == {"a": 3, "b": 1}
    with pytest.raises(ValueError, match="num_templates"):
        MultiTaskBatchSampler(sizes, num_templates={"a": 2}, **common).load_state_dict(state)


def test_tokenized_views_and_the_dataset_that_draws_from_them(tokenizer, prompt_data):
    train, _, raw = prompt_data
    sentiment = train["sentiment"]
    assert len(sentiment) == 3 * 48 and num_template_views(sentiment) == 3
    dataset = MultiTaskDataset(train)
    assert dataset.task_sizes == {"sentiment": 48, "similarity": 40}
    assert dataset.num_templates == {"sentiment": 3, "similarity": 1}
    for template in range(3):
        item = dataset[(5, template)]
        expected = encode_prompts(tokenizer, SENTIMENT_POOL[template], {"sentence": [raw["sentiment"][0][5]["sentence"]]}, 32)
        assert item["input_ids"] == expected["input_ids"][0] and item["example_ids"] == 5
    assert dataset[5]["input_ids"] == dataset[(5, 0)]["input_ids"]
    with pytest.raises(IndexError, match="template 3 out of range"):
        dataset[(5, 3)]
    with pytest.raises(ValueError, match="whole template views"):
        num_template_views(sentiment.select(range(40, 60)))


# ---- training, evaluation, async-KD labels -------------------------------------------------------------


def _trainer(tmp_path, tokenizer, prompt_data, specs, **overrides):
    train, evaluation, _ = prompt_data
    return MultiTaskTrainer(
        model=prompt_model(tokenizer, specs),
        args=make_args(tmp_path, **overrides),
        task_specs=list(specs),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("mode", ["first", "average"])
def test_training_with_a_pool_then_evaluating_first_or_average(mode, tmp_path, tokenizer, prompt_data):
    specs = (dataclasses.replace(PROMPT_SENTIMENT, prompt_eval=mode), PROMPT_SIMILARITY)
    trainer = _trainer(tmp_path, tokenizer, prompt_data, specs, max_steps=4)
    batches = list(trainer.get_train_dataloader())
    assert all(batch["input_ids"].eq(tokenizer.mask_token_id).sum(dim=1).eq(1).all() for batch in batches)
    trainer.train()
    metrics = trainer.evaluate()
    _, evaluation, _ = prompt_data
    model = trainer.model.eval()
    views = []
    for template in range(3):
        view = template_view(evaluation["sentiment"], template)
        batch = tokenizer.pad({"input_ids": view["input_ids"]}, return_tensors="pt")
        with torch.no_grad():
            views.append(model(**batch, task_name="sentiment").logits)
    expected = views[0] if mode == "first" else combine_template_outputs(torch.cat(views), 3, is_regression=False)
    labels = np.asarray(template_view(evaluation["sentiment"], 0)["labels"])
    accuracy = float((expected.argmax(-1).numpy() == labels).mean())
    assert metrics["eval_sentiment_accuracy"] == pytest.approx(accuracy)
    predictions = trainer.predict_tasks({"sentiment": evaluation["sentiment"]})["sentiment"]
    assert predictions.tolist() == expected.argmax(-1).tolist()


def test_soft_labels_of_an_averaging_pool_are_the_ensemble_of_its_views(tokenizer, prompt_data):
    train, _, _ = prompt_data
    model = prompt_model(tokenizer).eval()
    teacher = [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    dataset = MultiTaskDataset(train)

    def batches(template):
        view = dataset.template_view("sentiment", template)
        for start in range(0, len(view), 16):
            rows = view.select(range(start, min(start + 16, len(view))))
            yield (
                torch.arange(start, start + len(rows)),
                dict(
                    tokenizer.pad({"input_ids": rows["input_ids"]}, return_tensors="pt"), task_ids=torch.zeros(len(rows), dtype=torch.long)
                ),
            )

    soft = SoftLabels("sentiment", teacher, is_regression=False, num_examples=48, fingerprint="x")
    soft.fill(model, *(batches(t) for t in range(3)))
    tables = []
    for t in range(3):
        single = SoftLabels("sentiment", teacher, is_regression=False, num_examples=48, fingerprint="x")
        single.fill(model, batches(t))
        tables.append(single.table)
    assert torch.allclose(soft.table, ensemble_teacher_outputs(tables, is_regression=False), atol=1e-6)


def test_async_kd_converges_a_pool_task_on_one_view(tmp_path, tokenizer, prompt_data, monkeypatch):
    specs = (dataclasses.replace(PROMPT_SENTIMENT, prompt_eval="average"), PROMPT_SIMILARITY)
    trainer = _trainer(
        tmp_path,
        tokenizer,
        prompt_data,
        specs,
        max_steps=8,
        mtl_method="async_kd",
        kd_patience=1,
        kd_min_delta=10.0,
        kd_require_improvement=False,
        kd_require_decline=False,
        eval_strategy="steps",
        eval_steps=2,
    )
    trainer.train()
    assert set(trainer.async_convergence.soft_labels) >= {"sentiment"}
    soft = trainer.async_convergence.soft_labels["sentiment"]
    assert soft.num_examples == 48 and soft.complete
    references = trainer.async_convergence.references if hasattr(trainer.async_convergence, "references") else {}
    assert not references or references["sentiment"]["selection_size"] == 16


# ---- save, load, export, pipeline ----------------------------------------------------------------------


def test_save_load_keeps_templates_and_other_templates_are_refused(tmp_path, tokenizer):
    model = prompt_model(tokenizer)
    model.save_pretrained(tmp_path / "saved")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.task("sentiment")["prompt_templates"] == list(SENTIMENT_POOL)
    assert loaded.config.mask_token_id == tokenizer.mask_token_id and loaded.config.task_pooling("sentiment") == "mask"
    loaded.check_tasks([PROMPT_SENTIMENT, PROMPT_SIMILARITY])
    other = dataclasses.replace(PROMPT_SENTIMENT, prompt_templates=("{sentence} {mask}",))
    with pytest.raises(ValueError, match=r"head trained with prompt templates .* the task has \['\{sentence\} \{mask\}'\]"):
        loaded.check_tasks([other, PROMPT_SIMILARITY])


@pytest.mark.parametrize("mode", ["first", "average"])
def test_export_and_pipeline_reproduce_the_trainers_predictions(mode, tmp_path, tokenizer, prompt_data):
    specs = (dataclasses.replace(PROMPT_SENTIMENT, prompt_eval=mode), PROMPT_SIMILARITY)
    trainer = _trainer(tmp_path, tokenizer, prompt_data, specs, max_steps=3)
    trainer.train()
    _, evaluation, raw = prompt_data
    expected = trainer.predict_tasks({"sentiment": evaluation["sentiment"], "similarity": evaluation["similarity"]})
    model = trainer.model.eval()
    model.export_task("sentiment", tmp_path / "sentiment", tokenizer=tokenizer)
    model.export_task("similarity", tmp_path / "similarity", tokenizer=tokenizer)
    config = json.loads((tmp_path / "sentiment" / "config.json").read_text())
    assert config["custom_pipelines"]["text-classification"]["impl"] == "modeling_hf_async_mtl.PromptTextClassificationPipeline"
    assert config["tasks"][0]["prompt_templates"] == list(SENTIMENT_POOL) and config["tasks"][0]["prompt_eval"] == mode
    classify = pipeline("text-classification", model=str(tmp_path / "sentiment"), trust_remote_code=True, device="cpu")
    sentences = raw["sentiment"][1]["sentence"]
    labels = [classify(s)[0]["label"] for s in sentences]
    assert labels == [PROMPT_SENTIMENT.label_names[i] for i in expected["sentiment"]]
    score = pipeline("text-classification", model=str(tmp_path / "similarity"), trust_remote_code=True, device="cpu")
    pairs = raw["similarity"][1]
    scores = [score({"text": a, "text_pair": b})["score"] for a, b in zip(pairs["sentence1"], pairs["sentence2"])]
    assert np.allclose(scores, expected["similarity"], atol=1e-4)
    if mode == "average":
        with pytest.raises(ValueError, match="batch_size=1"):
            classify(sentences[:2], batch_size=2)


# ---- CLI -----------------------------------------------------------------------------------------------


def test_cli_pool_size_picks_pools_from_the_glue_candidates_and_a_file(tmp_path):
    from glue_tasks.prompts import glue_template_candidates

    templates = tmp_path / "templates.json"
    templates.write_text(
        json.dumps({"rte": ["{sentence1} ? {mask} , {sentence2}", "{mask} : {sentence1} / {sentence2}", "{sentence2} {sentence1} {mask}"]})
    )
    data_args = run_glue_mtl.DataArguments(
        tasks="cola,rte", glue_dir=None, prompt_templates_file=str(templates), prompt_pool_size=2, prompt_eval="average"
    )
    specs = {spec.name: spec for spec, _ in run_glue_mtl.plan_tasks(data_args)}
    assert specs["cola"].prompt_templates == tuple(build_template_pool(glue_template_candidates("cola"), 2))
    assert specs["rte"].prompt_templates == tuple(build_template_pool(json.loads(templates.read_text())["rte"], 2))
    assert specs["cola"].prompt_eval == specs["rte"].prompt_eval == "average"
    single = run_glue_mtl.DataArguments(tasks="sst2", glue_dir=None, prompt_pool_size=1)
    assert run_glue_mtl.plan_tasks(single)[0][0].prompt_templates == glue_template_candidates("sst2")[:1]
    untouched = run_glue_mtl.plan_tasks(run_glue_mtl.DataArguments(tasks="sst2", glue_dir=None))[0][0]
    assert untouched == get_glue_task("sst2") and not untouched.prompt_templates


def test_cli_trains_a_pool_and_saves_templates_in_the_model(tmp_path, tiny_checkpoint):
    from tests.test_cli import base_args, write_glue

    out, glue = tmp_path / "out", write_glue(tmp_path / "glue")
    results = run_glue_mtl.main(base_args(glue, tiny_checkpoint, out) + ["--prompt_pool_size", "2", "--prompt_eval", "first"])
    assert "eval_rte_accuracy" in results
    heads = {head["name"]: head for head in json.loads((out / "config.json").read_text())["tasks"]}
    for task in ("cola", "rte"):
        assert len(heads[task]["prompt_templates"]) == 2 and heads[task]["pooling"] == "mask" and heads[task]["prompt_eval"] == "first"
    # Evaluating the saved model without --prompt_eval reads each head's own mode ("first"), not the default
    # ("average"): the same dev metrics as the training run's final evaluation.
    again = base_args(glue, str(out), tmp_path / "again") + ["--prompt_pool_size", "2"]
    again.remove("--do_train")
    evaluated = run_glue_mtl.main(again)
    scores = [k for k in results if k.startswith(("eval_cola_", "eval_rte_"))]
    assert scores and {k: evaluated[k] for k in scores} == pytest.approx({k: results[k] for k in scores})


def test_lora_adapters_keep_the_mask_head_and_export_merged(tmp_path, tokenizer):
    from hf_async_mtl.adapters import lora_config

    model = prompt_model(tokenizer).apply_peft(lora_config(4, target_modules="query,value")).eval()
    encoded = encode_prompts(tokenizer, SENTIMENT_POOL[0], {"sentence": ["a good day"]}, 32)
    batch = tokenizer.pad({"input_ids": encoded["input_ids"]}, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch, task_name="sentiment").logits
    exported = model.export_task("sentiment", tmp_path / "export", tokenizer=tokenizer)
    assert not exported.has_adapters and exported.config.task("sentiment")["prompt_templates"] == list(SENTIMENT_POOL)
    with torch.no_grad():
        assert torch.allclose(exported.eval()(**batch).logits, logits, atol=1e-5)
