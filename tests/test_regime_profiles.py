"""The declared regime-search profiles (benchmarks/regime_search.md) and the benchmark-side cap."""

import datasets
import pytest

from benchmarks.glue5_quality import (
    _MINILM_V2,
    PROFILES,
    REGIME_ORDER,
    REGIME_PROFILES,
    capped,
)


def test_capped_is_a_seeded_subset_in_dataset_order_and_a_no_op_without_a_cap():
    data = datasets.Dataset.from_dict({"x": list(range(50))})
    assert capped(data, None, 42) is data and capped(data, 50, 42) is data and capped(data, 80, 42) is data
    subset = capped(data, 10, 42)["x"]
    assert len(subset) == 10 and len(set(subset)) == 10 and subset == sorted(subset)
    assert subset == capped(data, 10, 42)["x"] and subset != capped(data, 10, 7)["x"]


def test_existing_v2_profiles_keep_their_keys_and_regimes_derive_from_v2():
    for name in ("minilm", "minilm_linear", "minilm_t2"):
        assert "bf16" not in PROFILES[name] and "selection_fraction" not in PROFILES[name]
        assert PROFILES[name]["caps"] == {}
    assert PROFILES["minilm"] == _MINILM_V2
    assert REGIME_ORDER[0] == "regime_cap" and len(REGIME_ORDER) == len(REGIME_PROFILES) == 7
    for name in REGIME_ORDER:
        profile = PROFILES[name]
        assert profile["bf16"] is True and profile["version"] == 2
        assert set(_MINILM_V2) <= set(profile)
        assert "sst2" not in profile["caps"]  # SST-2 keeps its size


def test_item3_profiles_are_the_candidates_plus_calibration_and_run_every_equal_seed_first():
    from benchmarks.glue5_quality import ITEM3_ORDER, ITEM3_PROFILES, ITEM3_SEEDS, V2_METHODS, all_runs_item3

    assert set(ITEM3_PROFILES) == {f"{name}_kd" for name in REGIME_ORDER} | {"minilm_kd"}
    v2 = {k: v for k, v in ITEM3_PROFILES["minilm_kd"].items() if _MINILM_V2.get(k) != v}
    assert v2 == {"bf16": True, "calibration_bins": 15, "item3": True, "item3_arms": ("equal", "async_kd_fw", "async_kd_decl")}
    assert all_runs_item3(v2["item3_arms"])[5:8] == [("async_kd_fw", 0), ("async_kd_decl", 0), ("async_kd_fw", 1)]
    for name in REGIME_ORDER:
        extra = {k: v for k, v in ITEM3_PROFILES[f"{name}_kd"].items() if REGIME_PROFILES[name].get(k) != v}
        assert extra == {"calibration_bins": 15, "item3": True}  # evaluation only: the candidate's training exactly
    runs = all_runs_item3()
    assert runs[:ITEM3_SEEDS] == [("equal", seed) for seed in range(ITEM3_SEEDS)]
    assert sorted(runs) == sorted((m, s) for m in ITEM3_ORDER for s in range(ITEM3_SEEDS)) and len(set(runs)) == len(runs)
    assert V2_METHODS["async_kd_fw"]["kd_require_decline"] is False and V2_METHODS["async_kd_decl"]["kd_require_decline"] is True


