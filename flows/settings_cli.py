"""CLI options derived from a settings dataclass: one `--kebab-name` per field that carries a
description (`pipeline.settings.setting`), with its type, choices, default and range taken
from the field, so nothing about a setting is written twice."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from typing import Any

from gptforge.pipeline.settings import allowed_range


def add_settings(
    parser: argparse.ArgumentParser, settings: type, skip: set[str], sweep: frozenset = frozenset()
) -> None:
    """Add an option per documented field of `settings` not in `skip`; a field in `sweep`
    takes one value or several (a list, whose default is [default])."""
    for f in fields(settings):
        if "help" in f.metadata and f.name not in skip:
            option = _option(f)
            if f.name in sweep:
                option |= {"nargs": "+", "default": [option["default"]]}
                option["help"] += "; several values sweep"
            parser.add_argument(f"--{f.name.replace('_', '-')}", **option)


def _option(f: Field) -> dict[str, Any]:
    kind = str(f.type).split(" | ")[0]
    default = f.default if f.default is not MISSING else None
    bounds = allowed_range(f.metadata)
    text = f"{f.metadata['help']}" + (f" ({bounds})" if bounds else "")
    if kind == "bool":
        return {"action": argparse.BooleanOptionalAction, "default": default, "help": text}
    if "choices" in f.metadata:
        return {"choices": f.metadata["choices"], "default": default, "help": text}
    if kind.startswith("tuple"):  # names, comma-separated; the dataclass checks them
        return {"type": _names, "default": default, "help": text, "metavar": "NAME,..."}
    types = {"int": int, "float": float, "str": str, "Path": str}
    return {"type": types[kind], "default": default, "help": text, "metavar": f.name.upper()}


def _names(text: str) -> tuple[str, ...]:
    """`a,b` -> ("a", "b"); `''` -> () (none)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())
