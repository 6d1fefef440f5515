"""The declared regime-search profiles (benchmarks/regime_search.md) and the benchmark-side cap."""

import datasets

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

    assert set(ITEM3_PROFILES) == {f"{name}_kd" for name in REGIME_ORDER}
    for name in REGIME_ORDER:
        extra = {k: v for k, v in ITEM3_PROFILES[f"{name}_kd"].items() if REGIME_PROFILES[name].get(k) != v}
        assert extra == {"calibration_bins": 15, "item3": True}  # evaluation only: the candidate's training exactly
    runs = all_runs_item3()
    assert runs[:ITEM3_SEEDS] == [("equal", seed) for seed in range(ITEM3_SEEDS)]
    assert sorted(runs) == sorted((m, s) for m in ITEM3_ORDER for s in range(ITEM3_SEEDS)) and len(set(runs)) == len(runs)
    assert V2_METHODS["async_kd_fw"]["kd_require_decline"] is False and V2_METHODS["async_kd_decl"]["kd_require_decline"] is True
