"""The single-task arm of the one-encoder benchmark means what a `run_glue` user gets.

One task with the checkpoint's native head (pooler pooling → dropout → linear, as `BertForSequenceClassification`),
dropout off and the same batches in the same order trains to the same losses and parameters as
`AutoModelForSequenceClassification` + a plain `transformers.Trainer`.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, tokenize_task
from tests.conftest import SENTIMENT, sentiment_rows
from tests.test_trainer import make_args

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
SCHEDULE = {
    "max_steps": 8,
    "learning_rate": 2e-3,
    "weight_decay": 0.01,
    "warmup_steps": 2,
    "lr_scheduler_type": "linear",
    "max_grad_norm": 1.0,
    "per_device_train_batch_size": 8,
    "seed": 3,
}


class _InOrder(Trainer):
    """The plain Trainer fed the multi-task run's batches: the examples in the order that run drew them."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def _loss_history(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_one_task_with_the_native_head_trains_like_plain_transformers(tmp_path, tokenizer, tiny_checkpoint):
    data = tokenize_task(SENTIMENT, sentiment_rows(64, 1), tokenizer, 0, max_seq_length=32)
    torch.manual_seed(0)
    ours = MultiTaskModel.from_encoder(tiny_checkpoint, [SENTIMENT], pooling="pooler", classifier_dropout=0.0, **NO_DROPOUT)
    native = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2, classifier_dropout=0.0, **NO_DROPOUT)
    native.classifier.load_state_dict(ours.heads["sentiment"].state_dict())  # the same initial head

    trainer = MultiTaskTrainer(
        model=ours,
        args=make_args(tmp_path / "ours", logging_steps=1, sampling_strategy="round_robin", **SCHEDULE),
        task_specs=[SENTIMENT],
        train_dataset={"sentiment": data},
        processing_class=tokenizer,
    )
    order = [int(i) for batch in trainer.get_train_dataloader() for i in batch["example_ids"]][: 8 * SCHEDULE["max_steps"]]
    trainer.train()

    plain_data = data.select(order).remove_columns(["idx", "task_ids"])
    plain = _InOrder(
        model=native,
        args=TrainingArguments(
            output_dir=str(tmp_path / "plain"),
            logging_steps=1,
            use_cpu=True,
            disable_tqdm=True,
            save_strategy="no",
            report_to=[],
            dataloader_pin_memory=False,
            **SCHEDULE,
        ),
        train_dataset=plain_data,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    plain.train()

    ours_losses, plain_losses = _loss_history(trainer), _loss_history(plain)
    assert len(ours_losses) == len(plain_losses) == SCHEDULE["max_steps"]
    # The Trainer logs losses rounded to 4 digits; the parameters below are compared at float tolerance.
    assert ours_losses == pytest.approx(plain_losses, abs=2e-4)
    assert ours_losses[0] != ours_losses[-1]  # it trained
    native_state = native.state_dict()
    for name, value in ours.encoder.state_dict().items():
        assert torch.allclose(value, native_state[f"bert.{name}"], atol=1e-5), name
    assert torch.allclose(ours.heads["sentiment"].weight, native.classifier.weight, atol=1e-5)
