"""The mixed batch job of `bench_generate.py --job`, and the four ways to run it.

Prompts of 8-200 tokens, each output with its own max_new_tokens drawn from 16-256
(end-of-text disabled, so every side makes exactly the same number of output tokens),
sampled with T=0.8, top_k=50, top_p=0.9.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from transformers import GenerationConfig, GPT2LMHeadModel
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from gptforge.model.batching import BatchStats
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig

SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.9)


def make_job(outputs: int, vocab: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Prompts and each one's max_new_tokens."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(8, 200))] for _ in range(outputs)]
    return prompts, [rng.randint(16, 256) for _ in range(outputs)]


def job_sides(
    ours: GPT, hf: GPT2LMHeadModel, outputs: int, batch: int, seed: int
) -> tuple[dict[str, Callable[[], int]], int, dict[str, BatchStats]]:
    """Each side runs the whole job and returns the output tokens it kept; their total; and
    what our two batchings did at their last run (decode steps, slot occupancy)."""
    prompts, limits = make_job(outputs, ours.config.tokenizer_vocab_size, seed)
    settings = [
        SamplingConfig(**SAMPLING, max_new_tokens=n, eos_token_id=(), seed=seed) for n in limits
    ]

    stats: dict[str, BatchStats] = {}

    def run_ours(batching: str) -> int:
        stats[batching] = BatchStats()
        results = generate(
            ours, prompts, settings, batch_size=batch, batching=batching, stats=stats[batching]
        )
        return sum(g.num_completion_tokens for g in results)

    def run_hf_generate() -> int:
        """Padded static batches, longest prompts first (as ours static), left padding."""
        order = sorted(range(outputs), key=lambda i: -len(prompts[i]))
        kept = 0
        for first in range(0, outputs, batch):
            rows = order[first : first + batch]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.tensor([[0] * (width - len(prompts[i])) + prompts[i] for i in rows])
            mask = torch.tensor(
                [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows]
            )
            new = max(limits[i] for i in rows)
            with torch.inference_mode():
                out = hf.generate(
                    ids,
                    attention_mask=mask,
                    do_sample=True,
                    **SAMPLING,
                    max_new_tokens=new,
                    min_new_tokens=new,
                )
            kept += sum(min(limits[i], out.size(1) - width) for i in rows)
        return kept

    def run_hf_generate_batch() -> int:
        """transformers' continuous batching: one request per output, `batch` at a time."""
        config = GenerationConfig(do_sample=True, **SAMPLING, eos_token_id=None, pad_token_id=0)
        cb = ContinuousBatchingConfig(max_requests_per_batch=batch)
        kept, done = 0, 0
        with (
            torch.inference_mode(),
            hf.continuous_batching_context_manager(
                generation_config=config, continuous_batching_config=cb, block=True, timeout=60
            ) as manager,
        ):
            for prompt, limit in zip(prompts, limits, strict=True):
                manager.add_request(prompt, max_new_tokens=limit)
            for result in manager:
                if result.is_finished():
                    kept += len(result.generated_tokens)
                    done += 1
                    if done == outputs:
                        break
        return kept

    sides = {
        "ours-continuous": lambda: run_ours("continuous"),
        "ours-static": lambda: run_ours("static"),
        "hf-generate": run_hf_generate,
        "hf-generate_batch": run_hf_generate_batch,
    }
    return sides, sum(limits), stats
