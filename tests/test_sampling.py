"""Sampling settings and logit processors: exact math, Hugging Face parity, the draw itself."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gptforge.model.sampling import (
    Candidates,
    RepetitionPenalty,
    SamplingConfig,
    build_processors,
    column,
    greedy,
    next_tokens,
    process,
    sample,
)
from gptforge.pipeline.config import ConfigError

# Processors one at a time: the product's defaults (T 0.8, top-k 50, top-p 0.95) switched off.
NEUTRAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}


def plain(**settings) -> SamplingConfig:
    return SamplingConfig(**(NEUTRAL | settings))


LOGITS = torch.tensor([[10.0, 8.0, 5.0, 2.0, 1.0, 0.5]])


def probabilities(config: SamplingConfig, logits: torch.Tensor, tokens=None) -> torch.Tensor:
    """What the processors leave, as a full-vocabulary distribution."""
    candidates = process(logits, tokens, build_processors(config))
    return candidates.dense(logits.size(1)).softmax(dim=1)


def test_top_k_3_then_top_p_09_keeps_exactly_the_first_two_tokens() -> None:
    config = plain(temperature=1.0, top_k=3, top_p=0.9)
    probs = probabilities(config, LOGITS)
    expected = torch.tensor([[0.8808, 0.1192, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(probs, expected, atol=5e-5, rtol=0)
    assert probs[0, 2:].eq(0).all()


def test_top_p_alone_sorts_and_keeps_the_smallest_set_reaching_p() -> None:
    # softmax over all six: 0.8786, 0.1189, 0.0059, ...; 0.8786 < 0.9 so the second stays.
    probs = probabilities(plain(top_p=0.9), LOGITS)
    assert probs[0, :2].gt(0).all() and probs[0, 2:].eq(0).all()


def test_top_p_always_keeps_the_most_likely_token() -> None:
    probs = probabilities(plain(top_p=0.01), LOGITS)
    assert probs.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]


def test_temperature_scales_the_scores_before_filtering() -> None:
    probs = probabilities(plain(temperature=2.0), LOGITS)
    torch.testing.assert_close(probs, (LOGITS / 2).softmax(dim=1))


def hf_chain(config: SamplingConfig) -> list:
    chain = []
    if config.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        chain.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        chain.append(TopPLogitsWarper(config.top_p))
    return chain


@pytest.mark.parametrize(
    "settings",
    [
        dict(repetition_penalty=1.3),
        dict(temperature=0.7),
        dict(top_k=50),
        dict(top_p=0.8),
        dict(temperature=0.8, top_k=50, top_p=0.9),
        dict(repetition_penalty=1.2, temperature=1.5, top_p=0.95),
        dict(repetition_penalty=0.8, temperature=0.6, top_k=200, top_p=0.5),
        dict(top_k=5000),
    ],
)
def test_same_filtered_distribution_as_transformers(settings: dict) -> None:
    """The same kept tokens and log-probabilities (our temperature shifts scores by the max)."""
    config = plain(**settings)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2000, generator=generator) * 3
    tokens = torch.randint(0, 2000, (6, 40), generator=generator)
    ours = process(logits, tokens, build_processors(config)).dense(2000)
    theirs = logits.clone()
    for processor in hf_chain(config):
        theirs = processor(tokens, theirs)
    assert torch.equal(ours.isinf(), theirs.isinf())
    torch.testing.assert_close(ours.log_softmax(1), theirs.log_softmax(1), rtol=1e-5, atol=1e-5)


def test_repetition_penalty_hits_each_repeated_token_once_with_its_sign() -> None:
    logits = torch.tensor([[1.0, 4.0, -1.0, 3.0, -2.0]])
    tokens = torch.tensor([[1, 1, 1, 2, 4]])  # token 1 three times, 2 and 4 once, 0 and 3 never
    out = RepetitionPenalty(column([2.0]))(tokens, Candidates(logits)).scores
    assert out.tolist() == [[1.0, 2.0, -2.0, 3.0, -4.0]]
    assert logits.tolist() == [[1.0, 4.0, -1.0, 3.0, -2.0]]  # the model's logits are untouched


def test_greedy_when_do_sample_is_false_or_temperature_is_zero() -> None:
    for config in (plain(do_sample=False), plain(temperature=0.0)):
        assert config.greedy
        assert next_tokens(LOGITS, None, config, None).tolist() == [0]


def test_greedy_applies_the_repetition_penalty_and_nothing_else() -> None:
    config = plain(do_sample=False, repetition_penalty=10.0, top_k=1, temperature=0.5)
    assert [type(p).__name__ for p in build_processors(config)] == ["RepetitionPenalty"]
    chosen = next_tokens(LOGITS, torch.tensor([[0]]), config, None)
    assert chosen.tolist() == [1]  # 10 / 10 = 1 < 8


def test_sampling_without_uniforms_is_refused() -> None:
    config = plain()
    with pytest.raises(ValueError, match="uniform"):
        next_tokens(LOGITS, None, config, None)


def test_inverse_cdf_draw_follows_the_filtered_probabilities() -> None:
    config = plain(top_k=3, top_p=0.9)
    candidates = process(LOGITS.expand(10_000, -1), None, build_processors(config))
    grid = (torch.arange(10_000, dtype=torch.float64) + 0.5) / 10_000
    counts = torch.bincount(sample(candidates, grid), minlength=6)
    assert counts.tolist() == [8808, 1192, 0, 0, 0, 0]


def test_a_uniform_next_to_one_never_picks_a_filtered_token() -> None:
    logits = torch.tensor([[3.0, 2.0, -math.inf, -math.inf], [-math.inf, 0.0, -80.0, -math.inf]])
    almost_one = torch.nextafter(torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor(0.0))
    assert sample(Candidates(logits), almost_one).tolist() == [1, 1]
    assert greedy(Candidates(logits)).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("settings", "field", "allowed"),
    [
        (dict(temperature=-0.1), "temperature", ">= 0"),
        (dict(temperature=math.nan), "temperature", ">= 0"),
        (dict(top_p=0.0), "top_p", "> 0 and <= 1"),
        (dict(top_p=1.5), "top_p", "> 0 and <= 1"),
        (dict(top_k=-1), "top_k", ">= 0"),
        (dict(top_k=2.5), "top_k", "integer >= 0"),
        (dict(repetition_penalty=0.0), "repetition_penalty", "> 0"),
        (dict(repetition_penalty=-1.0), "repetition_penalty", "> 0"),
        (dict(max_new_tokens=0), "max_new_tokens", ">= 1"),
        (dict(do_sample="yes"), "do_sample", "true or false"),
        (dict(seed=1.5), "seed", "integer"),
        (dict(stop=("",)), "stop", "non-empty"),
        (dict(eos_token_id=(-1,)), "eos_token_id", ">= 0"),
    ],
)
def test_invalid_setting_names_its_field_and_allowed_range(
    settings: dict, field: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as err:
        plain(**settings)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and allowed in str(err.value)


def test_settings_normalise_and_round_trip_through_json() -> None:
    config = plain(stop="\n\n", eos_token_id=7, top_k=50)
    assert config.stop == ("\n\n",) and config.eos_token_id == (7,)
    assert plain(eos_token_id=None).eos_token_id == ()
    data = config.to_json()
    assert data["stop"] == ["\n\n"] and data["eos_token_id"] == [7]
    assert SamplingConfig.from_json(data) == config
    assert set(data) == {
        "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
        "max_new_tokens", "seed", "stop", "eos_token_id",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="topk"):
        SamplingConfig.from_json({"topk": 5})
