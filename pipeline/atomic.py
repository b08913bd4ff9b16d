"""Write-then-rename, the one way gptforge writes a file that others read; and one writer
at a time where two would spoil each other's output (`exclusive`).

A reader (another command, a rerun after a crash, MLflow) sees the old file or the whole new
one, never half of either: the bytes go to a temporary file beside the target, are flushed to
disk, and `os.replace` swaps it in. A failure part-way removes the temporary file; one the
system reports (a full disk, a read-only mount) becomes a `RunError` naming the file.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gptforge.pipeline.errors import RunError, write_failure


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it becomes `path`."""
    path = Path(path)
    binary = "b" in mode
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, most likely: one line naming the file
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)`, but a reader never sees a half-written file."""
    with atomic_open(path) as fh:
        fh.write(text)


@contextmanager
def exclusive(lock: Path, busy: RunError) -> Iterator[None]:
    """Hold an advisory `flock` on `lock` (made if missing) for the block, or raise `busy`
    at once when another process holds it: a second writer is refused, not queued. The
    kernel releases the lock when its holder dies, so a killed run never leaves it held."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "w")  # noqa: SIM115 - closed below, after the error handling
    except OSError as exc:
        raise write_failure(lock, exc) from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise busy from exc
        yield
