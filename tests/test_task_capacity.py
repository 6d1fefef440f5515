"""Task-specific capacity on the shared encoder: per-task LoRA adapters and unshared top-k layers.

Routing (a task's parts get no gradient from another task's batch), the checkpoint start, save / reload,
resume, exports that plain transformers loads, gradient methods, async-KD teachers and the command line.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from peft import IA3Config, LoraConfig
from transformers import AutoModelForSequenceClassification

import run_glue_mtl
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer
from hf_async_mtl.gradients import shared_and_task_parameters
from hf_async_mtl.model_card import build_model_card
from hf_async_mtl.task_capacity import TaskRoutedLayer, task_of_parameter
from tests.conftest import TASKS
from tests.test_trainer import make_args, make_trainer, teacher_pass

# Tiny BERT (2 layers, hidden 32, intermediate 64): one layer has 4 x (32x32 + 32) attention weights,
# 2 LayerNorms (2 x 64), 32x64 + 64 + 64x32 + 32 feed-forward = 12,704 parameters.
LAYER_PARAMS = 4 * (32 * 32 + 32) + 2 * 64 + 32 * 64 + 64 + 64 * 32 + 32
# LoRA r=4 on query + value of both layers, per task.
ADAPTER_PARAMS = 2 * 2 * (4 * 32 + 32 * 4)
KINDS = {
    "unshared": {"unshared_layers": 1},
    "adapters": {"task_adapters": LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])},
}


def capacity_model(tiny_checkpoint, kind: str, pooling: str = "mean", **extra) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(tiny_checkpoint, TASKS, pooling=pooling, **KINDS[kind], **extra)


def _inputs(tokenizer):
    return tokenizer(["a good movie", "the story was bad and long"], padding=True, return_tensors="pt")


def _logits(model, tokenizer, task: str):
    model.eval()
    with torch.no_grad():
        return model(**_inputs(tokenizer), task_name=task).logits


def _perturb_task_parts(model, seed: int = 1):
    """Move every task-owned parameter, so each task's adapter / layers differ from the others' and the start."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if task_of_parameter(name) is not None:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_task_batch_gives_gradient_to_its_own_parts_only(kind, tiny_checkpoint, tokenizer):
    model = capacity_model(tiny_checkpoint, kind)
    _perturb_task_parts(model)  # LoRA B starts at 0, which would leave A without gradient
    model.train()
    labels = torch.tensor([1, 0])
    model(**_inputs(tokenizer), task_name="sentiment", labels=labels).loss.backward()
    owned = {n: task_of_parameter(n) for n, _ in model.named_parameters()}
    parameters = dict(model.named_parameters())
    mine = [n for n, owner in owned.items() if owner == "sentiment"]
    theirs = [n for n, owner in owned.items() if owner == "similarity"]
    assert mine and len(mine) == len(theirs)
    assert all(parameters[n].grad is not None and parameters[n].grad.abs().sum() > 0 for n in mine)
    assert all(parameters[n].grad is None for n in theirs)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradient_checkpointing_recomputes_with_the_batch_tasks_parts(kind, reentrant, tiny_checkpoint, tokenizer):
    """The recompute in the backward pass runs after the forward's route has exited: it must use the same task's parts.

    The second task's batch (its adapter is not peft's first, the one active outside a route) gives the same
    gradients, every parameter, with checkpointing as without (dropout off).
    """

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor | None]:
        model = capacity_model(tiny_checkpoint, kind)
        _perturb_task_parts(model)
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
            assert any(getattr(module, "gradient_checkpointing", False) for module in model.encoder.modules())
        model(**_inputs(tokenizer), task_name=TASKS[1].name, labels=torch.tensor([1.0, 2.0])).loss.backward()
        return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    own = [name for name, grad in plain.items() if grad is not None and task_of_parameter(name) == TASKS[1].name]
    assert own and all(plain[name].abs().sum() > 0 for name in own)
    for name, grad in plain.items():
        other = checkpointed[name]
        assert (grad is None) == (other is None), name
        if grad is not None:
            torch.testing.assert_close(other, grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_task_starts_from_the_checkpoint(kind, tiny_checkpoint, tokenizer):
    torch.manual_seed(0)
    plain = MultiTaskModel.from_encoder(tiny_checkpoint, TASKS, pooling="mean")
    model = capacity_model(tiny_checkpoint, kind)
    for spec in TASKS:
        assert torch.allclose(_logits(model, tokenizer, spec.name), _logits(plain, tokenizer, spec.name), atol=1e-6)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_plain = sum(p.numel() for p in plain.parameters())
    heads = 32 * 2 + 2 + 32 * 1 + 1
    if kind == "unshared":
        # The shared copy of the last layer is replaced by one copy per task.
        assert trainable == total_plain + LAYER_PARAMS
    else:
        assert trainable == 2 * ADAPTER_PARAMS + heads  # base frozen


def test_per_task_adapters_can_train_the_base(tiny_checkpoint):
    model = capacity_model(tiny_checkpoint, "adapters", task_adapters_train_base=True)
    assert all(p.requires_grad for p in model.parameters())
    shared, other = shared_and_task_parameters(model)
    assert len(other) == 2 * 8 + 4  # 8 LoRA matrices per task, 2 heads x (weight, bias)
    assert shared and not any(".lora_" in n for n, p in model.named_parameters() if any(p is s for s in shared))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_reload_is_bitwise_and_keeps_the_trainable_set(kind, tmp_path, tiny_checkpoint, tokenizer):
    model = capacity_model(tiny_checkpoint, kind)
    _perturb_task_parts(model)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert bool(config["unshared_layers"]) == (kind == "unshared") and bool(config["task_adapters"]) == (kind == "adapters")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert sorted(state) == sorted(reloaded) and all(torch.equal(state[k], reloaded[k]) for k in state)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == [n for n, p in model.named_parameters() if p.requires_grad]
    for spec in TASKS:  # weights are bitwise equal; outputs to float tolerance (CPU kernels can vary per allocation)
        torch.testing.assert_close(_logits(loaded, tokenizer, spec.name), _logits(model, tokenizer, spec.name), rtol=1e-5, atol=1e-6)
    assert _logits(model, tokenizer, "sentiment").shape[-1] == 2


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("pooling", ["mean", "pooler"])
def test_export_inlines_the_task_parts_for_plain_transformers(kind, pooling, tmp_path, tiny_checkpoint, tokenizer):
    model = capacity_model(tiny_checkpoint, kind, pooling=pooling)
    _perturb_task_parts(model)
    for spec in TASKS:
        directory = tmp_path / f"{spec.name}-{pooling}"
        model.export_task(spec.name, directory, tokenizer=tokenizer)
        exported = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=pooling != "pooler").eval()
        if pooling == "pooler":
            assert type(exported).__name__ == "BertForSequenceClassification"
        assert not any(task_of_parameter(n) for n, _ in exported.named_parameters())
        with torch.no_grad():
            logits = exported(**_inputs(tokenizer)).logits
        assert torch.allclose(logits, _logits(model, tokenizer, spec.name), atol=1e-5)
    # The two tasks' exports differ: each carries its own parts.
    other = tmp_path / f"similarity-{pooling}"
    assert json.loads((other / "config.json").read_text())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradient_method_treats_task_parts_as_task_specific_and_resumes(kind, tmp_path, tokenizer, tiny_data, tiny_checkpoint):
    common = dict(mtl_method="imtl_g", max_steps=4, save_strategy="steps", save_steps=2)
    extra = {"task_adapters_train_base": True} if kind == "adapters" else {}
    trainer = make_trainer(tmp_path / "a", tokenizer, tiny_data, model=capacity_model(tiny_checkpoint, kind, **extra), **common)
    shared, other = shared_and_task_parameters(trainer.model)
    shared_ids = {id(p) for p in shared}
    assert all(task_of_parameter(n) is None for n, p in trainer.model.named_parameters() if id(p) in shared_ids)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert {task_of_parameter(n) for n in changed} >= {"sentiment", "similarity", None}
    # Resume from checkpoint-2 (what a run killed after it leaves) and end where the uninterrupted run ended.
    resumed = make_trainer(tmp_path / "b", tokenizer, tiny_data, model=capacity_model(tiny_checkpoint, kind, **extra), **common)
    resumed.train(resume_from_checkpoint=os.path.join(trainer.args.output_dir, "checkpoint-2"))
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_meta_tartan_dev_loss_runs_through_the_end_tasks_parts(kind, tmp_path, tokenizer, tiny_data, tiny_checkpoint, monkeypatch):
    """The dev loss called the encoder without the end task's route: unshared layers raised at the first step, per-task
    adapters ran the first task's adapter. Its dev representation must be the end task's own."""
    from hf_async_mtl.tartan import DevObjective

    extra = {"task_adapters_train_base": True} if kind == "adapters" else {}
    model = capacity_model(tiny_checkpoint, kind, **extra)
    _perturb_task_parts(model)
    trainer = make_trainer(tmp_path, tokenizer, tiny_data, model=model, mtl_method="meta_tartan", end_task="similarity", max_steps=2)
    routes, in_dev = [], []
    real_route, real_loss = model._task_route, DevObjective.loss

    def recording_route(task):
        routes.append((task, bool(in_dev)))
        return real_route(task)

    def dev_loss(self, *args, **kwargs):
        in_dev.append(True)
        try:
            return real_loss(self, *args, **kwargs)
        finally:
            in_dev.pop()

    model._task_route = recording_route
    monkeypatch.setattr(DevObjective, "loss", dev_loss)
    trainer.train()  # raised "An unshared encoder layer ran without a task route" with unshared layers
    assert trainer.state.global_step == 2
    assert {task for task, dev in routes if dev} == {"similarity"}  # the end task's parts (not the active adapter's)


