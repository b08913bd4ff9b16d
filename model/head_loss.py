"""The output layer, the soft cap and the cross-entropy in one pass over row chunks.

For a small model on a CPU the output layer is most of a training step: `tiny`'s blocks hold
0.4 M parameters, its 50,304-wide head 6.4 M, and a batch of 8 x 128 tokens has 51 M logits
(206 MB in fp32). Computed the plain way, every elementwise pass over them (the cap's divide,
tanh and multiply, log-softmax, and each of their backward passes) streams that whole tensor
through memory and allocates a new one. Here the logits exist one chunk of rows at a time:
each chunk's loss and its gradient (softmax minus one-hot, times the cap's derivative) are
computed together while the chunk is in cache, and turned at once into the chunk's share of
the input's and the weight's gradients. Backward then only scales them by the incoming
gradient (the loss is a scalar). The same idea as Liger Kernel's fused linear cross-entropy.

Numerically this is the plain computation: the matmuls run in the autocast dtype when autocast
is on (as `nn.Linear` would; the gradient's in fp32 under fp16), everything after them in fp32,
the weight's gradient accumulates in fp32. Chunk boundaries are fixed by the shapes alone, so
results are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

# Logits of one chunk stay under this many values (fp32: 4 bytes each). On a CPU, sized for
# its caches: measured in tests/perf/bench_head_loss.py (docs/training.md "One optimizer
# step"). On a GPU, large enough that a 124M model's 16 x 1024-token batch takes a few chunks
# rather than hundreds of small kernels (not measured yet: no GPU in the sessions so far).
CHUNK_LOGITS = 2**22
GPU_CHUNK_LOGITS = 2**27
IGNORE_INDEX = -1


def chunk_rows(vocab: int, device: torch.device) -> int:
    return max(1, (CHUNK_LOGITS if device.type == "cpu" else GPU_CHUNK_LOGITS) // vocab)


def compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """What `nn.Linear` would multiply in: autocast's dtype when it is on."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


@dataclass
class Chunk:
    """One chunk of rows: its input, its (capped) fp32 logits, and the logits' logsumexp."""

    start: int
    x: Tensor
    logits: Tensor
    squash: Tensor | None  # tanh(z / cap), kept for the cap's derivative
    lse: Tensor
    at: tuple[Tensor, Tensor]  # (row, target) of each row's target logit; 0 for an ignored one

    @property
    def end(self) -> int:
        return self.start + self.x.size(0)

    @property
    def nats(self) -> Tensor:
        return self.lse - self.logits[self.at]


def chunks(x: Tensor, w: Tensor, targets: Tensor, cap: float | None) -> Iterator[Chunk]:
    """`w` is the weight already in the dtype to multiply in."""
    step = chunk_rows(w.size(0), x.device)
    for start in range(0, x.size(0), step):
        xc = x[start : start + step].to(w.dtype)
        logits = (xc @ w.t()).float()
        squash = None
        if cap is not None:
            squash = logits.mul_(1.0 / cap).tanh_()
            logits = squash * cap
        at = (
            torch.arange(xc.size(0), device=x.device),
            targets[start : start + xc.size(0)].clamp(min=0),
        )
        yield Chunk(start, xc, logits, squash, torch.logsumexp(logits, dim=1), at)


@torch.no_grad()
def token_nats(x: Tensor, weight: Tensor, targets: Tensor, cap: float | None) -> Tensor:
    """Cross-entropy per row of `cap(x @ weight.T)` against `targets`, in fp32 (N,): what the
    evaluation sums, with the logits held one chunk at a time."""
    nats = torch.empty(x.size(0), dtype=torch.float32, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        for c in chunks(x, weight.to(compute_dtype(x, weight)), targets, cap):
            nats[c.start : c.end] = c.nats
    return nats


class HeadLoss(torch.autograd.Function):
    """mean over targets != IGNORE_INDEX of cross_entropy(cap(x @ weight.T), targets)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, cap: float | None) -> Tensor:  # noqa: ANN001
        dtype = compute_dtype(x, weight)
        need_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        valid = targets != IGNORE_INDEX
        # With no target at all the loss is 0 (F.cross_entropy would give 0/0 = nan).
        scale = 1.0 / valid.sum().clamp(min=1).float()
        # fp16's range would flush small gradients to zero before GradScaler's scale reaches
        # them (it arrives in backward), so with fp16 the gradient matmuls run in fp32.
        grad_dtype = torch.float32 if dtype == torch.float16 else dtype
        w = weight.to(dtype)
        w_grad = w if grad_dtype == dtype else weight.to(grad_dtype)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_grads else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_grads else None
        with torch.autocast(x.device.type, enabled=False):
            for c in chunks(x, w, targets, cap):
                vc = valid[c.start : c.end]
                total += (c.nats * vc).sum()
                if not need_grads:
                    continue
                # d loss / d logits = (softmax - one-hot) / count, zero on ignored rows
                probs = c.logits.sub_(c.lse[:, None]).exp_()
                probs[c.at] -= 1.0
                probs.mul_((vc * scale)[:, None])
                if c.squash is not None:  # d cap*tanh(z/cap) / dz = 1 - tanh(z/cap)^2
                    probs.addcmul_(probs * c.squash, c.squash, value=-1.0)
                g = probs.to(grad_dtype)
                grad_x[c.start : c.end] = g @ w_grad
                if grad_dtype == torch.float32:
                    grad_w.addmm_(g.t(), c.x.float())
                else:
                    grad_w += (g.t() @ c.x).float()
        if need_grads:
            ctx.save_for_backward(grad_x, grad_w.to(weight.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_out, grad_w * grad_out, None, None


def head_loss(x: Tensor, weight: Tensor, targets: Tensor, cap: float | None) -> Tensor:
    """The mean cross-entropy of `cap * tanh((x @ weight.T) / cap)` (no cap: the raw logits)
    against `targets`; x (N, C), weight (V, C), targets (N,) with IGNORE_INDEX skipped."""
    return HeadLoss.apply(x, weight, targets, cap)
