"""GPU throughput of the GPT-2 124M shapes: training MFU, generation against the bandwidth bound.

Run:  python -u tests/perf/bench_gpu.py [--quick] [--recipes gpt2,modern] [--batch 16]
                                        [--steps 20] [--reps 3] [--no-compile] [--summary PATH]
                                        [--device cpu]

The peers are the device's own ceilings, measured in the same run: a large bf16 matmul (peak
FLOP/s) and a large device-to-device copy (bandwidth); the vendor's nominal H100/H200 figures
(989 TFLOP/s dense bf16, 4.8 TB/s) are printed beside them.

  training   12 layers, 12 heads, 768 wide, context 1024, vocab 50304, each recipe, bf16
             autocast, one micro-batch per step (no accumulation); `model.train.train_step`
             with the recipe's real optimizer (`make_optimizer`), eager and `torch.compile`.
             MFU = flops_per_token x tokens/s / peak (6N + 12 L T C, PaLM appendix B).
  generation the same model, `model.generate.generate` (continuous batching, KV cache), fp32
             and bf16 autocast, batch 1 and 64, 128-token prompts, 256 new tokens, greedy, eos
             off. The bound is bandwidth / bytes a decode step must read: the weights as
             stored (fp32, lookup tables excluded) plus the KV cache up to that step (its
             dtype), summed over the 256 steps; prefill is left out of the bound, so the
             fraction is a slight underestimate.

Warm-up steps are untimed; timing is CUDA events around the timed work after a synchronize.
Each measurement that fails prints one line and the rest go on; SIGTERM (a `timeout`) stops
the run and still prints the summary of what was measured. Without CUDA it says so and exits 0.
`--device cpu` runs the same code on the CPU (wall-clock timing, no memory figure): not a
measurement but a rehearsal, so that a lent GPU's minutes are not spent finding a broken
script (`tests/test_bench_gpu_rehearsal.py` runs it at `--quick` sizes in CI).
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gptforge.model.config import GPTConfig
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.optim import lr_at, make_optimizer, set_lr
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.train import train_step
from gptforge.model.train_config import TrainConfig

NOMINAL_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, vendor datasheet
NOMINAL_BANDWIDTH = 4.8e12  # H200 HBM3e, vendor datasheet
TARGET_MFU = 0.45  # issue 16: torch.compile, bf16, 124M shapes
TARGET_BOUND = 0.60  # issue 16: generation at batch 1


class OutOfTime(Exception):
    """SIGTERM arrived (the caller's timeout): stop measuring, print what there is."""


STOP = {"requested": False}  # set by the SIGTERM handler: torch.compile may wrap OutOfTime


def out_of_time(signum: int, frame: object) -> None:
    STOP["requested"] = True
    raise OutOfTime


@dataclass
class Sizes:
    device: torch.device = torch.device("cuda")  # cpu: a rehearsal of the same code
    n_layer: int = 12
    block_size: int = 1024
    batch: int = 16
    steps: int = 20
    warmup: int = 3
    reps: int = 3
    prompt: int = 128
    new_tokens: int = 256
    gen_batches: tuple[int, ...] = (1, 64)
    matmul: int = 8192
    copy_bytes: int = 2 * 1024**3


QUICK = Sizes(
    n_layer=2,
    block_size=256,
    batch=4,
    steps=2,
    warmup=1,
    reps=1,
    prompt=16,
    new_tokens=16,
    gen_batches=(1, 4),
    matmul=2048,
    copy_bytes=256 * 1024**2,
)


@dataclass
class Results:
    peak_flops: float = math.nan
    bandwidth: float = math.nan
    train: dict[tuple[str, bool], dict[str, float]] = field(default_factory=dict)
    gen: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def device_seconds(device: torch.device, fn: Callable[[], object]) -> float:
    """Seconds between CUDA events recorded around `fn`, after all earlier work finished (on
    a CPU, the wall clock)."""
    if device.type != "cuda":
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def matmul_peak(device: torch.device, n: int, reps: int = 20) -> float:
    """bf16 FLOP/s of an n x n x n matmul on random data: the MFU denominator measured here."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = device_seconds(device, lambda: [a @ b for _ in range(reps)])
    return 2 * n**3 * reps / seconds


def copy_bandwidth(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Bytes/s of a device-to-device copy, counting each byte read and written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = device_seconds(device, lambda: [dst.copy_(src) for _ in range(reps)])
    return 2 * nbytes * reps / seconds


def model_config(recipe: str, sizes: Sizes) -> GPTConfig:
    return GPTConfig(
        block_size=sizes.block_size, n_layer=sizes.n_layer, n_head=12, n_embd=768, recipe=recipe
    )


def bench_training(recipe: str, compiled: bool, sizes: Sizes) -> dict[str, float]:
    """Tokens/s of `train_step` at bf16 autocast, median of `reps` runs of `steps` steps."""
    device = sizes.device
    config = model_config(recipe, sizes)
    cfg = TrainConfig(
        data_dir=Path("."),
        out_dir=Path("."),
        model=config,
        batch_size=sizes.batch,
        precision="bf16",
        device=device.type,
        compile=compiled,
        max_steps=1000,
    )
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, cfg, device)
    set_lr(optimizer, lr_at(500, cfg))
    runnable = torch.compile(model) if compiled else model
    shape = (sizes.batch, config.block_size)
    x = torch.randint(0, config.tokenizer_vocab_size, shape, device=device)
    y = torch.randint(0, config.tokenizer_vocab_size, shape, device=device)

    def steps(n: int) -> None:
        for _ in range(n):
            train_step(runnable, optimizer, [(x, y)], "bf16", device, grad_clip=1.0)

    started = time.perf_counter()
    device_seconds(device, lambda: steps(sizes.warmup))  # compiles, when compiled
    warmup_s = time.perf_counter() - started
    tokens = sizes.steps * sizes.batch * config.block_size
    timed = [device_seconds(device, lambda: steps(sizes.steps)) for _ in range(sizes.reps)]
    cuda = device.type == "cuda"
    return {
        "tokens_per_s": statistics.median(tokens / t for t in timed),
        "flops_per_token": model.flops_per_token(),
        "warmup_s": warmup_s,
        "memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else math.nan,
    }


def decode_bytes(model: GPT, batch: int, prompt: int, new_tokens: int, cache_bytes: int) -> float:
    """Bytes the decode steps of one job must read at least: per step the weights as stored
    (lookup tables excluded: only a few rows are read) and every cached key and value."""
    c = model.config
    weights = model.num_params() * next(model.parameters()).element_size()
    per_position = 2 * c.n_layer * batch * c.n_embd * cache_bytes  # keys + values
    contexts = range(prompt, prompt + new_tokens)  # positions attended at each step
    return sum(weights + per_position * context for context in contexts)


def bench_generation(
    recipe: str, precision: str, batch: int, sizes: Sizes, bandwidth: float
) -> dict[str, float]:
    """Output tokens/s of one `generate` job (median of `reps`), and its share of the bound."""
    config = model_config(recipe, sizes)
    device = sizes.device
    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(
        0, config.tokenizer_vocab_size, (batch, sizes.prompt), generator=generator
    )
    sampling = SamplingConfig(do_sample=False, max_new_tokens=sizes.new_tokens, eos_token_id=())
    dtype = torch.bfloat16 if precision == "bf16" else None

    def job() -> None:
        results = generate(
            model, prompts.tolist(), sampling, batch_size=batch, device=device, autocast_dtype=dtype
        )
        assert all(len(g.tokens) == sizes.new_tokens for g in results)

    job()  # warm-up
    rates = [batch * sizes.new_tokens / device_seconds(device, job) for _ in range(sizes.reps)]
    cache_bytes = 2 if dtype is not None else 4
    bytes_read = decode_bytes(model, batch, sizes.prompt, sizes.new_tokens, cache_bytes)
    rate = statistics.median(rates)
    bound = batch * sizes.new_tokens * bandwidth / bytes_read
    return {
        "tokens_per_s": rate,
        "bound_tokens_per_s": bound,
        "fraction": rate / bound,
        "fraction_nominal": rate * bytes_read / (batch * sizes.new_tokens * NOMINAL_BANDWIDTH),
        "ms_per_step": 1e3 * batch / rate,
    }


def attempt(results: Results, what: str, fn: Callable[[], dict[str, float]]) -> dict | None:
    """Run one measurement; a failure is one line and the benchmark goes on."""
    try:
        return fn()
    except OutOfTime:
        raise
    except Exception as exc:  # report and go on: one run on a lent GPU
        if STOP["requested"]:
            raise OutOfTime from exc
        line = f"{what}: failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        results.failed.append(line)
        print(f"  {line}", flush=True)
        return None
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run(args: argparse.Namespace, sizes: Sizes, results: Results) -> None:
    results.peak_flops = matmul_peak(sizes.device, sizes.matmul)
    results.bandwidth = copy_bandwidth(sizes.device, sizes.copy_bytes)
    print(
        f"bf16 matmul {sizes.matmul}^3: {results.peak_flops / 1e12:.0f} TFLOP/s "
        f"({results.peak_flops / NOMINAL_BF16_FLOPS:.0%} of nominal 989); device-to-device copy "
        f"{results.bandwidth / 1e12:.2f} TB/s ({results.bandwidth / NOMINAL_BANDWIDTH:.0%} of "
        "nominal 4.8)",
        flush=True,
    )
    # Eager training and generation first: torch.compile takes minutes, and a timeout that
    # cuts it short should not cost the other numbers.
    for recipe in args.recipes:
        training(results, recipe, False, sizes)
    for recipe in args.recipes:
        for precision in ("bf16", "fp32"):
            for batch in sizes.gen_batches:
                what = f"generate {recipe} {precision} batch {batch}"
                measured = attempt(
                    results,
                    what,
                    lambda r=recipe, p=precision, b=batch: bench_generation(
                        r, p, b, sizes, results.bandwidth
                    ),
                )
                if measured:
                    results.gen[recipe, precision, batch] = measured
                    print(
                        f"  {what}: {measured['tokens_per_s']:,.0f} tok/s, "
                        f"{measured['ms_per_step']:.2f} ms/step, {measured['fraction']:.1%} of "
                        f"the bound ({measured['bound_tokens_per_s']:,.0f} tok/s)",
                        flush=True,
                    )
    for recipe in args.recipes if args.compile else ():
        training(results, recipe, True, sizes)
        torch._dynamo.reset()


def training(results: Results, recipe: str, compiled: bool, sizes: Sizes) -> None:
    what = f"train {recipe} bf16 {'torch.compile' if compiled else 'eager'}"
    if sizes.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    measured = attempt(results, what, lambda: bench_training(recipe, compiled, sizes))
    if measured:
        measured["mfu"] = (
            measured["flops_per_token"] * measured["tokens_per_s"] / results.peak_flops
        )
        measured["mfu_nominal"] = (
            measured["flops_per_token"] * measured["tokens_per_s"] / NOMINAL_BF16_FLOPS
        )
        results.train[recipe, compiled] = measured
        print(
            f"  {what}: {measured['tokens_per_s']:,.0f} tok/s, MFU {measured['mfu_nominal']:.1%} "
            f"of nominal ({measured['mfu']:.1%} of measured), warm-up {measured['warmup_s']:.0f} "
            f"s, {measured['memory_gb']:.1f} GB",
            flush=True,
        )


def summary(results: Results, sizes: Sizes) -> str:
    """The markdown tables: every measurement, then the issue's targets."""
    lines = [
        f"peaks: bf16 matmul {results.peak_flops / 1e12:.0f} TFLOP/s (nominal 989), copy "
        f"{results.bandwidth / 1e12:.2f} TB/s (nominal 4.8)",
        "",
        f"| training, {sizes.n_layer}x768, ctx {sizes.block_size}, batch {sizes.batch}, bf16 "
        "| tokens/s | MFU (nominal 989) | MFU (measured peak) |",
        "|---|---:|---:|---:|",
    ]
    for (recipe, compiled), m in results.train.items():
        mode = "torch.compile" if compiled else "eager"
        lines.append(
            f"| {recipe}, {mode} | {m['tokens_per_s']:,.0f} | {m['mfu_nominal']:.1%} "
            f"| {m['mfu']:.1%} |"
        )
    lines += [
        "",
        f"| generation, prompt {sizes.prompt}, {sizes.new_tokens} new | tokens/s | ms/step "
        "| of bound (measured bw) | of bound (nominal 4.8 TB/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for (recipe, precision, batch), m in results.gen.items():
        lines.append(
            f"| {recipe}, {precision}, batch {batch} | {m['tokens_per_s']:,.0f} "
            f"| {m['ms_per_step']:.2f} | {m['fraction']:.1%} | {m['fraction_nominal']:.1%} |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for (recipe, compiled), m in results.train.items():
        if compiled:
            met = "yes" if m["mfu_nominal"] >= TARGET_MFU else "no"
            lines.append(
                f"| training MFU >= 45% (compile, bf16, nominal peak), {recipe} "
                f"| {m['mfu_nominal']:.1%} | {met} |"
            )
    for (recipe, precision, batch), m in results.gen.items():
        if batch == 1:
            met = "yes" if m["fraction"] >= TARGET_BOUND else "no"
            lines.append(
                f"| generation batch 1 >= 60% of bandwidth bound, {recipe} {precision} "
                f"| {m['fraction']:.1%} | {met} |"
            )
    if results.failed:
        lines += ["", *results.failed]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--recipes", default="gpt2,modern", help="comma-separated recipes")
    parser.add_argument("--batch", type=int, help="training micro-batch (default 16)")
    parser.add_argument("--steps", type=int, help="timed training steps per repetition")
    parser.add_argument("--reps", type=int, help="repetitions (median)")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip torch.compile"
    )
    parser.add_argument("--summary", type=Path, help="also write the summary tables here")
    parser.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="cpu: rehearse, not measure"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    args.recipes = [r for r in args.recipes.split(",") if r]
    sizes = replace(QUICK if args.quick else Sizes(), device=torch.device(args.device))
    for name in ("batch", "steps", "reps"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    signal.signal(signal.SIGTERM, out_of_time)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
        device += f"{props.multi_processor_count} SMs; CUDA {torch.version.cuda}"
    else:
        device = "CPU rehearsal: these numbers are not the GPU's"
    print(
        f"{device}; torch {torch.__version__}; {'quick' if args.quick else 'full'} sizes",
        flush=True,
    )
    results = Results()
    stopped = False
    try:
        run(args, sizes, results)
    except OutOfTime:
        stopped = True
    text = summary(results, sizes)
    if stopped:
        text = "stopped by SIGTERM (timeout): the tables hold what was measured before it\n" + text
    print("\n" + text, flush=True)
    if args.summary:
        args.summary.write_text(text, encoding="utf-8")
    return 1 if results.failed or stopped else 0


if __name__ == "__main__":
    sys.exit(main())
