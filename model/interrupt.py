"""Stop on request: the first Ctrl-C or SIGTERM asks the training loop to checkpoint and stop.

A second Ctrl-C raises `KeyboardInterrupt` at once (the last checkpoint is still there); a
second SIGTERM does the same. Plain `signal`, so a notebook gets the same behaviour.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by a signal (or by anyone, e.g. a UI): the loop stops after the current step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def set(self, signum: int | None = None) -> None:
        self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class TrainingInterrupted(Exception):
    """Training stopped on request after writing a checkpoint at `step`."""

    def __init__(self, step: int, checkpoint: Path, signum: int | None):
        name = signal.Signals(signum).name if signum else "request"
        super().__init__(f"stopped by {name} at step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signum or signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM outside the training loop, raised like `KeyboardInterrupt` so that `finally`
    blocks (worker pools, temporary files, tracking runs) still run before the exit."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` for the rest of the process (main thread only)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handle)


@contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM to `request` for the block (main thread only; elsewhere the
    handlers stay as they are and only explicit `request.set()` stops)."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request.is_set():
            raise KeyboardInterrupt
        request.set(signum)

    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
