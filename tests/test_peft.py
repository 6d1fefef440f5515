"""PEFT (LoRA) on the shared encoder: trainable parameters, save/load, merging, training, async-KD snapshots, CLI."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModel

import run_glue_mtl
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer
from hf_async_mtl.adapters import count_parameters, peft_config_from_dict
from hf_async_mtl.async_kd.snapshots import ParameterSnapshot
from hf_async_mtl.gradients import shared_and_task_parameters
from tests.conftest import TASKS, make_model
from tests.test_trainer import make_args, make_trainer, teacher_pass

# Tiny BERT (2 layers, hidden 32, vocab 30522): LoRA r=4 on query+value = 2 layers x 2 modules x (4x32 + 32x4),
# heads = sentiment (32x2 + 2) + similarity (32x1 + 1).
LORA_PARAMS = 2 * 2 * (4 * 32 + 32 * 4)
HEAD_PARAMS = 32 * 2 + 2 + 32 * 1 + 1
FULL_PARAMS = 999_171


def lora(**overrides) -> LoraConfig:
    return LoraConfig(**{"r": 4, "lora_alpha": 8, **overrides})


def lora_model(tokenizer, seed: int = 0) -> MultiTaskModel:
    return make_model(tokenizer, seed=seed).apply_peft(lora())


def _inputs(tokenizer):
    return tokenizer(["a good movie", "the story was bad and long"], padding=True, return_tensors="pt")


def _logits(model, tokenizer):
    model.eval()
    with torch.no_grad():
        return {spec.name: model(**_inputs(tokenizer), task_name=spec.name).logits for spec in TASKS}


def _perturb_adapters(model, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def test_lora_freezes_the_encoder_but_not_the_heads(tokenizer):
    full = make_model(tokenizer)
    assert count_parameters(full) == FULL_PARAMS
    reference = _logits(full, tokenizer)
    model = full.apply_peft(lora())
    assert model.has_adapters and model.config.peft_config == {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["query", "value"],
        "bias": "none",
    }
    assert count_parameters(model) == LORA_PARAMS + HEAD_PARAMS
    assert count_parameters(model, trainable_only=False) == FULL_PARAMS + LORA_PARAMS
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or n.startswith("heads.") for n in trainable)
    assert {n for n in trainable if n.startswith("heads.")} == {f"heads.{t.name}.{w}" for t in TASKS for w in ("weight", "bias")}
    # LoRA B starts at zero: the adapted model computes what the plain one did.
    for task, logits in _logits(model, tokenizer).items():
        assert torch.allclose(logits, reference[task], atol=1e-6)
    # Gradient methods see the adapters as the shared parameters and the heads as the task ones.
    shared, other = shared_and_task_parameters(model)
    assert sum(p.numel() for p in shared) == LORA_PARAMS and sum(p.numel() for p in other) == HEAD_PARAMS
    with pytest.raises(ValueError, match="already has PEFT adapters"):
        model.apply_peft(lora())


def test_save_load_round_trip_restores_adapters_and_identical_logits(tmp_path, tokenizer):
    model = lora_model(tokenizer)
    _perturb_adapters(model)
    expected = _logits(model, tokenizer)
    model.save_pretrained(tmp_path / "saved")
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved_config["peft_config"]["target_modules"] == ["query", "value"]
    loaded = AutoModel.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded, MultiTaskModel) and loaded.has_adapters
    assert count_parameters(loaded) == LORA_PARAMS + HEAD_PARAMS
    for task, logits in _logits(loaded, tokenizer).items():
        assert torch.allclose(logits, expected[task], atol=1e-6), task
    # The adapter config itself round-trips.
    assert peft_config_from_dict(saved_config["peft_config"]).r == 4

    merged = model.merge_adapters()
    assert not merged.has_adapters and merged.config.peft_config is None and model.has_adapters
    assert count_parameters(merged) == FULL_PARAMS
    assert not any("lora" in n for n, _ in merged.named_parameters())
    for task, logits in _logits(merged, tokenizer).items():
        assert torch.allclose(logits, expected[task], atol=1e-5), task
    merged.save_pretrained(tmp_path / "merged")
    assert not json.loads((tmp_path / "merged" / "config.json").read_text()).get("peft_config")
    # Single-task copies keep the adapters; exports are merged, plain checkpoints.
    single = model.single_task_model("sentiment")
    assert single.has_adapters
    with torch.no_grad():
        assert torch.allclose(single.eval()(**_inputs(tokenizer)).logits, expected["sentiment"], atol=1e-6)
    model.export_task("sentiment", tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert not exported.has_adapters
    with torch.no_grad():
        assert torch.allclose(exported(**_inputs(tokenizer)).logits, expected["sentiment"], atol=1e-5)


def test_from_encoder_with_peft_config_and_cli_flags(tmp_path, tiny_checkpoint):
    specs = TASKS
    plain = MultiTaskModel.from_encoder(tiny_checkpoint, specs, pooling="mean")
    adapted = MultiTaskModel.from_encoder(tiny_checkpoint, specs, pooling="mean", peft_config=lora(r=2, target_modules=["query"]))
    assert adapted.has_adapters and adapted.config.peft_config["target_modules"] == ["query"]
    assert count_parameters(adapted) == 2 * (2 * 32 + 32 * 2) + HEAD_PARAMS
    # Pretrained weights are kept under the adapters.
    base = dict(adapted.encoder.get_base_model().named_parameters())
    for name, parameter in plain.encoder.named_parameters():
        key = name.replace("attention.self.query.", "attention.self.query.base_layer.")
        assert torch.equal(base[key], parameter), name

    model_args, _, _ = run_glue_mtl.parse_args(
        [
            "--model_name_or_path",
            tiny_checkpoint,
            "--output_dir",
            str(tmp_path),
            "--lora_r",
            "4",
            "--lora_alpha",
            "16",
            "--lora_dropout",
            "0.05",
            "--lora_target_modules",
            "query,key,value",
        ]
    )
    config = model_args.peft_config()
    assert (config.r, config.lora_alpha, config.lora_dropout, set(config.target_modules)) == (4, 16, 0.05, {"query", "key", "value"})
    model = run_glue_mtl.build_model(model_args, specs)
    assert model.has_adapters and count_parameters(model) == 2 * 3 * (4 * 32 + 32 * 4) + HEAD_PARAMS
    off, _, _ = run_glue_mtl.parse_args(["--model_name_or_path", tiny_checkpoint, "--output_dir", str(tmp_path)])
    assert off.lora_r == 0 and off.peft_config() is None
    default_targets, _, _ = run_glue_mtl.parse_args(
        ["--model_name_or_path", tiny_checkpoint, "--output_dir", str(tmp_path), "--lora_r", "2"]
    )
    assert run_glue_mtl.build_model(default_targets, specs).config.peft_config["target_modules"] == ["query", "value"]


def test_gradient_method_training_changes_only_adapters_and_heads(tmp_path, tokenizer, tiny_data):
    trainer = make_trainer(tmp_path, tokenizer, tiny_data, model=lora_model(tokenizer), mtl_method="pcgrad", max_steps=3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    assert {"heads.sentiment.weight", "heads.similarity.weight"} <= changed
    optimized = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    assert optimized == LORA_PARAMS + HEAD_PARAMS


def test_async_kd_with_lora_keeps_small_adapter_snapshots(tmp_path, tokenizer, tiny_data, monkeypatch):
    captured: list[ParameterSnapshot] = []
    original = ParameterSnapshot.capture.__func__

    def spy(cls, *args, **kwargs):
        snapshot = original(cls, *args, **kwargs)
        captured.append(snapshot)
        return snapshot

    monkeypatch.setattr(ParameterSnapshot, "capture", classmethod(spy))
    train, evaluation = tiny_data
    # Only sentiment is evaluated; kd_min_delta so large that its first evaluation stays best:
    # it converges at step 4 with its best point at step 2.
    trainer = MultiTaskTrainer(
        model=lora_model(tokenizer),
        args=make_args(
            tmp_path,
            max_steps=6,
            mtl_method="async_kd",
            kd_patience=1,
            kd_min_delta=10.0,
            kd_require_improvement=False,
            kd_require_decline=False,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            sampling_strategy="round_robin",
        ),
        task_specs=TASKS,
        train_dataset=train,
        eval_dataset={"sentiment": evaluation["sentiment"]},
        processing_class=tokenizer,
    )
    trainer.train()
    during_training = list(captured)
    callback = trainer.async_convergence
    assert callback.records["sentiment"]["converged_step"] == 4 and "sentiment" in callback.soft_labels

    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    full = ParameterSnapshot.capture(model, lambda n, t: not n.startswith("heads.") or n.startswith("heads.sentiment."), step=0, metric=0.0)
    assert [s.step for s in during_training] == [2]  # the only new best of the monitored task
    lora_names = {n for n in trainable if ".lora_" in n}
    for snapshot in during_training:
        names = set(snapshot.names)
        assert names <= trainable | buffers
        assert names & trainable == lora_names | {"heads.sentiment.weight", "heads.sentiment.bias"}
        assert snapshot.nbytes * 100 < full.nbytes

    # The teacher of the converged task was the step-2 parameters: compare with the step-2 checkpoint.
    best = MultiTaskModel.from_pretrained(os.path.join(trainer.args.output_dir, "checkpoint-2")).eval()
    assert best.has_adapters
    teacher = teacher_pass(best, train["sentiment"], tokenizer)
    assert torch.allclose(trainer.async_convergence.soft_labels["sentiment"].table, teacher, atol=1e-5)

    # An adapter-only snapshot restored (strict=False) into a copy of a later model reproduces the snapshot model.
    snapshot = ParameterSnapshot.capture(model, callback._include("sentiment"), step=6, metric=0.0)
    at_snapshot = _logits(copy.deepcopy(model), tokenizer)["sentiment"]
    _perturb_adapters(model, seed=5)
    moved = _logits(model, tokenizer)["sentiment"]
    assert not torch.allclose(moved, at_snapshot, atol=1e-4)
    restored = copy.deepcopy(model)
    result = restored.load_state_dict(snapshot.tensors(), strict=False)
    assert not [k for k in result.unexpected_keys if k not in buffers]
    assert torch.allclose(_logits(restored, tokenizer)["sentiment"], at_snapshot, atol=1e-6)


def test_cli_trains_with_lora_and_saves_adapters(tmp_path, tiny_checkpoint):
    from tests.test_cli import base_args, write_glue

    glue = write_glue(tmp_path / "glue", copies=2)
    out = tmp_path / "out"
    args = base_args(glue, tiny_checkpoint, out)
    args[args.index("--max_steps") + 1] = "2"
    run_glue_mtl.main(args + ["--lora_r", "2", "--lora_dropout", "0.0"])
    saved = MultiTaskModel.from_pretrained(out)
    assert saved.has_adapters and saved.config.peft_config["r"] == 2
    assert count_parameters(saved) == 2 * 2 * (2 * 32 + 32 * 2) + (32 * 2 + 2) * 2


def test_best_model_reload_resume_and_adapter_export(tmp_path, tokenizer, tiny_data):
    common = dict(
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="glue_score",
        greater_is_better=True,
    )
    trainer = make_trainer(tmp_path / "a", tokenizer, tiny_data, model=lora_model(tokenizer), **common)
    trainer.train()
    assert trainer.model.has_adapters and count_parameters(trainer.model) == LORA_PARAMS + HEAD_PARAMS
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-2")
    resumed = make_trainer(tmp_path / "b", tokenizer, tiny_data, model=lora_model(tokenizer), **common)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert count_parameters(resumed.model) == LORA_PARAMS + HEAD_PARAMS
    assert resumed.state.best_model_checkpoint.endswith(os.path.basename(trainer.state.best_model_checkpoint))
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    # PEFT's own adapter format for the encoder alone.
    trainer.model.encoder.save_pretrained(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(tmp_path / "adapter"))
