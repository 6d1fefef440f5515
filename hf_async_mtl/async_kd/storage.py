"""Files of asynchronous convergence: atomic safetensors writes and training-set fingerprints."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import save_file


def dataset_fingerprint(input_ids: Sequence[Sequence[int]]) -> str:
    """SHA-256 hex digest of every example's token ids, in order.

    Each example is length-prefixed, so ``[[1, 2], [3]]`` and ``[[1], [2, 3]]`` differ; ids are
    hashed as little-endian int64 so lists, numpy arrays and CPU tensors give the same digest.
    """
    digest = hashlib.sha256(b"hf_async_mtl.dataset_fingerprint.v1")
    for index, example in enumerate(input_ids):
        ids = np.asarray(example)
        if ids.ndim != 1:
            raise ValueError(f"Example {index}: token ids must be one-dimensional, got shape {ids.shape}.")
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"Example {index}: token ids must be integers, got dtype {ids.dtype}.")
        digest.update(np.int64(ids.size).astype("<i8").tobytes())
        digest.update(ids.astype("<i8", copy=False).tobytes())
    return digest.hexdigest()


def save_safetensors_atomic(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file so that `path` either holds the complete file or is untouched.

    The data goes to a temporary file in the same directory (same filesystem, so ``os.replace`` is
    atomic), which is fsynced and then renamed over `path`; on any error the temporary is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path, metadata=dict(metadata or {}))
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
