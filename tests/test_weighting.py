"""Tests of the task-balancing strategies in `hf_async_mtl.weighting`."""

from __future__ import annotations

import math

import pytest
import torch

from hf_async_mtl.weighting import (
    WeightingMethod,
    available_weightings,
    build_weighting,
    get_weighting,
    register_weighting,
)
from hf_async_mtl.weighting import registry as registry_module

TASKS = ("alpha", "beta", "gamma")

# Options that make the short training run exercise each method's state (e.g. DWA windows fill within 5 steps).
OPTIONS = {
    "static": {"weights": {"alpha": 1.0, "beta": 0.5, "gamma": 2.0}},
    "dwa": {"window": 1},
    "famo": {"lr": 0.1},
    "gradnorm": {"lr": 0.1},
    "gradvac": {"beta": 0.5},
    "mt_tartan": {"end_tasks": ["alpha"]},
    "meta_tartan": {"end_tasks": ["alpha"], "meta_lr": 1.0},
}

EXPECTED = {
    "cagrad", "dwa", "equal", "famo", "gradnorm", "gradvac", "imtl_g", "meta_tartan", "mgda", "mt_tartan", "nash_mtl",
    "pcgrad", "rlw", "static", "uncertainty",
}  # fmt: skip


def build(name: str, tasks: tuple[str, ...] = TASKS) -> WeightingMethod:
    return build_weighting(name, tasks, **OPTIONS.get(name, {}))


def with_dev_gradient(method: WeightingMethod, grads: torch.Tensor) -> WeightingMethod:
    """meta_tartan needs the step's dev gradient before combining (the trainer sets it): a fixed one here."""
    if getattr(method, "needs_dev_gradient", False):
        method.set_dev_gradient(torch.linspace(-1.0, 2.0, grads.shape[1]))
    return method


class TinyMultiTask(torch.nn.Module):
    """A shared linear encoder and one regression head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 6)
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(6, 1) for t in TASKS})

    def losses(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = torch.tanh(self.shared(x))
        return {t: torch.nn.functional.mse_loss(self.heads[t](hidden).squeeze(-1), targets[t]) for t in TASKS}


def make_batch(generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = torch.randn(8, 4, generator=generator)
    # Targets of different scales, so balancing has something to do.
    targets = {t: (k + 1.0) ** 2 * x[:, k] + torch.randn(8, generator=generator) for k, t in enumerate(TASKS)}
    return x, targets


def micro_step(method: WeightingMethod, model: TinyMultiTask, batch, step: int) -> dict[str, torch.Tensor]:
    """Accumulate one micro-batch's gradient into `.grad` the way the trainer drives `method`."""
    losses = model.losses(*batch)
    if method.needs_task_gradients:
        shared = list(model.shared.parameters())
        rows = []
        for task in TASKS:
            grads = torch.autograd.grad(losses[task], shared, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
            head = list(model.heads[task].parameters())
            for param, grad in zip(head, torch.autograd.grad(losses[task], head, retain_graph=True)):
                param.grad = grad if param.grad is None else param.grad + grad
        combined = with_dev_gradient(method, torch.stack(rows)).combine_gradients(torch.stack(rows), losses, step)
        assert combined.shape == (sum(p.numel() for p in shared),)
        offset = 0
        for param in shared:
            piece = combined[offset : offset + param.numel()].view_as(param)
            param.grad = piece.clone() if param.grad is None else param.grad + piece
            offset += param.numel()
    else:
        method.weigh_losses(losses, step).backward()
    return {t: loss.detach() for t, loss in losses.items()}


def test_builtin_methods_are_registered() -> None:
    assert set(available_weightings()) == EXPECTED
    assert available_weightings() == sorted(available_weightings())
    for name in available_weightings():
        cls = get_weighting(name)
        assert cls.name == name and issubclass(cls, WeightingMethod)
        if cls.needs_task_gradients:  # per-task gradient rows need every task's loss
            assert cls.needs_all_tasks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trains_and_resumes_identically(name: str) -> None:
    torch.manual_seed(0)
    model = TinyMultiTask()
    method = build(name)
    params = list(model.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01)
    before = [p.detach().clone() for p in params]
    data = torch.Generator().manual_seed(1)
    for step in range(5):
        optimizer.zero_grad()
        micro_batches = 2 if step % 2 else 1  # gradient accumulation on some steps
        step_losses = [micro_step(method, model, make_batch(data), step) for _ in range(micro_batches)]
        optimizer.step()
        method.after_optimizer_step({t: sum(float(s[t]) for s in step_losses) / micro_batches for t in TASKS}, step)
        assert set(method.last_weights) == set(TASKS)
        assert all(math.isfinite(w) for w in method.last_weights.values()), method.last_weights
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, params)), "some parameter did not move"

    restored = build(name)
    restored.load_state_dict(method.state_dict())
    for step in (5, 6):  # two rounds, so state updated by after_optimizer_step must match as well
        losses = model.losses(*make_batch(data))
        if method.needs_task_gradients:
            grads = torch.randn(len(TASKS), 30, generator=data)
            out, out_restored = (with_dev_gradient(m, grads).combine_gradients(grads, losses, step) for m in (method, restored))
        else:
            out, out_restored = (m.weigh_losses(losses, step) for m in (method, restored))
        assert torch.equal(out, out_restored)
        assert method.last_weights == restored.last_weights
        detached = {t: float(v.detach()) for t, v in losses.items()}
        method.after_optimizer_step(detached, step)
        restored.after_optimizer_step(detached, step)
    for (key, a), (key_b, b) in zip(method.state_dict().items(), restored.state_dict().items()):
        assert key == key_b and torch.equal(a, b), key


