"""Batched generation from token-id prompts: left padding, one prefill, then one token a step.

Each output (prompt index, sample index) is one row of a batch with its own stop conditions
and its own random stream, seeded from (seed, prompt index, sample index): its text does not
depend on the batch size or on which rows share its batch (fp32, same device). Finished rows
leave the batch, and the loop ends when none is left.

Context window: prompt + completion never exceed `block_size` tokens. A row that reaches it
stops with finish reason "length", as for `max_new_tokens`; a prompt needs at most
`block_size - 1` tokens, to leave room for one new token.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from gptforge.model.gpt import GPT
from gptforge.model.kv_cache import KVCache
from gptforge.model.sampling import Processor, build_processors, next_tokens
from gptforge.model.sampling_config import SamplingConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.tokenizer import EOT_TOKEN

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token of one output, for streaming.

    `text` is the text that became final with this token: held back while it might be the
    start of a stop string or an incomplete UTF-8 character; empty without `decode`.
    """

    prompt_index: int
    sample_index: int
    token: int
    text: str


@dataclass(frozen=True)
class Generation:
    """One finished output: the completion without the eos token, and why it ended.

    `tokens` are all tokens generated before eos, including those that spelled a stop
    string; `text` ends before the stop string. `seconds` runs from the start of the
    output's batch (prefill included) to its last token.
    """

    prompt_index: int
    sample_index: int
    prompt_tokens: list[int]
    tokens: list[int]
    text: str | None
    finish_reason: str  # "eos" | "stop" | "length"
    num_prompt_tokens: int
    num_completion_tokens: int
    seconds: float
    tokens_per_second: float

    def to_json(self) -> dict:
        return asdict(self)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one output's random stream: a hash of the triple, nothing else."""
    digest = hashlib.sha256(f"gptforge/{seed}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def validate_job(num_return_sequences: int, batch_size: int) -> None:
    """The job's shape settings, checked before a model is loaded."""
    if num_return_sequences < 1:
        raise ConfigError("num_return_sequences", f"must be >= 1, got {num_return_sequences}")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")


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


@dataclass
class _Row:
    """The bookkeeping of one output while it is in a batch."""

    prompt_index: int
    sample_index: int
    prompt: list[int]
    limit: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0
    finish: str | None = None

    def push(self, token: int, sampling: SamplingConfig, decode: Decode | None, live: bool):
        """Record one sampled token, settle whether the row is done, return its event."""
        stops = sampling.stop
        if token in sampling.eos_token_id:
            self.finish = "eos"
        else:
            self.tokens.append(token)
            if len(self.tokens) >= self.limit:
                self.finish = "length"
            if decode is not None and (stops or live):
                self.text = decode(self.tokens)
                cut = _find_stop(self.text, stops)
                if cut is not None:
                    self.text, self.finish = self.text[:cut], "stop"
        delta = ""
        if decode is not None and live:
            final = len(self.text) if self.finish else len(self.text) - _held_back(self.text, stops)
            delta, self.shown = self.text[self.shown : final], max(self.shown, final)
        return TokenEvent(self.prompt_index, self.sample_index, token, delta)

    def result(self, seconds: float, decode: Decode | None) -> Generation:
        text = None
        if decode is not None:
            text = self.text if self.finish == "stop" or self.text else decode(self.tokens)
        return Generation(
            prompt_index=self.prompt_index,
            sample_index=self.sample_index,
            prompt_tokens=self.prompt,
            tokens=self.tokens,
            text=text,
            finish_reason=self.finish or "length",
            num_prompt_tokens=len(self.prompt),
            num_completion_tokens=len(self.tokens),
            seconds=seconds,
            tokens_per_second=len(self.tokens) / seconds if seconds > 0 else 0.0,
        )


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters may still change: a stop string's start, or U+FFFD."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    return hold


class _Head:
    """The tied output projection over the tokenizer's ids, in the CPU's fastest layout.

    `F.linear` with the 50k x 384 weight at batch 1..16 runs 2-4x slower than reading the
    weight once (BLAS packs it on every call); `x @ W.T` stored K-major (batch 1) and
    `(W @ x.T).T` (larger batches) do not. The K-major copy is made on first use.
    """

    def __init__(self, model: GPT):
        self.weight = model.lm_head.weight[: model.config.tokenizer_vocab_size].detach()
        self.k_major: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if x.size(0) > 1:
            return (self.weight @ x.t()).t()
        if self.k_major is None:
            self.k_major = self.weight.t().contiguous()
        return x @ self.k_major


@dataclass
class _Job:
    """What every batch of one `stream` call shares."""

    model: GPT
    sampling: SamplingConfig
    decode: Decode | None
    text_events: bool
    device: torch.device
    autocast_dtype: torch.dtype | None
    no_cache: bool
    chain: list[Processor] = field(init=False)
    head: _Head = field(init=False)

    def __post_init__(self) -> None:
        self.chain = build_processors(self.sampling)
        self.head = _Head(self.model)


class _Batch:
    """One batch's tensors: the token history (column = cache slot), left padding, the cache.

    Row b's first `pad[b]` columns are padding, filled with its own first token so the
    repetition penalty sees nothing new; the cache masks them from attention.
    """

    def __init__(self, job: _Job, rows: list[_Row]):
        steps = max(row.limit for row in rows)
        width = max(len(row.prompt) for row in rows)
        self.job, self.device = job, job.device
        self.history = torch.tensor(
            [[r.prompt[0]] * (width - len(r.prompt)) + r.prompt + [0] * steps for r in rows],
            device=self.device,
        )
        self.width = width
        self.pad = torch.tensor([width - len(r.prompt) for r in rows], device=self.device)
        self.padded = bool(self.pad.any())
        self.uniforms = None
        if not job.sampling.greedy:
            uniforms = [_uniforms(job.sampling, row, steps) for row in rows]
            self.uniforms = torch.stack(uniforms).to(self.device)
        self.cache = None
        if not job.no_cache:
            config = job.model.config
            dtype = job.autocast_dtype or next(job.model.parameters()).dtype
            self.cache = KVCache(
                config,
                len(rows),
                min(config.block_size, width + steps - 1),
                device=self.device,
                dtype=dtype,
                pad=self.pad,
            )

    @torch.inference_mode()
    def choose(self, step: int) -> Tensor:
        """The next token of every row: forward the new columns, then process and pick."""
        job = self.job
        dtype = job.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if self.cache is None:
                pad = self.pad if self.padded else None
                logits, _ = job.model(self.history[:, : self.width], pad=pad, last_only=True)
                logits = logits[:, -1, : job.model.config.tokenizer_vocab_size]
            else:
                new = self.history[:, self.cache.pos : self.width]
                logits = job.model.soft_cap(
                    job.head(job.model.hidden(new, cache=self.cache)[:, -1])
                )
        seen = self.history[:, : self.width] if job.sampling.repetition_penalty != 1 else None
        uniforms = None if self.uniforms is None else self.uniforms[:, step]
        return next_tokens(logits.float(), seen, job.sampling, job.chain, uniforms)

    @torch.inference_mode()
    def append(self, tokens: Tensor) -> None:
        self.history[:, self.width] = tokens
        self.width += 1

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> None:
        """Drop the other rows, then the padding columns every remaining row has.

        Removing common padding keeps each row's slots within its own context window, so a
        short prompt can use the whole window once the long prompts of its batch are done.
        """
        index = torch.tensor(rows, device=self.device)
        pad = self.pad[index]
        shift = int(pad.min())
        self.history = self.history[index, shift:]
        self.width -= shift
        self.pad = pad - shift
        self.padded = bool(self.pad.any())
        if self.uniforms is not None:
            self.uniforms = self.uniforms[index]
        if self.cache is not None:
            self.cache.keep(index, shift, self.pad if self.padded else None)


def _uniforms(sampling: SamplingConfig, row: _Row, steps: int) -> Tensor:
    """One uniform number per step the batch can take, from the row's own generator.

    `steps` is the batch's longest row limit, which the context window caps, not
    max_new_tokens (10**10 of them would be 80 GB). The numbers are a prefix of the row's one
    stream, so its text does not depend on the other rows' limits."""
    generator = torch.Generator().manual_seed(
        row_seed(sampling.seed, row.prompt_index, row.sample_index)
    )
    return torch.rand(steps, generator=generator, dtype=torch.float64)


def _run_batch(job: _Job, rows: list[_Row]) -> Iterator[TokenEvent | Generation]:
    start = time.perf_counter()
    batch = _Batch(job, rows)
    step = 0
    while rows:
        chosen = batch.choose(step)
        step += 1
        for row, token in zip(rows, chosen.tolist(), strict=True):
            yield row.push(token, job.sampling, job.decode, job.text_events)
            if row.finish:
                yield row.result(time.perf_counter() - start, job.decode)
        keep = [i for i, row in enumerate(rows) if row.finish is None]
        if keep:
            batch.append(chosen)
            if len(keep) < len(rows):
                batch.keep(keep)
        rows = [rows[i] for i in keep]


def stream(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig | None = None,
    *,
    num_return_sequences: int = 1,
    batch_size: int = 8,
    decode: Decode | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    no_cache: bool = False,
    text_events: bool = True,
    prompt_indices: Sequence[int] | None = None,
) -> Iterator[TokenEvent | Generation]:
    """Generate, yielding a `TokenEvent` per sampled token and a `Generation` per finished output.

    Outputs are batched longest prompt first. `device` defaults to the model's (the model is
    moved there); `autocast_dtype` (e.g. torch.bfloat16) runs the forward under autocast;
    `no_cache` recomputes the whole sequence every step (a reference and a baseline).
    `text_events` decodes every step to fill `TokenEvent.text` (needs `decode`).
    `prompt_indices` name the prompts (default 0, 1, ...): an output's random stream and its
    `prompt_index` come from them, so a job split into several calls keeps every output's text.
    """
    sampling = sampling or SamplingConfig()
    validate_job(num_return_sequences, batch_size)
    config = model.config
    prompts = [[int(t) for t in prompt] for prompt in prompts]
    validate_prompts(prompts, config.block_size, config.vocab_size)
    indices = list(range(len(prompts))) if prompt_indices is None else list(prompt_indices)
    if len(indices) != len(prompts) or len(set(indices)) != len(indices):
        raise ConfigError("prompt_indices", "give one distinct index per prompt")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows = [
        _Row(i, s, prompt, min(sampling.max_new_tokens, config.block_size - len(prompt)))
        for i, prompt in zip(indices, prompts, strict=True)
        for s in range(num_return_sequences)
    ]
    rows.sort(key=lambda row: -len(row.prompt))
    was_training = model.training
    model.to(device).eval()
    job = _Job(model, sampling, decode, text_events, device, autocast_dtype, no_cache)
    try:
        for first in range(0, len(rows), batch_size):
            yield from _run_batch(job, rows[first : first + batch_size])
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig | None = None,
    *,
    num_return_sequences: int = 1,
    batch_size: int = 8,
    decode: Decode | None = None,
    on_token: Callable[[TokenEvent], None] | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    no_cache: bool = False,
    prompt_indices: Sequence[int] | None = None,
) -> list[Generation]:
    """Generate every output; results ordered by (prompt index, sample index).

    `on_token` is called for each sampled token (see `TokenEvent`); text is only decoded
    every step when it or a stop string needs it.
    """
    events = stream(
        model,
        prompts,
        sampling,
        num_return_sequences=num_return_sequences,
        batch_size=batch_size,
        decode=decode,
        device=device,
        autocast_dtype=autocast_dtype,
        no_cache=no_cache,
        text_events=on_token is not None,
        prompt_indices=prompt_indices,
    )
    results = []
    for event in events:
        if isinstance(event, Generation):
            results.append(event)
        elif on_token is not None:
            on_token(event)
    return sorted(results, key=lambda g: (g.prompt_index, g.sample_index))
