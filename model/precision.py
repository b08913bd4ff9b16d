"""fp32, bf16 or fp16 training: the autocast context, the GradScaler, and what `auto` means."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch

from gptforge.model.train_config import PRECISIONS
from gptforge.pipeline.config import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes bf16 wherever the hardware runs it natively (tensor cores; on CPU,
    oneDNN's AVX-512 BF16 / AMX), else fp32: emulated bf16 matmuls run tens of times slower
    than fp32 (docs/benchmarks.md). fp16 is refused on CPU, where there is no GradScaler path."""
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision in ("auto", "bf16") and native_bf16:
            return "bf16"
        if precision == "bf16":
            raise ConfigError("precision", "bf16 is not supported by this GPU; use fp16 or fp32")
        return "fp32" if precision == "auto" else precision
    if precision == "fp16":
        raise ConfigError(
            "precision", "fp16 needs a CUDA device (loss scaling); on CPU use bf16 or fp32"
        )
    match_openmp_limit()
    if precision == "auto":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return precision


def match_openmp_limit() -> None:
    """Run torch on no more threads than OpenMP will give it (`OMP_THREAD_LIMIT`).

    torch sizes its CPU thread pool from the cores, not from this limit, and with fewer OpenMP
    threads than it planned for, oneDNN's matmuls return garbage (torch 2.13: bf16 on an AMX
    CPU, `(a.bfloat16() @ b.bfloat16())` off by 30 where the right error is 0.1, training went
    NaN within ten steps; fp32 over oneDNN-packed decode weights, NaN or 1e29 on an AMD EPYC).
    MKL's fp32 is unaffected, but fewer threads than planned is never faster. Training and
    every generation job call this."""
    limit = os.environ.get("OMP_THREAD_LIMIT", "")
    if limit.isdigit() and 0 < int(limit) < torch.get_num_threads():
        torch.set_num_threads(int(limit))


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """Matmuls in low precision, weights and optimizer state stay fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
