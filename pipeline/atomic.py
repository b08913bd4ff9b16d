"""Write-then-rename, the one way gptforge writes a file that others read.

A reader (another command, a rerun after a crash, MLflow) sees the old file or the whole new
one, never half of either: the bytes go to a temporary file beside the target, are flushed to
disk, and `os.replace` swaps it in. A failure part-way removes the temporary file; one the
system reports (a full disk, a read-only mount) becomes a `RunError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gptforge.pipeline.errors import write_failure


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
