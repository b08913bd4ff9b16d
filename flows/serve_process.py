"""A running `gptforge serve`, seen from outside and from inside.

Outside: serve records its pid in `GPTFORGE_HOME/serve.json`, so `gptforge down` stops it
before the servers it uses (a serve left behind would retry a dead API forever) and a second
serve of the same home is refused. Inside: a watchdog ends serve with one line when its
Prefect server stops answering, instead of Prefect's runner retrying and printing tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from gptforge.flows.embedded import (
    DEFAULT_START_S,
    LOCK,
    START_ENV,
    WATCH_EVERY_S,
    file_lock,
    seconds_from_env,
)
from gptforge.flows.progress import notice
from gptforge.flows.servers import (
    ServerError,
    is_alive,
    process_start,
    read_state,
    same_start,
)
from gptforge.pipeline.atomic import write_text_atomic

SERVE_FILE = "serve.json"
GRACE_ENV = "GPTFORGE_SERVE_GRACE_S"
DEFAULT_GRACE_S = 60.0
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy


@contextmanager
def recorded(home: Path, api_url: str) -> Iterator[None]:
    """Record this process as the home's serve for the block; refuse if one is running."""
    with file_lock(home / LOCK):
        if other := running(home):
            raise ServerError(
                f"serve is already running for {home} (pid {other['pid']}); "
                "stop it first (Ctrl-C there, or gptforge down)"
            )
        record = {"pid": os.getpid(), **process_start(os.getpid()), "api_url": api_url}
        write_text_atomic(home / SERVE_FILE, json.dumps(record) + "\n")
    try:
        yield
    finally:
        forget(home)


def running(home: Path) -> dict | None:
    """The recorded serve, if its process is alive (a pid reused since does not count)."""
    try:
        info = json.loads((home / SERVE_FILE).read_text())
        now = process_start(info["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return info if now is not None and same_start(now, info) else None


def forget(home: Path) -> None:
    """Remove this process's record (another serve's is left alone)."""
    try:
        if json.loads((home / SERVE_FILE).read_text())["pid"] == os.getpid():
            (home / SERVE_FILE).unlink()
    except (OSError, ValueError, KeyError):
        pass


def stop(home: Path, timeout: float = 30.0) -> bool:
    """Stop the home's serve as Ctrl-C does (its deployments are paused while the server is
    still up), then whatever flow runs it leaves; returns whether one was running."""
    info = running(home)
    if info is None:
        (home / SERVE_FILE).unlink(missing_ok=True)
        return False
    try:
        serve = psutil.Process(info["pid"])
        runs = flow_runs(serve, home)
        serve.send_signal(signal.SIGINT)
    except psutil.NoSuchProcess:
        runs = []
    else:
        _end([serve], timeout)
    _end_now(runs)
    (home / SERVE_FILE).unlink(missing_ok=True)
    return True


def flow_runs(serve: psutil.Process, home: Path) -> list[psutil.Process]:
    """Serve's descendants (its flow runs), less a local server it started, which other
    commands share and which outlives it."""
    servers = {info["pid"] for info in read_state(home).values()}
    found = []
    for child in serve.children(recursive=True):
        try:
            if os.getpgid(child.pid) not in servers:
                found.append(child)
        except ProcessLookupError:
            continue
    return found


def _end(procs: list[psutil.Process], timeout: float) -> None:
    """Wait up to `timeout` for `procs` to exit, then KILL the rest."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)


class ServerWatchdog(threading.Thread):
    """Ends this serve when its Prefect server has not answered for `GPTFORGE_SERVE_GRACE_S`
    seconds (default 60); a local server of this home whose process is alive (starting, or
    restarted by `embedded.ServerWatch`) gets as long as a start may take.

    While the server is away, Prefect's runner prints a traceback for each failed retry; the
    console is quiet then (nothing can be reported meanwhile anyway), and serve says one line:
    that the server is back, or that serve stopped."""

    def __init__(self, home: Path, api_url: str):
        super().__init__(name="gptforge-serve-watchdog", daemon=True)
        self.home, self.api_url = home, api_url
        self.grace_s = seconds_from_env(GRACE_ENV, DEFAULT_GRACE_S)
        self.start_s = seconds_from_env(START_ENV, DEFAULT_START_S)
        self._done = threading.Event()
        self._quiet = _Quiet(self.answers)

    def run(self) -> None:
        self._quiet.attach()
        away_since = None
        while not self._done.wait(WATCH_EVERY_S):
            if self.answers():
                if away_since is not None:
                    self._quiet.off()
                    notice(
                        f"gptforge serve: the Prefect server at {self.api_url} answers again "
                        f"(away {time.monotonic() - away_since:.0f} s)"
                    )
                away_since = None
                continue
            if away_since is None:
                away_since = time.monotonic()
                self._quiet.on()
            limit = self.start_s if self.local_server_alive() else self.grace_s
            if time.monotonic() - away_since >= limit:
                self.exit(limit)

    def answers(self) -> bool:
        try:
            with _direct.open(self.api_url + "/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def local_server_alive(self) -> bool:
        entries = read_state(self.home).values()
        return any(e["url"] + "/api" == self.api_url and is_alive(e) for e in entries)

    def exit(self, waited: float) -> None:
        """Nothing can be reported to a server that is gone (pausing the deployments, the
        runs' states): end the flow runs and this process, with one line."""
        forget(self.home)
        _end_now(flow_runs(psutil.Process(), self.home))
        print(
            f"gptforge serve: the Prefect server at {self.api_url} has not answered for "
            f"{waited:g} s; serve stopped (start it again once the server is back)",
            file=sys.__stderr__,
            flush=True,
        )
        os._exit(1)

    def stop(self) -> None:
        self._done.set()


class _Quiet(logging.Filter):
    """Silences the console: stdout (Prefect's service loops print their retries there) and
    every console log handler. Between two of the watchdog's checks, a record carrying a
    traceback while the server does not answer (a websocket that just lost it) is dropped
    too: the watchdog's next check reports the outage in one line."""

    def __init__(self, answers: Callable[[], bool]) -> None:
        super().__init__()
        self.active = False
        self._answers = answers
        self._stdout = sys.stdout
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - kept: others may hold sys.stdout

    def filter(self, record: logging.LogRecord) -> bool:
        if self.active:
            return False
        return record.exc_info is None or self._answers()

    def attach(self) -> None:
        """On every console handler there is now (Prefect adds some as it goes)."""
        loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and self not in handler.filters:
                    handler.addFilter(self)

    def on(self) -> None:
        self.attach()
        self.active = True
        self._stdout, sys.stdout = sys.stdout, self._devnull

    def off(self) -> None:
        self.active = False
        sys.stdout = self._stdout


def _end_now(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _end(procs, 10.0)
