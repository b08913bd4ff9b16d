"""Job functions for WorkerPool tests.

Worker processes are forked from a forkserver and receive `fn` by pickle, i.e. by module and
name, so these must be top-level functions in a module the workers can import: pytest puts
`tests/` on sys.path (rootdir-relative "prepend" import mode, as for `trees`), and the
forkserver starts with the parent's sys.path.
"""

from __future__ import annotations

import os
import signal
import time


def echo(job):
    """Returns its job after an optional pause: `(value, seconds)` or a plain value."""
    if isinstance(job, tuple):
        value, seconds = job
        time.sleep(seconds)
        return value
    return job


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def misbehave(job: str):
    """One of several ways a job can go wrong, chosen by name; anything else is echoed."""
    if job == "hang":
        time.sleep(600)
    elif job == "exit":
        os._exit(3)
    elif job == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif job == "raise":
        raise ValueError("the job could not cope with its input")
    elif job == "none":
        return None
    return f"done:{job}"
