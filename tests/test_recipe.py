"""The modern recipe (rotary, QK-norm, zero init, untied head, Muon, warmup-stable-decay):
it trains, resumes exactly, decodes with the KV cache as without, and loads like any model.
The gpt2 recipe's Hugging Face parity is tests/test_model.py's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train_helpers import MICRO, assert_cache_decodes_as_no_cache, micro_config, scrambled, weights

from gptforge.model.checkpoint import load_model, resolve_checkpoint
from gptforge.model.config import GPTConfig
from gptforge.model.convert import hf_config_kwargs
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.kv_cache import KVCache
from gptforge.model.muon import MuonAdamW, orthogonalize
from gptforge.model.optim import lr_at, make_optimizer
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.train import train
from gptforge.pipeline.config import ConfigError

MODERN = replace(MICRO, recipe="modern")
SMALL = GPTConfig(
    block_size=48,
    vocab_size=512,
    n_layer=2,
    n_head=4,
    n_embd=64,
    tokenizer_vocab_size=500,
    recipe="modern",
)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_modern_trains(token_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(
        token_data, tmp_path, model=MODERN, max_steps=40, eval_interval=20, checkpoint_interval=20
    )
    result = train(cfg)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 1.0
    assert result.val_loss is not None and result.val_loss < 9.0


def test_modern_resumes_bit_exactly(token_data: Path, tmp_path: Path) -> None:
    straight = train(micro_config(token_data, tmp_path / "straight", model=MODERN))
    train(micro_config(token_data, tmp_path / "resumed", model=MODERN, max_steps=3))
    resumed = train(micro_config(token_data, tmp_path / "resumed", model=MODERN, resume=True))
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_modern_checkpoint_loads_and_generates_as_trained(token_data: Path, tmp_path: Path) -> None:
    result = train(micro_config(token_data, tmp_path, model=MODERN, max_steps=3))
    saved = json.loads((resolve_checkpoint(tmp_path) / "config.json").read_text())
    assert saved["recipe"] == "modern"
    model = load_model(result.weights)
    assert model.config == MODERN and model.rotary is not None
    assert "transformer.wpe.weight" not in model.state_dict()
    out = generate(model, [[1, 2, 3]], SamplingConfig(do_sample=False, max_new_tokens=4))
    assert len(out[0].tokens) == 4


def test_a_config_from_before_recipes_loads_as_gpt2() -> None:
    old = {k: v for k, v in MICRO.to_json().items() if k != "recipe"}
    assert GPTConfig.from_json(old).recipe == "gpt2"
    with pytest.raises(ConfigError, match="recipe"):
        GPTConfig(recipe="llama")  # type: ignore[arg-type]


def test_only_gpt2_converts_to_hugging_face() -> None:
    with pytest.raises(ValueError, match="gpt2 recipe"):
        hf_config_kwargs(MODERN)


def test_kv_cache_slots_equal_the_full_forward() -> None:
    """Rotary positions come from each slot's own length."""
    model = scrambled(SMALL, 0)
    idx = torch.randint(0, 500, (2, 12))
    full, _ = model(idx)
    cache = KVCache(SMALL, 2, 12)
    steps = [model(idx[:1, :3], cache=cache.step([0], 3))[0]]
    steps += [model(idx[:1, 3:5], cache=cache.step([0], 2))[0]]
    steps += [model(idx[:, t : t + 1], cache=cache.step([0, 1], 1))[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([s[:1] for s in steps], dim=1)[0], full[0])


@pytest.mark.parametrize(
    "changed", [{}, {"logit_cap": 15.0}, {"norm": "rmsnorm", "activation": "relu2"}]
)
def test_kv_cache_generation_equals_no_cache(changed: dict) -> None:
    assert_cache_decodes_as_no_cache(scrambled(replace(SMALL, **changed), 1), 16)


def test_muon_takes_the_block_matrices_and_adamw_the_rest() -> None:
    model = GPT(MODERN)
    optimizer = make_optimizer(
        model, micro_config(Path("."), Path("."), model=MODERN), torch.device("cpu")
    )
    assert isinstance(optimizer, MuonAdamW)
    kinds = {id(p): g["kind"] for g in optimizer.param_groups for p in g["params"]}
    assert len(kinds) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        hidden = name.startswith("transformer.h.") and param.dim() == 2
        assert kinds[id(param)] == ("muon" if hidden else "adamw"), name


def test_newton_schulz_orthogonalises_each_block() -> None:
    torch.manual_seed(0)
    g = torch.randn(3, 32, 32) * torch.tensor([1.0, 100.0, 0.01]).view(3, 1, 1)
    singular = torch.linalg.svdvals(orthogonalize(g, torch.float32))
    assert singular.min() > 0.3 and singular.max() < 1.3  # each block alike, whatever its scale


def test_warmup_stable_decay(tmp_path: Path) -> None:
    cfg = micro_config(
        tmp_path, tmp_path, model=MODERN, max_steps=100, warmup_steps=10, min_lr=1e-4
    )
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == lr_at(59, cfg) == pytest.approx(1e-3)  # stable until 60%
    assert lr_at(80, cfg) == pytest.approx(5.5e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_gpt2_keeps_gpt2s_parameter_order() -> None:
    """Initial weights (drawn in this order) and saved optimizer states (stored by position)
    stay those of models trained before recipes existed."""
    names = [name for name, _ in GPT(MICRO).named_parameters()]
    assert names[:3] == [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
    ]
    assert names[-2:] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