def test_rlw_resumes_its_random_stream_and_shares_weights_within_a_step() -> None:
    losses = {t: torch.tensor(1.0) for t in TASKS}
    method = build("rlw")
    first = method.weigh_losses(losses, 0), dict(method.last_weights)
    again = method.weigh_losses(losses, 0), dict(method.last_weights)
    assert first[1] == again[1]  # micro-batches of one step share the draw
    for step in range(1, 4):
        method.weigh_losses(losses, step)
    restored, fresh = build("rlw"), build("rlw")
    restored.load_state_dict(method.state_dict())
    for m in (method, restored, fresh):
        m.weigh_losses(losses, 4)
    assert method.last_weights == restored.last_weights != fresh.last_weights
    assert sum(method.last_weights.values()) == pytest.approx(len(TASKS))


def two_task_grads(g1: list[float], g2: list[float]) -> torch.Tensor:
    return torch.tensor([g1, g2], dtype=torch.float64)


LOSSES2 = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}


def test_pcgrad_matches_hand_projection() -> None:
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 1.0], dtype=torch.float64)
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    out = build_weighting("pcgrad", ("a", "b")).combine_gradients(torch.stack([g1, g2]), LOSSES2, 0)
    assert torch.allclose(out, expected) and torch.allclose(out, torch.tensor([0.5, 1.5], dtype=torch.float64))
    # Non-conflicting gradients are summed untouched.
    out = build_weighting("pcgrad", ("a", "b")).combine_gradients(two_task_grads([1, 0], [1, 1]), LOSSES2, 0)
    assert torch.allclose(out, torch.tensor([2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("g1,g2", [([1.0, 0.0], [-0.5, 2.0]), ([3.0, 1.0], [-1.0, 0.5]), ([1.0, 0.0], [2.0, 0.0])])
def test_mgda_matches_two_task_min_norm_point(g1: list[float], g2: list[float]) -> None:
    a, b = torch.tensor(g1, dtype=torch.float64), torch.tensor(g2, dtype=torch.float64)
    gamma = min(max(float((b - a) @ b / ((a - b) @ (a - b))), 0.0), 1.0)
    out = build_weighting("mgda", ("a", "b")).combine_gradients(torch.stack([a, b]), LOSSES2, 0)
    assert torch.allclose(out, gamma * a + (1 - gamma) * b, atol=1e-12)


def test_mgda_three_tasks_reaches_min_norm_optimality() -> None:
    grads = torch.tensor([[1.0, 0.2, 0.0], [-0.3, 1.0, 0.1], [0.2, -0.6, 1.0]], dtype=torch.float64)
    method = build_weighting("mgda", TASKS)
    out = method.combine_gradients(grads, {t: torch.tensor(1.0) for t in TASKS}, 0)
    weights = torch.tensor([method.last_weights[t] for t in TASKS], dtype=torch.float64)
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    # KKT of min ||sum a g||^2 on the simplex: every g_t . d >= ||d||^2, with equality on the support.
    products = grads @ out
    assert (products >= out @ out - 1e-6).all()
    assert torch.allclose(products[weights > 1e-6], out @ out, atol=1e-6)


def test_mgda_l2_normalization_balances_scales() -> None:
    method = build_weighting("mgda", ("a", "b"), normalization="l2")
    out = method.combine_gradients(two_task_grads([10.0, 0.0], [0.0, 0.1]), LOSSES2, 0)
    # Unit gradients e1, e2 have min-norm point (e1 + e2) / 2, expressed in the raw gradients.
    assert torch.allclose(out, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert method.last_weights == pytest.approx({"a": 0.05, "b": 5.0})


def test_cagrad_with_zero_c_is_the_mean_gradient() -> None:
    grads = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    out = build_weighting("cagrad", TASKS, c=0.0).combine_gradients(grads, {t: torch.tensor(1.0) for t in TASKS}, 0)
    assert torch.allclose(out, grads.mean(dim=0), rtol=0, atol=1e-6)


def test_cagrad_improves_the_worst_task_within_its_ball() -> None:
    grads = two_task_grads([1.0, 0.1], [-0.8, 0.3])  # strongly conflicting
    c = 0.5
    out = build_weighting("cagrad", ("a", "b"), c=c, rescale=0).combine_gradients(grads, LOSSES2, 0)
    mean = grads.mean(dim=0)
    assert (out - mean).norm() <= c * mean.norm() + 1e-6
    assert (grads @ out).min() > (grads @ mean).min() + 1e-3
    # CAGrad's d maximises the worst improvement over the ball: compare with a fine search of the ball's boundary.
    angles = torch.linspace(0, 2 * math.pi, 100_001, dtype=torch.float64)
    boundary = mean + c * mean.norm() * torch.stack([angles.cos(), angles.sin()], dim=1)
    best_on_grid = float((boundary @ grads.T).min(dim=1).values.max())
    assert best_on_grid - 1e-9 <= float((grads @ out).min()) <= best_on_grid + 1e-5
    rescaled = build_weighting("cagrad", ("a", "b"), c=c).combine_gradients(grads, LOSSES2, 0)
    assert torch.allclose(rescaled, out / (1 + c**2), atol=1e-7)


def test_uncertainty_loss_matches_formula() -> None:
    method = build_weighting("uncertainty", ("a", "b"))
    with torch.no_grad():
        method.log_vars.copy_(torch.tensor([0.5, -1.0]))
    loss_a = torch.tensor(2.0, requires_grad=True)
    total = method.weigh_losses({"a": loss_a, "b": torch.tensor(3.0)}, 0)
    assert total.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5 + math.exp(1.0) * 3.0 - 1.0)
    assert method.last_weights == pytest.approx({"a": math.exp(-0.5), "b": math.exp(1.0)})
    total.backward()
    assert loss_a.grad.item() == pytest.approx(math.exp(-0.5))
    assert method.log_vars.grad.tolist() == pytest.approx([1 - math.exp(-0.5) * 2.0, 1 - math.exp(1.0) * 3.0])
    # Subset of tasks (one task per step): only that task's term.
    only_b = method.weigh_losses({"b": torch.tensor(3.0)}, 1)
    assert only_b.item() == pytest.approx(math.exp(1.0) * 3.0 - 1.0)


def test_dwa_weights_follow_the_formula() -> None:
    method = build_weighting("dwa", ("a", "b"), temperature=2.0, window=2)
    ones = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}
    history = [(4.0, 2.0), (2.0, 2.0), (3.0, 1.8), (1.0, 1.6)]  # window averages: (3, 2) then (2, 1.7)
    for step, (a, b) in enumerate(history):
        method.weigh_losses(ones, step)
        assert method.last_weights == {"a": 1.0, "b": 1.0}  # fewer than two complete windows so far
        method.after_optimizer_step({"a": a, "b": b}, step)
    method.weigh_losses(ones, 4)
    ratios = torch.tensor([2.0 / 3.0, 1.7 / 2.0], dtype=torch.float64)
    expected = 2 * torch.softmax(ratios / 2.0, dim=0)
    assert method.last_weights == pytest.approx({"a": float(expected[0]), "b": float(expected[1])})
    # The task whose loss fell faster ("a") gets the smaller weight.
    assert method.last_weights["a"] < 1.0 < method.last_weights["b"]


def test_gradnorm_moves_weight_to_the_slower_task() -> None:
    method = build_weighting("gradnorm", ("fast", "slow"), lr=0.1)
    grads = two_task_grads([1.0, 0.0], [0.0, 1.0])  # equal gradient norms
    method.combine_gradients(grads, {"fast": torch.tensor(1.0), "slow": torch.tensor(1.0)}, 0)  # records L(0)
    assert method.last_weights == {"fast": 1.0, "slow": 1.0}
    method.combine_gradients(grads, {"fast": torch.tensor(0.3), "slow": torch.tensor(0.9)}, 1)
    out = method.combine_gradients(grads, {"fast": torch.tensor(0.3), "slow": torch.tensor(0.9)}, 2)
    weights = method.last_weights
    assert weights["slow"] > 1.0 > weights["fast"]
    assert weights["slow"] + weights["fast"] == pytest.approx(2.0)
    assert torch.allclose(out, torch.tensor([weights["fast"], weights["slow"]], dtype=torch.float64))


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_gradnorm_steps_are_free_of_the_gradients_scale(scale) -> None:
    """Fixed losses (0.5, 1.0), alpha 1.5: the weights settle near their fixed point whatever the gradients' norm (at
    norm 20 the unnormalised step of lr 0.025 jumped between 0.17 and 0.67 forever)."""
    method = build_weighting("gradnorm", ("a", "b"))
    grads = two_task_grads([scale, 0.0], [0.0, scale])
    method.combine_gradients(grads, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, 0)
    history = []
    for step in range(1, 200):
        method.combine_gradients(grads, {"a": torch.tensor(0.5), "b": torch.tensor(1.0)}, step)
        history.append(method.last_weights["a"])
    # Target ratio w_a / w_b = (r_a / r_b) ** 1.5 = 0.5 ** 1.5; the sign step leaves a limit cycle of about lr.
    expected = 2 * 0.5**1.5 / (1 + 0.5**1.5)
    assert max(history[-20:]) - min(history[-20:]) < 0.1
    assert sum(history[-20:]) / 20 == pytest.approx(expected, abs=0.05)


def test_imtl_g_equalises_projections_on_unit_gradients() -> None:
    grads = torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads[1] *= 5.0  # very different scales
    method = build_weighting("imtl_g", TASKS)
    out = method.combine_gradients(grads, {t: torch.tensor(1.0) for t in TASKS}, 0)
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ out
    assert torch.allclose(projections, projections[0].expand(3), atol=1e-9)
    assert sum(method.last_weights.values()) == pytest.approx(1.0)


def test_gradvac_first_step_is_pcgrad_and_tracks_similarity() -> None:
    grads = two_task_grads([1.0, 0.2], [-0.7, 1.0])
    gradvac = build_weighting("gradvac", ("a", "b"), beta=0.1)
    out = gradvac.combine_gradients(grads, LOSSES2, 0)
    assert torch.allclose(out, build_weighting("pcgrad", ("a", "b")).combine_gradients(grads, LOSSES2, 0))
    cosine = float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))
    assert gradvac.target_similarity[0, 1].item() == pytest.approx(0.1 * cosine)
    assert gradvac.target_similarity[1, 0].item() == pytest.approx(0.1 * cosine)


