"""Preallocated keys and values for incremental decoding: one slot per output being decoded.

A decode step writes one position per layer and attends over the filled prefix, so it costs
O(context) instead of recomputing O(context^2) attention. Each slot has its own length: an
output's tokens take positions 0, 1, 2, ... of its slot as if it were alone, whatever the other
slots hold, so a slot freed by a finished output is refilled by the next one without moving
or reallocating anything (continuous batching, model/batching.py).

Without a cache (a reference and a baseline), prompts of different lengths are left-padded:
row b's first `pad[b]` positions hold padding that no query may attend to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gptforge.model.config import GPTConfig


class KVCache:
    """Keys and values (layers, slots, heads, max_len, head_dim), and each slot's length."""

    def __init__(
        self,
        config: GPTConfig,
        slots: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        if not 1 <= max_len <= config.block_size:
            raise ValueError(f"max_len {max_len} must be in [1, block_size={config.block_size}]")
        shape = (config.n_layer, slots, config.n_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.lengths = [0] * slots
        self.device = torch.device(device)

    def step(self, slots: list[int], length: int) -> CacheStep:
        """A forward of `length` new tokens for each of `slots`, each after its own prefix."""
        return CacheStep(self, slots, length)

    def clear(self, slot: int) -> None:
        """Free a slot for the next output: its old keys stay but are never attended to."""
        self.lengths[slot] = 0


class CacheStep:
    """One forward through the cache: where each row's new tokens go and what they may see.

    Row i of the forward is slot `slots[i]`; its new tokens take positions
    `lengths[slot] ... lengths[slot] + length - 1` and attend to their slot's keys up to their
    own position. The mask is explicit even where plain causal attention would do, so a row
    takes the same attention kernel whatever else is in the batch.

    A decode step (one new token per row) needs no mask: each row attends to its whole
    prefix. Rows at one length share one attention call; rows at different lengths attend
    one by one, each over its own prefix, a view of the cache. One call over all of them
    would read every row's keys up to the longest row's length (masked, but read), which
    made a mixed batch's steps cost more than its arithmetic (docs/benchmarks.md).

    A longer forward (a prefill chunk) gets an explicit mask even where plain causal attention
    would do, so a row takes the same attention kernel whatever else is in the batch. It is
    float (0 or -inf) rather than boolean and in fp32; under autocast SDPA receives it
    alongside bf16 queries.
    """

    def __init__(self, cache: KVCache, slots: list[int], length: int):
        self.cache, self.slots, self.length = cache, slots, length
        starts = [cache.lengths[s] for s in slots]
        self.end = max(starts) + length
        if self.end > cache.max_len:
            raise ValueError(f"KV cache full: {self.end} positions > max_len {cache.max_len}")
        device = cache.device
        self.uniform = len(set(starts)) == 1
        first = slots[0]
        contiguous = slots == list(range(first, first + len(slots)))
        index = torch.tensor(slots, device=device)
        self.rows: slice | Tensor = slice(first, first + len(slots)) if contiguous else index
        self.scatter_rows = index.unsqueeze(1)  # (n, 1): where rows of different lengths write
        start = torch.tensor(starts, device=device).unsqueeze(1)
        self.positions = start + torch.arange(length, device=device)  # (n, T)
        self.ends = [s + length for s in starts]
        self.mask: Tensor | None = None
        if length > 1:
            keys = torch.arange(self.end, device=device)
            hidden = (keys > self.positions.unsqueeze(2)).unsqueeze(1)  # (n, 1, T, end)
            # Additive, built once per step: every layer would convert a boolean mask again.
            self.mask = torch.zeros(hidden.shape, device=device).masked_fill_(hidden, -math.inf)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store this step's keys/values (n, H, T, D) for `layer` and return the attention
        output (n, H, T, D) of the queries `q` over each row's prefix and new tokens."""
        cache = self.cache
        if self.uniform:
            start = self.end - self.length
            cache.k[layer, self.rows, :, start : self.end] = k
            cache.v[layer, self.rows, :, start : self.end] = v
        else:
            cache.k[layer, self.scatter_rows, :, self.positions] = k.transpose(1, 2)
            cache.v[layer, self.scatter_rows, :, self.positions] = v.transpose(1, 2)
        keys, values = cache.k[layer], cache.v[layer]
        if self.mask is None and not self.uniform:
            rows = zip(self.slots, self.ends, q.split(1), strict=True)
            return torch.cat(
                [
                    F.scaled_dot_product_attention(
                        row_q, keys[s : s + 1, :, :end], values[s : s + 1, :, :end]
                    )
                    for s, end, row_q in rows
                ]
            )
        return F.scaled_dot_product_attention(
            q, keys[self.rows, :, : self.end], values[self.rows, :, : self.end], attn_mask=self.mask
        )

    def advance(self) -> None:
        for slot in self.slots:
            self.cache.lengths[slot] += self.length


def positions(length: int, pad: Tensor | None, device: torch.device) -> Tensor:
    """Position ids of a forward without cache: (T,), or (B, T) counting from each row's first
    real token when rows are left-padded."""
    slots = torch.arange(length, device=device)
    if pad is None:
        return slots
    return (slots.unsqueeze(0) - pad.unsqueeze(1)).clamp_(min=0)


def padding_mask(length: int, pad: Tensor, device: torch.device) -> Tensor:
    """Boolean (B, 1, T, T) causal mask that also hides each row's left padding."""
    keys = torch.arange(length, device=device)
    mask = (keys.unsqueeze(0) <= keys.unsqueeze(1)).unsqueeze(0)
    mask = mask & (keys.unsqueeze(0) >= pad.unsqueeze(1)).unsqueeze(1)
    # A padding query would see no key at all; let it see itself so softmax stays finite.
    mask |= torch.eye(length, dtype=torch.bool, device=device).unsqueeze(0)
    return mask.unsqueeze(1)
