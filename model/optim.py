"""Optimizers and learning-rate schedules of the two recipes: gpt2 (AdamW, warmup + cosine)
and modern (Muon + AdamW, warmup-stable-decay; `modern_off` may switch `muon` or `wsd` back to
gpt2's way). The training loop asks for one of each."""

from __future__ import annotations

import math

import torch

from gptforge.model.gpt import GPT
from gptforge.model.muon import MuonAdamW
from gptforge.model.precision import resolve_precision
from gptforge.model.train_config import TrainConfig

# modern: the learning rate falls to min_lr over this last share of the steps (nanochat's
# warmdown; modded-nanogpt's cooldown is of the same order).
DECAY_FRACTION = 0.4


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `learning_rate`, then (gpt2) cosine decay to `min_lr` at `max_steps`,
    or (modern) warmup-stable-decay: flat, then a straight line to `min_lr` over the last
    DECAY_FRACTION of the steps."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if cfg.model.uses("wsd"):
        start = decay_start(cfg.max_steps)
        progress = min(1.0, max(0.0, (step - start) / (cfg.max_steps - start)))
        return cfg.learning_rate + progress * (cfg.min_lr - cfg.learning_rate)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def decay_start(max_steps: int) -> int:
    """The step where warmup-stable-decay leaves its flat learning rate: DECAY_FRACTION of
    `max_steps` before the end (at least one step). Never decreases as `max_steps` grows."""
    return max_steps - max(1, round(DECAY_FRACTION * max_steps))


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """gpt2: AdamW with weight decay on matrices only: biases, norms and embeddings (1-D or
    the tied embedding) are not decayed, as in nanoGPT. modern: `modern_optimizer`."""
    if cfg.model.recipe == "modern":
        return modern_optimizer(model, cfg, device)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        embedding = name.startswith(("transformer.wte", "transformer.wpe"))
        (decay if param.dim() >= 2 and not embedding else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        fused=device.type in ("cuda", "cpu"),
    )


# modern: each group's learning rate as a multiple of `learning_rate` (nanochat's values at the
# default 1e-3: Muon 0.02, head 0.004, embedding 0.2), AdamW's scaled by 1/sqrt(n_embd / 768).
MODERN_LR_SCALE = {"matrices": 20.0, "head": 4.0, "embedding": 200.0, "gains": 1.0}


def modern_optimizer(
    model: GPT, cfg: TrainConfig, device: torch.device
) -> MuonAdamW | torch.optim.AdamW:
    """Muon for the blocks' matrices (the fused query/key/value one as three), AdamW for the
    embedding, the head and 1-D parameters, none of them decayed (as in modded-nanogpt).
    Newton-Schulz runs in bf16 only where training does (native bf16); else in fp32.

    The head's and embedding's multiples are sized for modern's initial scales, so with
    `zero_init` off (gpt2's init) they train at 1x. With `muon` off the blocks' matrices go
    to AdamW as in gpt2 (1x, `weight_decay`) and the whole optimizer is torch's AdamW."""
    config = model.config
    scale, width = dict(MODERN_LR_SCALE), (config.n_embd / 768) ** -0.5
    if not config.uses("zero_init"):  # gpt2's scales: the head and embedding at gpt2's 1x
        scale |= {"head": 1.0, "embedding": 1.0}
        width = 1.0
    head = model.lm_head.weight  # also the token embedding when tied (untied_head off)
    lookups = [model.transformer[n].weight for n in ("wte", "wpe") if n in model.transformer]
    embeddings = [weight for weight in lookups if weight is not head]
    matrices, qkv, gains = [], [], []
    for name, param in model.named_parameters():
        if param is head or any(param is e for e in embeddings):
            continue
        if not name.startswith("transformer.h.") or param.dim() != 2:
            gains.append(param)
        else:
            (qkv if name.endswith("attn.c_attn.weight") else matrices).append(param)
    adamw = [
        {"kind": "adamw", "params": [head], "lr_scale": scale["head"] * width},
        {"kind": "adamw", "params": embeddings, "lr_scale": scale["embedding"] * width},
        {"kind": "adamw", "params": gains, "lr_scale": scale["gains"]},
    ]
    if not config.uses("muon"):
        hidden = {"params": matrices + qkv, "lr_scale": 1.0, "weight_decay": cfg.weight_decay}
        groups = [g | {"weight_decay": 0.0} for g in adamw if g["params"]]
        return torch.optim.AdamW(
            [hidden, *groups],
            lr=cfg.learning_rate,
            betas=(cfg.beta1, cfg.beta2),
            fused=device.type in ("cuda", "cpu"),
        )
    muon = [
        {"kind": "muon", "params": matrices, "lr_scale": scale["matrices"], "split": 1},
        {"kind": "muon", "params": qkv, "lr_scale": scale["matrices"], "split": 3},
    ]
    precision = resolve_precision(cfg.precision, device)
    return MuonAdamW(
        [g for g in muon + adamw if g["params"]],
        betas=(cfg.beta1, cfg.beta2),
        ns_dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate, times each group's `lr_scale` (modern's groups differ)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
