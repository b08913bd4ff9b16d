"""Muon for the hidden matrices, AdamW for the rest, as one optimizer (one state dict to save
and resume, one set of param groups for the learning-rate schedule).

Muon (Keller Jordan, 2024; modded-nanogpt, nanochat) replaces each matrix's momentum by its
nearest semi-orthogonal matrix (a Newton-Schulz iteration), so every direction of the update
moves by about the same amount. Embeddings, the head and 1-D parameters stay with AdamW.

`torch.optim.Muon` (torch 2.9+) always iterates in bf16, which CPUs without native bf16
emulate tens of times slower than fp32; here the iteration's dtype is a parameter (train.py
passes bf16 only when training itself runs in native bf16). A group with `split: k` holds
matrices of k stacked blocks (the fused query/key/value projection): each block is
orthogonalised on its own, as if they were separate matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

# The quintic iteration's coefficients, tuned for the steepest slope at zero (Keller Jordan).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(g: Tensor, dtype: torch.dtype, steps: int = NS_STEPS) -> Tensor:
    """About U V^T for g = U S V^T (..., rows, cols), by Newton-Schulz in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Param groups carry `kind` ("muon" or "adamw"); `lr` is set by the training loop.

    Muon: Nesterov momentum, orthogonalised, scaled by sqrt(max(1, rows/cols)) so tall and
    wide matrices change their outputs alike. AdamW: decoupled weight decay, as torch's.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        *,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        ns_dtype: torch.dtype = torch.float32,
    ):
        defaults = dict(lr=0.0, weight_decay=0.0, momentum=momentum, betas=betas, eps=eps, split=1)
        super().__init__(list(groups), defaults)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["kind"] == "muon":
                    self._muon(p, group)
                else:
                    self._adamw(p, group)

    def _muon(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf, momentum = state["momentum_buffer"], group["momentum"]
        buf.lerp_(p.grad, 1 - momentum)
        g = p.grad.lerp(buf, momentum)  # Nesterov
        blocks = g.view(group["split"], -1, g.size(-1))
        update = orthogonalize(blocks, self.ns_dtype).view_as(p)
        scale = max(1.0, blocks.size(-2) / blocks.size(-1)) ** 0.5
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"] * scale)

    def _adamw(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(p.grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(exp_avg, denom, value=-group["lr"] / (1 - beta1**step))
