"""Small, fast training settings shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gptforge.model.config import GPTConfig
from gptforge.model.generate import generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.train_config import TrainConfig

MICRO = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, recipe="gpt2")
# Prompts of different lengths (1 to 8 tokens), so cached rows decode at different positions.
PROMPTS = [[5, 17, 42, 7, 99, 3, 250, 11], [8], [300, 301, 302, 303, 304], [77, 78]]


def micro_config(data: Path, out: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        data_dir=data,
        out_dir=out,
        model=MICRO,
        max_steps=6,
        batch_size=4,
        precision="fp32",
        device="cpu",
        warmup_steps=2,
        eval_interval=3,
        eval_tokens=2048,
        log_interval=1,
        checkpoint_interval=3,
    )
    return TrainConfig(**(settings | overrides))


def weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dir / "model.safetensors"))


def scrambled(config: GPTConfig, seed: int) -> GPT:
    """A model with every weight random: zero-initialised projections would make each block
    the identity, and a cache test of that would prove nothing."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.2)
    return model


def assert_cache_decodes_as_no_cache(model: GPT, new_tokens: int) -> None:
    """Greedy and sampled decoding of PROMPTS give the same tokens with the KV cache as
    recomputing every sequence without it."""
    for sampling in (
        SamplingConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=()),
        SamplingConfig(
            temperature=0.9, top_k=40, max_new_tokens=new_tokens, seed=3, eos_token_id=()
        ),
    ):
        cached = generate(model, PROMPTS, sampling)
        recomputed = generate(model, PROMPTS, sampling, no_cache=True)
        assert [g.tokens for g in cached] == [g.tokens for g in recomputed]
