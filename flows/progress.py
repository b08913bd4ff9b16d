"""Progress of long work, in two places: the terminal (a sink the CLI installs: a progress
bar) and the Prefect UI (a progress artifact per stage of a flow run, `<stage>-progress`).

Flow parameters must be plain data (they become a form in the Prefect UI), so a callback
cannot be one; tasks running in this process report here instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from uuid import UUID

Sink = Callable[[str, int, int, dict[str, float]], None]
_sink: Sink | None = None
# The UI's artifact is updated at most this often (and always at 100%): one API call per
# training step would cost more than the step of a small model.
UI_UPDATE_S = 2.0
_artifacts: dict[tuple[str, str], tuple[UUID, float]] = {}
_artifacts_lock = threading.Lock()


def set_progress_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def report(stage: str, done: int, total: int, info: dict[str, float] | None = None) -> None:
    """`info` holds a few numbers worth showing next to the bar (loss, tokens/s)."""
    if _sink is not None:
        _sink(stage, done, total, info or {})
    _publish(stage, done, total)


def _publish(stage: str, done: int, total: int) -> None:
    """Create or update this flow run's `<stage>-progress` artifact (outside a flow run,
    nothing: the library calls this too)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if run_id is None or total <= 0:
        return
    percent = min(100.0, 100.0 * done / total)
    now = time.monotonic()
    with _artifacts_lock:
        known = _artifacts.get((run_id, stage))
        if known is not None and percent < 100 and now - known[1] < UI_UPDATE_S:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if known is None:
            description = f"{stage}: {done:,} of {total:,}"
            artifact = create_progress_artifact(
                percent, key=f"{stage}-progress", description=description
            )
        else:
            artifact = update_progress_artifact(known[0], percent)
        _artifacts[(run_id, stage)] = (artifact, now)


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
            # It starts at the first report: the work done before it (a resumed job's kept
            # outputs, the first item) was not timed here, so it does not count in the rate.
            self._bar = tqdm(
                total=total, desc=stage, unit=self._unit, file=sys.stderr, initial=done
            )
            self._stage = stage
        self._bar.total = total  # may change: a time budget re-plans its step count
        self._bar.n = done
        if info:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        self._bar.refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
