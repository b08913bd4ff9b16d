"""Code scores of one output and the arithmetic of human ratings (model/scores.py)."""

from __future__ import annotations

import math

import pytest

from gptforge.model.scores import (
    SCORE_NAMES,
    RatingSummary,
    best_rated,
    output_scores,
    rating_value,
    setting_scores,
    summarize,
)


def test_scores_of_a_known_completion() -> None:
    # 6 tokens, 4 distinct; bigrams (1,2) (2,3) (3,1) (1,2) (2,4): 4 distinct of 5;
    # trigrams (1,2,3) (2,3,1) (3,1,2) (1,2,4): none repeats
    scores = output_scores([1, 2, 3, 1, 2, 4], "eos", -2.0)
    assert tuple(scores) == SCORE_NAMES
    assert scores["length"] == 6
    assert scores["distinct_1"] == pytest.approx(4 / 6)
    assert scores["distinct_2"] == pytest.approx(4 / 5)
    assert scores["repeated_3gram_rate"] == 0.0
    assert scores["finish_reason"] == "eos"
    assert scores["perplexity"] == pytest.approx(math.exp(2.0))


def test_a_looping_completion_repeats_its_trigrams() -> None:
    scores = output_scores([7, 8, 9] * 3, "length", None)  # 7 trigrams, 3 distinct
    assert scores["repeated_3gram_rate"] == pytest.approx(4 / 7)
    assert scores["mean_logprob"] is None and scores["perplexity"] is None


def test_an_empty_completion_scores_zero_without_failing() -> None:
    scores = output_scores([], "eos", None)
    assert (scores["length"], scores["distinct_1"], scores["distinct_2"]) == (0, 0.0, 0.0)


def test_setting_scores_average_logprobs_and_share_finish_reasons() -> None:
    scores = [
        output_scores([1, 2], "eos", -1.0),
        output_scores([3], "length", -3.0),
        output_scores([], "eos", None),
    ]
    summary = setting_scores(scores)
    assert summary["mean_logprob"] == pytest.approx(-2.0)
    assert summary["perplexity"] == pytest.approx(math.exp(2.0))
    assert summary["finish_eos"] == pytest.approx(2 / 3)
    assert summary["finish_length"] == pytest.approx(1 / 3)
    assert summary["finish_stop"] == 0.0


@pytest.mark.parametrize(
    ("value", "number"),
    [(4, 4.0), (2.5, 2.5), (True, 1.0), (False, 0.0), ("pass", 1.0), ("Fail", 0.0), ("3", 3.0)],
)
def test_ratings_become_numbers(value: object, number: float) -> None:
    assert rating_value(value) == number


@pytest.mark.parametrize("value", ["great story", None, [1, 2], float("nan"), {"a": 1}])
def test_what_is_not_a_rating_is_left_out(value: object) -> None:
    assert rating_value(value) is None


def test_a_numeric_summary_is_mean_and_normal_interval() -> None:
    summary = summarize([4.0, 5.0, 3.0, 4.0])
    assert (summary.count, summary.mean) == (4, 4.0)
    half = 1.959964 * math.sqrt(2 / 3) / 2  # z * sample sd / sqrt(n)
    assert summary.low == pytest.approx(4.0 - half, rel=1e-5)
    assert summary.high == pytest.approx(4.0 + half, rel=1e-5)


def test_pass_fail_uses_the_wilson_interval_inside_0_1() -> None:
    summary = summarize([1.0, 1.0, 1.0])
    assert summary.mean == 1.0 and 0.0 < summary.low < 1.0 and summary.high == pytest.approx(1.0)


def test_one_rating_has_no_interval() -> None:
    assert summarize([5.0]) == RatingSummary(1, 5.0, None, None)


def test_the_best_setting_is_the_one_with_the_highest_lower_bound() -> None:
    summaries = {
        "lucky": summarize([5.0]),
        "steady": summarize([4.0, 4.0, 4.0, 4.0]),
        "noisy": summarize([5.0, 1.0, 5.0]),
    }
    assert best_rated(summaries) == "steady"
    assert best_rated({"lucky": summarize([5.0]), "meh": summarize([3.0])}) == "lucky"
    assert best_rated(summaries, min_count=5) is None
