"""Training settings: one frozen dataclass, checked before any compute."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.config import GPTConfig, preset
from model.precision import PRECISIONS
from pipeline.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation, precision, evaluation and checkpoint cadence."""

    data_dir: Path
    out_dir: Path
    model: GPTConfig = field(default_factory=lambda: preset("tiny"))
    max_steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    compile: bool = False
    eval_interval: int = 50
    eval_batches: int = 10
    log_interval: int = 10
    checkpoint_interval: int = 100
    keep_last: int = 2
    seed: int = 1337
    resume: bool = False
    init_from: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "eval_interval",
            "eval_batches",
            "log_interval",
            "checkpoint_interval",
            "keep_last",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError("learning_rate", f"must be in (0, 1], got {self.learning_rate}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError("min_lr", f"must be in [0, learning_rate], got {self.min_lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise ConfigError("grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"{self.precision!r} is not one of {PRECISIONS}")
        if self.device not in DEVICES:
            raise ConfigError("device", f"{self.device!r} is not one of {DEVICES}")
        if self.resume and self.init_from is not None:
            raise ConfigError("init_from", "resume continues a run; init_from starts a new one")

    def tokens_per_step(self, world_size: int = 1) -> int:
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