def test_nash_mtl_solves_the_bargaining_equations() -> None:
    grads = torch.tensor([[1.0, 0.3, 0.0, 0.2], [-0.4, 2.0, 0.1, 0.0], [0.0, -0.5, 0.7, 0.3]], dtype=torch.float64)
    method = build_weighting("nash_mtl", TASKS)
    out = method.combine_gradients(grads, {t: torch.tensor(1.0) for t in TASKS}, 0)
    alpha = torch.tensor([method.last_weights[t] for t in TASKS], dtype=torch.float64)
    gram = grads @ grads.T
    scale = torch.linalg.matrix_norm(gram)
    assert (alpha > 0).all()
    # alpha_t * (G/||G||_F alpha)_t = 1, i.e. alpha_t * g_t . d = ||G||_F
    assert torch.allclose(alpha * (grads @ out), scale.expand(3), rtol=1e-6)
    # Orthogonal gradients: a_t = 1 / ||g_t|| of the normalised problem.
    ortho = two_task_grads([3.0, 0.0], [0.0, 4.0])
    method2 = build_weighting("nash_mtl", ("a", "b"))
    method2.combine_gradients(ortho, LOSSES2, 0)
    norm = math.sqrt(3.0**4 + 4.0**4)
    assert method2.last_weights == pytest.approx({"a": math.sqrt(norm) / 3.0, "b": math.sqrt(norm) / 4.0})


