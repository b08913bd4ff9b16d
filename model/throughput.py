"""Model FLOPs utilisation: achieved training FLOP/s over the hardware's stated peak."""

from __future__ import annotations

import torch

# Measured on the 2-core CI machine (docs/benchmarks.md): dense matmul, per thread.
CPU_PEAK_PER_THREAD = {"fp32": 0.15e12, "bf16": 0.925e12}
# Vendor dense peaks (no sparsity); fp32 means TF32 tensor cores.
GPU_PEAKS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The peak MFU is measured against, or None for hardware we have no figure for."""
    if device.type == "cpu":
        return CPU_PEAK_PER_THREAD[precision] * torch.get_num_threads()
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return peaks[precision]
    return None
