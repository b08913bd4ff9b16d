"""The weights a CPU decode step reads, laid out once for the number of rows it decodes.

A decode step multiplies a few rows (one per slot) by every weight of the model. A plain
sgemm lays the weight out again on every such call, and at 2-8 rows that is most of the
cost: on an Intel Xeon a 768 x 3072 layer took 0.51 ms for 8 rows against 0.17 ms for 1
(docs/benchmarks.md), so each row a step decodes cost nearly as much as the step itself.
Packed once for M rows, 8 rows cost about what 1 does. Two libraries can pack (both private
torch ops, what Inductor's CPU freezing uses): MKL (`torch.ops.mkl._mkl_reorder_linear_weight`)
and oneDNN (`torch.ops.mkldnn._reorder_linear_weight`). MKL packs well on Intel CPUs (0.19 ms
for that layer at 8 rows) and not elsewhere: on an AMD EPYC (Zen 5) its packed layer costs
what its plain one does (0.49 ms) while oneDNN's takes 0.12 ms, and the 50k-wide head at 8
rows 1.4 ms against 6.8 ms; even one row decodes 1.6x faster over oneDNN's layout there.
So the CPU's vendor picks the library (`packing`), a fixed rule rather than a timing, so that
a machine always computes the same scores.

A step with fewer rows is padded with zeros to M: with either library a packed product's row
does not depend on the other rows or on its position (checked bit for bit in
tests/test_decode_weights.py; unpadded, oneDNN's result for a row can change with the row
count), so an output's scores are the same whoever shares its step, and continuous and static
batching give the same tokens. Longer inputs (prefill chunks, split at the same places
whatever else is decoding) take oneDNN's layout as they are (2.3-3.4x faster than MKL's plain
sgemm at 64-1024 rows on that AMD EPYC) or MKL's plain weight.

Without either library's packing ops, on a GPU, or under autocast the model is used as it is
and only the head is laid out K-major: `x @ W.T` with W stored K-major reads the weight once
and returns row-major scores, where `(W @ x.T).T` returns them transposed and the sampling
that follows (max, top-k, softmax along the vocabulary) reads them with a 50k stride.

The layouts are made once per model and kept (30 ms for the small benchmark model, 0.7 s
for GPT-2 124M shapes): made again when a weight changed in place (its version moved, e.g.
an optimizer step in between), the model moved to another device or dtype, or a call needs
more rows than they are packed for; dropped with the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from gptforge.model.gpt import GPT

# Which library packs the decode weights (`packing`).
Packing = Literal["mkl", "onednn"]

# Each library's (pack, multiply) ops; private to torch, so a build may lack them.
_OPS: dict[Packing, tuple[str, str]] = {
    "mkl": ("_mkl_reorder_linear_weight", "_mkl_linear"),
    "onednn": ("_reorder_linear_weight", "_linear_pointwise"),
}


def _ops(library: Packing) -> torch._ops._OpNamespace:
    """The torch op namespace of `library`'s packing ops."""
    return torch.ops.mkl if library == "mkl" else torch.ops.mkldnn


