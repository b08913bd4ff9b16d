"""Extreme but valid sampling settings: every sampled id is a real token, decoding never fails.

A temperature of 1e-30 used to overflow scores to +inf, softmax gave NaN and the draw returned
id 50257 (a padding row); a tiny repetition penalty did the same through division.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptforge.model.config import GPTConfig
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling import finite, next_tokens
from gptforge.model.sampling_config import SamplingConfig
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.tokenizer import VOCAB_SIZE, gpt2_encoding

# The real tokenizer and the real padded vocabulary (50304 rows), on a model small enough to
# run a few hundred steps per test.
CONFIG = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16, recipe="gpt2")
PROMPTS = [[15496, 995], [50256]]

tiny = st.floats(min_value=0, max_value=1e-3, exclude_min=True)  # subnormals included
huge = st.floats(min_value=1e3, max_value=1e308)
near_one = st.floats(min_value=0.999, max_value=1.0)
temperatures = st.one_of(st.just(0.0), tiny, huge, st.sampled_from([5e-324, 1e-30, 1e-50]))
penalties = st.one_of(st.just(1.0), tiny, huge, st.sampled_from([5e-324, 1e-300, 1e300]))
top_ps = st.one_of(st.floats(min_value=0, max_value=1e-3, exclude_min=True), near_one)
top_ks = st.one_of(st.just(0), st.integers(1, 3), st.integers(VOCAB_SIZE - 1, 10**9))
EXTREME = settings(max_examples=40, deadline=None, database=None)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    with torch.no_grad():  # large logits, so the extremes really overflow
        model.lm_head.weight.mul_(50)
    return model


@EXTREME
@given(
    do_sample=st.booleans(),
    temperature=temperatures,
    top_k=top_ks,
    top_p=top_ps,
    repetition_penalty=penalties,
    seed=st.integers(0, 2**31),
)
def test_every_sampled_id_is_a_real_token_with_and_without_the_cache(
    model: GPT, **settings_: float
) -> None:
    sampling = SamplingConfig(max_new_tokens=6, eos_token_id=(), **settings_)
    decode = gpt2_encoding().decode
    for no_cache in (False, True):
        results = generate(model, PROMPTS, sampling, decode=decode, no_cache=no_cache)
        for g in results:
            assert len(g.tokens) == 6 and all(0 <= t < VOCAB_SIZE for t in g.tokens)
            assert isinstance(g.text, str)


@EXTREME
@given(
    temperature=temperatures.filter(lambda t: t > 0),
    top_k=st.integers(0, 20),
    top_p=top_ps,
    repetition_penalty=penalties,
    poison=st.lists(st.sampled_from([math.nan, math.inf, -math.inf, 3e38, -3e38]), max_size=8),
    seed=st.integers(0, 2**31),
)
def test_non_finite_or_huge_scores_never_yield_an_id_outside_the_vocabulary(
    poison: list[float], seed: int, **settings_: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 16, generator=generator) * 30
    logits[0, : len(poison)] = torch.tensor(poison)
    logits[1, 1 : 1 + len(poison)] = torch.tensor(poison)
    tokens = torch.randint(0, 16, (4, 20), generator=generator)  # nearly every id is "seen"
    for do_sample in (True, False):
        config = SamplingConfig(do_sample=do_sample, **settings_)
        uniforms = torch.rand(4, generator=generator, dtype=torch.float64)
        chosen = next_tokens(logits, tokens, config, uniforms)
        assert chosen.ge(0).all() and chosen.lt(16).all()


def test_a_vanishing_temperature_is_greedy() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [-5.0, -4.0, -4.5]])
    for temperature in (1e-30, 1e-50, 5e-324):
        config = SamplingConfig(temperature=temperature)
        for u in (0.0, 0.5, 0.999):
            uniforms = torch.full((2,), u, dtype=torch.float64)
            chosen = next_tokens(logits, None, config, uniforms)
            assert chosen.tolist() == [1, 1]


def test_a_tiny_repetition_penalty_favours_the_seen_tokens_without_overflowing() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    config = SamplingConfig(repetition_penalty=1e-300, top_p=0.5)
    uniforms = torch.tensor([0.99], dtype=torch.float64)
    chosen = next_tokens(logits, torch.tensor([[0, 3]]), config, uniforms)
    assert chosen.item() in (0, 3)


def test_a_model_without_any_finite_score_is_refused_in_one_line() -> None:
    logits = torch.tensor([[1.0, 2.0], [math.nan, -math.inf]])
    for config in (SamplingConfig(), SamplingConfig(do_sample=False)):
        uniforms = torch.zeros(2, dtype=torch.float64)
        with pytest.raises(RunError, match="no finite score in batch row 1"):
            next_tokens(logits, None, config, uniforms)


def test_finite_scores_pass_through_and_only_broken_ones_are_copied() -> None:
    """The usual decode step costs one sum, no (rows, vocab) copy; NaN and +inf are replaced
    (also where huge finite scores make the sum overflow: the slow path keeps them)."""
    scores = torch.tensor([[1.0, -2.0, 3e38], [0.5, 0.25, -1e30]])
    assert finite(scores) is scores
    broken = torch.tensor([[1.0, math.nan, math.inf], [3e38, 3e38, -math.inf]])
    fixed = finite(broken)
    top = torch.finfo(torch.float32).max
    assert torch.equal(fixed, torch.tensor([[1.0, -math.inf, top], [3e38, 3e38, -math.inf]]))
    assert math.isnan(broken[0, 1].item())  # the model's scores are left as they were
