"""What a discovery found, as plain lists and dicts by relative path, for assertions."""

from __future__ import annotations

from pathlib import Path

from gptforge.pipeline.discover import Discovery


def to_read(found: Discovery) -> list[str]:
    return [f.relpath for f in found.files if not f.skip_reason and not f.error_reason]


def skipped(found: Discovery) -> dict[str, str]:
    return {f.relpath: f.skip_reason for f in found.files if f.skip_reason}


def pruned(found: Discovery, root: Path) -> dict[str, str]:
    return {Path(p["path"]).relative_to(root).as_posix(): p["reason"] for p in found.pruned}
