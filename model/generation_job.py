"""A batch generation job as data: prompts (list, .txt or .jsonl with per-prompt overrides)
and a grid of sampling settings, all validated before any model is loaded: a bad override is
refused naming its file and line."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gptforge.model.sampling_config import SWEEPABLE, SamplingConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.records import Kind
from gptforge.pipeline.sniff import SNIFF_BYTES, sniff
from gptforge.pipeline.textdecode import decode_text

SETTING_NAMES = tuple(f.name for f in fields(SamplingConfig))


@dataclass(frozen=True)
class Prompt:
    text: str
    overrides: dict[str, Any]


def load_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[Prompt]:
    """Prompts from a list and/or a file: `.jsonl` lines are {"prompt": ..., <setting>: ...},
    anything else is one prompt per non-empty line."""
    found = [Prompt(p, {}) for p in prompts or []]
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise ConfigError("prompts_file", f"{path} does not exist")
        text = _read_text(path)
        if path.suffix == ".jsonl":
            found += [_jsonl_prompt(line, n, path) for n, line in _lines(text)]
        else:
            found += [Prompt(line, {}) for _, line in _lines(text)]
        if not found:
            raise ConfigError("prompts_file", f"{path} holds no prompts")
    if not found:
        raise ConfigError("prompts", "give prompts or a prompts_file")
    if any(not p.text for p in found):
        raise ConfigError("prompts", "a prompt is empty")
    return found


def sampling_grid(base: dict[str, Any]) -> list[SamplingConfig]:
    """Every combination of the swept settings (lists), each one validated; combinations that
    decode alike (greedy ignores temperature, top_k and top_p) are kept once."""
    axes = {
        k: (v if isinstance(v, list | tuple) else [v]) for k, v in base.items() if k in SWEEPABLE
    }
    for name, values in axes.items():
        if not values:
            raise ConfigError(name, "an empty list sweeps nothing; give at least one value")
    fixed = {k: v for k, v in base.items() if k not in SWEEPABLE}
    grid: dict[str, SamplingConfig] = {}
    for combo in itertools.product(*axes.values()):
        settings = SamplingConfig(**fixed, **dict(zip(axes, combo, strict=True)))
        grid.setdefault(setting_label(settings), settings)
    return list(grid.values())


def with_overrides(settings: SamplingConfig, overrides: dict[str, Any]) -> SamplingConfig:
    return SamplingConfig(**(settings.to_json() | overrides)) if overrides else settings


def setting_label(settings: SamplingConfig) -> str:
    """A short, stable name for one grid point, e.g. `t0.7-k50-p0.9-r1`."""
    if settings.greedy:
        return f"greedy-r{settings.repetition_penalty:g}"
    return (
        f"t{settings.temperature:g}-k{settings.top_k}-p{settings.top_p:g}"
        f"-r{settings.repetition_penalty:g}"
    )


def _read_text(path: Path) -> str:
    """The file decoded as ingest decodes text (BOMs, UTF-16 without one, legacy code pages,
    newlines and NFC); binary content is refused, naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("prompts_file", f"{path}: cannot read ({exc.strerror})") from exc
    verdict = sniff(path.name, data[:SNIFF_BYTES])
    if verdict.kind not in (Kind.TEXT, Kind.CODE):
        what = verdict.skip_reason or f"{verdict.kind} content"
        raise ConfigError("prompts_file", f"{path}: {what}, not text")
    return decode_text(data, [])[0]


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _jsonl_prompt(line: str, number: int, path: Path) -> Prompt:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError("prompts_file", f"{path}:{number}: not JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise ConfigError("prompts_file", f"{path}:{number}: JSON nested too deeply") from exc
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise ConfigError("prompts_file", f'{path}:{number}: needs {{"prompt": "..."}}')
    overrides = {k: v for k, v in row.items() if k != "prompt"}
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError("prompts_file", f"{path}:{number}: unknown setting {unknown[0]!r}")
    try:  # every value checked here, where its line is known; no setting depends on another
        SamplingConfig(**overrides)
    except ConfigError as exc:
        raise ConfigError("prompts_file", f"{path}:{number}: {exc}") from exc
    return Prompt(row["prompt"], overrides)
