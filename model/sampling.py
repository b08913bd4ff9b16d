"""Decoding settings and the logit processors that turn a model's scores into next tokens.

The processors keep Hugging Face's semantics and order (repetition penalty, temperature,
top-k, top-p) but pass a candidate set along instead of a full-vocabulary tensor: after top-k
only k columns remain, so top-p sorts k scores rather than 50k and sampling draws among them.
On a CPU at batch 8 a full-vocabulary sort costs more than the model's forward pass.

Sampling uses one uniform number per row and step (inverse CDF), supplied by the caller, so
each row's randomness can come from its own generator: what a row samples never depends on
which other rows share its batch.

Extreme but valid settings (temperature 1e-300, a penalty of 1e-300 or 1e300) must not turn
scores into NaN or +inf: softmax would then return NaN and the draw an id past the
vocabulary. So the model's scores are made finite first (NaN -> -inf, +inf -> the largest
float), T and the penalty are kept inside the float's normal range (1e-50 is 0 in fp32), the
penalty clamps what it produces, and the temperature scales distances from the row's best
score, which are <= 0 and so can only underflow towards -inf (never chosen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


class RepetitionPenalty:
    """Divide positive / multiply negative scores of tokens already in the sequence (CTRL).

    Applied first, to the full vocabulary; `tokens` (B, L) is the sequence so far, prompt
    included; a token that appears several times is penalised once.
    """

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        if candidates.ids is not None or tokens is None:
            raise ValueError("the repetition penalty needs the full vocabulary and the sequence")
        scores = candidates.scores.clone()
        seen = scores.gather(1, tokens)
        penalty = _positive(self.penalty, seen.dtype)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        finfo = torch.finfo(seen.dtype)
        seen = seen.clamp(finfo.min, finfo.max)  # a tiny penalty divides up to +inf
        return Candidates(scores.scatter_(1, tokens, seen))


class Temperature:
    """Divide scores by T: T < 1 sharpens the distribution, T > 1 flattens it.

    Divides each score's distance below the row's best (softmax is unchanged by the shift):
    with a tiny T the others fall to -inf (greedy, as T -> 0 means) instead of the best
    rising to +inf.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        c = candidates
        below = c.scores - c.scores.amax(dim=1, keepdim=True)
        return Candidates(below / _positive(self.temperature, below.dtype), c.ids, c.descending)


def _positive(value: float, dtype: torch.dtype) -> float:
    """`value` > 0 moved into `dtype`'s normal range: 1e-320 is 0 in float32, 1e300 is inf,
    and 0 / 0 or -inf * 0 would be NaN."""
    finfo = torch.finfo(dtype)
    return min(max(value, finfo.tiny), finfo.max)


class TopK:
    """Keep the k highest scores; the candidate set shrinks to k columns, sorted."""

    def __init__(self, top_k: int):
        self.top_k = top_k

    def __call__(self, tokens: Tensor | None, candidates: Candidates) -> Candidates:
        c = candidates
        if self.top_k >= c.scores.size(1):
            return c
        scores, columns = c.scores.topk(self.top_k, dim=1)
        ids = columns if c.ids is None else c.ids.gather(1, columns)
        return Candidates(scores, ids, descending=True)


class TopP:
    """Keep the smallest set of highest-probability tokens whose total is >= p (nucleus).

    The top token always stays. Sorts only when the candidates are not sorted yet (no top-k).
    """

    def __init__(self, top_p: float):
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
    """The processors `config` switches on, in Hugging Face's order; greedy only penalises."""
    chain: list[Processor] = []
    if config.repetition_penalty != 1.0:
        chain.append(RepetitionPenalty(config.repetition_penalty))
    if config.greedy:
        return chain
    if config.temperature != 1.0:
        chain.append(Temperature(config.temperature))
    if config.top_k > 0:
        chain.append(TopK(config.top_k))
    if config.top_p < 1.0:
        chain.append(TopP(config.top_p))
    return chain


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
    """
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
    config: SamplingConfig,
    chain: list[Processor],
    uniforms: Tensor | None,
) -> Tensor:
    """Next token ids (B,) from `logits` (B, V): the processors, then greedy or a sample."""
    candidates = process(logits, tokens, chain)
    if config.greedy:
        return greedy(candidates)
    if uniforms is None:
        raise ValueError("sampling needs one uniform number per row")
    return sample(candidates, uniforms)
