"""TARTAN: the MLM auxiliary task, MT-TARTAN and META-TARTAN weights, end-task selection, the CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import BertForMaskedLM

import run_glue_mtl
from hf_async_mtl import MultiTaskDataCollator, MultiTaskModel, MultiTaskTrainer, TaskSpec, tokenize_task
from hf_async_mtl.mlm import MaskedLMHead, load_mlm_head
from hf_async_mtl.modeling import MultiTaskConfig
from hf_async_mtl.weighting import build_weighting
from hf_async_mtl.weights_plot import main as weights_plot_main
from tests.conftest import SENTIMENT, SIMILARITY, sentiment_rows, tiny_encoder_config
from tests.test_trainer import _losses_by_step, make_args

MLM = TaskSpec("mlm_sentiment", ("sentence",), objective="mlm")
SPECS = [SENTIMENT, SIMILARITY, MLM]


def mlm_model(tokenizer, seed=0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(
        MultiTaskConfig(encoder_config=tiny_encoder_config(len(tokenizer)), tasks=[s.head_config() for s in SPECS], pooling="mean")
    )


@pytest.fixture(scope="module")
def mlm_data(tokenizer, tiny_data):
    train, evaluation = tiny_data
    train = {**train, "mlm_sentiment": tokenize_task(MLM, sentiment_rows(96, 1).select_columns(["sentence", "idx"]), tokenizer, 2, 32)}
    evaluation = {**evaluation, "mlm_sentiment": tokenize_task(MLM, sentiment_rows(32, 2), tokenizer, 2, 32)}
    return train, evaluation


# ---- the MLM task ----------------------------------------------------------------------------------------


def test_mlm_loss_equals_a_hand_computation_on_a_fixed_mask(tokenizer):
    model = mlm_model(tokenizer).eval()
    batch = tokenizer(["the movie was good", "a sad day"], padding=True, return_tensors="pt")
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2], labels[1, 1] = batch["input_ids"][0, 2], batch["input_ids"][1, 1]
    inputs = batch["input_ids"].clone()
    inputs[0, 2] = inputs[1, 1] = tokenizer.mask_token_id
    with torch.no_grad():
        out = model(
            input_ids=inputs,
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=labels,
            task_name="mlm_sentiment",
        )
        hidden = model.encoder(
            input_ids=inputs, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
        ).last_hidden_state
        head = model.heads["mlm_sentiment"]
        rows = torch.stack([hidden[0, 2], hidden[1, 1]])
        transformed = torch.nn.functional.layer_norm(
            torch.nn.functional.gelu(rows @ head.dense.weight.T + head.dense.bias),
            (32,),
            head.layer_norm.weight,
            head.layer_norm.bias,
            eps=1e-12,
        )
        logits = transformed @ model.encoder.embeddings.word_embeddings.weight.T + head.bias
        targets = torch.stack([labels[0, 2], labels[1, 1]])
        expected = -(torch.log_softmax(logits, dim=-1)[torch.arange(2), targets]).mean()
    assert out.logits.shape == (2, len(tokenizer))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mlm_head_is_tied_saved_reloaded_and_never_exported(tmp_path, tokenizer):
    model = mlm_model(tokenizer)
    names = [n for n, _ in model.named_parameters() if n.startswith("heads.mlm_sentiment.")]
    assert sorted(names) == [
        "heads.mlm_sentiment.bias",
        "heads.mlm_sentiment.dense.bias",
        "heads.mlm_sentiment.dense.weight",
        "heads.mlm_sentiment.layer_norm.bias",
        "heads.mlm_sentiment.layer_norm.weight",
    ]
    batch = tokenizer(["a good day"], return_tensors="pt")
    with torch.no_grad():
        before = model(**batch, task_name="mlm_sentiment").logits
        model.encoder.embeddings.word_embeddings.weight[tokenizer.cls_token_id] += 1.0  # the decoder is the embedding matrix
        after = model(**batch, task_name="mlm_sentiment").logits
    assert not torch.allclose(before[..., tokenizer.cls_token_id], after[..., tokenizer.cls_token_id])
    model.save_pretrained(tmp_path / "saved")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "saved")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    loaded.check_tasks(SPECS)
    with pytest.raises(ValueError, match="MLM auxiliary objective: it has no classifier to export"):
        model.export_task("mlm_sentiment", tmp_path / "export")


def test_the_checkpoints_mlm_head_is_loaded_when_it_has_one(tmp_path, tokenizer):
    torch.manual_seed(1)
    masked = BertForMaskedLM(tiny_encoder_config(len(tokenizer)))
    masked.save_pretrained(tmp_path / "with_head")
    model = MultiTaskModel.from_encoder(str(tmp_path / "with_head"), [SENTIMENT, MLM])
    head, source = model.heads["mlm_sentiment"], masked.cls.predictions
    assert torch.equal(head.dense.weight, source.transform.dense.weight)
    assert torch.equal(head.layer_norm.weight, source.transform.LayerNorm.weight) and torch.equal(head.bias, source.bias)
    masked.bert.save_pretrained(tmp_path / "encoder_only")
    fresh = MaskedLMHead(tiny_encoder_config(len(tokenizer)))
    assert not load_mlm_head(fresh, tmp_path / "encoder_only")
    initialised = MultiTaskModel.from_encoder(str(tmp_path / "encoder_only"), [SENTIMENT, MLM]).heads["mlm_sentiment"]
    assert torch.equal(initialised.bias, torch.zeros_like(initialised.bias)) and torch.equal(initialised.layer_norm.weight, torch.ones(32))


def test_masker_masks_non_special_tokens_as_a_function_of_its_seed(tokenizer, mlm_data):
    from hf_async_mtl.mlm import MlmMasker

    train, _ = mlm_data
    batch = MultiTaskDataCollator(tokenizer)([train["mlm_sentiment"][i] for i in range(8)])
    assert "labels" not in batch  # MLM batches are masked at loss time, not by the collator
    masker = MlmMasker(tokenizer, probability=0.5)
    inputs, labels = masker(batch["input_ids"], seed=11)
    again, same = masker(batch["input_ids"], seed=11)
    other, _ = masker(batch["input_ids"], seed=12)
    assert torch.equal(inputs, again) and torch.equal(labels, same) and not torch.equal(inputs, other)
    targets = labels != -100
    assert targets.any() and torch.equal(labels[targets], batch["input_ids"][targets])
    assert (inputs[targets] == tokenizer.mask_token_id).float().mean() > 0.5
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert not (targets & special).any() and torch.equal(inputs[~targets], batch["input_ids"][~targets])


def test_mlm_task_trains_alongside_and_stays_out_of_the_score(tmp_path, tokenizer, mlm_data):
    train, evaluation = mlm_data
    trainer = MultiTaskTrainer(
        model=mlm_model(tokenizer),
        args=make_args(tmp_path, max_steps=6, sampling_strategy="round_robin"),
        task_specs=SPECS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [log for log in trainer.state.log_history if "train_loss_mlm_sentiment" in log]
    assert logged and all(log["train_loss_mlm_sentiment"] > 0 for log in logged)
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first["eval_mlm_sentiment_loss"] == second["eval_mlm_sentiment_loss"]  # the same masks every evaluation
    assert first["eval_mlm_sentiment_perplexity"] == pytest.approx(
        torch.exp(torch.tensor(first["eval_mlm_sentiment_loss"])).item(), rel=1e-5
    )
    assert first["eval_glue_score"] == pytest.approx((first["eval_sentiment_score"] + first["eval_similarity_score"]) / 2)
    # The loss is the mean cross-entropy over every masked token of the set (not a mean of batch means).
    model, losses = trainer.model.eval(), []
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader(evaluation["mlm_sentiment"]):
            batch = {k: v for k, v in batch.items() if k != "labels"}
            objective = trainer.objectives["mlm_sentiment"]
            inputs, labels = objective.masker(batch["input_ids"], objective.seed(False, batch, None, trainer.step_context(model)))
            logits = model(**{**batch, "input_ids": inputs}, labels=labels).logits
            losses.append(torch.nn.functional.cross_entropy(logits, labels[labels != -100], reduction="none"))
    assert first["eval_mlm_sentiment_loss"] == pytest.approx(torch.cat(losses).mean().item(), rel=1e-5)


# ---- MT-TARTAN and META-TARTAN --------------------------------------------------------------------------


def test_mt_tartan_gives_end_tasks_and_auxiliaries_half_of_the_weight_each():
    method = build_weighting("mt_tartan", ["end", "aux1", "aux2"], end_tasks=["end"])
    assert method.last_weights == {"end": pytest.approx(1.5), "aux1": pytest.approx(0.75), "aux2": pytest.approx(0.75)}
    with pytest.raises(ValueError, match="needs the end task"):
        build_weighting("mt_tartan", ["end", "aux"])
    with pytest.raises(ValueError, match=r"end task\(s\) \['nope'\] are not trained"):
        build_weighting("mt_tartan", ["end", "aux"], end_tasks=["nope"])
    with pytest.raises(ValueError, match="every task is an end task"):
        build_weighting("mt_tartan", ["end"], end_tasks=["end"])


@pytest.mark.parametrize("alignment", ["dot", "cosine"])
def test_meta_tartan_moves_the_logits_by_the_meta_gradient(alignment):
    method = build_weighting("meta_tartan", ["end", "helpful", "harmful"], end_tasks=["end"], meta_lr=0.5, alignment=alignment)
    dev = torch.tensor([2.0, 0.0, 0.0])
    grads = torch.tensor([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    method.set_dev_gradient(dev)
    losses = {"end": 1.0, "helpful": 1.0, "harmful": 1.0}
    combined = method.combine_gradients(grads, losses, step=0)
    assert torch.allclose(combined, grads.sum(dim=0))  # weights 3 · softmax(0) = 1 for this step
    # A second micro-batch of the same optimizer step (gradient accumulation) with the dev gradient reversed:
    # the logits move once per optimizer step, by the mean alignment of its micro-batches.
    dev2 = torch.tensor([0.0, 4.0, 0.0])
    method.set_dev_gradient(dev2)
    method.combine_gradients(grads, losses, step=0)
    assert torch.equal(method.logits, torch.zeros(3, dtype=torch.float64))
    method.after_optimizer_step(losses, 0)
    rows = grads.double()
    a1, a2 = rows @ dev.double(), rows @ dev2.double()  # dot products: [2, 6, -2] and [4, 0, 0]
    if alignment == "cosine":
        a1, a2 = a1 / (rows.norm(dim=1) * 2.0), a2 / (rows.norm(dim=1) * 4.0)
    a = (a1 + a2) / 2  # the mean alignment of the step's two micro-batches
    expected = 0.5 * (1 / 3) * (a - a.mean())
    assert torch.allclose(method.logits, expected)
    assert method.logits[1] > 0 > method.logits[2]
    method.set_dev_gradient(dev)
    method.combine_gradients(grads, losses, step=1)
    weights = method.last_weights
    assert min(weights, key=weights.get) == "harmful" and sum(weights.values()) == pytest.approx(3.0)
    with pytest.raises(RuntimeError, match="no dev gradient"):
        method.combine_gradients(grads, {"end": 1.0, "helpful": 1.0, "harmful": 1.0}, step=2)
    # An overflowed step (inf / NaN in any gradient, even where the dev gradient is 0) leaves the logits alone.
    before = method.logits.clone()
    method._pending = []
    for bad_grads, bad_dev in (
        (grads.clone().index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(float("inf"))), dev),
        (grads, torch.tensor([float("nan"), 0.0, 0.0])),
    ):
        method.set_dev_gradient(bad_dev)
        method.combine_gradients(bad_grads, losses, step=3)
        method.after_optimizer_step(losses, 3)
        assert torch.equal(method.logits, before)


def test_meta_tartan_update_from_non_zero_logits_equals_a_hand_computation():
    method = build_weighting("meta_tartan", ["end", "a", "b"], end_tasks=["end"], meta_lr=0.3)
    method.logits.copy_(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    alignment = torch.tensor([0.5, -0.2, 0.8], dtype=torch.float64)
    e = [2.718281828459045, 1.0, 0.36787944117144233]
    p = [v / sum(e) for v in e]  # softmax([1, 0, -1]) = [0.665241, 0.244728, 0.090031]
    mean = sum(pi * ai for pi, ai in zip(p, [0.5, -0.2, 0.8]))
    expected = [0.3 * pi * (ai - mean) for pi, ai in zip(p, [0.5, -0.2, 0.8])]
    step = method.update_logits(alignment)
    assert step.tolist() == pytest.approx(expected, rel=1e-12)
    assert method.logits.tolist() == pytest.approx([1.0 + expected[0], expected[1], -1.0 + expected[2]], rel=1e-12)
    assert method.current_weights().sum().item() == pytest.approx(3.0)


def test_fp16_dev_gradient_is_differentiated_scaled_and_an_overflow_in_it_skips_the_step():
    """Under fp16 the dev loss is scaled before backward like the task losses (a half-precision dev gradient of
    ~1e-9 underflows to 0 unscaled), unscaled after, and an overflow in it skips the step like one in theirs."""
    from types import SimpleNamespace

    from hf_async_mtl.gradients import per_task_gradient_step

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

    torch.manual_seed(0)
    net, dev_head = Net().half(), torch.nn.Linear(4, 1).half()
    x = torch.ones(1, 4, dtype=torch.half)

    def step(dev_loss_of, scale):
        method = build_weighting("meta_tartan", ["end", "aux"], end_tasks=["end"], alignment="dot")
        seen = []
        original = method.set_dev_gradient
        method.set_dev_gradient = lambda gradient: seen.append(gradient) or original(gradient)
        for parameter in [*net.parameters(), *dev_head.parameters()]:
            parameter.grad = None
        accelerator = SimpleNamespace(scaler=torch.amp.GradScaler("cpu", init_scale=scale), num_processes=1)
        hidden = net.encoder(x)
        losses = {"end": net.head(hidden).float().sum(), "aux": -net.head(hidden).float().sum()}
        per_task_gradient_step(accelerator, net, method, losses, 0, 1, dev=(dev_loss_of(hidden), list(dev_head.parameters())))
        return seen, net.encoder.weight.grad

    # d dev_loss / d encoder.weight = 1e-8 · dev_head.weight (per row), far below fp16's smallest subnormal (6e-8).
    seen, _ = step(lambda h: dev_head(h * 1e-4).sum() * 1e-4, 2.0**14)
    expected = (1e-8 * dev_head.weight.double().reshape(-1, 1) * torch.ones(4, dtype=torch.float64)).reshape(-1)
    weight_part = seen[0][: net.encoder.weight.numel()].double()
    assert weight_part.abs().min() > 0  # nothing underflowed
    assert torch.allclose(weight_part, expected, rtol=0.02)
    # A dev gradient that overflows once scaled (1e35 · 2^14 > fp32's max) while the task gradients stay finite.
    seen, grad = step(lambda h: dev_head.float()(h.float()).sum() * 1e35, 2.0**14)
    assert seen == [] and not torch.isfinite(grad).all()  # the method never saw it; the scaler will skip the step


def test_meta_tartan_dev_slice_is_disjoint_from_training_and_logits_move_once_per_step_under_accumulation(tmp_path, tokenizer, mlm_data):
    trainer = _meta_trainer(
        tmp_path,
        tokenizer,
        mlm_data,
        "accumulate",
        eval_strategy="no",
        save_strategy="no",
        max_steps=3,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=4,
    )
    trained = set(trainer.train_dataset.task_datasets["sentiment"]["idx"])
    held_out = set(trainer.dev_objective.slices["sentiment"]["idx"])
    assert held_out and not trained & held_out and len(trained | held_out) == 96
    dev_head_before = [p.detach().clone() for p in trainer.weighting.dev_heads.parameters()]
    assert dev_head_before
    updates = []
    original = trainer.weighting.update_logits
    trainer.weighting.update_logits = lambda alignment: updates.append((len(trainer.weighting._pending), alignment)) or original(alignment)
    trainer.train()
    assert len(updates) == 3 and all(pending == 2 for pending, _ in updates)  # one update per optimizer step, from both micro-batches
    assert not torch.equal(trainer.weighting.logits, torch.zeros(3, dtype=torch.float64))
    assert all(not torch.equal(p, q) for p, q in zip(trainer.weighting.dev_heads.parameters(), dev_head_before))  # the dev head trained


def _meta_trainer(tmp_path, tokenizer, mlm_data, out, **overrides):
    train, evaluation = mlm_data
    model = mlm_model(tokenizer, seed=3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    args = dict(
        max_steps=8,
        mtl_method="meta_tartan",
        end_task="sentiment",
        mtl_method_options={"meta_lr": 1.0},
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
    )
    args.update(overrides)
    return MultiTaskTrainer(
        model=model,
        args=make_args(tmp_path / out, **args),
        task_specs=SPECS,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )


def test_meta_tartan_trains_logs_weights_selects_on_the_end_task_and_resumes(tmp_path, tokenizer, mlm_data):
    full = _meta_trainer(tmp_path, tokenizer, mlm_data, "full")
    assert len(full.train_dataset.task_datasets["sentiment"]) == 96 - 9 and len(full.dev_objective.slices["sentiment"]) == 9
    assert full.args.metric_for_best_model == "sentiment_score" and full.args.greater_is_better
    full.train()
    assert not torch.equal(full.weighting.logits, torch.zeros(3, dtype=torch.float64))
    weights = [log for log in full.state.log_history if "train_weight_mlm_sentiment" in log]
    assert len(weights) == 8 and len({round(log["train_weight_sentiment"], 6) for log in weights}) > 1
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-4")
    resumed = _meta_trainer(tmp_path, tokenizer, mlm_data, "resumed")
    resumed.train(resume_from_checkpoint=checkpoint)
    full_losses, resumed_losses = _losses_by_step(full), _losses_by_step(resumed)
    for step in range(5, 9):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-4, abs=1e-6)
    assert torch.allclose(resumed.weighting.logits, full.weighting.logits, atol=1e-6)
    state = os.path.join(full.args.output_dir, "checkpoint-8", "trainer_state.json")
    assert weights_plot_main([state, str(tmp_path / "weights.png")]) == 0 and os.path.getsize(tmp_path / "weights.png") > 0


def test_meta_tartan_with_an_mlm_auxiliary_trains_alike_in_bf16(tmp_path, tokenizer, mlm_data):
    """bf16 autocast (the benchmarks' precision): the MLM loss, the dev head and the meta-gradient run under it."""
    runs, autocast = {}, {}
    for precision in ("fp32", "bf16"):
        trainer = _meta_trainer(tmp_path, tokenizer, mlm_data, precision, eval_strategy="no", save_strategy="no", bf16=precision == "bf16")
        seen = autocast[precision] = []
        hook = trainer.model.encoder.register_forward_pre_hook(lambda *_, seen=seen: seen.append(torch.is_autocast_enabled("cpu")))
        trainer.train()
        hook.remove()
        runs[precision] = trainer
    # Every encoder pass of training — one per task and the dev head's, each step — runs under bf16 autocast, or none does.
    assert len(autocast["bf16"]) == (len(runs["bf16"].task_specs) + 1) * 8
    assert all(autocast["bf16"]) and not any(autocast["fp32"])
    fp32, bf16 = (_losses_by_step(runs[p]) for p in ("fp32", "bf16"))
    assert sorted(bf16) == sorted(fp32) and len(fp32) == 8
    assert [bf16[s] for s in sorted(bf16)] == pytest.approx([fp32[s] for s in sorted(fp32)], rel=0.1, abs=0.05)
    mlm = [log["train_loss_mlm_sentiment"] for log in runs["bf16"].state.log_history if "train_loss_mlm_sentiment" in log]
    assert mlm and all(torch.isfinite(torch.tensor(mlm)))
    moved = {p: runs[p].weighting.logits for p in runs}
    assert torch.equal(torch.sign(moved["bf16"]), torch.sign(moved["fp32"]))  # the meta-gradient moves the weights alike


def test_end_task_early_stopping(tmp_path, tokenizer, mlm_data):
    trainer = _meta_trainer(
        tmp_path,
        tokenizer,
        mlm_data,
        "stop",
        mtl_method="mt_tartan",
        mtl_method_options={},
        max_steps=40,
        eval_steps=2,
        save_steps=2,
        early_stopping_patience=1,
        learning_rate=0.0,
    )
    trainer.train()
    assert trainer.state.global_step < 40  # a constant score never improves: stopped after one more evaluation


# ---- CLI -------------------------------------------------------------------------------------------------


def test_cli_end_task_with_mlm_auxiliary_and_meta_tartan(tmp_path, tiny_checkpoint):
    from tests.test_cli import base_args, write_glue

    out = tmp_path / "out"
    results = run_glue_mtl.main(
        base_args(write_glue(tmp_path / "glue", copies=12), tiny_checkpoint, out)
        + ["--mlm_tasks", "rte", "--end_task", "rte", "--mtl_method", "meta_tartan", "--logging_steps", "1"]
    )
    assert "eval_mlm_rte_loss" in results and "eval_rte_accuracy" in results
    heads = [head["name"] for head in json.loads((out / "config.json").read_text())["tasks"]]
    assert heads == ["cola", "rte", "mlm_rte"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("train_weight_mlm_rte" in log for log in state["log_history"])


def test_end_task_selection_wins_over_the_load_best_default_and_mlm_end_tasks_are_refused_by_meta_tartan(tmp_path, tokenizer, mlm_data):
    train, evaluation = mlm_data
    args = make_args(
        tmp_path,
        end_task="sentiment",
        load_best_model_at_end=True,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
    )
    assert args.metric_for_best_model == "loss"  # what TrainingArguments fills in
    MultiTaskTrainer(
        model=mlm_model(tokenizer), args=args, task_specs=SPECS, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    assert args.metric_for_best_model == "sentiment_score" and args.greater_is_better
    with pytest.raises(ValueError, match=r"end task 'mlm_sentiment' has no labels .* Use mt_tartan"):
        MultiTaskTrainer(
            model=mlm_model(tokenizer),
            args=make_args(tmp_path, end_task="mlm_sentiment", mtl_method="meta_tartan"),
            task_specs=SPECS,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
        )
