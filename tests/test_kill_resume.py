"""A run killed with SIGKILL resumes from its last complete checkpoint and ends where the uninterrupted run ends.

With options whose structure lives in the checkpoint (unshared top layers, a bi-encoder pair task): the command
line in a child process is killed mid-training, resumed in-process from its last complete checkpoint, and its
final weights compared with an uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

import run_glue_mtl
from hf_async_mtl import MultiTaskModel
from hf_async_mtl.state import last_complete_checkpoint
from tests.conftest import REPO_ROOT
from tests.test_cli import tiny_glue5

STEPS, SAVE_EVERY, KILL_AT = 8, 2, 4


def _argv(glue, checkpoint, out):
    return [
        "--model_name_or_path", checkpoint, "--tasks", "sst2,stsb", "--glue_dir", str(glue), "--output_dir", str(out),
        "--unshared_layers", "1", "--bi_encoder_tasks", "stsb",
        "--max_steps", str(STEPS), "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--learning_rate", "1e-3",
        "--save_strategy", "steps", "--save_steps", str(SAVE_EVERY), "--eval_strategy", "no", "--logging_steps", "4",
        "--selection_split_fraction", "0.25", "--seed", "3", "--use_cpu", "--disable_tqdm", "true", "--do_train",
    ]  # fmt: skip


def test_sigkill_mid_training_then_resume_equals_the_uninterrupted_run(tmp_path, tiny_checkpoint):
    glue = tiny_glue5(tmp_path / "glue", rows=32)
    killed = tmp_path / "killed"
    ready = tmp_path / "ready"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(KILL_AT=str(KILL_AT), KILL_READY=str(ready))
    child = subprocess.Popen(
        [sys.executable, os.path.join("tests", "kill_target.py"), *_argv(glue, tiny_checkpoint, killed)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240  # the child waits at step KILL_AT (tests/kill_target.py) until it is killed
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None and ready.exists(), f"the run did not reach step {KILL_AT}: {child.stderr.read().decode()[-2000:]}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()  # killed before the end

    last = last_complete_checkpoint(str(killed))
    assert last.endswith(f"checkpoint-{KILL_AT}")
    run_glue_mtl.main([*_argv(glue, tiny_checkpoint, killed), "--resume_from_checkpoint", last])
    run_glue_mtl.main(_argv(glue, tiny_checkpoint, tmp_path / "whole"))
    resumed = MultiTaskModel.from_pretrained(killed).state_dict()
    whole = MultiTaskModel.from_pretrained(tmp_path / "whole").state_dict()
    assert sorted(resumed) == sorted(whole) and any(".unshared." in name for name in whole)
    for name, value in whole.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), name
