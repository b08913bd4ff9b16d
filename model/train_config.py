"""Training settings: one frozen dataclass, each field with its default, range and a one-line
description, checked once on construction, before any compute.

Derived values (warmup, the learning-rate floor, the log cadence, accumulation from a
tokens-per-step target) are decided here too, so a notebook calling
`train(TrainConfig(...))` trains exactly as `gptforge train` does with the same settings.
The CLI builds its `train` options from these fields (`flows/settings_cli.py`). No torch
here: the CLI reads defaults and refuses bad values before anything heavy is imported.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from gptforge.model.config import GPTConfig, preset
from gptforge.pipeline.settings import ConfigError, check_fields, setting

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICES: tuple[str, ...] = get_args(Device)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation, precision, evaluation and checkpoint cadence.

    `None` on a derived field means "decide from the others" (see `__post_init__`)."""

    data_dir: Path
    out_dir: Path
    model: GPTConfig = field(default_factory=lambda: preset("tiny"))
    max_steps: int = setting(200, "optimizer steps to train to", ge=1)
    batch_size: int = setting(8, "sequences per micro-batch, each block_size tokens", ge=1)
    grad_accum: int = setting(1, "micro-batches accumulated per optimizer step", ge=1)
    tokens_per_step: int | None = setting(
        None, "target tokens per optimizer step (all processes); sets grad_accum", ge=1
    )
    learning_rate: float = setting(1e-3, "peak learning rate after warmup", gt=0, le=1)
    min_lr: float | None = setting(
        None, "floor of the cosine decay; unset: learning_rate / 10", ge=0
    )
    warmup_steps: int | None = setting(
        None, "linear warmup steps; unset: max_steps / 10, at most 100", ge=0
    )
    weight_decay: float = setting(0.1, "AdamW weight decay on matrices", ge=0)
    beta1: float = setting(0.9, "AdamW beta1", ge=0, lt=1)
    beta2: float = setting(0.95, "AdamW beta2", ge=0, lt=1)
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0 = off)", ge=0)
    precision: Precision = setting(
        "auto", "auto, fp32, bf16 or fp16 (fp16: CUDA only)", choices=PRECISIONS
    )
    device: Device = setting("auto", "auto (CUDA when there is one), cpu or cuda", choices=DEVICES)
    compile: bool = setting(False, "torch.compile the model")
    eval_interval: int = setting(50, "steps between validation-loss evaluations", ge=1)
    eval_batches: int = setting(10, "validation batches per evaluation", ge=1)
    log_interval: int | None = setting(
        None, "steps between logged metrics; unset: from eval_interval and max_steps", ge=1
    )
    checkpoint_interval: int = setting(100, "steps between checkpoints (and one at the end)", ge=1)
    keep_last: int = setting(2, "checkpoints kept in out_dir", ge=1)
    seed: int = setting(1337, "decides the initial weights and every batch", ge=0, le=2**63 - 1)
    resume: bool = setting(False, "continue the run in out_dir where its last checkpoint stopped")
    init_from: Path | None = setting(None, "start from these weights with a fresh optimizer")

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        check_fields(self)
        derived = {
            "min_lr": self.learning_rate / 10,
            "warmup_steps": min(100, self.max_steps // 10),
            "log_interval": max(1, min(10, self.eval_interval, self.max_steps // 20)),
        }
        for name, value in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.tokens_per_step is not None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            accum = grad_accum_for(
                self.tokens_per_step, self.batch_size, self.model.block_size, world
            )
            object.__setattr__(self, "grad_accum", accum)
        if not self.min_lr <= self.learning_rate:
            raise ConfigError("min_lr", f"must be <= learning_rate, got {self.min_lr}")
        if self.resume and self.init_from is not None:
            raise ConfigError("init_from", "resume continues a run; init_from starts a new one")

    def tokens_per_step_for(self, world_size: int = 1) -> int:
        return self.batch_size * self.grad_accum * self.model.block_size * world_size

    def to_params(self) -> dict[str, Any]:
        """Flat, resolved settings: what a tracking run records."""
        params = {k: v for k, v in asdict(self).items() if k != "model"}
        params |= {f"model.{k}": v for k, v in self.model.to_json().items()}
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


def grad_accum_for(tokens_per_step: int, batch_size: int, block_size: int, world: int) -> int:
    """Accumulation steps that reach a tokens-per-step target exactly, or a clear error."""
    per_micro = batch_size * block_size * world
    if tokens_per_step < per_micro or tokens_per_step % per_micro:
        raise ConfigError(
            "tokens_per_step",
            f"{tokens_per_step} must be a multiple of batch_size x block_size x processes "
            f"= {per_micro}",
        )
    return tokens_per_step // per_micro
