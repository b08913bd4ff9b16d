"""Continuous batching: slots are refilled, rows with different settings share a batch, and no
output's text depends on how it was batched."""

from __future__ import annotations

import random

import pytest
import torch

from gptforge.model.batching import PREFILL_CHUNK
from gptforge.model.config import GPTConfig
from gptforge.model.generate import BatchStats, Generation, generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling import RowSettings, next_tokens
from gptforge.model.sampling_config import SamplingConfig
from gptforge.pipeline.config import ConfigError

CONFIG = GPTConfig(
    block_size=320, vocab_size=512, n_layer=2, n_head=4, n_embd=64, tokenizer_vocab_size=500
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def mixed_job(count: int = 12) -> tuple[list[list[int]], list[SamplingConfig]]:
    """Prompts of 1 to 200 tokens, each with its own settings: greedy or sampled, every
    processor on or off, its own length limit, eos id, stop string and seed."""
    rng = random.Random(7)
    prompts, settings = [], []
    for i in range(count):
        prompts.append([rng.randrange(500) for _ in range(rng.choice([1, 8, 40, 200]))])
        settings.append(
            SamplingConfig(
                do_sample=i % 5 != 0,
                temperature=rng.choice([0.5, 1.0, 1.3]),
                top_k=rng.choice([0, 20, 600]),
                top_p=rng.choice([0.8, 1.0]),
                repetition_penalty=rng.choice([1.0, 1.3]),
                max_new_tokens=rng.randint(4, 30),
                seed=i % 3,
                stop=("q", "zz") if i % 4 == 1 else (),
                eos_token_id=tuple(rng.sample(range(500), 20 * (i % 2))),
            )
        )
    return prompts, settings


def letters(tokens: list[int]) -> str:
    return "".join(chr(ord("a") + t % 26) for t in tokens)


def outcome(results: list[Generation]) -> list[tuple]:
    return [(g.tokens, g.text, g.finish_reason) for g in results]


def test_continuous_and_static_batching_give_the_same_outputs_at_every_batch_size() -> None:
    model = tiny_gpt()
    prompts, settings = mixed_job()
    reference = generate(model, prompts, settings, batch_size=1, decode=letters)
    assert {g.finish_reason for g in reference} == {"length", "eos", "stop"}
    for batching in ("continuous", "static"):
        for batch_size in (3, 8):
            results = generate(
                model,
                prompts,
                settings,
                num_return_sequences=1,
                batch_size=batch_size,
                batching=batching,
                decode=letters,
            )
            assert outcome(results) == outcome(reference), (batching, batch_size)
    alone = [
        generate(model, [prompts[i]], settings[i], decode=letters, prompt_indices=[i])[0]
        for i in range(len(prompts))
    ]
    assert outcome(alone) == outcome(reference)


def test_a_freed_slot_is_refilled_without_reallocating_the_cache() -> None:
    model = tiny_gpt(1)
    prompts = [[3, 4, 5]] * 10
    limits = [SamplingConfig(max_new_tokens=n, eos_token_id=()) for n in (2, 9) * 5]
    stats = BatchStats()
    results = generate(model, prompts, limits, batch_size=2, stats=stats)
    assert [len(g.tokens) for g in results] == [2, 9] * 5
    assert stats.outputs == 10 > stats.slots == 2
    assert stats.cache_allocations == 1
    # 55 tokens on 2 slots: at least 28 steps. Static batches wait for their 9-token row.
    assert 28 <= stats.decode_steps <= 31 and stats.occupancy > 0.85
    static = BatchStats()
    generate(model, prompts, limits, batch_size=2, batching="static", stats=static)
    assert static.decode_steps == 5 * 9 and static.occupancy < 0.65


def test_a_long_prompt_is_prefilled_in_chunks_while_the_others_decode() -> None:
    model = tiny_gpt(2)
    long = list(range(1, 2 * PREFILL_CHUNK + 30))
    prompts = [[9], [8], long]
    settings = SamplingConfig(max_new_tokens=6, eos_token_id=(), do_sample=False)
    stats = BatchStats()
    results = generate(model, prompts, settings, batch_size=3, stats=stats)
    assert stats.prefill_chunks == 3
    assert results[2].tokens == generate(model, [long], settings)[0].tokens
    assert results[2].tokens == generate(model, [long], settings, no_cache=True)[0].tokens


def test_per_row_processors_equal_running_each_row_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 500, generator=generator) * 4
    seen = torch.randint(0, 500, (8, 30), generator=generator)
    uniforms = torch.rand(8, generator=generator, dtype=torch.float64)
    configs = [
        SamplingConfig(do_sample=False),
        SamplingConfig(do_sample=False, repetition_penalty=2.0),
        SamplingConfig(temperature=0.7, top_k=5, top_p=1.0),
        SamplingConfig(temperature=1.0, top_k=40, top_p=0.5, repetition_penalty=1.5),
        SamplingConfig(temperature=1.6, top_k=0, top_p=0.9),
        SamplingConfig(temperature=0.9, top_k=0, top_p=1.0),
        SamplingConfig(temperature=1.0, top_k=10_000, top_p=1.0),
        SamplingConfig(temperature=0.3, top_k=3, top_p=0.7),
    ]
    together = next_tokens(logits, seen, RowSettings(tuple(configs)), uniforms)
    alone = [
        next_tokens(logits[i : i + 1], seen[i : i + 1], c, uniforms[i : i + 1]).item()
        for i, c in enumerate(configs)
    ]
    assert together.tolist() == alone
    assert len(RowSettings(tuple(configs)).groups(500, torch.device("cpu"))) == 4


def test_each_row_stops_on_its_own_eos_and_stop_strings() -> None:
    model = tiny_gpt(3)
    free = SamplingConfig(max_new_tokens=20, eos_token_id=(), seed=5)
    base = generate(model, [[1, 2], [3, 4]], free, decode=letters)
    eos = base[0].tokens[3]
    stop = base[1].text[5:7]
    settings = [
        SamplingConfig(max_new_tokens=20, eos_token_id=(eos,), seed=5),
        SamplingConfig(max_new_tokens=20, eos_token_id=(), seed=5, stop=(stop,)),
    ]
    first, second = generate(model, [[1, 2], [3, 4]], settings, decode=letters)
    assert (
        first.finish_reason == "eos" and first.tokens == base[0].tokens[: base[0].tokens.index(eos)]
    )
    assert second.finish_reason == "stop" and second.text == base[1].text[: base[1].text.find(stop)]


def test_mean_logprob_is_the_models_log_probability_of_the_completion() -> None:
    model = tiny_gpt(4)
    prompt = [5, 6, 7, 8]
    g = generate(model, [prompt], SamplingConfig(max_new_tokens=12, eos_token_id=(), seed=2))[0]
    sequence = torch.tensor([prompt + g.tokens])
    with torch.no_grad():
        logits, _ = model(sequence)
    logprobs = logits[0, :, :500].float().log_softmax(-1)
    expected = [logprobs[len(prompt) - 1 + i, t].item() for i, t in enumerate(g.tokens)]
    assert g.mean_logprob == pytest.approx(sum(expected) / len(expected), rel=1e-4)


def test_an_unknown_batching_is_refused() -> None:
    message = "batching: must be one of continuous, static, got 'dynamic'"
    with pytest.raises(ConfigError, match=message):
        generate(tiny_gpt(), [[1]], batching="dynamic")
