"""A process-wide progress sink: the CLI installs a progress bar, flows report into it.

Flow parameters must be plain data (they become a form in the Prefect UI), so a callback
cannot be one; tasks running in this process report here instead.
"""

from __future__ import annotations

from collections.abc import Callable

Sink = Callable[[str, int, int, dict[str, float]], None]
_sink: Sink | None = None


def set_progress_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def report(stage: str, done: int, total: int, info: dict[str, float] | None = None) -> None:
    """`info` holds a few numbers worth showing next to the bar (loss, tokens/s)."""
    if _sink is not None:
        _sink(stage, done, total, info or {})
