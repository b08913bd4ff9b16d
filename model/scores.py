"""Code scores for generated text, and the arithmetic of human ratings: plain functions, so a
notebook can score a JSONL file the way the `generate` flow scores its outputs in MLflow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev

from gptforge.model.diversity import distinct_n, repeated_ngram_rate

Score = float | int | str | None
# Every output gets these, in this order; `finish_reason` is the stop reason (eos|stop|length).
SCORE_NAMES = (
    "length",
    "distinct_1",
    "distinct_2",
    "repeated_3gram_rate",
    "finish_reason",
    "mean_logprob",
    "perplexity",
)
PASS_WORDS = {"pass": 1.0, "yes": 1.0, "good": 1.0, "fail": 0.0, "no": 0.0, "bad": 0.0}


def output_scores(
    tokens: Sequence[int], finish_reason: str, mean_logprob: float | None
) -> dict[str, Score]:
    """One output's scores. Diversity is over its own token ids; `mean_logprob` is the mean
    natural-log probability of its tokens under the model (None for an empty completion),
    and perplexity its `exp(-mean_logprob)`."""
    return {
        "length": len(tokens),
        "distinct_1": distinct_n([tokens], 1),
        "distinct_2": distinct_n([tokens], 2),
        "repeated_3gram_rate": repeated_ngram_rate([tokens], 3),
        "finish_reason": finish_reason,
        "mean_logprob": mean_logprob,
        "perplexity": None if mean_logprob is None else math.exp(-mean_logprob),
    }


def setting_scores(scores: Sequence[dict[str, Score]]) -> dict[str, float]:
    """What one sampling setting's outputs add to its pooled diversity: the mean of their
    `mean_logprob` (outputs without one left out), its perplexity `exp(-mean)`, and the share
    of each finish reason (`finish_eos`, `finish_stop`, `finish_length`)."""
    out: dict[str, float] = {}
    logprobs = [s["mean_logprob"] for s in scores if s.get("mean_logprob") is not None]
    if logprobs:
        out["mean_logprob"] = fmean(logprobs)
        out["perplexity"] = math.exp(-out["mean_logprob"])
    for reason in ("eos", "stop", "length"):
        share = sum(s["finish_reason"] == reason for s in scores) / max(1, len(scores))
        out[f"finish_{reason}"] = share
    return out


def rating_value(value: object) -> float | None:
    """A human rating as a number: a number as is, a bool or pass/fail (yes/no, good/bad)
    as 1/0; anything else (a comment, a list) is not a rating."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PASS_WORDS:
            return PASS_WORDS[word]
        try:
            number = float(word)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


@dataclass(frozen=True)
class RatingSummary:
    """Ratings of one sampling setting: count, mean, and a confidence interval for the mean
    (None with fewer than two ratings)."""

    count: int
    mean: float
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = 0.95) -> RatingSummary:
    """Mean and a normal-approximation interval, `mean ± z·s/√n`; for 0/1 ratings (pass/fail)
    the Wilson score interval, which stays inside [0, 1] and is not empty at 0% or 100%."""
    if not values:
        raise ValueError("no ratings to summarize")
    n, mean = len(values), fmean(values)
    if n < 2:
        return RatingSummary(n, mean, None, None)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if set(values) <= {0.0, 1.0}:
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return RatingSummary(n, mean, centre - half, centre + half)
    half = z * stdev(values) / math.sqrt(n)
    return RatingSummary(n, mean, mean - half, mean + half)


def best_rated(summaries: dict[str, RatingSummary], min_count: int = 1) -> str | None:
    """The setting people rated best, conservatively: the highest lower confidence bound
    among settings with an interval (two or more ratings), so one lucky 5 does not beat many
    4s; when none has one, the highest mean. Ties: the higher mean, then more ratings."""
    rated = {k: s for k, s in summaries.items() if s.count >= min_count}
    if not rated:
        return None
    with_interval = {k: s for k, s in rated.items() if s.low is not None}
    pool = with_interval or rated

    def rank(item: tuple[str, RatingSummary]) -> tuple[float, float, int]:
        summary = item[1]
        low = summary.low if summary.low is not None else summary.mean
        return (low, summary.mean, summary.count)

    return max(pool.items(), key=rank)[0]
