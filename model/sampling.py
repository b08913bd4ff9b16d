"""Decoding settings and the logit processors that turn a model's scores into next tokens.

The processors keep Hugging Face's semantics and order (repetition penalty, temperature,
top-k, top-p) but pass a candidate set along instead of a full-vocabulary tensor: after top-k
only k columns remain, so top-p sorts k scores rather than 50k and sampling draws among them.
On a CPU at batch 8 a full-vocabulary sort costs more than the model's forward pass.

Sampling uses one uniform number per row and step (inverse CDF), supplied by the caller, so
each row's randomness can come from its own generator: what a row samples never depends on
which other rows share its batch.

Rows of one batch may have different settings (`RowSettings`): the processors hold per-row
tensors (a (1, 1) tensor applies to every row), and rows are grouped only by what changes
the shape of the work: greedy, top-k (k columns, sorted), top-p without top-k (the whole
vocabulary, sorted) and neither (the whole vocabulary, unsorted). A row gets the same
operations in a mixed batch as alone.

Extreme but valid settings (temperature 1e-300, a penalty of 1e-300 or 1e300) must not turn
scores into NaN or +inf: softmax would then return NaN and the draw an id past the
vocabulary. So the model's scores are made finite first (NaN -> -inf, +inf -> the largest
float), T and the penalty are kept inside the float's normal range (1e-50 is 0 in fp32), the
penalty clamps what it produces, and the temperature scales distances from the row's best
score, which are <= 0 and so can only underflow towards -inf (never chosen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from gptforge.model.sampling_config import SamplingConfig
from gptforge.pipeline.errors import RunError


@dataclass(frozen=True)
class Candidates:
    """Scores (B, n) for n columns of the vocabulary: all of it (`ids` None) or a subset.

    `descending` says the scores are sorted high to low, which top-p needs and top-k yields.
    Filtered-out columns hold -inf.
    """

    scores: Tensor
    ids: Tensor | None = None
    descending: bool = False

    def token_ids(self, columns: Tensor) -> Tensor:
        """Vocabulary ids of one chosen column per row."""
        if self.ids is None:
            return columns
        return self.ids.gather(1, columns.unsqueeze(1)).squeeze(1)

    def dense(self, vocab_size: int) -> Tensor:
        """Full (B, vocab_size) scores, -inf outside the candidates: Hugging Face's layout."""
        if self.ids is None:
            return self.scores
        out = self.scores.new_full((self.scores.size(0), vocab_size), -math.inf)
        return out.scatter_(1, self.ids, self.scores)


class Processor(Protocol):
    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates: ...


def column(values: Sequence[float], device: torch.device | str = "cpu") -> Tensor:
    """Per-row values as a (rows, 1) float32 column that broadcasts over the candidates."""
    return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)


class RepetitionPenalty:
    """Divide positive / multiply negative scores of tokens already in the sequence (CTRL).

    Applied first, to the full vocabulary; `tokens` (B, L) is the sequence so far, prompt
    included; a token that appears several times is penalised once. `penalty` is (B|1, 1).
    """

    def __init__(self, penalty: Tensor):
        self.penalty = penalty

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        if candidates.ids is not None or tokens is None:
            raise ValueError("the repetition penalty needs the full vocabulary and the sequence")
        scores = candidates.scores.clone()
        seen = scores.gather(1, tokens)
        penalty = _positive(self.penalty)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        finfo = torch.finfo(seen.dtype)
        seen = seen.clamp(finfo.min, finfo.max)  # a tiny penalty divides up to +inf
        return Candidates(scores.scatter_(1, tokens, seen))


class Temperature:
    """Divide scores by T (B|1, 1): T < 1 sharpens the distribution, T > 1 flattens it.

    Divides each score's distance below the row's best (softmax is unchanged by the shift):
    with a tiny T the others fall to -inf (greedy, as T -> 0 means) instead of the best
    rising to +inf.
    """

    def __init__(self, temperature: Tensor):
        self.temperature = temperature

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        c = candidates
        below = c.scores - c.scores.amax(dim=1, keepdim=True)
        return Candidates(below / _positive(self.temperature), c.ids, c.descending)


