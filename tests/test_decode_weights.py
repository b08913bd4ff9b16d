"""The decode step's weight layouts: linear layers packed by MKL or oneDNN whose rows do not
depend on their neighbours, and a K-major head; made once per model and made again when it
changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gptforge.model import decode_weights as layouts
from gptforge.model.config import GPTConfig
from gptforge.model.decode_weights import PackedLinear, decode_weights, packing
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig

CONFIG = GPTConfig(
    block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64, tokenizer_vocab_size=500
)
LIBRARIES = [
    pytest.param(library, marks=pytest.mark.skipif(not layouts._has_ops(library), reason="no ops"))
    for library in ("mkl", "onednn")
]
CPU = torch.device("cpu")


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("shape", [(64, 192), (256, 64), (64, 500), (1536, 384)])
def test_a_packed_row_does_not_depend_on_the_other_rows_or_its_place(shape, library) -> None:
    """Padding a step's rows to the packed count, or decoding a row beside others, leaves its
    scores the same bit for bit: what keeps continuous and static batching equal. (Unpadded,
    oneDNN's 1536-wide product of a row changes with the row count.)"""
    fan_in, fan_out = shape
    torch.manual_seed(1)
    weight, bias = torch.randn(fan_out, fan_in), torch.randn(fan_out)
    packed = PackedLinear(weight, bias, rows=8, library=library)
    x = torch.randn(8, fan_in)
    with torch.inference_mode():
        full = packed(x)
        close = {"rtol": 1e-5, "atol": 1e-4}
        torch.testing.assert_close(full, F.linear(x, weight, bias), **close)
        for n in (1, 3, 7):
            assert torch.equal(packed(x[:n]), full[:n])
        shuffled = torch.randperm(8)
        assert torch.equal(packed(x[shuffled]), full[shuffled])
        longer = torch.randn(2, 9, fan_in)  # a prefill chunk: the same answer for the same chunk
        torch.testing.assert_close(packed(longer), F.linear(longer, weight, bias), **close)
        assert torch.equal(packed(longer), packed(longer.clone()))


@pytest.mark.parametrize("library", [*LIBRARIES, pytest.param(None, id="k-major")])
def test_the_decode_layout_gives_the_models_scores_and_follows_a_changed_weight(library) -> None:
    model = tiny_gpt()
    idx = torch.randint(0, CONFIG.tokenizer_vocab_size, (5, 7))
    with torch.inference_mode():
        weights = decode_weights(model, rows=8, library=library)
        expected, _ = model(idx)
        hidden = weights.model.hidden(idx)
        torch.testing.assert_close(hidden, model.hidden(idx), rtol=1e-5, atol=1e-5)
        scores = weights.head(hidden[:, -1])
        assert scores.shape == (5, CONFIG.tokenizer_vocab_size) and scores.is_contiguous()
        last = expected[:, -1, : CONFIG.tokenizer_vocab_size]
        torch.testing.assert_close(scores, last, rtol=1e-5, atol=1e-4)
        assert decode_weights(model, rows=8, library=library) is weights  # kept between calls
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    with torch.inference_mode():
        again = decode_weights(model, rows=8, library=library)
        assert again is not weights
        torch.testing.assert_close(again.head(hidden[:, -1]), 2 * scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("intel", [True, False], ids=["intel", "other"])
def test_packing_is_for_fp32_on_the_cpu_outside_autocast_by_the_vendors_library(
    intel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MKL packs well on Intel CPUs only; oneDNN elsewhere (docs/benchmarks.md). The rule is
    the vendor's, not a timing, so one machine always computes the same scores."""
    monkeypatch.setattr(layouts, "_intel", lambda: intel)
    preferred = ("mkl", "onednn") if intel else ("onednn", "mkl")
    expected = next((lib for lib in preferred if layouts._has_ops(lib)), None)
    model = tiny_gpt()
    assert packing(model, CPU, None) == expected
    assert packing(model, CPU, torch.bfloat16) is None
    assert packing(model, torch.device("cuda"), None) is None
    assert packing(model.to(torch.bfloat16), CPU, None) is None


def test_this_machines_cpu_vendor_is_read() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    assert layouts._intel() == ("GenuineIntel" in cpuinfo.read_text())


def test_a_torch_build_without_the_packing_ops_decodes_with_the_plain_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ops are private to torch: without them the cached decoder still runs and still
    equals the model recomputed without a cache."""
    model, prompts = tiny_gpt(), [[1, 2, 3], [4, 5]]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=6, eos_token_id=())
    generate(model, prompts, greedy, batch_size=2)  # packed layouts kept for this model
    for library in ("mkl", "mkldnn"):  # a build without them
        monkeypatch.setattr(torch.ops, library, SimpleNamespace())
    assert packing(model, CPU, None) is None
    cached = generate(model, prompts, greedy, batch_size=2)
    assert decode_weights(model, 2, library=None).rows == 0
    recomputed = generate(model, prompts, greedy, no_cache=True)
    assert [g.tokens for g in cached] == [g.tokens for g in recomputed]


@pytest.mark.parametrize("library", LIBRARIES)
def test_layouts_packed_for_more_rows_serve_fewer_and_more_rows_repack(library) -> None:
    """A server alternating one-prompt and batch calls keeps one layout."""
    model = tiny_gpt()
    with torch.inference_mode():
        one = decode_weights(model, rows=1, library=library)  # MKL: not worth it for one row
        assert one.rows == (1 if library == "onednn" else 0)
        eight = decode_weights(model, rows=8, library=library)
        assert (eight.rows, eight.library) == (8, library)
        assert decode_weights(model, rows=1, library=library) is eight
        assert decode_weights(model, rows=3, library=library) is eight
        sixteen = decode_weights(model, rows=16, library=library)
        assert sixteen.rows == 16
        other = "onednn" if library == "mkl" else "mkl"
        if layouts._has_ops(other):  # the other library's layouts are made again
            assert decode_weights(model, rows=8, library=other).library == other
        assert decode_weights(model, rows=1, library=None).rows == 0  # GPU/autocast: unpacked
        assert (
            decode_weights(model.double(), rows=8, library=None)
            .head(torch.zeros(1, CONFIG.n_embd, dtype=torch.float64))
            .dtype
            == torch.float64
        )  # another dtype (or device): made again


_UNDER_A_LIMIT = """
import torch
from gptforge.model.config import GPTConfig
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig

torch.set_num_threads(2)  # more than OMP_THREAD_LIMIT gives, as on a machine with more cores
torch.manual_seed(0)
config = GPTConfig(
    block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=256, tokenizer_vocab_size=500
)
model = GPT(config).eval()
greedy = SamplingConfig(do_sample=False, max_new_tokens=8, eos_token_id=())
prompts = [[1, 2, 3], [4, 5], [6]]
cached = generate(model, prompts, greedy, batch_size=3)
recomputed = generate(model, prompts, greedy, no_cache=True)
assert [g.tokens for g in cached] == [g.tokens for g in recomputed], "cached != recomputed"
"""


def test_generation_under_an_openmp_thread_limit_equals_the_model() -> None:
    """With OMP_THREAD_LIMIT below torch's pool (ingest workers set it to 1 for tesseract),
    oneDNN's packed decode products were NaN: a job runs on the threads OpenMP gives it."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_A_LIMIT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
