"""The error for a problem no setting fixes: a file that cannot be written (full disk,
read-only, locked), a broken input found mid-run, a model that gives no usable scores.
`gptforge` prints its message as one line and exits 1 (a bad setting is `ConfigError`, 2)."""

from __future__ import annotations


class RunError(RuntimeError):
    """A runtime problem the user can act on; the message names the file or thing at fault."""


def write_failure(path: object, exc: OSError) -> RunError:
    """`exc` from writing `path` as one line: the path and the system's reason (ENOSPC's
    `write()` carries no file name of its own)."""
    return RunError(f"cannot write {path}: {exc.strerror or exc}")