def _positive(value: Tensor) -> Tensor:
    """Values > 0 kept inside float32's normal range: 1e-320 is 0 in float32, 1e300 is inf,
    and 0 / 0 or -inf * 0 would be NaN."""
    finfo = torch.finfo(value.dtype)
    return value.clamp(finfo.tiny, finfo.max)


class TopK:
    """Keep each row's k highest scores, k (B|1,): the candidate set shrinks to max(k) columns,
    sorted, and a row's columns past its own k hold -inf."""

    def __init__(self, top_k: Tensor):
        self.top_k = top_k

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        c = candidates
        k = min(int(self.top_k.max()), c.scores.size(1))
        if k >= c.scores.size(1):
            return c
        scores, columns = c.scores.topk(k, dim=1)
        if bool((self.top_k < k).any()):
            beyond = torch.arange(k, device=scores.device) >= self.top_k.unsqueeze(1)
            scores = scores.masked_fill(beyond, -math.inf)
        ids = columns if c.ids is None else c.ids.gather(1, columns)
        return Candidates(scores, ids, descending=True)


class TopP:
    """Keep the smallest set of highest-probability tokens whose total is >= p (nucleus).

    `top_p` is (B|1, 1); a row with p = inf keeps everything. The top token always stays.
    Sorts only when the candidates are not sorted yet (no top-k).
    """

    def __init__(self, top_p: Tensor):
        self.top_p = top_p

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        c = candidates
        if not c.descending:
            scores, columns = c.scores.sort(dim=1, descending=True)
            c = Candidates(scores, columns if c.ids is None else c.ids.gather(1, columns), True)
        probs = c.scores.softmax(dim=1)
        before = probs.cumsum(dim=1) - probs  # probability mass of the higher-ranked tokens
        drop = before >= self.top_p
        drop[:, 0] = False
        return Candidates(c.scores.masked_fill(drop, -math.inf), c.ids, True)


def build_processors(config: SamplingConfig) -> list[Processor]:
    """The processors `config` switches on, for every row, with Hugging Face's results."""
    return _chain([config], "cpu")


def _chain(configs: Sequence[SamplingConfig], device: torch.device | str) -> list[Processor]:
    """The processors a group of rows needs, each with one value per row (one row: (1, 1)).

    A setting that is off for some rows is neutral for them: penalty 1 and temperature 1
    leave the scores as they are (bit for bit; softmax ignores the shift), top-p off is inf.
    Greedy rows only get the penalty."""
    chain: list[Processor] = []
    if any(c.repetition_penalty != 1.0 for c in configs):
        chain.append(RepetitionPenalty(column([c.repetition_penalty for c in configs], device)))
    if configs[0].greedy:
        return chain
    # Top-k before the temperature, unlike Hugging Face, gives the same scores bit for bit
    # (the temperature keeps the order, and the best score it shifts by is among the k), and
    # scales k columns instead of the whole vocabulary.
    if any(c.top_k > 0 for c in configs):
        chain.append(TopK(torch.tensor([c.top_k for c in configs], device=device)))
    if any(c.temperature != 1.0 for c in configs):
        chain.append(Temperature(column([c.temperature for c in configs], device)))
    if any(c.top_p < 1.0 for c in configs):
        top_p = [c.top_p if c.top_p < 1.0 else math.inf for c in configs]
        chain.append(TopP(column(top_p, device)))
    return chain


@dataclass
class _Group:
    rows: Tensor | None  # None: every row of the batch, in order
    chain: list[Processor]
    greedy: bool


