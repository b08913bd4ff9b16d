"""Batched generation: cache and batching change nothing, seeds reproduce, every stop works."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptforge.model.config import GPTConfig
from gptforge.model.convert import hf_config_kwargs, to_hf
from gptforge.model.generate import Generation, TokenEvent, generate, row_seed, stream
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig
from gptforge.pipeline.config import ConfigError

# 512 rows in the model, 500 in the "tokenizer": ids 500..511 are padding and never sampled.
CONFIG = GPTConfig(
    block_size=48,
    vocab_size=512,
    n_layer=2,
    n_head=4,
    n_embd=64,
    tokenizer_vocab_size=500,
    recipe="gpt2",  # compared with transformers' GPT-2; modern decoding: tests/test_recipe.py
)
PROMPTS = [[5, 17, 42, 7, 99, 3, 250, 11], [8], [300, 301, 302, 303, 304], [77, 78]]
GREEDY = SamplingConfig(do_sample=False, max_new_tokens=16, eos_token_id=())
SAMPLED = SamplingConfig(temperature=0.9, top_k=40, top_p=0.9, max_new_tokens=16, seed=3)
# Random-init models loop under greedy decoding; sampled runs give varied tokens to stop on.
FREE = SamplingConfig(max_new_tokens=16, seed=1, eos_token_id=())


def with_(config: SamplingConfig, **changes) -> SamplingConfig:
    return SamplingConfig(**{**config.to_json(), **changes})


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def letters(tokens: list[int]) -> str:
    """A stand-in tokenizer: one letter per token."""
    return "".join(chr(ord("a") + t % 26) for t in tokens)


def completions(results: list[Generation]) -> list[list[int]]:
    return [g.tokens for g in results]


def test_kv_cache_gives_the_same_greedy_tokens_as_recomputing_everything() -> None:
    model = tiny_gpt()
    cached = generate(model, PROMPTS, GREEDY)
    recomputed = generate(model, PROMPTS, GREEDY, no_cache=True)
    assert completions(cached) == completions(recomputed)
    assert all(len(g.tokens) == 16 for g in cached)


def test_greedy_matches_transformers_generate() -> None:
    model = tiny_gpt(1)
    kwargs = hf_config_kwargs(CONFIG)
    hf = GPT2LMHeadModel(GPT2Config(**kwargs, bos_token_id=0, eos_token_id=511)).eval()
    hf.load_state_dict(to_hf(model.state_dict()))
    prompt = PROMPTS[0]
    theirs = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, pad_token_id=0)
    ours = generate(model, [prompt], SamplingConfig(do_sample=False, max_new_tokens=12))
    assert ours[0].tokens == theirs[0, len(prompt) :].tolist()


def test_a_prompt_gets_the_same_greedy_output_in_a_batch_as_alone() -> None:
    model = tiny_gpt()
    batched = generate(model, PROMPTS, GREEDY, batch_size=4)
    alone = [generate(model, [p], GREEDY)[0] for p in PROMPTS]
    assert completions(batched) == completions(alone)


def test_sampled_text_depends_only_on_seed_prompt_and_sample_index() -> None:
    model = tiny_gpt()
    one = generate(model, PROMPTS, SAMPLED, num_return_sequences=4, batch_size=1)
    sixteen = generate(model, PROMPTS, SAMPLED, num_return_sequences=4, batch_size=16)
    assert completions(one) == completions(sixteen)
    shuffled = generate(model, PROMPTS[::-1], SAMPLED, num_return_sequences=4, batch_size=5)
    assert completions(shuffled)[:4] != completions(one)[-4:]  # prompt index is in the seed
    assert len({tuple(t) for t in completions(one)}) == 16  # every sample differs
    other_seed = generate(model, PROMPTS, with_(SAMPLED, seed=4), num_return_sequences=4)
    assert completions(other_seed) != completions(one)
    assert row_seed(3, 0, 1) != row_seed(3, 1, 0)


def test_a_job_split_into_calls_keeps_every_output_with_prompt_indices() -> None:
    model = tiny_gpt()
    whole = generate(model, PROMPTS, SAMPLED, num_return_sequences=2)
    parts = generate(model, PROMPTS[2:], SAMPLED, num_return_sequences=2, prompt_indices=[2, 3])
    parts += generate(model, PROMPTS[:2], SAMPLED, num_return_sequences=2, prompt_indices=[0, 1])
    parts.sort(key=lambda g: (g.prompt_index, g.sample_index))
    assert completions(parts) == completions(whole)
    assert [g.prompt_index for g in parts] == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ConfigError, match="one index per prompt"):
        generate(model, PROMPTS[:2], SAMPLED, prompt_indices=[0])


def test_skipped_outputs_are_not_generated_and_the_others_come_out_unchanged() -> None:
    """What a resumed job relies on: leaving out the outputs it has changes no other one."""
    model = tiny_gpt()
    whole = generate(model, PROMPTS, SAMPLED, num_return_sequences=2, batch_size=3)
    done = {(0, 0), (0, 1), (2, 1)}
    events = stream(model, PROMPTS, SAMPLED, num_return_sequences=2, batch_size=3, skip=done)
    rest = [e for e in events if isinstance(e, Generation)]
    rest.sort(key=lambda g: (g.request_index, g.sample_index))
    assert {(g.request_index, g.sample_index) for g in rest}.isdisjoint(done)
    kept = [g for g in whole if (g.request_index, g.sample_index) not in done]
    assert completions(rest) == completions(kept)
    everything = {(r, n) for r in range(len(PROMPTS)) for n in range(2)}
    assert list(stream(model, PROMPTS, SAMPLED, num_return_sequences=2, skip=everything)) == []


def test_num_return_sequences_orders_results_by_prompt_then_sample() -> None:
    results = generate(tiny_gpt(), PROMPTS, SAMPLED, num_return_sequences=3, batch_size=5)
    assert [(g.prompt_index, g.sample_index) for g in results] == [
        (p, s) for p in range(4) for s in range(3)
    ]
    assert all(g.prompt_tokens == PROMPTS[g.prompt_index] for g in results)


def test_max_new_tokens_ends_every_row_with_finish_reason_length() -> None:
    config = SamplingConfig(max_new_tokens=5, eos_token_id=())
    for g in generate(tiny_gpt(), PROMPTS, config):
        assert (g.finish_reason, g.num_completion_tokens, len(g.tokens)) == ("length", 5, 5)
        assert g.num_prompt_tokens == len(g.prompt_tokens)
        assert g.seconds > 0 and g.tokens_per_second == pytest.approx(5 / g.seconds)


def first_new_token(tokens: list[int], after: int) -> tuple[int, int]:
    """The first token at or after index `after` that did not appear before it, and its index."""
    for i in range(after, len(tokens)):
        if tokens[i] not in tokens[:i]:
            return tokens[i], i
    raise AssertionError(f"no fresh token in {tokens}")


def test_eos_ends_a_row_and_is_not_part_of_the_completion() -> None:
    model = tiny_gpt()
    free = generate(model, PROMPTS[:1], FREE)[0].tokens
    eos, at = first_new_token(free, 3)
    g = generate(model, PROMPTS[:1], with_(FREE, eos_token_id=eos))[0]
    assert (g.finish_reason, g.tokens) == ("eos", free[:at])


def test_any_of_several_eos_ids_ends_a_row() -> None:
    model = tiny_gpt()
    free = generate(model, PROMPTS[:1], FREE)[0].tokens
    late, late_at = first_new_token(free, 6)
    early, early_at = first_new_token(free, 2)
    g = generate(model, PROMPTS[:1], with_(FREE, eos_token_id=(late, early, 499)))[0]
    assert (g.finish_reason, g.tokens) == ("eos", free[:early_at])
    assert early_at < late_at


def test_stop_string_and_what_follows_it_are_cut_from_the_text() -> None:
    model = tiny_gpt()
    free = generate(model, PROMPTS[:1], FREE, decode=letters)[0]
    stop = free.text[5:7]
    cut = free.text.find(stop)
    g = generate(model, PROMPTS[:1], with_(FREE, stop=("zzzz", stop)), decode=letters)[0]
    assert (g.finish_reason, g.text) == ("stop", free.text[:cut])
    assert g.tokens == free.tokens[: cut + len(stop)]  # generation stopped at the stop string


def test_finished_rows_stop_while_the_others_continue() -> None:
    model = tiny_gpt()
    free = generate(model, PROMPTS, FREE)
    eos, at = first_new_token(free[1].tokens, 2)
    assert all(eos not in g.tokens for i, g in enumerate(free) if i != 1), "pick another eos"
    events: list[TokenEvent] = []
    results = generate(
        model, PROMPTS, with_(FREE, eos_token_id=eos), batch_size=4, on_token=events.append
    )
    assert results[1].tokens == free[1].tokens[:at] and results[1].finish_reason == "eos"
    for i in (0, 2, 3):
        assert results[i].tokens == free[i].tokens and results[i].finish_reason == "length"
    per_row = [[e.token for e in events if e.prompt_index == i] for i in range(4)]
    assert per_row[1] == free[1].tokens[:at] + [eos]  # nothing after its eos
    assert [len(tokens) for tokens in per_row] == [16, at + 1, 16, 16]


def test_repetition_penalty_breaks_greedy_loops() -> None:
    model = tiny_gpt()
    prompt = [[4, 4, 9, 4, 9, 9]]
    plain = generate(model, prompt, SamplingConfig(do_sample=False, max_new_tokens=24))[0]
    assert len(set(plain.tokens)) < len(plain.tokens)  # a random model repeats itself
    config = SamplingConfig(do_sample=False, max_new_tokens=24, repetition_penalty=1e6)
    g = generate(model, prompt, config)[0]
    assert len(set(g.tokens)) == 24 and not {4, 9} & set(g.tokens)


def test_a_full_context_window_ends_a_row_with_length_and_spares_its_neighbours() -> None:
    model = tiny_gpt()
    long, short = list(range(1, 45)), [7, 8, 9]  # 44 + 4 = 48 = block_size
    config = SamplingConfig(do_sample=False, max_new_tokens=100, eos_token_id=())
    batched = generate(model, [long, short], config)
    assert [(g.finish_reason, len(g.tokens)) for g in batched] == [("length", 4), ("length", 45)]
    assert batched[1].tokens == generate(model, [short], config)[0].tokens
    assert completions(batched) == completions(
        generate(model, [long, short], config, no_cache=True)
    )


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([[1, 2], []], "prompt 1 is empty"),
        ([[1], list(range(48))], "prompt 1 has 48 tokens; .*at most 47"),
        ([[1, 2, 600]], r"prompt 0 has token id 600 outside \[0, 512\)"),
        ([], "at least one prompt"),
    ],
)
def test_unusable_prompts_are_refused_naming_the_prompt(prompts: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        generate(tiny_gpt(), prompts, GREEDY)
    assert err.value.field == "prompts"


def test_padding_rows_of_the_vocabulary_are_never_sampled() -> None:
    model = tiny_gpt()
    model.lm_head.register_forward_hook(lambda m, i, out: out[..., 500:].add_(1e4))
    for config in (GREEDY, SamplingConfig(max_new_tokens=16), SAMPLED):
        for g in generate(model, PROMPTS, config, num_return_sequences=2):
            assert max(g.tokens) < 500


def test_streamed_text_adds_up_to_the_final_text_without_the_stop_string() -> None:
    model = tiny_gpt()
    free = generate(model, PROMPTS[:2], FREE, decode=letters)
    stop = free[0].text[6:9]
    streamed: dict[int, str] = {0: "", 1: ""}
    finished = []
    for item in stream(model, PROMPTS[:2], with_(FREE, stop=(stop,)), decode=letters):
        if isinstance(item, TokenEvent):
            streamed[item.prompt_index] += item.text
        else:
            finished.append(item)
    texts = {g.prompt_index: g.text for g in finished}
    assert streamed == texts and texts[0] == free[0].text[: free[0].text.find(stop)]


def test_generation_leaves_a_training_model_in_training_mode() -> None:
    model = tiny_gpt().train()
    generate(model, PROMPTS[:1], GREEDY)
    assert model.training


def test_bf16_autocast_runs_on_cpu() -> None:
    results = generate(tiny_gpt(), PROMPTS, SAMPLED, autocast_dtype=torch.bfloat16)
    assert all(len(g.tokens) >= 1 for g in results)
