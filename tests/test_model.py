"""The GPT itself: Hugging Face parity (our correctness oracle), causality, the KV cache, config."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptforge.model.config import PRESETS, GPTConfig, preset
from gptforge.model.convert import from_hf, hf_config_kwargs, to_hf
from gptforge.model.gpt import GPT
from gptforge.model.kv_cache import KVCache
from gptforge.pipeline.config import ConfigError

SMALL = GPTConfig(
    block_size=32,
    vocab_size=512,
    n_layer=3,
    n_head=4,
    n_embd=64,
    tokenizer_vocab_size=500,
    recipe="gpt2",
)


def small_gpt(seed: int = 0, config: GPTConfig = SMALL) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def hf_twin(model: GPT) -> GPT2LMHeadModel:
    kwargs = hf_config_kwargs(model.config)
    hf = GPT2LMHeadModel(GPT2Config(**kwargs, bos_token_id=0, eos_token_id=0)).eval()
    hf.load_state_dict(to_hf(model.state_dict()), strict=True)
    return hf


def test_logits_match_transformers_gpt2_in_fp32() -> None:
    model = small_gpt()
    hf = hf_twin(model)
    idx = torch.randint(0, SMALL.vocab_size, (3, SMALL.block_size))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_loss_matches_transformers_loss() -> None:
    model = small_gpt(1)
    hf = hf_twin(model)
    idx = torch.randint(0, SMALL.vocab_size, (2, 17))
    with torch.no_grad():
        _, loss = model(idx[:, :-1], idx[:, 1:])
        theirs = hf(idx, labels=idx).loss
    torch.testing.assert_close(loss, theirs, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trips_through_hf_layout() -> None:
    model = small_gpt(2)
    hf = hf_twin(model)
    restored = GPT(SMALL)
    restored.load_state_dict(from_hf(hf.state_dict()), strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name


def test_lm_head_is_tied_to_token_embedding() -> None:
    model = small_gpt()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_residual_projections_get_the_scaled_gpt2_init() -> None:
    torch.manual_seed(0)
    config = GPTConfig(block_size=8, n_layer=8, n_head=4, n_embd=256, recipe="gpt2")
    model = GPT(config)
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_no_position_sees_the_future() -> None:
    model = small_gpt()
    idx = torch.randint(0, SMALL.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % SMALL.vocab_size
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_incremental_decoding_with_cache_equals_full_recompute() -> None:
    model = small_gpt(3)
    idx = torch.randint(0, SMALL.vocab_size, (2, 24))
    cache = KVCache(SMALL, slots=2, max_len=SMALL.block_size)
    with torch.no_grad():
        full, _ = model(idx)
        prefill, _ = model(idx[:, :10], cache=cache.step([0, 1], 10))
        steps = [model(idx[:, t : t + 1], cache=cache.step([0, 1], 1))[0] for t in range(10, 24)]
    torch.testing.assert_close(prefill, full[:, :10], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 10:], rtol=1e-5, atol=1e-5)
    assert cache.lengths == [24, 24]


def test_slots_of_different_lengths_decode_together_as_if_alone() -> None:
    """Each slot keeps its own positions: a batch step over slots holding 6 and 11 tokens gives
    each row the logits it has alone, and a cleared slot starts again from position 0."""
    model = small_gpt(4)
    short = torch.randint(0, SMALL.vocab_size, (1, 6))
    long = torch.randint(0, SMALL.vocab_size, (1, 11))
    nxt = torch.randint(0, SMALL.vocab_size, (2, 1))
    cache = KVCache(SMALL, slots=3, max_len=16)
    with torch.no_grad():
        model(long, cache=cache.step([0], 11))
        model(short, cache=cache.step([2], 6))
        step, _ = model(nxt, cache=cache.step([0, 2], 1))
        long_next, _ = model(torch.cat([long, nxt[:1]], 1))
        short_next, _ = model(torch.cat([short, nxt[1:]], 1))
        cache.clear(0)
        again, _ = model(short, cache=cache.step([0], 6))
        alone, _ = model(short)
    torch.testing.assert_close(step[0, -1], long_next[0, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step[1, -1], short_next[0, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, alone, rtol=1e-5, atol=1e-5)
    assert cache.lengths == [6, 0, 7]


def test_left_padding_gives_each_row_the_logits_it_has_alone() -> None:
    model = small_gpt(4)
    short = torch.randint(0, SMALL.vocab_size, (1, 6))
    long = torch.randint(0, SMALL.vocab_size, (1, 11))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    with torch.no_grad():
        alone, _ = model(short)
        padded, _ = model(batch, pad=torch.tensor([5, 0]))
    torch.testing.assert_close(padded[0, 5:], alone[0], rtol=1e-5, atol=1e-5)


def test_sequence_longer_than_context_is_refused() -> None:
    model = small_gpt()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, SMALL.block_size + 1, dtype=torch.long))


def test_cache_refuses_to_overflow() -> None:
    cache = KVCache(SMALL, slots=1, max_len=4)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.step([0], 5)


def test_bf16_forward_backward_runs_on_cpu() -> None:
    model = small_gpt().train()
    idx = torch.randint(0, SMALL.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(idx)
        _, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert model.transformer.wte.weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_embd": 100, "n_head": 3}, "n_embd"),
        ({"n_layer": 0}, "n_layer"),
        ({"dropout": 1.0}, "dropout"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"block_size": 2.5}, "block_size"),
    ],
)
def test_invalid_dimensions_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        GPTConfig(**kwargs)
    assert err.value.field == field


def test_presets_cover_tiny_to_gpt2_124m() -> None:
    assert preset("gpt2").n_layer == 12 and "tiny" in PRESETS
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="n_layers"):
        preset("tiny", n_layers=3)
    gpt2 = GPT(preset("gpt2", vocab_size=50257, recipe="gpt2"))
    assert gpt2.num_params(non_embedding=False) == 124_439_808
