"""Training-step throughput of our GPT against transformers' GPT2LMHeadModel.

Run:  .venv/bin/python tests/perf/bench_train.py [--config a|b|all] [--precision fp32|bf16|all]
                                                 [--steps 3] [--repeats 5] [--threads 2]

Both models get identical dimensions and the same weights (model/convert.py), the same batch
and targets, the same precision (bf16 = CPU autocast around forward and loss, as a user would
write it) and the same fused AdamW. A step is forward + loss + backward + gradient clipping
at 1.0 + AdamW step; our side runs `model.train.train_step`, exactly what training runs.
Sides alternate every repetition in this process, and each repetition also times a large
square matmul in fp32 and bf16, so the MFU columns use peaks measured under the same load.
`--compile` runs our side through torch.compile (compiled in the untimed warm-up step).
Prints medians and ratios; asserts nothing.

  (a) 4 layers, 4 heads, 128 wide, context 64, batch 12 (GPT-2 vocab padded to 50304)
  (b) 6 layers, 6 heads, 384 wide, context 256, batch 8, vocab 50304
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from gptforge.model.config import GPTConfig
from gptforge.model.convert import hf_config_kwargs, to_hf
from gptforge.model.gpt import GPT
from gptforge.model.precision import autocast
from gptforge.model.train import train_step

CONFIGS = {  # the gpt2 recipe: the architecture GPT2LMHeadModel has (the default is modern)
    "a": (GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, recipe="gpt2"), 12),
    "b": (GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, recipe="gpt2"), 8),
}
PEAK_SIZE = 2048
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CPU = torch.device("cpu")


@dataclass
class Side:
    """One model with its optimizer and a closure that runs one training step."""

    name: str
    model: torch.nn.Module
    step: Callable[[], None]


def build_sides(
    config: GPTConfig, batch: int, precision: str, seed: int, compile: bool = False
) -> list[Side]:
    torch.manual_seed(seed)
    ours = GPT(config)
    runnable = torch.compile(ours) if compile else ours
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_kwargs(config)))
    missing, unexpected = hf.load_state_dict(to_hf(ours.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing), (missing, unexpected)
    x = torch.randint(0, config.tokenizer_vocab_size, (batch, config.block_size))
    y = torch.randint(0, config.tokenizer_vocab_size, (batch, config.block_size))
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)

    def ours_step() -> None:
        train_step(runnable, ours_opt, [(x, y)], precision, CPU, grad_clip=1.0)

    def hf_step() -> None:
        with autocast(precision, CPU):
            loss = hf(input_ids=x, labels=y, shift_labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    with torch.no_grad():
        gap = (ours(x, y)[1] - hf(input_ids=x, labels=y, shift_labels=y).loss).abs().item()
    assert gap < 1e-4, f"the two models disagree before training (loss gap {gap})"
    return [Side("ours", ours.train(), ours_step), Side("hf", hf.train(), hf_step)]


def matmul_flops(dtype: torch.dtype, n: int = PEAK_SIZE, reps: int = 5) -> float:
    """FLOP/s of the best of `reps` n x n matmuls: what this machine's cores can do now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(
    name: str,
    precision: str,
    steps: int,
    repeats: int,
    peaks: dict[str, list[float]],
    compile: bool = False,
):
    config, batch = CONFIGS[name]
    sides = build_sides(config, batch, precision, seed=0, compile=compile)
    for side in sides:
        side.step()
    tokens = batch * config.block_size * steps
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    for rep in range(repeats):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            seconds = _seconds(lambda s=side: [s.step() for _ in range(steps)])
            rates[side.name].append(tokens / seconds)
        for dtype_name in peaks:
            peaks[dtype_name].append(matmul_flops(DTYPES[dtype_name]))
        print(
            f"  ({name}) {precision} rep {rep + 1}: "
            + "  ".join(f"{k} {v[-1]:.0f} tok/s" for k, v in rates.items())
        )
    return {k: statistics.median(v) for k, v in rates.items()}, sides[0].model.flops_per_token()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("a", "b", "all"), default="all")
    parser.add_argument("--precision", choices=("fp32", "bf16", "all"), default="all")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repetition")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repetitions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile our model (TrainConfig.compile)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: (a), 1 step, 1 rep")
    args = parser.parse_args()
    if args.quick:
        args.config, args.steps, args.repeats = "a", 1, 1
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    configs = ("a", "b") if args.config == "all" else (args.config,)
    precisions = ("fp32", "bf16") if args.precision == "all" else (args.precision,)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, {args.steps} steps x {args.repeats} repetitions"
    )
    # A CPU without native bf16 (no AVX-512 BF16 / AMX) runs bf16 matmuls tens of times
    # slower than fp32: its peak is measured only when bf16 is benchmarked.
    peaks: dict[str, list[float]] = {p: [] for p in ("fp32", *precisions)}
    print(f"oneDNN native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    results: dict[tuple[str, str], tuple[dict[str, float], float]] = {}
    for name in configs:
        for precision in precisions:
            results[name, precision] = bench(
                name, precision, args.steps, args.repeats, peaks, args.compile
            )
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    shown = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items())
    print(f"\nmatmul peak ({PEAK_SIZE}^2, median of repetitions): {shown}\n")
    peak.setdefault("bf16", math.nan)
    print(
        "| config | precision | model | tokens/s | MFU vs fp32 peak | MFU vs bf16 peak | ours/HF |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for (name, precision), (rates, flops) in results.items():
        for side, rate in rates.items():
            ratio = f"{rates['ours'] / rates['hf']:.2f}x" if side == "ours" else ""
            print(
                f"| ({name}) | {precision} | {side} | {rate:.0f} "
                f"| {flops * rate / peak['fp32']:.1%} | {flops * rate / peak['bf16']:.1%} "
                f"| {ratio} |"
            )
    for name in configs:
        if all((name, p) in results for p in ("fp32", "bf16")):
            hf_best = max(("fp32", "bf16"), key=lambda p: results[name, p][0]["hf"])
            ours_best = max(("fp32", "bf16"), key=lambda p: results[name, p][0]["ours"])
            best = results[name, ours_best][0]["ours"] / results[name, hf_best][0]["hf"]
            print(
                f"\n({name}) ours at its faster precision ({ours_best}) vs HF at its faster "
                f"({hf_best}): {best:.2f}x"
            )


if __name__ == "__main__":
    main()
