"""Settings declared once: a dataclass field carries its default, allowed range or choices and a
one-line description (`setting`), which validation (`check_fields`), the CLI
(`flows/settings_cli.py`) and the flows' parameters all read. Also the error every bad
setting raises. Plain Python: importing this pulls in nothing heavy."""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, field, fields
from pathlib import Path
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
                allowed = ", ".join(map(str, choices))
                raise ConfigError(f.name, f"must be one of {allowed}, got {value!r}")
            continue
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ConfigError(f.name, f"must be true or false, got {value!r}")
            continue
        allowed = allowed_range(f.metadata)
        number = "an integer" if kind.startswith("int") else "a finite number"
        if kind.startswith(("int", "float")) and not _is_number(value, kind.startswith("int")):
            raise ConfigError(f.name, f"must be {number}{allowed and ' ' + allowed}, got {value!r}")
        if isinstance(value, int | float) and not _within(value, f.metadata):
            raise ConfigError(f.name, f"must be {allowed}, got {value!r}")


def check_output(field_name: str, path: str | Path, *, file: bool = False) -> Path:
    """Refuse an output path before any work starts: empty (it would mean the current
    directory), a file where a directory goes or the reverse, a path under a file, or a place
    this user cannot write (a read-only mount). Returns the path, `~` expanded."""
    if not str(path).strip():
        raise ConfigError(field_name, "is empty; give a path (it would be the current directory)")
    target = Path(path).expanduser()
    if file and target.is_dir():
        raise ConfigError(field_name, f"{target} is a directory; give a file name")
    folder = target.parent if file else target
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        where = "is a file" if existing == target else f"lies under {existing}, which is a file"
        raise ConfigError(field_name, f"{target} {where}; give a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(field_name, f"cannot write to {existing} (read-only or not yours)")
    return target


RANGE_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def allowed_range(bounds: Any) -> str:
    """The declared bounds as words: '> 0 and <= 1'; empty when there are none."""
    return " and ".join(
        f"{word} {bounds[key]:g}" for key, word in RANGE_WORDS.items() if key in bounds
    )


def _shown(bound: float) -> str:
    return f"{bound:_}" if isinstance(bound, int) else f"{bound:g}"


def _is_number(value: object, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) if integer else math.isfinite(value)


def _within(value: float, bounds: Any) -> bool:
    checks = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(ok(bounds[key]) for key, ok in checks.items() if key in bounds)


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