def test_gradient_method_on_frozen_base_adapters_is_refused(tmp_path, tokenizer, tiny_data, tiny_checkpoint):
    with pytest.raises(ValueError, match="no encoder parameter is both shared and trainable"):
        make_trainer(tmp_path, tokenizer, tiny_data, model=capacity_model(tiny_checkpoint, "adapters"), mtl_method="pcgrad")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_async_kd_teacher_includes_the_tasks_own_parts(kind, tmp_path, tokenizer, tiny_data, tiny_checkpoint):
    train, evaluation = tiny_data
    # Only sentiment is evaluated; kd_min_delta so large that its first evaluation stays best:
    # it converges at step 4 with its best point at step 2.
    trainer = MultiTaskTrainer(
        model=capacity_model(tiny_checkpoint, kind),
        args=make_args(
            tmp_path,
            max_steps=6,
            async_kd=True,
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
    include = trainer.async_convergence._include("sentiment")
    names = [n for n, p in trainer.model.named_parameters() if include(n, p)]
    assert any(task_of_parameter(n) == "sentiment" for n in names)
    assert not any(task_of_parameter(n) == "similarity" for n in names)
    trainer.train()
    assert trainer.async_convergence.records["sentiment"]["converged_step"] == 4
    # The teacher is the step-2 model, the task's own adapter / layers included.
    best = MultiTaskModel.from_pretrained(os.path.join(trainer.args.output_dir, "checkpoint-2"))
    teacher = teacher_pass(best, train["sentiment"], tokenizer)
    assert torch.allclose(trainer.async_convergence.soft_labels["sentiment"].table, teacher, atol=1e-5)


def test_unshared_layers_route_and_refuse_an_unrouted_call(tiny_checkpoint):
    model = capacity_model(tiny_checkpoint, "unshared")
    routed = [m for m in model.modules() if isinstance(m, TaskRoutedLayer)]
    assert len(routed) == 1 and sorted(routed[0].unshared) == ["sentiment", "similarity"]
    with pytest.raises(RuntimeError, match="without a task route"):
        routed[0](torch.zeros(1, 2, 32))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unshared_layers": -1}, "unshared_layers must be an int >= 0"),
        ({"unshared_layers": "2"}, r"unshared_layers must be an int >= 0 \(0: a fully shared encoder\), got '2'"),
        ({"unshared_layers": True}, "unshared_layers must be an int >= 0"),  # it was taken as 1
        ({"unshared_layers": 2.0}, "unshared_layers must be an int >= 0"),
        ({"unshared_layers": 3}, "between 1 and the encoder's 2 layers"),
        ({"unshared_layers": 1, "peft_config": LoraConfig(r=2)}, "cannot be combined"),
        ({"unshared_layers": 1, "task_adapters": LoraConfig(r=2)}, "cannot be combined"),
        ({"task_adapters": LoraConfig(r=2), "peft_config": LoraConfig(r=2)}, "cannot be combined"),
        ({"task_adapters_train_base": True}, "needs task_adapters"),
        # An IA3 adapter's parameters (ia3_l.<task>) were not recognised as any task's: nothing in the encoder trained.
        ({"task_adapters": IA3Config(target_modules=["key", "value"], feedforward_modules=[])}, r"LoRA adapters .* got peft_type IA3"),
        ({"task_adapters": {"peft_type": "IA3"}}, "got peft_type IA3"),
    ],
)
def test_unsupported_combinations_fail_with_one_line(options, message, tiny_checkpoint):
    with pytest.raises(ValueError, match=message):
        MultiTaskModel.from_encoder(tiny_checkpoint, TASKS, pooling="mean", **options)


