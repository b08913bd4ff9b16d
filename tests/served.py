"""A server a test starts: run the command in its own process group, wait until its URL
answers, stop the whole group afterwards. One place for what every server test repeated, so a
server that dies or never answers fails the test with its own output, not a bare timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gptforge.flows import servers

POLL_S = 0.2


def start(command: list[str], log: Path, env: dict | None = None, **popen: Any) -> subprocess.Popen:
    """The command in its own session (so stop() reaches its workers), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )


def answers(url: str) -> bool:
    """Whether a GET of `url` returns a 2xx status now."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def wait_until_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers; fail with the server's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited ({proc.returncode}):\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer in {timeout:.0f} s:\n{tail(log)}")
        time.sleep(POLL_S)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20) -> None:
    """Signal the process group, SIGKILL what is left of it after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while servers.group_members(proc.pid):  # the leader or its workers (uvicorn, backends)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(POLL_S)
    proc.wait()


@contextlib.contextmanager
def served(
    command: list[str],
    url: str,
    log: Path,
    env: dict | None = None,
    timeout: float = 180,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen]:
    """`command` running and answering at `url` for the block; stopped afterwards."""
    proc = start(command, log, env)
    try:
        wait_until_answers(url, proc, log, timeout)
        yield proc
    finally:
        stop(proc, stop_signal)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]
