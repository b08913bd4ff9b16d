"""Decoding settings under Hugging Face's `GenerationConfig` names: plain Python, no torch, so
the CLI can read their defaults and check a value before anything heavy is imported."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.config import ConfigError
from pipeline.tokenizer import EOT_TOKEN


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens, under the names of Hugging Face's `GenerationConfig`.

    These defaults are the product's: `gptforge generate`, the `generate` flow and the
    registered model's `predict` all take theirs from here. They differ from HF's where a
    small model's batch job wants them to: sampling on (`do_sample=True`), a cooler
    temperature (0.8) and nucleus sampling (top_p 0.95); `stop` is HF's `stop_strings`."""

    do_sample: bool = True
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    stop: tuple[str, ...] = ()
    eos_token_id: tuple[int, ...] = (EOT_TOKEN,)

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        eos = self.eos_token_id
        eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "eos_token_id", eos)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise ConfigError("do_sample", f"must be true or false, got {self.do_sample!r}")
        if not _real(self.temperature) or self.temperature < 0:
            raise ConfigError(
                "temperature",
                f"must be a finite number >= 0 (0 = greedy), got {self.temperature!r}",
            )
        if not _integer(self.top_k) or self.top_k < 0:
            raise ConfigError("top_k", f"must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _real(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not _real(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ConfigError(
                "repetition_penalty",
                f"must be a finite number > 0 (1 = off), got {self.repetition_penalty!r}",
            )
        if not _integer(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(
                "max_new_tokens", f"must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        if not _integer(self.seed):
            raise ConfigError("seed", f"must be an integer, got {self.seed!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError("stop", f"must be non-empty strings, got {self.stop!r}")
        if not all(_integer(t) and t >= 0 for t in self.eos_token_id):
            raise ConfigError("eos_token_id", f"must be token ids >= 0, got {self.eos_token_id!r}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"], data["eos_token_id"] = list(self.stop), list(self.eos_token_id)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SamplingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown sampling setting; known: {sorted(known)}")
        return cls(**data)


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
