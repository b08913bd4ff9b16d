"""Batched generation from token-id prompts: every prompt with its own sampling settings,
decoded by a fixed number of slots that are refilled as outputs finish (model/batching.py).

Each output (prompt index, sample index) is one row with its own settings, stop conditions
and random stream, seeded from (seed, prompt index, sample index): its text does not depend
on the batching, the batch size or which rows share its batch (fp32, same device).

Context window: prompt + completion never exceed `block_size` tokens. A row that reaches it
stops with finish reason "length", as for `max_new_tokens`; a prompt needs at most
`block_size - 1` tokens, to leave room for one new token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence

import torch

from gptforge.model.batching import (
    BatchStats,
    Decode,
    Decoder,
    Generation,
    Job,
    Row,
    TokenEvent,
    row_seed,
)
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import Batching, JobConfig, SamplingConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.tokenizer import EOT_TOKEN

__all__ = ["BatchStats", "Generation", "TokenEvent", "generate", "row_seed", "stream"]
JOB = JobConfig()  # the defaults of every entry point below


def validate_prompts(prompts: Sequence[Sequence[int]], block_size: int, vocab_size: int) -> None:
    """Refuse what cannot be generated from, naming the prompt; cheap, before any model work."""
    if len(prompts) == 0:
        raise ConfigError("prompts", "give at least one prompt")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ConfigError(
                "prompts", f"prompt {i} is empty; give at least one token (e.g. {EOT_TOKEN})"
            )
        if len(prompt) >= block_size:
            raise ConfigError(
                "prompts",
                f"prompt {i} has {len(prompt)} tokens; the context window (block_size="
                f"{block_size}) leaves room for at most {block_size - 1} prompt tokens",
            )
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise ConfigError(
                "prompts", f"prompt {i} has token id {bad[0]} outside [0, {vocab_size})"
            )


def stream(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig | Sequence[SamplingConfig] | None = None,
    *,
    num_return_sequences: int = JOB.num_return_sequences,
    batch_size: int = JOB.batch_size,
    batching: Batching = JOB.batching,
    decode: Decode | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    no_cache: bool = False,
    text_events: bool = True,
    prompt_indices: Sequence[int] | None = None,
    skip: Collection[tuple[int, int]] = (),
    stats: BatchStats | None = None,
) -> Iterator[TokenEvent | Generation]:
    """Generate, yielding a `TokenEvent` per sampled token and a `Generation` per finished output.

    `sampling` is one setting for every prompt or one per prompt; rows with different
    settings share the batch. `batch_size` is the number of slots; `batching` "continuous"
    refills a slot as soon as its output ends, "static" waits for the whole group.
    `device` defaults to the model's (the model is moved there); `autocast_dtype` (e.g.
    torch.bfloat16) runs the forward under autocast; `no_cache` recomputes the whole sequence
    every step (a reference and a baseline). `text_events` decodes every step to fill
    `TokenEvent.text` (needs `decode`). `prompt_indices` name the prompts (default 0, 1, ...):
    an output's random stream and its `prompt_index` come from them, so a job split into
    several calls, or one prompt under several settings, keeps every output's text. `skip`
    holds (request index, sample index) pairs not to generate, the outputs a stopped job
    already has: the others come out as they would have. `stats` is filled with what the
    loop did.
    """
    JobConfig(num_return_sequences, batch_size, batching)  # checked before any model work
    config = model.config
    prompts = [[int(t) for t in prompt] for prompt in prompts]
    validate_prompts(prompts, config.block_size, config.vocab_size)
    settings = _per_prompt(sampling, len(prompts))
    indices = list(range(len(prompts))) if prompt_indices is None else list(prompt_indices)
    if len(indices) != len(prompts):
        raise ConfigError("prompt_indices", "give one index per prompt")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows = [
        Row(prompt, s, i, n, r, min(s.max_new_tokens, config.block_size - len(prompt)))
        for r, (i, prompt, s) in enumerate(zip(indices, prompts, settings, strict=True))
        for n in range(num_return_sequences)
        if (r, n) not in skip
    ]
    if not rows:
        return
    if batching == "static":
        rows.sort(key=lambda row: -len(row.prompt))
    was_training = model.training
    model.to(device).eval()
    job = Job(model, decode, text_events, device, autocast_dtype, no_cache)
    decoder = Decoder(job, rows, min(batch_size, len(rows)), stats or BatchStats())
    try:
        yield from decoder.run(deque(rows), batching)
    finally:
        model.train(was_training)


def _per_prompt(
    sampling: SamplingConfig | Sequence[SamplingConfig] | None, count: int
) -> list[SamplingConfig]:
    if sampling is None or isinstance(sampling, SamplingConfig):
        return [sampling or SamplingConfig()] * count
    if len(sampling) != count:
        raise ConfigError("sampling", f"give one setting or one per prompt ({count})")
    return list(sampling)


def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig | Sequence[SamplingConfig] | None = None,
    *,
    num_return_sequences: int = JOB.num_return_sequences,
    batch_size: int = JOB.batch_size,
    batching: Batching = JOB.batching,
    decode: Decode | None = None,
    on_token: Callable[[TokenEvent], None] | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    no_cache: bool = False,
    prompt_indices: Sequence[int] | None = None,
    stats: BatchStats | None = None,
) -> list[Generation]:
    """Generate every output; results in the order of the prompts, then by sample index.

    `on_token` is called for each sampled token (see `TokenEvent`); text is only decoded
    every step when it or a stop string needs it.
    """
    events = stream(
        model,
        prompts,
        sampling,
        num_return_sequences=num_return_sequences,
        batch_size=batch_size,
        batching=batching,
        decode=decode,
        device=device,
        autocast_dtype=autocast_dtype,
        no_cache=no_cache,
        text_events=on_token is not None,
        prompt_indices=prompt_indices,
        stats=stats,
    )
    results = []
    for event in events:
        if isinstance(event, Generation):
            results.append(event)
        elif on_token is not None:
            on_token(event)
    return sorted(results, key=lambda g: (g.request_index, g.sample_index))
