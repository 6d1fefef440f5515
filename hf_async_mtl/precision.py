"""Whether bf16 autocast pays on this CPU: the check behind the warning `MultiTaskTrainingArguments` gives for `--bf16`
on a CPU that lacks native bf16 kernels."""

from __future__ import annotations

import torch

# benchmarks/results/speed/cpu_bf16.md: one training step of all-MiniLM-L6-v2 (batch 32, 64 and 128 tokens) under bf16
# autocast on an AVX2-only AMD EPYC took 23.4 and 23.6 times its fp32 time (medians of 6 steps each).
MEASURED_SLOWDOWN = "took 23 times as long as in fp32 on an AVX2-only AMD EPYC"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 and up: AVX512-BF16, AMX). Without them torch runs bf16
    matmuls on a slow fallback. False where torch was built without oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_warning(bf16: bool, device_type: str) -> str | None:
    """The warning for bf16 autocast on a CPU without native bf16 kernels; None when it does not apply."""
    if not bf16 or device_type != "cpu" or cpu_has_native_bf16():
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"bf16=True on a CPU without native bf16 kernels (torch sees {capability}; oneDNN's bf16 needs AVX-512, "
        f'AVX512-BF16 or AMX): a training step under bf16 autocast {MEASURED_SLOWDOWN}. Drop --bf16 on this machine ("bf16": false in a JSON config).'
    )
