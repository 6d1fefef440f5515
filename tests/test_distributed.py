"""Two processes (torchrun, gloo on CPU) vs one process at the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_run.py")


METHODS = (
    "async_kd",
    "async_kd_on_demand",
    "async_kd_prompts",
    "pcgrad",
    "famo",
    "unshared_pcgrad",
    "adapters_async_kd",
    "bi_encoder_async_kd",
    "stream_async_kd",
)
# META-TARTAN draws its dev batches per rank (more held-out data per step), so it matches itself across ranks,
# not the one-process run.
# fsdp_<method>: 20 steps; with 2 processes the model is sharded by FSDP2 (accelerate's FSDP plugin, gloo on CPU),
# with 1 it is the plain reference. Last in the launch: each resets accelerate's state for its own Accelerator.
# One run covers a loss-weighting method with parameters of its own (uncertainty) and async-KD, another the same with
# the sentiment task streamed and distilled by the online teacher; both resume from their step-10 checkpoint.
FSDP_METHODS = ("fsdp_uncertainty_async_kd", "fsdp_stream_uncertainty_async_kd")
LAUNCHED = (*METHODS, "meta_tartan", *FSDP_METHODS)
# zero<N>_<method>: the same under DeepSpeed ZeRO stage N (all tasks in every step), in a launch of their own (DeepSpeed
# sets up accelerate's process state its own way), where DeepSpeed is installed: ZeRO-2 with uncertainty and
# async-KD, ZeRO-3 with uncertainty (async-KD is refused under ZeRO-3).
DEEPSPEED_METHODS = ("zero2_uncertainty_async_kd", "zero3_uncertainty")


def _launch(out, processes, methods=LAUNCHED):
    """Every method in one launch (1 process, or torchrun with 2): the imports and the rendezvous are paid once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    if processes == 1:
        command = [sys.executable, SCRIPT, str(out), ",".join(methods), "8"]
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
        command = [torchrun, "--standalone", "--nproc_per_node", str(processes), SCRIPT, str(out), ",".join(methods), str(8 // processes)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _launch_both(root, methods=LAUNCHED):
    """Both launches at once: each is mostly imports and rendezvous, so they overlap well on two cores."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        one = pool.submit(_launch, root / "one", 1, methods)
        _launch(root / "two", 2, methods)
        one.result()
    return root


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    return _launch_both(tmp_path_factory.mktemp("distributed"))


@pytest.fixture(scope="module")
def deepspeed_launches(tmp_path_factory):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional engine: pip install deepspeed (docs/multi_process.md)")
    return _launch_both(tmp_path_factory.mktemp("deepspeed"), DEEPSPEED_METHODS)


def _read(root, name, method, processes):
    out = root / name / method
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return out, ranks, torch.load(out / "params.pt", weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_one_at_the_same_global_batch(launches, method):
    _, single, single_params = _read(launches, "one", method, 1)
    out, double, double_params = _read(launches, "two", method, 2)
    assert double[0]["world_size"] == 2
    for name, value in single_params.items():
        assert torch.allclose(value, double_params[name], atol=2e-4), name
    # Evaluation is gathered over the full validation sets (no duplicates from uneven shards: 40 = 7·5 + 5).
    for key, value in single[0]["metrics"].items():
        if key.startswith("eval_") and not key.endswith(("runtime", "per_second")):
            # Losses too are means over the gathered examples (not of per-batch means, which 2 shards batch differently).
            assert double[0]["metrics"][key] == pytest.approx(value, abs=2e-3), key
            assert double[1]["metrics"][key] == pytest.approx(double[0]["metrics"][key], abs=1e-6), key
    # The checkpoint is written once, by the main process.
    assert sorted(os.listdir(out)).count("checkpoint-12") == 1
    if method == "stream_async_kd":  # the streamed task distilled online on both ranks, as in one process
        assert single[0]["soft_labels"].get("sentiment") == "online"
        assert double[0]["soft_labels"] == double[1]["soft_labels"] == single[0]["soft_labels"]
    if method == "async_kd_prompts":  # kd_noise="bootstrap": both ranks resample the gathered predictions, as one process
        from hf_async_mtl.async_kd.bootstrap import _decode

        one, (first, second) = single[0]["bootstrap"], (double[0]["bootstrap"], double[1]["bootstrap"])
        assert first == second and set(one["recent"]) == {"sentiment", "similarity"}
        for task, history in one["recent"].items():
            assert history and [step for step, _ in history] == [step for step, _ in first["recent"][task]]
            for (_, a), (_, b) in zip(history, first["recent"][task]):
                assert torch.allclose(torch.from_numpy(_decode(a)), torch.from_numpy(_decode(b)), atol=2e-3)
    if method in ("async_kd", "async_kd_prompts"):
        assert double[0]["soft_labels"] and double[0]["soft_labels"] == double[1]["soft_labels"]
        for task, rows in single[0]["soft_labels"].items():
            assert torch.allclose(torch.tensor(rows), torch.tensor(double[0]["soft_labels"][task]), atol=2e-4)
    if method == "async_kd_on_demand":
        # Each rank labelled the rows its own batches drew; where a row is known, it matches one process.
        for task, rows in single[0]["soft_labels"].items():
            reference = torch.tensor([[float("nan") if x is None else x for x in row] for row in rows])
            labelled = [torch.tensor([[float("nan") if x is None else x for x in row] for row in r["soft_labels"][task]]) for r in double]
            known = [~torch.isnan(t[:, 0]) for t in labelled]
            assert all(k.any() for k in known) and not (known[0] & known[1]).all()
            for table, mask in zip(labelled, known):
                assert torch.allclose(table[mask], reference[mask], atol=2e-4)


def test_meta_tartan_under_two_processes_keeps_every_rank_identical(launches):
    """Task gradients, dev gradient and dev-head gradients are averaged across ranks: both ranks hold the same
    model, dev heads and logits after training, and the logits moved."""
    _, single, _ = _read(launches, "one", "meta_tartan", 1)
    out, double, _ = _read(launches, "two", "meta_tartan", 2)
    assert double[0]["world_size"] == 2
    assert double[0]["state_digest"] == double[1]["state_digest"]
    assert double[0]["weights"] == double[1]["weights"]
    for ranks in (single, double):
        weights = ranks[0]["weights"]
        assert len(weights) == 2 and sum(weights) == pytest.approx(2.0) and abs(weights[0] - 1.0) > 1e-4
    assert sorted(os.listdir(out)).count("checkpoint-12") == 1


def _check_sharded_run(root, method, engine, fraction):
    """Two sharded processes train what one process trains: every logged value of the first 20 steps (loss, per-task
    losses, uncertainty's weights) within float tolerance, the same parameters; with async-KD, the same soft labels."""
    _, single, single_params = _read(root, "one", method, 1)
    out, double, double_params = _read(root, "two", method, 2)
    # Really sharded: the engine on both ranks, each holding `fraction` of the parameters' elements.
    assert [r["engine"] for r in (*single, *double)] == [None, engine, engine]
    assert all(r["local_parameter_fraction"] == pytest.approx(fraction, abs=0.1) for r in double), [
        r["local_parameter_fraction"] for r in double
    ]
    reference, sharded = single[0]["steps"], double[0]["steps"]
    assert len(reference) == len(sharded) == 20
    for step, (one, two) in enumerate(zip(reference, sharded), start=1):
        assert one.keys() == two.keys(), step
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    for name, value in single_params.items():
        assert torch.allclose(value, double_params[name], atol=2e-4), name
    assert double[0]["state_digest"] == double[1]["state_digest"]
    assert sorted(os.listdir(out)).count("checkpoint-20") == 1
    # Uncertainty's log-variances trained (weights moved off 1) in their own optimizer, saved beside the engine's.
    assert abs(reference[-1]["train_weight_similarity"] - 1.0) > 1e-3
    assert (out / "checkpoint-20" / "weighting_optimizer.pt").is_file()
    if method.endswith("_async_kd"):
        # Both tasks converged at step 10 and distilled for 10 steps, from soft labels of every row as in one process.
        assert set(double[0]["soft_labels"]) == {"sentiment", "similarity"}
        assert double[0]["soft_labels"] == double[1]["soft_labels"]
        for task, rows in single[0]["soft_labels"].items():
            if rows == "online":  # a streamed task: labelled batch by batch, no table
                assert double[0]["soft_labels"][task] == "online"
                continue
            assert None not in sum(double[0]["soft_labels"][task], [])
            assert torch.allclose(torch.tensor(rows), torch.tensor(double[0]["soft_labels"][task]), atol=1e-5)
    if engine == "fsdp":  # resumed at step 10 from the sharded checkpoint: steps 11-20 as uninterrupted, on every rank
        resumed = [json.loads((out / f"rank{r}_resumed.json").read_text()) for r in range(2)]
        assert resumed[0]["state_digest"] == resumed[1]["state_digest"] == double[0]["state_digest"]
        assert len(resumed[0]["steps"]) == 20  # the checkpoint's log history, then its own 10 steps
        for step, (one, two) in enumerate(zip(sharded[10:], resumed[0]["steps"][10:]), start=11):
            assert one.keys() == two.keys(), step
            for key, value in one.items():
                assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)


@pytest.mark.parametrize("method", FSDP_METHODS)
def test_fsdp_two_processes_match_one_on_the_losses_of_20_steps(launches, method):
    """FSDP2 over two CPU processes, uncertainty weighting with async-KD: as one process (`_check_sharded_run`)."""
    _check_sharded_run(launches, method, "fsdp", 0.5)


@pytest.mark.parametrize("method", DEEPSPEED_METHODS)
def test_deepspeed_two_processes_match_one_on_the_losses_of_20_steps(deepspeed_launches, method):
    """DeepSpeed ZeRO-2 (uncertainty with async-KD) and ZeRO-3 (uncertainty) over two CPU processes: as one process.
    ZeRO-2 partitions gradients and optimizer state, not parameters; ZeRO-3 the parameters too."""
    _check_sharded_run(deepspeed_launches, method, "deepspeed", 0.5 if method.startswith("zero3") else 1.0)