@dataclass
class RowSettings:
    """Each row's settings for one batch, and the processor groups they make (built once per
    vocabulary size and device, reused every step while the batch's rows stay the same)."""

    configs: tuple[SamplingConfig, ...]
    _groups: dict[tuple, list[_Group]] = field(default_factory=dict, repr=False)

    def groups(self, vocab_size: int, device: torch.device) -> list[_Group]:
        key = (vocab_size, device)
        if key not in self._groups:
            self._groups[key] = self._build(vocab_size, device)
        return self._groups[key]

    def _build(self, vocab_size: int, device: torch.device) -> list[_Group]:
        def kind(c: SamplingConfig) -> str:
            if c.greedy:
                return "greedy"
            if 0 < c.top_k < vocab_size:
                return "top_k"
            return "top_p" if c.top_p < 1.0 else "full"

        members: dict[str, list[int]] = {}
        for i, config in enumerate(self.configs):
            members.setdefault(kind(config), []).append(i)
        groups = []
        for name, rows in members.items():
            configs = [self.configs[i] for i in rows]
            index = None if len(rows) == len(self.configs) else torch.tensor(rows, device=device)
            groups.append(_Group(index, _chain(configs, device), name == "greedy"))
        return groups


def process(logits: Tensor, tokens: Tensor | None, chain: list[Processor]) -> Candidates:
    """Run `logits` (B, V) through `chain`; `tokens` (B, L) is only read by the penalty."""
    candidates = Candidates(finite(logits))
    for processor in chain:
        candidates = processor(tokens, candidates)
    return candidates


def finite(logits: Tensor) -> Tensor:
    """The model's scores with NaN as -inf (never chosen) and +inf as the largest float.

    A row with no score left is a broken model (e.g. fp16 overflow): no setting fixes it,
    and sampling from it would return an id outside the vocabulary, so it is refused.
    A finite sum means every score is finite (NaN and inf propagate), the usual case: the
    scores are returned as they are, without a copy (a (8, 50k) copy per decode step cost
    more than the sum, mostly in page faults for its fresh memory).
    """
    if bool(torch.isfinite(logits.sum())):
        return logits
    top = torch.finfo(logits.dtype).max
    scores = logits.nan_to_num(nan=-math.inf, posinf=top, neginf=-math.inf)
    empty = scores.amax(dim=1) == -math.inf  # amax: ~15x faster here than a boolean any()
    if bool(empty.any()):
        raise RunError(
            f"the model gave no finite score in batch row {int(empty.nonzero()[0])}: "
            "its weights or its precision (fp16 overflow?) are broken"
        )
    return scores


def greedy(candidates: Candidates) -> Tensor:
    """The highest-scoring token of each row (the first one on ties)."""
    return candidates.token_ids(candidates.scores.argmax(dim=1))


def sample(candidates: Candidates, uniforms: Tensor) -> Tensor:
    """One token per row from softmax(scores), by inverse CDF with `uniforms` (B,) in [0, 1).

    The CDF is summed in float64 and the target kept below its total, so a token with zero
    probability (filtered, or underflowed) is never chosen.
    """
    cdf = candidates.scores.float().softmax(dim=1).double().cumsum(dim=1)
    total = cdf[:, -1:]
    target = torch.minimum(uniforms.unsqueeze(1) * total, torch.nextafter(total, total * 0))
    columns = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return candidates.token_ids(columns)


def next_tokens(
    logits: Tensor,
    tokens: Tensor | None,
    settings: RowSettings | SamplingConfig,
    uniforms: Tensor | None,
) -> Tensor:
    """Next token ids (B,) from `logits` (B, V): each row's processors, then greedy or a sample.

    `settings` gives each row its own settings (one `SamplingConfig`: the same for all);
    `uniforms` (B,) is read for the sampled rows only."""
    if isinstance(settings, SamplingConfig):
        settings = RowSettings((settings,) * logits.size(0))
    scores = finite(logits)
    chosen = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
    for group in settings.groups(logits.size(1), logits.device):
        rows = group.rows
        candidates = Candidates(scores if rows is None else scores[rows])
        seen = tokens if tokens is None or rows is None else tokens[rows]
        for processor in group.chain:
            candidates = processor(seen, candidates)
        if group.greedy:
            picked = greedy(candidates)
        elif uniforms is None:
            raise ValueError("sampling needs one uniform number per row")
        else:
            picked = sample(candidates, uniforms if rows is None else uniforms[rows])
        if rows is None:
            return picked
        chosen[rows] = picked
    return chosen
