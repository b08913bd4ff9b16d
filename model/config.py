"""The GPT's shape: one frozen dataclass, named presets, validated on construction."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.settings import check_fields, setting
from gptforge.pipeline.tokenizer import TOKENIZER_NAME, VOCAB_SIZE

# GPT-2's 50257 tokens padded up to a multiple of 64: faster matmuls, same model (as in nanoGPT).
PADDED_VOCAB_SIZE = 50304

Recipe = Literal["gpt2", "modern"]
RECIPES: tuple[str, ...] = get_args(Recipe)
# The modern recipe's changes, each of which `modern_off` can switch back to gpt2's way (one
# row each in docs/training.md): what an ablation turns off one at a time.
ModernChange = Literal["rotary", "qk_norm", "zero_init", "untied_head", "muon", "wsd"]
MODERN_CHANGES: tuple[str, ...] = get_args(ModernChange)
# nanochat's soft cap on the logits: what modern models saved before `logit_cap` existed used.
NANOCHAT_LOGIT_CAP = 15.0
# Changes that were part of modern until the ablation moved them out (docs/training.md): now
# settings of their own, on either recipe. change: (setting, its value off, on), so that a
# config.json from before, which names them in `modern_off`, loads as it trained.
MOVED_CHANGES: dict[str, tuple[str, Any, Any]] = {
    "softcap": ("logit_cap", 0.0, NANOCHAT_LOGIT_CAP),
    "rmsnorm": ("norm", "layernorm", "rmsnorm"),
    "relu2": ("activation", "gelu", "relu2"),
}
Norm = Literal["layernorm", "rmsnorm"]
Activation = Literal["gelu", "relu2"]
# How a model is built and trained apart from its size: a preset, `--model-overrides` or the
# budget's sizing chooses the shape, and these are laid over it (flows/train_settings.py).
RECIPE_SETTINGS = ("recipe", "modern_off", "logit_cap", "norm", "activation")


@dataclass(frozen=True)
class GPTConfig:
    """Dimensions of a GPT-2-style model. `vocab_size` may exceed the tokenizer's (padding rows)."""

    block_size: int = 1024
    vocab_size: int = PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    tokenizer: str = TOKENIZER_NAME
    tokenizer_vocab_size: int = VOCAB_SIZE
    # In config.json, so a model loads as it was trained; files from before it are gpt2.
    recipe: Recipe = setting(
        "modern",
        "gpt2: GPT-2's block, learned positions, AdamW + cosine (converts to Hugging Face); "
        "modern: rotary, QK-norm, zero-initialised projections, an untied head, Muon + "
        "warmup-stable-decay (docs/training.md)",
        choices=RECIPES,
    )
    modern_off: tuple[ModernChange, ...] = setting(
        (),
        "modern's changes switched back to gpt2's way, for an ablation (modern only): "
        + ", ".join(MODERN_CHANGES),
    )
    logit_cap: float = setting(
        0.0,
        "squash the logits into (-cap, cap) with cap * tanh(z / cap), as nanochat does with 15; "
        "0: raw logits (on 2 CPU cores the cap did not pay for its cost: docs/training.md)",
        ge=0.0,
    )
    norm: Norm = setting(
        "layernorm",
        "layernorm: LayerNorm with gain and bias (GPT-2's); rmsnorm: parameter-free RMSNorm, "
        "also on the embedding output, as nanochat (it lost to layernorm at 5 and 15 minutes "
        "on 2 CPU cores: docs/training.md)",
        choices=get_args(Norm),
    )
    activation: Activation = setting(
        "gelu",
        "the MLP's: gelu (tanh approximation, GPT-2's) or relu2, ReLU² as modded-nanogpt "
        "(it lost to gelu at 5 and 15 minutes on 2 CPU cores: docs/training.md)",
        choices=get_args(Activation),
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                "n_embd", f"{self.n_embd} must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 1 <= self.tokenizer_vocab_size <= self.vocab_size:
            raise ConfigError(
                "vocab_size",
                f"{self.vocab_size} must be >= the tokenizer's {self.tokenizer_vocab_size} tokens",
            )
        self._check_modern_off()

    def _check_modern_off(self) -> None:
        """Known names only, modern only; stored in MODERN_CHANGES' order (and as a tuple,
        also when read from config.json), so equal settings give equal configs."""
        off = self.modern_off or ()
        names = (off,) if isinstance(off, str) else tuple(off)
        unknown = [name for name in names if name not in MODERN_CHANGES]
        if unknown:
            name, hint = unknown[0], ""
            if name in MOVED_CHANGES:
                hint = f" ({name} is the setting {MOVED_CHANGES[name][0]} now)"
            raise ConfigError(
                "modern_off", f"unknown change {name!r}; known: {', '.join(MODERN_CHANGES)}{hint}"
            )
        if names and self.recipe != "modern":
            raise ConfigError(
                "modern_off", f"only the modern recipe has these changes; this one is {self.recipe}"
            )
        object.__setattr__(self, "modern_off", tuple(c for c in MODERN_CHANGES if c in names))

    def recipe_settings(self) -> dict[str, Any]:
        """The RECIPE_SETTINGS' values: what a model of another shape needs to be built alike."""
        return {name: getattr(self, name) for name in RECIPE_SETTINGS}

    def uses(self, change: str) -> bool:
        """Whether the model has modern's `change` (a name of MODERN_CHANGES): the recipe is
        modern and `modern_off` does not name it."""
        assert change in MODERN_CHANGES, change
        return self.recipe == "modern" and change not in self.modern_off

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown model setting; known: {sorted(known)}")
        return cls(**upgraded({"recipe": "gpt2"} | data))  # before recipes: a gpt2 model

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> GPTConfig:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """A config.json written while a change was part of modern loads computing as it trained:
    the soft cap (15), parameter-free RMSNorm and ReLU² were on unless `modern_off` named them;
    now each is a setting of its own (MOVED_CHANGES)."""
    if data["recipe"] != "modern":
        return data
    off = data.get("modern_off") or ()
    off = (off,) if isinstance(off, str) else tuple(off)
    settled = {
        change: (name, when_off if change in off else when_on)
        for change, (name, when_off, when_on) in MOVED_CHANGES.items()
        if name not in data
    }
    still_off = tuple(c for c in off if c not in settled)
    return data | dict(settled.values()) | {"modern_off": still_off}


# The preset names as a type: the Prefect run form shows them as a dropdown.
PresetName = Literal["tiny", "small", "mini", "gpt2", "gpt2-medium"]

PRESETS: dict[str, GPTConfig] = {
    # Trains in a minute on 2 CPU cores: the quickstart's model.
    "tiny": GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=128),
    # A few minutes on a laptop CPU; learns real structure from a small corpus.
    "small": GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=256),
    # The benchmark size: 6 layers, 384 wide (about nanoGPT's Shakespeare model).
    "mini": GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2": GPTConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(block_size=1024, n_layer=24, n_head=16, n_embd=1024),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """A named preset with some fields replaced; errors list what exists."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(GPTConfig)}
    for key in overrides:
        if key not in known:
            raise ConfigError(key, f"unknown model setting; known: {sorted(known)}")
    return replace(PRESETS[name], **overrides)
