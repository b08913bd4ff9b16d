"""Settings declared once: a dataclass field carries its default, allowed range or choices and a
one-line description (`setting`), which validation (`check_fields`), the CLI
(`flows/settings_cli.py`) and the flows' parameters all read. Also the error every bad
setting raises. Plain Python: importing this pulls in nothing heavy."""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting is out of its allowed range; the message names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def setting(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A field with its description and allowed range or choices, read by validation and by
    the CLI. A default of None means "derived from the other settings"."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("lt", lt), ("le", le)) if v is not None}
    extra = {"choices": choices} if choices else {}
    return field(default=default, metadata={"help": help, **bounds, **extra})


def check_fields(config: object) -> None:
    """Types, choices and the declared ranges of every `setting` field, named on failure."""
    for f in fields(config):  # type: ignore[arg-type]
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        if value is None and f.default is None:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        choices = f.metadata.get("choices")
        if choices is not None:
            if value not in choices:
                raise ConfigError(f.name, f"{value!r} is not one of {', '.join(choices)}")
            continue
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ConfigError(f.name, f"must be true or false, got {value!r}")
            continue
        if kind.startswith("int") and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f.name, f"must be an integer, got {value!r}")
        if kind.startswith("float") and (
            not isinstance(value, int | float) or isinstance(value, bool)
        ):
            raise ConfigError(f.name, f"must be a number, got {value!r}")
        if isinstance(value, int | float) and (problem := out_of_range(value, f.metadata)):
            raise ConfigError(f.name, f"must be {problem}, got {value!r}")


def out_of_range(value: float, bounds: Any) -> str | None:
    """The first declared bound `value` breaks, as words ('>= 1'), or None."""
    tests = {
        "ge": (">=", lambda b: value >= b),
        "gt": (">", lambda b: value > b),
        "le": ("<=", lambda b: value <= b),
        "lt": ("<", lambda b: value < b),
    }
    for key, (word, ok) in tests.items():
        if key in bounds and not ok(bounds[key]):
            return f"{word} {bounds[key]:g}"
    return None


def defaults(settings: type) -> dict[str, Any]:
    """Every documented setting's default, by name: what the CLI and the flows show."""
    return {
        f.name: f.default
        for f in fields(settings)
        if "help" in f.metadata and f.default is not MISSING
    }


def documented(settings: type) -> list[str]:
    """The fields of `settings` that are user settings (they carry a description)."""
    return [f.name for f in fields(settings) if "help" in f.metadata]
