"""Will training fit? A rough estimate of the memory a run needs, checked before anything is
allocated, so that a model or batch many times too large is refused with the numbers instead
of swapping the machine to a halt or dying in the allocator.

The estimate (bytes, per training process):

    states      = 16 x P          fp32 weights, gradients and AdamW's two moments (4 x 4 bytes)
    activations = b x T x (34 x L x d x e + 8 x V)

P parameters, b = batch_size (one micro-batch: accumulation does not add to it), T block_size,
L layers, d width, V vocabulary, e = 2 for fp32 activations and 1 for bf16/fp16. The 34 x L x
d term is what one transformer layer keeps for the backward pass at 16-bit precision
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"),
without the attention-score term, which PyTorch's fused attention does not store; 8 x V is
the fp32 logits and their gradient. It is an estimate: a run is refused only when it exceeds
the memory available, and the message says so.
"""

from __future__ import annotations

import os

import psutil
import torch

from gptforge.model.gpt import GPT
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.settings import ConfigError

GB = 1e9


def training_bytes(cfg: TrainConfig, precision: str) -> tuple[int, int, int]:
    """(parameters, bytes of weights + gradients + optimizer state, bytes of activations)."""
    model = cfg.model
    with torch.device("meta"):  # counts parameters without allocating them
        parameters = sum(p.numel() for p in GPT(model).parameters())
    per_element = 2 if precision == "fp32" else 1
    per_token = 34 * model.n_layer * model.n_embd * per_element + 8 * model.vocab_size
    return parameters, 16 * parameters, cfg.batch_size * model.block_size * per_token


def available_bytes(device: torch.device) -> int:
    """Free memory of the GPU this process will use, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))[0]
    return psutil.virtual_memory().available


def check_training_memory(cfg: TrainConfig, precision: str, device: torch.device) -> None:
    """Refuse a run whose estimate exceeds the available memory, naming the setting that
    dominates it (batch_size for activations, the model for its states)."""
    parameters, states, activations = training_bytes(cfg, precision)
    processes = 1 if device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    needed, free = (states + activations) * processes, available_bytes(device)
    if needed <= free:
        return
    shared = f" for {processes} processes" if processes > 1 else ""
    m = cfg.model
    detail = (
        f"training needs about {needed / GB:.1f} GB{shared} (weights, gradients and AdamW "
        f"state {states / GB:.1f} GB for {parameters / 1e6:,.1f} M parameters; activations "
        f"{activations / GB:.1f} GB for batch_size {cfg.batch_size} x block_size "
        f"{m.block_size}), more than the {free / GB:.1f} GB of {device.type} memory available"
    )
    if activations >= states:
        raise ConfigError("batch_size", f"{detail}; lower it (tokens_per_step keeps the step)")
    raise ConfigError(
        "model",
        f"n_layer={m.n_layer}, n_embd={m.n_embd}: {detail}; choose a smaller preset or overrides",
    )
