"""The output layer + soft cap + cross-entropy, forward and backward: ours (model/head_loss.py,
row chunks) against the plain PyTorch way (`x @ W.T`, the cap, `F.cross_entropy`, autograd).

Run:  .venv/bin/python tests/perf/bench_head_loss.py [--tokens 1024] [--width 128]
          [--chunks 19 20 21 22 23] [--reps 7]

Shapes default to the `tiny` preset's batch: 8 x 128 tokens, 128 wide, the 50,304-token
vocabulary. Per precision (fp32, bf16 autocast), cap (none: gpt2, 15: modern) and chunk size
(2^k logits) prints the median seconds of forward + backward for both and the ratio
plain / ours, after checking that both give the same loss and gradients. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

import gptforge.model.head_loss as head_loss_module
from gptforge.model.config import PADDED_VOCAB_SIZE
from gptforge.model.head_loss import head_loss


def plain(x: torch.Tensor, w: torch.Tensor, t: torch.Tensor, cap: float | None) -> torch.Tensor:
    z = x @ w.t()
    if cap is not None:
        z = cap * torch.tanh(z.float() / cap)
    return F.cross_entropy(z.float(), t, ignore_index=-1)


def timed(fn, x, w, t, cap, precision: str, reps: int) -> tuple[float, tuple]:  # noqa: ANN001
    times = []
    for _ in range(reps):
        x.grad = w.grad = None
        amp = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        started = time.perf_counter()
        with amp:
            loss = fn(x, w, t, cap)
        loss.backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times), (loss.item(), x.grad.clone(), w.grad.clone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[19, 20, 21, 22, 23])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 rep, one chunk")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.chunks = 1, args.chunks[:1]
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.width).requires_grad_()
    w = (torch.randn(PADDED_VOCAB_SIZE, args.width) * args.width**-0.5).requires_grad_()
    t = torch.randint(0, PADDED_VOCAB_SIZE, (args.tokens,))
    print(f"{args.tokens} tokens x {args.width} wide, vocab {PADDED_VOCAB_SIZE}")
    print("precision  cap   chunk   plain s   ours s   plain/ours   max |d grad|")
    for precision in ("fp32", "bf16"):
        for cap in (None, 15.0):
            base, ref = timed(plain, x, w, t, cap, precision, args.reps)
            for k in args.chunks:
                head_loss_module.CHUNK_LOGITS = 2**k
                ours, got = timed(head_loss, x, w, t, cap, precision, args.reps)
                err = max((a - b).abs().max().item() for a, b in zip(got[1:], ref[1:], strict=True))
                print(
                    f"{precision:9s}  {cap or '-':>4}  2^{k}  {base:8.3f}  {ours:7.3f}"
                    f"  {base / ours:10.2f}x  {err:.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
