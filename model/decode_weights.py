"""The weights a CPU decode step reads, laid out once for the number of rows it decodes.

A decode step multiplies a few rows (one per slot) by every weight of the model. MKL's sgemm
repacks the weight on every such call, and at 2-8 rows that packing is most of the cost:
a 768 x 3072 layer takes 0.51 ms for 8 rows against 0.17 ms for 1 (docs/benchmarks.md), so
each row a step decodes cost nearly as much as the step itself. Packed once for M rows
(`torch.ops.mkl._mkl_reorder_linear_weight`, what Inductor's CPU freezing uses), 8 rows cost
what 1 does (0.19 ms). A step with fewer rows is padded with zeros to M: a packed product's
row does not depend on the other rows or on its position (checked bit for bit in
tests/test_decode_weights.py), so an output's scores are the same whoever shares its step,
and continuous and static batching give the same tokens. Longer inputs (prefill chunks)
take the plain weight.

Without MKL or its (private) packing ops, on a GPU, or under autocast the model is used as it
is and only the head is laid out K-major: `x @ W.T` with W stored K-major reads the weight
once and returns row-major scores, where `(W @ x.T).T` returns them transposed and the
sampling that follows (max, top-k, softmax along the vocabulary) reads them with a 50k stride.

The layouts are made once per model and kept (30 ms for the small benchmark model, 0.7 s
for GPT-2 124M shapes): made again when a weight changed in place (its version moved, e.g.
an optimizer step in between), the model moved to another device or dtype, or a call needs
more rows than they are packed for; dropped with the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from gptforge.model.gpt import GPT


class PackedLinear(nn.Module):
    """`nn.Linear` over a weight packed for `rows` rows; shares the original's parameters."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int):
        super().__init__()
        self.weight, self.bias, self.rows = weight, bias, rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.size(-1))
        n = flat.size(0)
        if n > self.rows:
            return F.linear(x, self.weight, self.bias)
        padded = F.pad(flat, (0, 0, 0, self.rows - n))  # zero rows up to the packed count
        out = torch.ops.mkl._mkl_linear(padded, self.packed, self.weight, self.bias, self.rows)
        return out[:n].view(*x.shape[:-1], out.size(-1))


@dataclass(frozen=True)
class DecodeWeights:
    """`model` runs the blocks (a twin sharing the parameters, or the model itself); `head`
    maps final hidden states (n, C) to scores (n, tokenizer vocab), row-major. `rows` is
    the row count the weights are packed for, 0 when they are not; `source` is what they
    were made from: the weights' device and dtype and every parameter's version."""

    model: GPT
    head: Callable[[Tensor], Tensor]
    rows: int
    source: tuple

    def serves(self, rows: int, packable: bool, source: tuple) -> bool:
        """Whether these layouts do for steps of at most `rows` rows: packed for at least as
        many (fewer are padded, at about the cost of one row), or one row either way."""
        if source != self.source:
            return False
        if not packable:
            return not self.rows
        return rows == 1 or self.rows >= rows


_KEPT = WeakIdKeyDictionary()  # model -> DecodeWeights


_MKL_OPS = ("_mkl_reorder_linear_weight", "_mkl_linear")  # private: a build may lack them


def can_pack(model: GPT, device: torch.device, autocast_dtype: torch.dtype | None) -> bool:
    """MKL packing applies to fp32 weights on a CPU with MKL, outside autocast, where this
    torch build has the packing ops; elsewhere the plain weights serve."""
    weight = model.lm_head.weight
    return (
        torch.backends.mkl.is_available()
        and all(hasattr(torch.ops.mkl, op) for op in _MKL_OPS)
        and device.type == "cpu"
        and autocast_dtype is None
        and weight.dtype == torch.float32
    )


def decode_weights(model: GPT, rows: int, pack: bool) -> DecodeWeights:
    """The model's decode layouts for steps of at most `rows` rows, kept for the next call;
    `pack` asks for MKL-packed weights (see `can_pack`), pointless for one row. Layouts
    packed for more rows serve fewer, so a server alternating one-prompt and batch calls
    keeps one layout instead of making it again at each change."""
    packed_rows = rows if pack and rows > 1 else 0
    params = list(model.parameters())
    if any(p.is_inference() for p in params):  # no version counter to tell a change by
        return _build(model, packed_rows, source=())
    weight = model.lm_head.weight
    source = (weight.device, weight.dtype, *(p._version for p in params))
    kept = _KEPT.get(model)
    if kept is None or not kept.serves(rows, pack, source):
        kept = _KEPT[model] = _build(model, packed_rows, source)
    return kept


@torch.no_grad()
def _build(model: GPT, rows: int, source: tuple) -> DecodeWeights:
    """Packed for `rows` rows, or (0) the model as it is with a K-major head."""
    vocab = model.config.tokenizer_vocab_size
    head_weight = model.lm_head.weight[:vocab].detach()
    if not rows:
        k_major = head_weight.t().contiguous()
        return DecodeWeights(model, lambda x: x @ k_major, 0, source)
    twin = _packed_twin(model, rows)
    return DecodeWeights(twin, PackedLinear(head_weight, None, rows), rows, source)


def _packed_twin(model: GPT, rows: int) -> GPT:
    """A copy of `model`'s modules over the same parameters, its blocks' linear layers packed."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, shared)
    for block in twin.transformer.h:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedLinear(child.weight, child.bias, rows))
    return twin
