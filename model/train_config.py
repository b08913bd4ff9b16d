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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from gptforge.model.config import GPTConfig, preset
from gptforge.pipeline.settings import ConfigError, check_fields, setting

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_EVAL_INTERVAL = 50
DEVICES: tuple[str, ...] = get_args(Device)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation, precision, evaluation and checkpoint cadence.

    `None` on a derived field means "decide from the others" (see `__post_init__`)."""

    data_dir: Path
    out_dir: Path
    # None: `tiny`, or with `time_budget` the size that budget buys on this machine and data.
    model: GPTConfig | None = None
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
    eval_interval: int | None = setting(
        None,
        "steps between validation-loss evaluations; unset: 50, or with a time budget, "
        "so that evaluations take about a tenth of it",
        ge=1,
    )
    eval_tokens: int | None = setting(
        None,
        "validation tokens per evaluation, in consecutive block_size windows; "
        "unset: the whole val split, at most 32,768",
        ge=1,
    )
    early_stop_patience: int | None = setting(
        None, "stop after this many evaluations without a lower val_loss; unset: never", ge=1
    )
    log_interval: int | None = setting(
        None, "steps between logged metrics; unset: from eval_interval and max_steps", ge=1
    )
    checkpoint_interval: int = setting(100, "steps between checkpoints (and one at the end)", ge=1)
    keep_last: int = setting(2, "checkpoints kept in out_dir", ge=1)
    seed: int = setting(1337, "decides the initial weights and every batch", ge=0, le=2**63 - 1)
    time_budget: float | None = setting(
        None,
        "seconds to train for (measuring, evaluations and checkpoints included): sets "
        "max_steps from this machine's measured speed, and the model size if none is given",
        gt=0,
    )
    resume: bool = setting(False, "continue the run in out_dir where its last checkpoint stopped")
    init_from: Path | None = setting(None, "start from these weights with a fresh optimizer")
    # Not settings: whether the model is to be sized for the time budget (no model given),
    # and the names of the fields above decided in `_derive` rather than given.
    size_for_budget: bool = False
    derived: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        check_fields(self)
        if self.model is None:
            object.__setattr__(self, "model", preset("tiny"))
            object.__setattr__(self, "size_for_budget", self.time_budget is not None)
        self._derive()
        if self.tokens_per_step is not None:
            accum = grad_accum_for(
                self.tokens_per_step, self.batch_size, self.model.block_size, launched_processes()
            )
            object.__setattr__(self, "grad_accum", accum)
        if not self.min_lr <= self.learning_rate:
            raise ConfigError("min_lr", f"must be <= learning_rate, got {self.min_lr}")
        if self.resume and self.init_from is not None:
            raise ConfigError("init_from", "resume continues a run; init_from starts a new one")

    def _derive(self) -> None:
        rules = {  # in order: the log cadence reads the evaluation interval
            "eval_interval": lambda: DEFAULT_EVAL_INTERVAL,
            "min_lr": lambda: self.learning_rate / 10,
            "warmup_steps": lambda: min(100, self.max_steps // 10),
            "log_interval": lambda: max(1, min(10, self.eval_interval, self.max_steps // 20)),
        }
        unset = self.derived or frozenset(k for k in rules if getattr(self, k) is None)
        object.__setattr__(self, "derived", unset)
        for name, rule in rules.items():
            if name in unset and getattr(self, name) is None:
                object.__setattr__(self, name, rule())

    def for_steps(self, max_steps: int, **decided: Any) -> TrainConfig:
        """These settings with another step count and the derived values the caller decided
        (a time budget fixes the count and the evaluation interval only once this machine
        has been measured); the rest of what was derived is derived anew."""
        return replace(self, max_steps=max_steps, **(dict.fromkeys(self.derived) | decided))

    def tokens_per_step_for(self, world_size: int = 1) -> int:
        return self.batch_size * self.grad_accum * self.model.block_size * world_size

    def to_params(self) -> dict[str, Any]:
        """Flat, resolved settings: what a tracking run records."""
        params = {k: v for k, v in asdict(self).items() if k not in ("model", "derived")}
        params |= {f"model.{k}": v for k, v in self.model.to_json().items()}
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


def launched_processes() -> int:
    """How many processes train together: torchrun's WORLD_SIZE (1 without torchrun), known
    before the process group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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
