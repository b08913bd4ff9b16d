"""A generation job's settings: how tokens are picked (`SamplingConfig`, under Hugging Face's
`GenerationConfig` names) and how the job's outputs are decoded (`JobConfig`). Plain Python,
no torch, so the CLI can read their defaults and check a value before anything heavy is
imported."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from gptforge.pipeline.settings import ConfigError, check_fields, setting
from gptforge.pipeline.tokenizer import EOT_TOKEN

# How a job's outputs share the decoder's slots (model/batching.py): continuous refills a slot
# as soon as its output ends; static waits for the whole batch.
Batching = Literal["continuous", "static"]

# Settings a job may take several values of; it runs every combination (a sweep).
SWEEPABLE = ("temperature", "top_k", "top_p", "repetition_penalty")


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens, under the names of Hugging Face's `GenerationConfig`.

    These defaults are the product's: `gptforge generate`, the `generate` flow and the
    registered model's `predict` all take theirs from here. They differ from HF's where a
    small model's batch job wants them to: sampling on (`do_sample=True`), a cooler
    temperature (0.8) and nucleus sampling (top_p 0.95); `stop` is HF's `stop_strings`."""

    do_sample: bool = setting(True, "sample from the distribution (false: greedy argmax)")
    temperature: float = setting(0.8, "divide the logits by this; 0 = greedy", ge=0)
    top_k: int = setting(50, "keep the k most likely tokens; 0 = off", ge=0)
    top_p: float = setting(
        0.95, "keep the smallest set with this much probability; 1 = off", gt=0, le=1
    )
    repetition_penalty: float = setting(1.0, "penalise tokens already seen; 1 = off", gt=0)
    max_new_tokens: int = setting(64, "tokens to generate per output, at most", ge=1)
    seed: int = setting(0, "outputs depend only on (seed, prompt index, sample index)", ge=0)
    stop: tuple[str, ...] = setting((), "stop an output when it produces this text (repeatable)")
    eos_token_id: tuple[int, ...] = (EOT_TOKEN,)

    def __post_init__(self) -> None:
        stop = _several(self.stop, str)
        if stop is None or not all(s for s in stop):
            raise ConfigError("stop", f"must be non-empty strings, got {self.stop!r}")
        eos = _several(self.eos_token_id, int)
        if eos is None or not all(not isinstance(t, bool) and t >= 0 for t in eos):
            raise ConfigError("eos_token_id", f"must be token ids >= 0, got {self.eos_token_id!r}")
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "eos_token_id", eos)
        check_fields(self)

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


def _several(value: Any, kind: type) -> tuple | None:
    """One value of `kind`, a list or tuple of them, or None (none) as a tuple; None when
    `value` is anything else (a number where text goes, a dict, a string of ids)."""
    if value is None:
        return ()
    if isinstance(value, kind):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, kind) for v in value):
        return tuple(value)
    return None


@dataclass(frozen=True)
class JobConfig:
    """How a job's outputs are laid out and decoded: how many per prompt, how many at once and
    how they share the decoder's slots. `gptforge generate`, the `generate` flow, `generate()`
    and the registered model's `predict` take their defaults from here. Only
    `num_return_sequences` changes what comes out: an output's text does not depend on the
    batch size or the batching (docs/generation.md)."""

    num_return_sequences: int = setting(1, "outputs per prompt (and setting)", ge=1)
    batch_size: int = setting(8, "outputs decoded together: the decoder's slots", ge=1)
    batching: Batching = setting(
        "continuous",
        "continuous: a finished output's slot is refilled at once; static: whole batches",
        choices=get_args(Batching),
    )

    def __post_init__(self) -> None:
        check_fields(self)
