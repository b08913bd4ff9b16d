"""Small, fast training settings shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gptforge.model.config import GPTConfig
from gptforge.model.train_config import TrainConfig

MICRO = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, recipe="gpt2")


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
