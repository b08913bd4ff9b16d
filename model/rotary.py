"""Rotary position embeddings (Su et al. 2021): queries and keys are rotated by an angle that
grows with their position, so attention scores depend on relative distance and no position
table is learned. Positions come from `kv_cache.positions`, so cached decoding and left
padding rotate each token exactly as a full forward pass does."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Rotary(nn.Module):
    """cos/sin tables for every position up to `block_size` (buffers, not weights: they are
    recomputed on construction and never saved)."""

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Tables for position ids (T,) or (B, T), shaped to broadcast over (B, H, T, D/2)."""
        cos, sin = self.cos[pos], self.sin[pos]
        if pos.dim() == 2:  # per-row positions (left padding): (B, 1, T, D/2)
            return cos.unsqueeze(1), sin.unsqueeze(1)
        return cos, sin


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs (x[..., i], x[..., i + D/2]) of x (B, H, T, D) by each position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
