"""Model FLOPs utilisation: achieved training FLOP/s over the hardware's stated peak."""

from __future__ import annotations

import torch

# Dense matmul per thread, measured by tests/perf/bench_train.py (docs/benchmarks.md): fp32 on
# the 2-core CI machine (AMD EPYC, AVX2); bf16 on a CPU where oneDNN runs it natively
# (AVX-512 BF16 / AMX). Emulated bf16 has no meaningful peak: MFU is not reported for it.
CPU_PEAK_PER_THREAD = {"fp32": 0.06e12, "bf16": 0.925e12}
# Vendor dense peaks (no sparsity). fp32 is the plain FP32 rate: training does not enable TF32.
GPU_PEAKS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The peak MFU is measured against, or None for hardware we have no figure for."""
    if device.type == "cpu":
        if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
        return CPU_PEAK_PER_THREAD[precision] * torch.get_num_threads()
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return peaks[precision]
    return None
