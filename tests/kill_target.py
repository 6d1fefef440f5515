"""Launched by tests/test_kill_resume.py: `run_glue_mtl.main(argv)` that stops at a known point to be killed.

When checkpoint `KILL_AT` is complete (its completeness marker written), it touches `KILL_READY` and sleeps: the
test then sends SIGKILL, so the process dies mid-training at a known step rather than wherever a timer lands.
"""

from __future__ import annotations

import os
import sys
import time

from hf_async_mtl.state import CheckpointCompletion

_on_save = CheckpointCompletion.on_save


def _on_save_then_wait(self, args, state, control, **kwargs):
    result = _on_save(self, args, state, control, **kwargs)
    if state.global_step == int(os.environ["KILL_AT"]):
        with open(os.environ["KILL_READY"], "w", encoding="utf-8"):
            pass
        time.sleep(600)
    return result


CheckpointCompletion.on_save = _on_save_then_wait  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import run_glue_mtl

    run_glue_mtl.main(sys.argv[1:])