@pytest.mark.parametrize(
    "profile,method",
    [("minilm", "async_kd_fw"), ("regime_cap_long_kd", "async_kd_decl"), ("regime_cap_t2_long_kd", "uncertainty"), ("minilm", "imtl_g")],
)
def test_the_main_job_command_trains_a_benchmark_entry_exactly(profile, method, tmp_path):
    """`main_job_argv` parsed by run_glue_mtl gives the training options, data and model the benchmark run has."""
    import dataclasses

    from benchmarks.glue5_quality import main_job_argv, v2_training_options
    from cli.arguments import parse_args
    from hf_async_mtl import MultiTaskTrainingArguments

    argv = main_job_argv(profile, method, 3, str(tmp_path / "out"))
    model_args, data_args, cli_args = parse_args(argv)
    bench = MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, **v2_training_options(profile, method, 3))
    # what only the command does: evaluate and save at the end, show progress bars; the device is the machine's
    only_cli = {"do_train", "do_eval", "disable_tqdm", "use_cpu", "logging_dir"}
    differing = {
        f.name: (getattr(cli_args, f.name), getattr(bench, f.name))
        for f in dataclasses.fields(MultiTaskTrainingArguments)
        if f.init and f.name not in only_cli and getattr(cli_args, f.name) != getattr(bench, f.name)
    }
    assert differing == {}
    settings = PROFILES[profile]
    assert model_args.model_name_or_path == settings["model"]
    assert data_args.tasks == "cola,sst2,mrpc,stsb,rte" and data_args.dev_curves and data_args.split_seed == 42
    assert data_args.max_seq_length == settings["max_seq_length"] and data_args.selection_split_max == settings["selection_max"]
    assert data_args.selection_split_fraction == settings.get("selection_fraction", 0.1)
    assert data_args.per_task_caps == (settings["caps"] or None) or (data_args.per_task_caps or {}) == settings["caps"]
    assert cli_args.seed == 3 and bench.max_steps == settings["max_steps"] // (5 if method == "imtl_g" else 1)


def test_the_main_job_command_builds_the_benchmark_model(tmp_path):
    import torch
    from transformers import set_seed

    from benchmarks.glue5_quality import main_job_argv
    from cli.arguments import parse_args
    from glue_tasks import get_glue_task
    from hf_async_mtl import MultiTaskModel
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from run_glue_mtl import build_model

    model_args, _, _ = parse_args(main_job_argv("regime_cap_long_kd", "async_kd_decl", 0, str(tmp_path / "out")))
    specs = [get_glue_task(t) for t in ("cola", "stsb")]
    set_seed(0)
    cli_model = build_model(model_args, specs)
    set_seed(0)
    bench_model = MultiTaskModel.from_encoder(resolve_checkpoint(PROFILES["regime_cap_long_kd"]["model"]), specs)  # as run_one_v2
    assert cli_model.config.to_dict() == bench_model.config.to_dict()
    bench_state = bench_model.state_dict()
    assert all(torch.equal(value, bench_state[name]) for name, value in cli_model.state_dict().items())


def test_the_main_job_command_reads_the_benchmark_data_of_a_capped_profile(tmp_path):
    """The selection split carved from the full training set, then the in-order seeded cap: the same rows as
    run_one_v2 (MRPC and RTE of a capped profile; the other tasks go through the same code)."""
    from transformers import AutoTokenizer

    from benchmarks.glue5_quality import capped, main_job_argv
    from cli.arguments import parse_args
    from glue_tasks import GlueTsvSource, get_glue_task
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.data import build_task_datasets
    from run_glue_mtl import data_options
    from tests.conftest import GLUE_DIR

    profile = PROFILES["regime_tight_cap_kd"]
    _, data_args, training_args = parse_args(main_job_argv("regime_tight_cap_kd", "equal", 4, str(tmp_path / "out")))
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(profile["model"]))
    sources = [(get_glue_task(t), GlueTsvSource(t, GLUE_DIR)) for t in ("mrpc", "rte")]
    cli = build_task_datasets(sources, tokenizer, data_args.max_seq_length, with_dev=False, **data_options(data_args, training_args))
    bench = build_task_datasets(  # run_one_v2's data_options
        sources,
        tokenizer,
        profile["max_seq_length"],
        with_dev=False,
        caps=profile["caps"],
        seed=42,
        selection_fraction=profile["selection_fraction"],
        selection_max=profile["selection_max"],
        carve_before_cap=True,
        subsample=capped,
    )
    for task in ("mrpc", "rte"):
        assert cli.train_sizes[task] == bench.train_sizes[task] == profile["caps"][task]
        assert cli.selection_records[task]["selection_rows_sha256"] == bench.selection_records[task]["selection_rows_sha256"]
        assert cli.train[task]["input_ids"] == bench.train[task]["input_ids"] and cli.train[task]["labels"] == bench.train[task]["labels"]
