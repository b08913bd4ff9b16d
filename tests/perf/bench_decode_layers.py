"""A decode step's linear layers three ways: plain `F.linear` (MKL's sgemm, which lays the
weight out on every call), MKL-packed and oneDNN-packed weights (model/decode_weights.py).

Which library packs is a fixed rule by CPU vendor (MKL on Intel, oneDNN elsewhere); this is
the measurement behind it, to run again on a new machine. Shapes are the small benchmark
model's (6 layers of 384) and GPT-2 124M's, at 1 and 8 rows and at a prefill chunk's 128.
Prints µs per call (median of `--reps` timings of 50 calls) and each packing's speed-up over
`F.linear`.

    .venv/bin/python tests/perf/bench_decode_layers.py   # ~1 min
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from gptforge.model.config import GPTConfig
from gptforge.model.decode_weights import PackedLinear, _has_ops, _intel, packing
from gptforge.model.gpt import GPT

SHAPES = {  # (fan_in, fan_out) of a block's qkv, projection, MLP in/out, and the head
    "small": [(384, 1152), (384, 384), (384, 1536), (1536, 384), (384, 50257)],
    "124m": [(768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 50257)],
}


def per_call_us(fn: Callable[[], torch.Tensor], reps: int, calls: int = 50) -> float:
    for _ in range(5):
        fn()
    timings = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        timings.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: small shapes, 1 rep")
    args = parser.parse_args()
    shapes = {"small": SHAPES["small"]} if args.quick else SHAPES
    reps = 1 if args.quick else args.reps
    torch.set_num_threads(args.threads)
    libraries = [lib for lib in ("mkl", "onednn") if _has_ops(lib)]
    vendor = "Intel" if _intel() else "not Intel"
    print(f"{platform.processor() or platform.machine()}, {vendor}, {args.threads} threads")
    print(f"the rule picks: {packing_here()}\n")
    columns = "".join(f" {lib} µs |" for lib in libraries)
    print(f"| shape | layer | rows | F.linear µs |{columns}")
    print("|---|---|---:|---:|" + "---:|" * len(libraries))
    torch.manual_seed(0)
    for shape, layers in shapes.items():
        for fan_in, fan_out in layers:
            weight, bias = torch.randn(fan_out, fan_in), torch.randn(fan_out)
            for rows in (1, 8, 128):
                x = torch.randn(rows, fan_in)
                with torch.inference_mode():
                    plain = per_call_us(partial(F.linear, x, weight, bias), reps)
                    cells = []
                    for lib in libraries:
                        layer = PackedLinear(weight, bias, min(rows, 8), lib)
                        took = per_call_us(partial(layer, x), reps)
                        cells.append(f"{took:.0f} ({plain / took:.2f}x)")
                print(
                    f"| {shape} | {fan_in} -> {fan_out} | {rows} | {plain:.0f} | "
                    + " | ".join(cells)
                    + " |"
                )


def packing_here() -> str | None:
    """What `packing` answers for an fp32 model on this CPU."""
    config = GPTConfig(
        block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8, tokenizer_vocab_size=64
    )
    tiny = GPT(config)
    return packing(tiny, torch.device("cpu"), None)


if __name__ == "__main__":
    main()