@pytest.mark.parametrize("kind", ["adapters", "unshared"])
def test_merge_adapters_refuses_task_parts(kind, tiny_checkpoint):
    """merge_adapters (one encoder) on per-task parts raised a state_dict traceback; it names single_task_model."""
    model = capacity_model(tiny_checkpoint, kind)
    with pytest.raises(ValueError, match=r"per-task adapters / unshared layers give each task its own encoder: use single_task_model"):
        model.merge_adapters()


def test_a_shared_adapter_is_refused_on_unshared_layers_before_wrapping(tiny_checkpoint):
    """apply_peft on a model with unshared layers used to wrap it and save a checkpoint from_pretrained refused."""
    model = MultiTaskModel.from_encoder(tiny_checkpoint, TASKS, pooling="mean", unshared_layers=1)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="Unshared top layers and a shared LoRA adapter cannot be combined"):
        model.apply_peft(LoraConfig(r=2, target_modules=["query", "value"]))
    assert not model.has_adapters and {n: p.requires_grad for n, p in model.named_parameters()} == before


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        (["--unshared_layers", "1"], lambda m: m.config.unshared_layers == 1),
        (["--lora_r", "2", "--lora_scope", "per_task"], lambda m: m.config.task_adapters["r"] == 2 and not m.has_adapters),
    ],
)
def test_cli_trains_and_saves_task_capacity(flags, check, tmp_path, tiny_checkpoint):
    from tests.test_cli import base_args, write_glue

    glue = write_glue(tmp_path / "glue", copies=2)
    out = tmp_path / "out"
    args = base_args(glue, tiny_checkpoint, out)
    args[args.index("--max_steps") + 1] = "2"
    run_glue_mtl.main(args + flags)
    saved = MultiTaskModel.from_pretrained(out)
    assert saved.has_task_capacity and check(saved)
    assert "Task-specific capacity" in str(build_model_card(saved.config))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bi_encoder_pairs_run_both_texts_through_the_tasks_parts(kind, tiny_checkpoint, tokenizer):
    from tests.test_bi_encoder import SIMILARITY_BI, pair_batch

    tasks = [TASKS[0], SIMILARITY_BI]
    torch.manual_seed(0)
    plain = MultiTaskModel.from_encoder(tiny_checkpoint, tasks, pooling="mean")
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_checkpoint, tasks, pooling="mean", **KINDS[kind])
    batch = pair_batch(tokenizer, SIMILARITY_BI)
    plain.eval(), model.eval()
    with torch.no_grad():  # the checkpoint's cosine at step 0
        assert torch.allclose(model(**batch, task_name="similarity").logits, plain(**batch, task_name="similarity").logits, atol=1e-6)
    _perturb_task_parts(model)
    model.train()
    model(**batch, task_name="similarity", labels=torch.tensor([1.0, 2.0, 3.0, 4.0])).loss.backward()
    parameters = dict(model.named_parameters())
    assert all(parameters[n].grad is None for n in parameters if task_of_parameter(n) == "sentiment")
    assert any(parameters[n].grad is not None for n in parameters if task_of_parameter(n) == "similarity")


def test_cli_continues_a_saved_model_when_the_options_restate_its_structure(tmp_path, tiny_checkpoint, capsys):
    """Restating a saved model's unshared layers continues it as saved; asking for another structure is refused in
    one line (it used to be ignored; tests/test_cli_errors.py has the other refusals)."""
    from tests.test_cli import base_args, write_glue

    glue = write_glue(tmp_path / "glue", copies=2)
    first, second = tmp_path / "first", tmp_path / "second"
    args = base_args(glue, tiny_checkpoint, first)
    args[args.index("--max_steps") + 1] = "2"
    run_glue_mtl.main(args + ["--unshared_layers", "1"])
    again = base_args(glue, str(first), second)
    again[again.index("--max_steps") + 1] = "2"
    run_glue_mtl.main(again + ["--unshared_layers", "1"])
    assert MultiTaskModel.from_pretrained(second).config.unshared_layers == 1
    with pytest.raises(SystemExit) as info:
        run_glue_mtl.main(again + ["--unshared_layers", "2", "--output_dir", str(tmp_path / "third")])
    assert info.value.code == 2 and "saved multi-task model with unshared top layers (unshared_layers=1)" in capsys.readouterr().err
    assert not (tmp_path / "third").exists()
