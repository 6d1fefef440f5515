"""`--bf16` and `--fp16` with every registry method (CPU autocast and CPU GradScaler make them testable here).

Each method trains a few steps in fp32, bf16 and fp16 from the same initial model with no dropout; the
per-step training losses must agree within half-precision tolerance and the parameters must move the same
way. Under fp16, a gradient method's overflow step must be skipped by the gradient scaler (parameters
unchanged, scale reduced), not applied.
"""

from __future__ import annotations

import pytest
import torch

from hf_async_mtl import available_weightings
from hf_async_mtl.weighting import get_weighting
from tests.test_trainer import no_dropout_trainer

# Method options that make a 4-step run exercise the method (weights move from the first steps).
OPTIONS = {
    "dwa": {"window": 1},
    "static": {"weights": {"sentiment": 1.0, "similarity": 0.5}},
    "mt_tartan": {"end_tasks": ["sentiment"]},
    "meta_tartan": {"end_tasks": ["sentiment"], "meta_lr": 1.0},
}


def emulate_gpu_fp16(trainer, init_scale: float = 2.0**16) -> torch.amp.GradScaler:
    """What `--fp16` does on a GPU, on the CPU: accelerate leaves CPU fp16 off (no autocast, no scaler), so
    turn on its native AMP path with a CPU `GradScaler` -- fp16 autocast, scaled losses, unscale before the
    gradient clipping, overflow steps skipped."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer.accelerator.native_amp = True
    trainer.accelerator.scaler = scaler
    return scaler


def _run(tmp_path, tokenizer, tiny_data, method: str, precision: str, async_kd: bool = False):
    # Plain SGD: the update is the (combined) gradient itself, so its direction compares across precisions
    # (Adam's first steps are ±lr per parameter whatever the gradient's size, and flip on noise).
    args = {
        "mtl_method": method,
        "mtl_method_options": OPTIONS.get(method, {}),
        "max_steps": 4,
        "logging_steps": 1,
        "learning_rate": 0.005,
        "optim": "sgd",
        "max_grad_norm": 0.0,
    }
    if precision != "fp32":
        args[precision] = True
    if async_kd:
        args.update(async_kd=True, eval_strategy="steps", eval_steps=1, kd_patience=1)
    trainer = no_dropout_trainer(tmp_path, tokenizer, tiny_data, f"{method}_{precision}_{async_kd}", args)
    if precision == "fp16":
        # A loss scale these tiny models' gradients fit under in fp16 (the default 2^16 overflows the regression
        # task's first steps: skipped, as they should be, but then there is nothing to compare).
        emulate_gpu_fp16(trainer, init_scale=2.0**8)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    moved = torch.cat([(p.detach() - before[name]).reshape(-1) for name, p in trainer.model.named_parameters()])
    return trainer, losses, moved


@pytest.mark.parametrize("method", sorted(available_weightings()))
def test_every_method_trains_alike_in_fp32_bf16_and_fp16(method, tmp_path, tokenizer, tiny_data):
    _, reference, moved = _run(tmp_path, tokenizer, tiny_data, method, "fp32")
    for precision in ("bf16", "fp16"):
        trainer, losses, update = _run(tmp_path, tokenizer, tiny_data, method, precision)
        if precision == "fp16":  # the scaler ran, and no step overflowed
            assert trainer.accelerator.scaler.get_scale() == 2.0**8
            assert all(log["grad_norm"] < float("inf") for log in trainer.state.log_history if "loss" in log)
        assert len(losses) == len(reference) == 4
        # fp16 keeps 10 mantissa bits (bf16: 8, but bf16 autocast on CPU covers fewer ops): 4 steps drift a few %.
        assert losses == pytest.approx(reference, rel=0.1, abs=0.02), (precision, losses, reference)
        # The same update direction and size (not a scaled or skipped one).
        cosine = torch.nn.functional.cosine_similarity(update, moved, dim=0)
        assert cosine > 0.95 and 0.8 < update.norm() / moved.norm() < 1.25, (precision, float(cosine))


@pytest.mark.parametrize("method", ["equal", "pcgrad"])
def test_async_kd_trains_alike_in_bf16_and_fp16(method, tmp_path, tokenizer, tiny_data):
    trainer, reference, _ = _run(tmp_path, tokenizer, tiny_data, method, "fp32", async_kd=True)
    converged = {t: r["converged"] for t, r in trainer.async_convergence.report().items()}
    for precision in ("bf16", "fp16"):
        mixed, losses, _ = _run(tmp_path, tokenizer, tiny_data, method, precision, async_kd=True)
        assert {t: r["converged"] for t, r in mixed.async_convergence.report().items()} == converged
        assert losses == pytest.approx(reference, rel=0.1, abs=0.02), precision


@pytest.mark.parametrize("method", [m for m in sorted(available_weightings()) if get_weighting(m).needs_task_gradients])
def test_fp16_overflow_step_of_a_gradient_method_is_skipped(method, tmp_path, tokenizer, tiny_data):
    args = {"mtl_method": method, "mtl_method_options": OPTIONS.get(method, {}), "max_steps": 1, "fp16": True, "learning_rate": 1e-3}
    trainer = no_dropout_trainer(tmp_path, tokenizer, tiny_data, f"overflow_{method}", args)
    # A loss scale no gradient survives (2^127: scaled gradients overflow even in fp32): the step overflows.
    scaler = emulate_gpu_fp16(trainer, init_scale=2.0**127)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    for name, parameter in trainer.model.named_parameters():
        assert torch.equal(parameter.detach(), before[name]), f"{name} changed on an overflow step"
    assert scaler.get_scale() < 2.0**127  # the scaler saw the overflow and backed off


def test_torch_compile_recompiles_a_bounded_number_of_times_and_matches_eager(tmp_path, tokenizer, tiny_data):
    """`--torch_compile` under length-aware batching: batches are padded to a multiple of 8, so the shapes a
    compiled model sees are bounded; dynamo's `eager` backend traces and guards exactly as inductor would,
    without code generation (the graph count is the recompilation count)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from tests.conftest import ragged

    ragged_data = ({name: ragged(d) for name, d in tiny_data[0].items()}, tiny_data[1])
    common = {"mtl_method": "equal", "max_steps": 12, "logging_steps": 1, "learning_rate": 1e-3, "per_device_train_batch_size": 4}
    eager = no_dropout_trainer(tmp_path, tokenizer, ragged_data, "eager", common)
    eager.train()
    torch._dynamo.reset()
    counters.clear()
    compiled = no_dropout_trainer(
        tmp_path, tokenizer, ragged_data, "compiled", {**common, "torch_compile": True, "torch_compile_backend": "eager"}
    )
    assert compiled.data_collator.pad_to_multiple_of == 8
    compiled.train()
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 6, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])  # the task is a name, not a tensor read in forward
    loss = [log["loss"] for log in compiled.state.log_history if "loss" in log]
    reference = [log["loss"] for log in eager.state.log_history if "loss" in log]
    assert loss == pytest.approx(reference, rel=1e-3, abs=1e-4)
    torch._dynamo.reset()
