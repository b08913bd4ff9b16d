"""A process-wide progress sink: the CLI installs a progress bar, flows report into it.

Flow parameters must be plain data (they become a form in the Prefect UI), so a callback
cannot be one; tasks running in this process report here instead.
"""

from __future__ import annotations

import sys
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


def notice(text: str) -> None:
    """One line to the terminal that does not tear a progress bar in half."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


class ProgressBar:
    """A tqdm bar per stage, shown only while there is work to count."""

    def __init__(self, unit: str = "file") -> None:
        self._bar = None
        self._stage = ""
        self._unit = unit

    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None:
        from tqdm import tqdm

        if self._bar is None or stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=stage, unit=self._unit, file=sys.stderr)
            self._stage = stage
        self._bar.n = done
        if info:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        self._bar.refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