def test_gradient_methods_survive_degenerate_gradients() -> None:
    degenerate = [
        torch.zeros(3, 5),
        torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]),  # exactly opposite pair
        torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]),  # identical
    ]
    for name in available_weightings():
        if not get_weighting(name).needs_task_gradients:
            continue
        for grads in degenerate:
            out = with_dev_gradient(build(name), grads).combine_gradients(grads, {t: torch.tensor(1.0) for t in TASKS}, 0)
            assert torch.isfinite(out).all(), (name, grads)
            assert out.norm() <= 10 * grads.norm(dim=1).sum() + 1e-6, (name, out)


def test_famo_weights_and_logit_update() -> None:
    method = build_weighting("famo", ("a", "b"))
    losses = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(0.5, requires_grad=True)}
    method.weigh_losses(losses, 0).backward()
    # z = (1/2, 1/2): the gradient multipliers are proportional to 1 / L_t and weigh the log-losses equally.
    assert losses["a"].grad.item() * 2.0 == pytest.approx(losses["b"].grad.item() * 0.5)
    method.after_optimizer_step({"a": 2.0, "b": 0.5}, 0)
    method.after_optimizer_step({"a": 1.0, "b": 0.49}, 1)  # "a" improved much faster than "b"
    logits = method.logits.tolist()
    assert logits[1] > logits[0]  # so "b" gains weight
    with pytest.raises(ValueError, match="needs a loss for every task"):
        method.weigh_losses({"a": torch.tensor(1.0)}, 2)


