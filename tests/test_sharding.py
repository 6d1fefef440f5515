"""Sharded training in one process: what a sharding engine refuses, how a run's engine is read, the FSDP wrap
classes and the optimizer of a method's own parameters. Two processes under FSDP: tests/test_distributed.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from hf_async_mtl import MultiTaskTrainer, MultiTaskTrainingArguments, available_weightings
from hf_async_mtl.sharding import OwnParametersOptimizer, check_sharding, complete_optimizer_state, fsdp_wrap_classes, sharding_engine
from hf_async_mtl.weighting import get_weighting
from tests.conftest import TASKS, make_model

GRADIENT_METHODS = [m for m in available_weightings() if get_weighting(m).needs_task_gradients]
LOSS_METHODS = [m for m in available_weightings() if not get_weighting(m).needs_task_gradients]
ZERO3 = {"zero_optimization": {"stage": 3}}

# (how the run asks for an engine: training arguments, environment of `accelerate launch`) → the engine in words
ENGINES = [
    (dict(fsdp=True), {}, "FSDP"),
    (dict(fsdp="full_shard auto_wrap"), {}, "FSDP"),
    ({}, {"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    (dict(deepspeed={"zero_optimization": {"stage": 1}}), {}, "DeepSpeed ZeRO-1"),
    (dict(deepspeed='{"zero_optimization": {"stage": 2}}'), {}, "DeepSpeed ZeRO-2"),
    (dict(deepspeed=ZERO3), {}, "DeepSpeed ZeRO-3"),
    ({}, {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3"),
    ({}, {}, None),
    (dict(fsdp=""), {"ACCELERATE_USE_FSDP": "false"}, None),
]


def _args(method: str, async_kd: bool = False, **engine) -> SimpleNamespace:
    return SimpleNamespace(mtl_method=method, async_kd=async_kd, fsdp=engine.get("fsdp"), deepspeed=engine.get("deepspeed"))


@pytest.mark.parametrize(("engine_args", "environ", "engine"), ENGINES)
def test_the_engine_a_run_asks_for(engine_args, environ, engine, tmp_path):
    assert sharding_engine(_args("equal", **engine_args), environ) == engine
    # A DeepSpeed config file is read for its stage too.
    if engine_args.get("deepspeed") == ZERO3:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(ZERO3))
        assert sharding_engine(_args("equal", deepspeed=str(path)), {}) == "DeepSpeed ZeRO-3"


@pytest.mark.parametrize(("engine_args", "environ", "engine"), [e for e in ENGINES if e[2]])
def test_every_gradient_method_is_refused_under_every_engine_and_no_loss_method(engine_args, environ, engine):
    for method in GRADIENT_METHODS:
        with pytest.raises(ValueError) as info:
            check_sharding(_args(method, **engine_args), environ)
        message = str(info.value)
        assert "\n" not in message
        assert (
            message.startswith(f"mtl_method {method!r} is a gradient method:")
            and f"which bypass the backward that {engine} reduces (and shards)" in message
        )
        # The two alternatives: the method under DDP, or the engine with a loss-weighting method.
        assert f"Train {method} with DDP" in message and f"keep {engine} with a loss-weighting method" in message
        assert all(m in message for m in LOSS_METHODS)
    for method in LOSS_METHODS:
        # async-KD goes with every engine but ZeRO-3 (its snapshots and teachers need whole parameters).
        for async_kd in (False, True):
            if async_kd and engine == "DeepSpeed ZeRO-3":
                with pytest.raises(ValueError, match=r"^async_kd under DeepSpeed ZeRO-3: .*Use async_kd with ZeRO-2 or FSDP"):
                    check_sharding(_args(method, async_kd, **engine_args), environ)
            else:
                check_sharding(_args(method, async_kd, **engine_args), environ)
    # Without an engine nothing is refused.
    for method in available_weightings():
        check_sharding(_args(method, True), {})


def test_python_users_are_refused_before_any_work(tmp_path, tiny_data, tokenizer, monkeypatch):
    common = dict(output_dir=str(tmp_path / "out"), max_steps=2, use_cpu=True, report_to="none", save_strategy="no")
    # The arguments refuse first (before TrainingArguments imports the engine: DeepSpeed need not be installed).
    with pytest.raises(ValueError, match=r"^mtl_method 'pcgrad' is a gradient method: .*the backward that FSDP reduces"):
        MultiTaskTrainingArguments(mtl_method="pcgrad", fsdp=True, **common)
    with pytest.raises(ValueError, match=r"^mtl_method 'mgda' is a gradient method: .*the backward that DeepSpeed ZeRO-3 reduces"):
        MultiTaskTrainingArguments(mtl_method="mgda", deepspeed=ZERO3, **common)
    with pytest.raises(ValueError, match=r"^async_kd under DeepSpeed ZeRO-3"):
        MultiTaskTrainingArguments(mtl_method="async_kd", deepspeed=ZERO3, **common)
    # The gradient-conflict diagnostics take per-task gradients with autograd.grad too (each rank would see its shard).
    with pytest.raises(ValueError, match=r"^diagnostics_steps measures per-task gradients .* FSDP shards outside its backward"):
        MultiTaskTrainingArguments(diagnostics_steps=2, fsdp=True, **common)
    # The trainer too: here `accelerate launch --use_fsdp` set its variable after the arguments were built.
    args = MultiTaskTrainingArguments(mtl_method="cagrad", **common)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    train, evaluation = tiny_data
    with pytest.raises(
        ValueError, match=r"^mtl_method 'cagrad' is a gradient method: .*the backward that FSDP reduces .*Train cagrad with DDP"
    ):
        MultiTaskTrainer(make_model(tokenizer), args, TASKS, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer)
    assert not (tmp_path / "out").exists()


def test_fsdp_wraps_the_encoder_layers_not_the_block_holding_the_input_embedding(tokenizer):
    # accelerate would wrap BertEmbeddings (a _no_split_modules class), then fail to shard its word embedding again.
    model = make_model(tokenizer)
    assert "BertEmbeddings" in model._no_split_modules
    assert fsdp_wrap_classes(model) == ["BertLayer"]


def test_own_parameters_optimizer_updates_like_a_group_of_the_trainers_optimizer():
    """Under FSDP / DeepSpeed uncertainty's log-variances get their own optimizer, stepped at the Trainer's point of
    the schedule: the same parameters, step for step, as one more group of the Trainer's optimizer."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(0)
    model_a, own_a = torch.nn.Linear(4, 2), torch.nn.Parameter(torch.zeros(2))
    model_b, own_b = torch.nn.Linear(4, 2), torch.nn.Parameter(torch.zeros(2))
    model_b.load_state_dict(model_a.state_dict())
    kwargs = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8}
    grouped = torch.optim.AdamW([{"params": model_a.parameters()}, {"params": [own_a], "weight_decay": 0.0, "lr": 0.3}], **kwargs)
    main = torch.optim.AdamW(model_b.parameters(), **kwargs)
    own = OwnParametersOptimizer([own_b], torch.optim.AdamW, kwargs, learning_rate=0.3)
    schedules = [get_linear_schedule_with_warmup(o, 2, 8) for o in (grouped, main)]
    for step in range(8):
        x = torch.randn(5, 4)
        for model, weights in ((model_a, own_a), (model_b, own_b)):
            (model(x).pow(2).mean(0) * torch.exp(-weights) + weights).sum().backward()
        grouped.step()
        main.step()
        group = main.param_groups[0]
        own.step(group["lr"] / group["initial_lr"])
        for optimizer, schedule in zip((grouped, main), schedules):
            schedule.step()
            optimizer.zero_grad()
        own.optimizer.zero_grad()
        assert torch.equal(own_a, own_b) and torch.equal(model_a.weight, model_b.weight), step
    assert not torch.equal(own_a, torch.zeros(2))


def test_complete_optimizer_state_gives_unstepped_parameters_the_state_of_their_first_step_and_changes_no_update():
    def run(fill: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        used, unused, later = (torch.nn.Parameter(torch.randn(3)) for _ in range(3))
        optimizer = torch.optim.AdamW([used, unused, later], lr=0.1, weight_decay=0.01)
        for step in range(4):
            optimizer.zero_grad()
            loss = (used**2).sum() + ((later**3).sum() if step >= 2 else 0.0)  # `later` first gets a gradient at step 2
            loss.backward()
            optimizer.step()
            if fill and step == 0:
                assert complete_optimizer_state(optimizer) == 2
                assert float(optimizer.state[unused]["step"]) == 0.0 and not optimizer.state[later]["exp_avg"].any()
        return [p.detach().clone() for p in (used, unused, later)]

    for plain, filled in zip(run(False), run(True)):
        torch.testing.assert_close(plain, filled, rtol=0, atol=0)
    assert complete_optimizer_state(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)) == 0  # left as it is
