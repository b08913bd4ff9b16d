"""The decoding loop: a fixed number of slots serving a queue of outputs.

continuous (the default): a slot freed by a finished output is refilled at the next step.
The newcomer's prompt is prefilled into its cache slot in chunks of `PREFILL_CHUNK` tokens,
one chunk per step while other rows decode, so a long prompt stalls them for one chunk at a
time; rows decode together whatever their lengths, each at its own positions in the
preallocated cache (model/kv_cache.py), which is never reallocated.
static: a group of `slots` outputs runs until its last output ends, then the next group
starts, longest prompts first (the classic batch, kept for comparison).

Each output is one row with its own settings, stop conditions, cache slot and random stream,
seeded from (seed, prompt index, sample index), so its text depends on nothing else (fp32,
same device): not on the batching, the batch size or its neighbours.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from gptforge.model.decode_weights import decode_weights, packing
from gptforge.model.gpt import GPT
from gptforge.model.kv_cache import KVCache
from gptforge.model.precision import match_openmp_limit
from gptforge.model.sampling import RowSettings, next_tokens
from gptforge.model.sampling_config import Batching, SamplingConfig

Decode = Callable[[list[int]], str]

# Prompt tokens forwarded in one prefill chunk. On the 2-core CPU of docs/benchmarks.md a
# 128-token chunk of the 6x384 model costs about two decode steps of batch 8.
PREFILL_CHUNK = 128


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
    string; `text` ends before the stop string. `seconds` runs from the moment the output
    took its slot (prefill included) to its last token. `mean_logprob` is the mean natural
    log-probability of `tokens` under the model's own distribution (before any sampling
    setting), taken while decoding; None for an empty completion. `request_index` is the
    position of the output's prompt in the call.
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
    mean_logprob: float | None
    request_index: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BatchStats:
    """What the loop did: proof that slots are reused, and how full they stayed."""

    slots: int = 0
    outputs: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0  # rows decoded, summed over steps
    prefill_chunks: int = 0
    cache_allocations: int = 0

    @property
    def occupancy(self) -> float:
        """Mean fraction of the slots decoding at a step."""
        return self.decoded_rows / max(1, self.decode_steps * self.slots)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one output's random stream: a hash of the triple, nothing else."""
    digest = hashlib.sha256(f"gptforge/{seed}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Row:
    """One output while it is decoded: its settings, its progress, its cache slot."""

    prompt: list[int]
    settings: SamplingConfig
    prompt_index: int
    sample_index: int
    request_index: int
    limit: int  # new tokens at most: max_new_tokens, or what the context window leaves
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0
    finish: str | None = None
    logprob: float = 0.0
    fed: int = 0  # tokens in its cache slot
    started: float = 0.0
    uniforms: list[float] | None = None

    def begin(self) -> None:
        """Take a slot: start the clock and draw the row's random stream (a prefix of one
        stream per output, so its text does not depend on its limit)."""
        self.started = time.perf_counter()
        if not self.settings.greedy:
            seed = row_seed(self.settings.seed, self.prompt_index, self.sample_index)
            generator = torch.Generator().manual_seed(seed)
            draws = torch.rand(self.limit, generator=generator, dtype=torch.float64)
            self.uniforms = draws.tolist()

    def push(self, token: int, logprob: float, decode: Decode | None, live: bool) -> TokenEvent:
        """Record one sampled token, settle whether the row is done, return its event."""
        stops = self.settings.stop
        if token in self.settings.eos_token_id:
            self.finish = "eos"
        else:
            self.tokens.append(token)
            self.logprob += logprob
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

    def result(self, decode: Decode | None) -> Generation:
        seconds = time.perf_counter() - self.started
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
            mean_logprob=self.logprob / len(self.tokens) if self.tokens else None,
            request_index=self.request_index,
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


@dataclass
class Job:
    """What every step of one call shares."""

    model: GPT
    decode: Decode | None
    text_events: bool
    device: torch.device
    autocast_dtype: torch.dtype | None
    no_cache: bool


class Decoder:
    """`slots` rows decoded together over a preallocated cache and token history."""

    def __init__(self, job: Job, rows: list[Row], slots: int, stats: BatchStats):
        self.job, self.stats = job, stats
        width = max(len(row.prompt) + row.limit for row in rows)
        self.history = torch.zeros((slots, width), dtype=torch.long, device=job.device)
        self.free = deque(range(slots))
        self.active: dict[int, Row] = {}  # slot -> row, in the order they took their slots
        self.cache = None
        match_openmp_limit()  # oneDNN's products are garbage with fewer threads than planned
        if not job.no_cache:
            library = packing(job.model, job.device, job.autocast_dtype)
            self.weights = decode_weights(job.model, slots, library)
            dtype = job.autocast_dtype or next(job.model.parameters()).dtype
            self.cache = KVCache(job.model.config, slots, width - 1, device=job.device, dtype=dtype)
            stats.cache_allocations += 1
        self._settings: tuple[tuple[int, ...], RowSettings] | None = None
        stats.slots = slots

    def run(self, queue: deque[Row], batching: Batching) -> Iterator[TokenEvent | Generation]:
        continuous = batching == "continuous"
        while queue or self.active:
            if continuous or not self.active:
                self._admit(queue)
            ready = [slot for slot, row in self.active.items() if self._ready(row)]
            self._prefill(one_chunk=continuous and bool(ready))
            # In slot order: consecutive slots read the cache as a view, not a copy.
            ready = sorted(slot for slot, row in self.active.items() if self._ready(row))
            yield from self._decode(ready)

    def _admit(self, queue: deque[Row]) -> None:
        """Give free slots to the next outputs: their tokens go into the slot's history, the
        rest of which repeats the first token (the repetition penalty sees nothing new)."""
        while self.free and queue:
            slot, row = self.free.popleft(), queue.popleft()
            self.history[slot] = row.prompt[0]
            self.history[slot, : len(row.prompt)] = torch.tensor(row.prompt)
            if self.cache is not None:
                self.cache.clear(slot)
            else:
                row.fed = len(row.prompt) - 1  # nothing to prefill: every step sees it all
            row.begin()
            self.active[slot] = row

    @staticmethod
    def _ready(row: Row) -> bool:
        """All but the last prompt token are in the cache: the next step decodes the row."""
        return row.fed >= len(row.prompt) - 1

    @torch.inference_mode()
    def _prefill(self, one_chunk: bool) -> None:
        """Forward prompts into their slots in chunks at fixed offsets (0, PREFILL_CHUNK, ...),
        so a prompt is split the same way whatever else is decoding."""
        if self.cache is None:
            return
        model, dtype = self.weights.model, self.job.autocast_dtype
        for slot, row in self.active.items():
            while not self._ready(row):
                n = min(PREFILL_CHUNK, len(row.prompt) - 1 - row.fed)
                chunk = self.history[slot : slot + 1, row.fed : row.fed + n]
                with torch.autocast(self.job.device.type, dtype=dtype, enabled=dtype is not None):
                    model.hidden(chunk, cache=self.cache.step([slot], n))
                row.fed += n
                self.stats.prefill_chunks += 1
                if one_chunk:
                    return

    @torch.inference_mode()
    def _decode(self, slots: list[int]) -> Iterator[TokenEvent | Generation]:
        """One step: each row's next input token through the model, then its next token."""
        if not slots:
            return
        job = self.job
        rows = [self.active[slot] for slot in slots]
        index = torch.tensor(slots, device=job.device)
        fed = torch.tensor([row.fed for row in rows], device=job.device)
        logits = self._logits(index, fed, slots).float()
        settings = self._row_settings(rows)
        seen = None
        if any(row.settings.repetition_penalty != 1.0 for row in rows):
            seen = self.history[index, : max(len(r.prompt) + len(r.tokens) for r in rows)]
        uniforms = torch.tensor(
            [row.uniforms[len(row.tokens)] if row.uniforms else 0.0 for row in rows],
            dtype=torch.float64,
            device=job.device,
        )
        chosen = next_tokens(logits, seen, settings, uniforms)
        logprobs = logits.log_softmax(dim=1).gather(1, chosen.unsqueeze(1)).squeeze(1)
        self.history[index, fed + 1] = chosen
        self.stats.decode_steps += 1
        self.stats.decoded_rows += len(rows)
        for slot, row, token, logprob in zip(
            slots, rows, chosen.tolist(), logprobs.tolist(), strict=True
        ):
            row.fed += 1
            yield row.push(token, logprob, job.decode, job.text_events)
            if row.finish:
                yield row.result(job.decode)
                self.stats.outputs += 1
                del self.active[slot]
                self.free.append(slot)

    def _logits(self, index: Tensor, fed: Tensor, slots: list[int]) -> Tensor:
        """Next-token scores (n, tokenizer vocab) of the rows in `slots`."""
        model, dtype = self.job.model, self.job.autocast_dtype
        vocab = model.config.tokenizer_vocab_size
        with torch.autocast(self.job.device.type, dtype=dtype, enabled=dtype is not None):
            if self.cache is not None:
                inputs = self.history[index, fed].unsqueeze(1)
                hidden = self.weights.model.hidden(inputs, cache=self.cache.step(slots, 1))
                return model.soft_cap(self.weights.head(hidden[:, -1]))
            # No cache: each row's whole sequence, left-padded with its first token.
            pad = fed.max() - fed
            columns = torch.arange(int(fed.max()) + 1, device=fed.device)
            where = (columns.unsqueeze(0) - pad.unsqueeze(1)).clamp(min=0)
            sequences = self.history[index].gather(1, where)
            logits, _ = model(sequences, pad=pad if bool(pad.any()) else None, last_only=True)
            return logits[:, -1, :vocab]

    def _row_settings(self, rows: list[Row]) -> RowSettings:
        """The rows' settings, rebuilt only when the decoding rows change."""
        key = tuple((row.request_index, row.sample_index) for row in rows)
        if self._settings is None or self._settings[0] != key:
            self._settings = (key, RowSettings(tuple(row.settings for row in rows)))
        return self._settings[1]