def test_unknown_method_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        get_weighting("no_such_method")
    assert ", ".join(sorted(EXPECTED)) in str(info.value)
    with pytest.raises(ValueError, match="no_such_method"):
        build_weighting("no_such_method", TASKS)


def test_registration_rejects_duplicates_and_missing_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    class Duplicate(WeightingMethod):
        name = "equal"

    with pytest.raises(ValueError, match="already registered"):
        register_weighting(Duplicate)

    class Nameless(WeightingMethod):
        pass

    with pytest.raises(ValueError, match="name"):
        register_weighting(Nameless)

    @register_weighting
    class Custom(WeightingMethod):
        name = "custom_test_method"

    assert get_weighting("custom_test_method") is Custom
    assert register_weighting(Custom) is Custom  # re-registering the same class is harmless


def test_option_and_task_validation() -> None:
    with pytest.raises(TypeError, match=r"'dwa'.*temperature=2\.0.*window=100"):
        build_weighting("dwa", TASKS, temprature=1.0)
    with pytest.raises(TypeError, match=r"'equal'.*none"):
        build_weighting("equal", TASKS, alpha=1.0)
    with pytest.raises(ValueError, match="gamma"):
        build_weighting("static", TASKS, weights={"alpha": 1.0, "beta": 1.0})
    with pytest.raises(ValueError, match="weights"):
        build_weighting("static", TASKS)
    with pytest.raises(ValueError, match="normalization"):
        build_weighting("mgda", TASKS, normalization="l1")
    with pytest.raises(ValueError, match="duplicates"):
        build_weighting("equal", ("a", "a"))
    method = build_weighting("equal", TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        method.weigh_losses({"delta": torch.tensor(1.0)}, 0)
    with pytest.raises(NotImplementedError):
        method.combine_gradients(torch.zeros(3, 2), {t: torch.tensor(1.0) for t in TASKS}, 0)
    with pytest.raises(ValueError, match="shape"):
        build_weighting("pcgrad", TASKS).combine_gradients(torch.zeros(2, 4), {t: torch.tensor(1.0) for t in TASKS}, 0)


def test_static_and_equal_weights_on_task_subsets() -> None:
    static = build("static")
    total = static.weigh_losses({"beta": torch.tensor(4.0)}, 0)  # one task per step
    assert total.item() == pytest.approx(2.0)
    assert static.last_weights == {"alpha": 1.0, "beta": 0.5, "gamma": 2.0}
    equal = build("equal")
    assert equal.weigh_losses({t: torch.tensor(float(k)) for k, t in enumerate(TASKS)}, 0).item() == 3.0


def test_a_notebook_cell_run_twice_redefines_its_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    first = type("Mine", (WeightingMethod,), {"name": "mine_test", "__module__": "__main__"})
    second = type("Mine", (WeightingMethod,), {"name": "mine_test", "__module__": "__main__"})
    register_weighting(first)
    assert register_weighting(second) is second and get_weighting("mine_test") is second
    elsewhere = type("Mine", (WeightingMethod,), {"name": "mine_test", "__module__": "my_package.methods"})
    with pytest.raises(ValueError, match="already registered by __main__.Mine"):
        register_weighting(elsewhere)


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        (lambda n: torch.ones(n - 1), r"loss_weights must return a tensor of shape \[T=3\], got \(2,\)"),  # was an IndexError
        (lambda n: torch.ones(n + 2), r"shape \[T=3\], got \(5,\)"),  # trained silently on the first three
        (lambda n: [1.0] * n, r"shape \[T=3\], got list"),
    ],
)
def test_a_custom_method_returning_wrong_weights_is_named(monkeypatch: pytest.MonkeyPatch, returns, message) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_weighting
    class Wrong(WeightingMethod):
        name = "wrong_test"

        def loss_weights(self, losses, step):
            return returns(self.num_tasks)

    method = build_weighting("wrong_test", TASKS)
    with pytest.raises(ValueError, match=message):
        method.weigh_losses({t: torch.tensor(1.0, requires_grad=True) for t in TASKS}, 0)


def test_a_custom_gradient_method_is_told_what_to_implement_and_its_weights_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from hf_async_mtl.weighting import GradientWeightingMethod

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    flagged = type("Flagged", (WeightingMethod,), {"name": "flagged_test", "needs_task_gradients": True})
    losses = {t: torch.tensor(1.0) for t in TASKS}
    with pytest.raises(NotImplementedError, match="sets needs_task_gradients but implements no combine_gradients"):
        register_weighting(flagged)(TASKS).combine_gradients(torch.ones(3, 4), losses, 0)
    bare = type("Bare", (GradientWeightingMethod,), {"name": "bare_test"})
    with pytest.raises(NotImplementedError, match="implements gradient_weights"):
        register_weighting(bare)(TASKS).combine_gradients(torch.ones(3, 4), losses, 0)
    short = type(
        "Short", (GradientWeightingMethod,), {"name": "short_test", "gradient_weights": lambda self, gram, losses, step: torch.ones(2)}
    )
    with pytest.raises(ValueError, match=r"gradient_weights must return a tensor of shape \[T=3\], got \(2,\)"):
        register_weighting(short)(TASKS).combine_gradients(torch.ones(3, 4), losses, 0)
