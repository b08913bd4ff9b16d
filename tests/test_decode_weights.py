"""The decode step's weight layouts: MKL-packed linear layers whose rows do not depend on
their neighbours, and a K-major head; made once per model and made again when it changes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gptforge.model.config import GPTConfig
from gptforge.model.decode_weights import PackedLinear, can_pack, decode_weights
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig

CONFIG = GPTConfig(
    block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64, tokenizer_vocab_size=500
)
needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch without MKL")


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


@needs_mkl
@pytest.mark.parametrize("shape", [(64, 192), (256, 64), (64, 500)])
def test_a_packed_row_does_not_depend_on_the_other_rows_or_its_place(shape) -> None:
    """Padding a step's rows to the packed count, or decoding a row beside others, leaves its
    scores the same bit for bit: what keeps continuous and static batching equal."""
    fan_in, fan_out = shape
    torch.manual_seed(1)
    weight, bias = torch.randn(fan_out, fan_in), torch.randn(fan_out)
    packed = PackedLinear(weight, bias, rows=8)
    x = torch.randn(8, fan_in)
    with torch.inference_mode():
        full = packed(x)
        torch.testing.assert_close(full, F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)
        for n in (1, 3, 7):
            assert torch.equal(packed(x[:n]), full[:n])
        shuffled = torch.randperm(8)
        assert torch.equal(packed(x[shuffled]), full[shuffled])
        longer = torch.randn(2, 9, fan_in)  # a prefill chunk: the plain weight
        assert torch.equal(packed(longer), F.linear(longer, weight, bias))


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "k-major"])
def test_the_decode_layout_gives_the_models_scores_and_follows_a_changed_weight(pack) -> None:
    if pack and not torch.backends.mkl.is_available():
        pytest.skip("torch without MKL")
    model = tiny_gpt()
    idx = torch.randint(0, CONFIG.tokenizer_vocab_size, (5, 7))
    with torch.inference_mode():
        weights = decode_weights(model, rows=8, pack=pack)
        expected, _ = model(idx)
        hidden = weights.model.hidden(idx)
        torch.testing.assert_close(hidden, model.hidden(idx), rtol=1e-5, atol=1e-5)
        scores = weights.head(hidden[:, -1])
        assert scores.shape == (5, CONFIG.tokenizer_vocab_size) and scores.is_contiguous()
        last = expected[:, -1, : CONFIG.tokenizer_vocab_size]
        torch.testing.assert_close(scores, last, rtol=1e-5, atol=1e-4)
        assert decode_weights(model, rows=8, pack=pack) is weights  # kept between calls
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    with torch.inference_mode():
        again = decode_weights(model, rows=8, pack=pack)
        assert again is not weights
        torch.testing.assert_close(again.head(hidden[:, -1]), 2 * scores, rtol=1e-5, atol=1e-4)


def test_packing_is_for_fp32_on_the_cpu_outside_autocast() -> None:
    model = tiny_gpt()
    cpu = torch.device("cpu")
    assert can_pack(model, cpu, None) == torch.backends.mkl.is_available()
    assert not can_pack(model, cpu, torch.bfloat16)
    assert not can_pack(model, torch.device("cuda"), None)
    assert not can_pack(model.to(torch.bfloat16), cpu, None)


def test_a_torch_build_without_the_packing_ops_decodes_with_the_plain_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ops are private to torch: without them the cached decoder still runs and still
    equals the model recomputed without a cache."""
    model, prompts = tiny_gpt(), [[1, 2, 3], [4, 5]]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=6, eos_token_id=())
    generate(model, prompts, greedy, batch_size=2)  # packed layouts kept for this model
    monkeypatch.setattr(torch.ops, "mkl", SimpleNamespace())  # a build without them
    assert not can_pack(model, torch.device("cpu"), None)
    cached = generate(model, prompts, greedy, batch_size=2)
    assert decode_weights(model, 2, pack=False).rows == 0
    recomputed = generate(model, prompts, greedy, no_cache=True)
    assert [g.tokens for g in cached] == [g.tokens for g in recomputed]


@needs_mkl
def test_layouts_packed_for_more_rows_serve_fewer_and_more_rows_repack() -> None:
    """A server alternating one-prompt and batch calls keeps one layout."""
    model = tiny_gpt()
    with torch.inference_mode():
        eight = decode_weights(model, rows=8, pack=True)
        assert eight.rows == 8
        assert decode_weights(model, rows=1, pack=True) is eight
        assert decode_weights(model, rows=3, pack=True) is eight
        sixteen = decode_weights(model, rows=16, pack=True)
        assert sixteen.rows == 16
        assert decode_weights(model, rows=1, pack=False).rows == 0  # GPU/autocast: unpacked
        assert (
            decode_weights(model.double(), rows=8, pack=False)
            .head(torch.zeros(1, CONFIG.n_embd, dtype=torch.float64))
            .dtype
            == torch.float64
        )  # another dtype (or device): made again
