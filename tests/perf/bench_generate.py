"""Generation throughput: our batched KV-cached decoder against transformers' `generate`.

Run:  .venv/bin/python tests/perf/bench_generate.py [--reps 5] [--batches 1 8] [--quick]
      .venv/bin/python tests/perf/bench_generate.py --job [--outputs 512] [--batches 8]
                                                    [--shape small|124m]

One random-init GPT (6 layers, 6 heads, 384 wide, context 512, vocab 50304) and its
`GPT2LMHeadModel` twin with the same weights (model/convert.py). Every side samples with
T=0.8, top_k=50, top_p=0.9 from 32-token prompts, 256 new tokens, end-of-text disabled, in
fp32 with 2 threads, in this one process. Sides, order rotated every repetition:

  ours     model.generate.generate(...), batch = all prompts, KV cache;
  hf       GPT2LMHeadModel.generate(do_sample=True, ...), its own KV cache;
  nocache  ours with no_cache=True: the whole sequence recomputed every step (logits of the
           last position only);
  hf-nocache  (with --hf-nocache) transformers with use_cache=False, for reference.

Prints new tokens/s per repetition with the 1-minute load average (other processes on a
2-core machine slow 2-thread runs down many times over: trust quiet repetitions), medians,
and ratios of medians; asserts nothing.

--job: a batch job as users run them (tests/perf/generate_job.py): `--outputs` prompts of
8-200 tokens, each with its own max_new_tokens drawn from 16-256, `--batches` slots.
Sides: ours continuous batching, ours static batching, transformers `generate` on padded
static batches of the same size (each runs to its longest row's limit; the rest is cut
off), transformers `generate_batch`'s continuous batching (its manager, one request per
output with its own max_new_tokens, at most that many requests per batch). Prints the time
to finish the job and output tokens/s, with ratios. `--shape 124m` runs the job on GPT-2
124M shapes (12 layers, 768 wide) instead of the small model: a step then reads ~500 MB of
weights, the regime where continuous batching's fewer steps pay.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from generate_job import job_sides
from transformers import GPT2Config, GPT2LMHeadModel

from gptforge.model.config import GPTConfig
from gptforge.model.convert import hf_config_kwargs, to_hf
from gptforge.model.decode_weights import packing
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig

SHAPES = {
    "small": GPTConfig(block_size=512, n_layer=6, n_head=6, n_embd=384, recipe="gpt2"),
    # GPT-2 124M: 12 layers of 768; fp32 weights (~500 MB) no longer sit in the CPU's caches.
    "124m": GPTConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, recipe="gpt2"),
}
CONFIG = SHAPES["small"]
PROMPT_TOKENS = 32


def build_models(config: GPTConfig = CONFIG) -> tuple[GPT, GPT2LMHeadModel]:
    torch.manual_seed(0)
    ours = GPT(config).eval()
    kwargs = hf_config_kwargs(config)
    hf = GPT2LMHeadModel(GPT2Config(**kwargs, bos_token_id=0, eos_token_id=0)).eval()
    hf.load_state_dict(to_hf(ours.state_dict()), strict=True)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return ours, hf


def sides(
    ours: GPT, hf: GPT2LMHeadModel, batch: int, new: int, hf_nocache: bool
) -> dict[str, Callable[[], int]]:
    """Each side generates `new` tokens for `batch` prompts and returns how many it made."""
    prompts = torch.randint(0, CONFIG.tokenizer_vocab_size, (batch, PROMPT_TOKENS))
    sampling = SamplingConfig(
        temperature=0.8, top_k=50, top_p=0.9, max_new_tokens=new, eos_token_id=()
    )

    def run_ours(no_cache: bool = False) -> int:
        results = generate(ours, prompts.tolist(), sampling, batch_size=batch, no_cache=no_cache)
        return sum(g.num_completion_tokens for g in results)

    def run_hf(use_cache: bool = True) -> int:
        with torch.inference_mode():
            out = hf.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=True,
                temperature=0.8,
                top_k=50,
                top_p=0.9,
                max_new_tokens=new,
                min_new_tokens=new,
                use_cache=use_cache,
            )
        return (out.size(1) - PROMPT_TOKENS) * batch

    runs = {"ours": run_ours, "hf": run_hf, "nocache": lambda: run_ours(no_cache=True)}
    if hf_nocache:
        runs["hf-nocache"] = lambda: run_hf(use_cache=False)
    return runs


def measure(runs: dict[str, Callable[[], int]], reps: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            tokens = runs[name]()
            rates[name].append(tokens / (time.perf_counter() - start))
        cells = "  ".join(f"{n} {rates[n][-1]:7.1f}" for n in names if rates[n])
        print(f"  rep {rep}: {cells}  (load {os.getloadavg()[0]:.1f})", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new", type=int, default=256, help="new tokens per prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", nargs="+", help="run only these sides (default: all)")
    parser.add_argument("--hf-nocache", action="store_true", help="add transformers' no-cache")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 tokens, 1 rep")
    parser.add_argument("--job", action="store_true", help="the mixed batch job instead")
    parser.add_argument("--outputs", type=int, default=512, help="--job: outputs in the job")
    parser.add_argument("--shape", choices=SHAPES, default="small", help="--job: the model")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.new, args.outputs = 1, 16, 24
    torch.set_num_threads(args.threads)
    ours, hf = build_models(SHAPES[args.shape] if args.job else CONFIG)
    if args.job:
        run_job(ours, hf, args)
        return
    print(
        f"{CONFIG.n_layer} layers, {CONFIG.n_embd} wide, vocab {CONFIG.vocab_size}, "
        f"prompt {PROMPT_TOKENS}, {args.new} new tokens, fp32, {args.threads} threads"
    )
    table = []
    for batch in args.batches:
        runs = sides(ours, hf, batch, args.new, args.hf_nocache)
        runs = {name: run for name, run in runs.items() if name in (args.sides or runs)}
        for run in sides(ours, hf, batch, 8, args.hf_nocache).values():  # warm-up, untimed
            run()
        print(f"batch {batch}: new tokens/s")
        rates = measure(runs, args.reps)
        med = {name: statistics.median(values) for name, values in rates.items()}
        table.append((batch, med))
    names = list(table[0][1])
    print("\n| batch | " + " | ".join(f"{n} tok/s" for n in names) + " | ratios of medians |")
    print("|---" * (len(names) + 2) + "|")
    for batch, med in table:
        others = [n for n in names if n != "ours"] if "ours" in med else []
        ratios = ", ".join(f"ours/{n} {med['ours'] / med[n]:.2f}x" for n in others)
        cells = " | ".join(f"{med[n]:.1f}" for n in names)
        print(f"| {batch} | {cells} | {ratios} |")


def run_job(ours: GPT, hf: GPT2LMHeadModel, args: argparse.Namespace) -> None:
    """Time to finish the mixed job per side; the job's output tokens are the same for all."""
    batch = args.batches[-1]
    runs, total, stats = job_sides(ours, hf, args.outputs, batch, seed=0)
    runs = {name: run for name, run in runs.items() if name in (args.sides or runs)}
    shape = f"{ours.config.n_layer} layers of {ours.config.n_embd}"
    packed = packing(ours, torch.device("cpu"), None) or "none"
    print(f"job: {args.outputs} outputs, {total} output tokens, {batch} slots, {shape}")
    print(f"ours: decode weights packed by {packed}, {torch.get_num_threads()} threads")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            made = runs[name]()
            seconds[name].append(time.perf_counter() - start)
            assert made == total, f"{name} made {made} tokens, expected {total}"
            load = os.getloadavg()[0]
            print(f"  rep {rep}: {name} {seconds[name][-1]:7.1f} s  (load {load:.1f})", flush=True)
    med = {name: statistics.median(values) for name, values in seconds.items()}
    first = names[0]
    print(f"\n| side | job seconds | output tokens/s | {first} speed-up over it |")
    print("|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {med[name]:.1f} | {total / med[name]:.1f} | "
            f"{med[name] / med[first]:.2f}x |"
        )
    if {"continuous", "static"} <= stats.keys():
        steps = {name: stats[name].decode_steps for name in ("continuous", "static")}
        print(
            f"\ndecode steps: continuous {steps['continuous']} "
            f"({stats['continuous'].occupancy:.0%} of slots busy), static {steps['static']} "
            f"({stats['static'].occupancy:.0%}): {steps['static'] / steps['continuous']:.2f}x, "
            "the most continuous batching can gain where a step's cost does not grow with "
            "its rows"
        )


if __name__ == "__main__":
    main()
