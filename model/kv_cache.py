"""Preallocated keys and values for incremental decoding, and the masks that go with them.

A decode step writes one position per layer and attends over the filled prefix, so it
costs O(context) instead of recomputing O(context^2) attention. Prompts of different
lengths are left-padded: row b's first `pad[b]` positions hold padding that no query
may attend to, and its real tokens take positions 0, 1, 2, ... as if it were alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gptforge.model.config import GPTConfig


class KVCache:
    """Per-layer key/value tensors of shape (batch, heads, max_len, head_dim) plus an offset."""

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        pad: Tensor | None = None,
    ):
        if not 1 <= max_len <= config.block_size:
            raise ValueError(f"max_len {max_len} must be in [1, block_size={config.block_size}]")
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0
        self.pad = None if pad is None or not bool(pad.any()) else pad.to(device)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's keys/values for `layer`; return the filled prefix to attend over."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def keep(self, rows: Tensor, shift: int, pad: Tensor | None) -> None:
        """Keep only `rows` of the batch and drop their first `shift` slots (padding that every
        kept row has), so finished rows cost nothing and the freed slots can be filled.
        `pad` is the kept rows' padding after the shift (None: no row is padded)."""
        used = self.pos - shift
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_empty((old.size(0), len(rows), *old.shape[2:]))
            new[:, :, :, :used] = old[:, rows, :, shift : self.pos]
            setattr(self, name, new)
        self.pos = used
        self.pad = pad


def positions(start: int, length: int, pad: Tensor | None, device: torch.device) -> Tensor:
    """Position ids for `length` tokens from absolute slot `start`: (T,) or (B, T) with padding."""
    slots = torch.arange(start, start + length, device=device)
    if pad is None:
        return slots
    return (slots.unsqueeze(0) - pad.unsqueeze(1)).clamp_(min=0)


def attention_mask(
    start: int, length: int, pad: Tensor | None, device: torch.device
) -> Tensor | None:
    """Boolean (B|1, 1, T, S) mask, True where a query may attend; None when plain causal works.

    Queries sit at slots start..start+T-1 and see keys at slots 0..start+T-1 up to their own,
    minus each row's left padding. None means: no mask at all (one query, no padding) or the
    caller may use `is_causal` (a full square, no padding).
    """
    if pad is None and (length == 1 or start == 0):
        return None
    keys = torch.arange(start + length, device=device)
    queries = torch.arange(start, start + length, device=device)
    mask = keys.unsqueeze(0) <= queries.unsqueeze(1)
    if pad is None:
        return mask.view(1, 1, length, start + length)
    visible = keys.unsqueeze(0) >= pad.unsqueeze(1)
    mask = mask.unsqueeze(0) & visible.unsqueeze(1)
    # A padding query would see no key at all; let it see itself so softmax stays finite.
    mask |= torch.eye(start + length, dtype=torch.bool, device=device)[start:].unsqueeze(0)
    return mask.unsqueeze(1)