class PackedLinear(nn.Module):
    """`nn.Linear` over a weight packed by `library` for `rows` rows; shares the original's
    parameters."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int, library: Packing):
        super().__init__()
        self.weight, self.bias, self.rows, self.library = weight, bias, rows, library
        pack = getattr(_ops(library), _OPS[library][0])
        self.packed = pack(weight.detach(), rows)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.size(-1))
        n = flat.size(0)
        if n > self.rows and self.library == "mkl":  # MKL's layout serves `rows` rows only
            return F.linear(x, self.weight, self.bias)
        if n < self.rows:
            flat = F.pad(flat, (0, 0, 0, self.rows - n))  # zero rows up to the packed count
        if self.library == "mkl":
            out = torch.ops.mkl._mkl_linear(flat, self.packed, self.weight, self.bias, self.rows)
        else:
            out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out[:n].view(*x.shape[:-1], out.size(-1))


@dataclass(frozen=True)
class DecodeWeights:
    """`model` runs the blocks (a twin sharing the parameters, or the model itself); `head`
    maps final hidden states (n, C) to scores (n, tokenizer vocab), row-major. `rows` is
    the row count the weights are packed for by `library`, 0 (and None) when they are not;
    `source` is what they were made from: the weights' device and dtype and every
    parameter's version."""

    model: GPT
    head: Callable[[Tensor], Tensor]
    rows: int
    library: Packing | None
    source: tuple

    def serves(self, rows: int, packing: Packing | None, source: tuple) -> bool:
        """Whether these layouts do for steps of at most `rows` rows: packed by `packing` for
        at least as many (fewer are padded, at about the cost of one row), or one row either
        way."""
        if source != self.source:
            return False
        if packing is None:
            return not self.rows
        return rows == 1 or (self.library == packing and self.rows >= rows)


_KEPT = WeakIdKeyDictionary()  # model -> DecodeWeights


def packing(model: GPT, device: torch.device, autocast_dtype: torch.dtype | None) -> Packing | None:
    """The library that packs `model`'s decode weights: fp32 weights on a CPU outside
    autocast, MKL on an Intel CPU and oneDNN elsewhere (module docstring), either where the
    other's ops are missing; None where neither applies."""
    if device.type != "cpu" or autocast_dtype is not None:
        return None
    if model.lm_head.weight.dtype != torch.float32:
        return None
    preferred: tuple[Packing, Packing] = ("mkl", "onednn") if _intel() else ("onednn", "mkl")
    return next((library for library in preferred if _has_ops(library)), None)


def _has_ops(library: Packing) -> bool:
    built = torch.backends.mkl if library == "mkl" else torch.backends.mkldnn
    return built.is_available() and all(hasattr(_ops(library), op) for op in _OPS[library])


@cache
def _intel() -> bool:
    """Whether this is an Intel CPU (Linux's /proc/cpuinfo; elsewhere taken as not)."""
    try:
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def decode_weights(model: GPT, rows: int, library: Packing | None) -> DecodeWeights:
    """The model's decode layouts for steps of at most `rows` rows, kept for the next call;
    `library` packs the weights (see `packing`), None for the plain weights. Layouts packed
    for more rows serve fewer, so a server alternating one-prompt and batch calls keeps one
    layout instead of making it again at each change."""
    # One row: MKL's packing gains nothing (0.7-1.1x, bench_decode_layers.py), oneDNN's head 2-4x.
    packed_rows = 0 if library is None or (library == "mkl" and rows == 1) else rows
    params = list(model.parameters())
    if any(p.is_inference() for p in params):  # no version counter to tell a change by
        return _build(model, packed_rows, library, source=())
    weight = model.lm_head.weight
    source = (weight.device, weight.dtype, *(p._version for p in params))
    kept = _KEPT.get(model)
    if kept is None or not kept.serves(rows, library, source):
        kept = _KEPT[model] = _build(model, packed_rows, library, source)
    return kept


@torch.no_grad()
def _build(model: GPT, rows: int, library: Packing | None, source: tuple) -> DecodeWeights:
    """Packed by `library` for `rows` rows, or (0) the model as it is with a K-major head."""
    vocab = model.config.tokenizer_vocab_size
    head_weight = model.lm_head.weight[:vocab].detach()
    if not rows:
        k_major = head_weight.t().contiguous()
        return DecodeWeights(model, lambda x: x @ k_major, 0, None, source)
    twin = _packed_twin(model, rows, library)
    head = PackedLinear(head_weight, None, rows, library)
    return DecodeWeights(twin, head, rows, library, source)


def _packed_twin(model: GPT, rows: int, library: Packing) -> GPT:
    """A copy of `model`'s modules over the same parameters, its blocks' linear layers packed."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, shared)
    for block in twin.transformer.h:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedLinear(child.weight, child.bias, rows, library))
    return twin
