"""How varied generated text is: the numbers people compare sampling settings by."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def distinct_n(completions: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams over all n-grams, pooled across completions (Li et al., 2016)."""
    grams = [tuple(c[i : i + n]) for c in completions for i in range(len(c) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngram_rate(completions: Sequence[Sequence[int]], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same completion (degeneration)."""
    repeats = total = 0
    for completion in completions:
        counts = Counter(tuple(completion[i : i + n]) for i in range(len(completion) - n + 1))
        total += sum(counts.values())
        repeats += sum(count - 1 for count in counts.values())
    return repeats / total if total else 0.0


def diversity(completions: Sequence[Sequence[int]]) -> dict[str, float]:
    return {
        "distinct_1": distinct_n(completions, 1),
        "distinct_2": distinct_n(completions, 2),
        "repeated_3gram_rate": repeated_ngram_rate(completions, 3),
    }
