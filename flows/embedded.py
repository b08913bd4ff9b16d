"""The embedded orchestrator: one local Prefect server per `GPTFORGE_HOME`, started on first use.

Without `PREFECT_API_URL`, Prefect would start a temporary server in every process, on the
user's shared `~/.prefect/prefect.db`, with a 20 s start-up limit that a busy machine misses
(and ~8 s per command when it does not). Instead the first command that needs Prefect starts
`prefect server start` on 127.0.0.1, with its database under `GPTFORGE_HOME/prefect`, and
waits for it with a limit sized for a loaded machine; concurrent and later commands reuse it.

Each command holds a *lease* (a shared `flock` on a file of its own) while it uses the server;
the kernel drops it when the process dies, however it dies. A small watchdog, the server's
process-group leader, stops the server once no lease has been held for `GPTFORGE_PREFECT_IDLE_S`
seconds (default 900), so nothing lingers for long after the last command; `gptforge up`
makes the server permanent and `gptforge down` stops it at once. docs/operations.md has the
design and docs/benchmarks.md the start-up costs it was chosen on.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gptforge.flows.home import gptforge_home
from gptforge.flows.progress import notice
from gptforge.pipeline.settings import ConfigError

LEASES = "leases"
LOCK = "servers.lock"
IDLE_ENV = "GPTFORGE_PREFECT_IDLE_S"
START_ENV = "GPTFORGE_SERVER_START_TIMEOUT_S"
DEFAULT_IDLE_S = 900.0
DEFAULT_START_S = 600.0
WATCH_EVERY_S = 2.0
LABELS = {"prefect": "Prefect", "mlflow": "MLflow"}


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """An advisory `flock` on `path`, held for the block; released by the kernel on death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def lease(home: Path) -> Iterator[None]:
    """Mark this process as a user of the embedded server for the duration of the block."""
    path = home / LEASES / f"{os.getpid()}-{time.monotonic_ns()}.lease"
    try:
        with file_lock(path, shared=True):
            yield
    finally:
        path.unlink(missing_ok=True)


def active_leases(home: Path) -> int:
    """Leases held by live processes; files left by dead ones are removed."""
    held = 0
    for path in (home / LEASES).glob("*.lease"):
        try:
            with open(path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held += 1
        except OSError:
            continue
        else:
            path.unlink(missing_ok=True)
    return held


def seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(name, f"must be a number of seconds > 0, got {raw!r}")
    return value


def ensure(home: Path, name: str, port: int | None = None, idle_s: float | None = None) -> dict:
    """This home's `name` server, started first if it is not running (on `port`, else on the
    default port when free, else on any free one); returns its servers.json entry."""
    from gptforge.flows import servers

    timeout = seconds_from_env(START_ENV, DEFAULT_START_S)
    with file_lock(home / LOCK):
        state = servers.read_state(home)  # dead entries too: another watch may restart them
        info = state.get(name)
        if info is None or not servers.is_alive(info):
            if port is None:
                port = servers.DEFAULT_PORTS[name]
                port = port if servers.port_free(port) else servers.free_port()
            notice(
                f"gptforge: starting the local {LABELS[name]} server on {servers.HOST}:{port} "
                f"(logs in {home / 'logs'})"
            )
            info = servers.start(name, port, home, idle_s=idle_s)
            servers.write_state(home, state | {name: info})
        try:
            servers.wait_healthy(name, info, time.monotonic() + timeout)
        except servers.ServerError:
            servers.stop(name, home)
            raise
    return info


class ServerWatch(threading.Thread):
    """Restarts, on the same port, a server of this home that dies while a command uses it.

    Clients retry refused connections for a while (Prefect's client up to
    `PREFECT_CLIENT_MAX_RETRIES`, MLflow's up to `MLFLOW_HTTP_REQUEST_MAX_RETRIES`), so a
    long training run carries on as if nothing happened. Only a dead process group counts as
    gone: a server that answers slowly on a busy machine is left alone.
    """

    def __init__(self, home: Path, names: tuple[str, ...]):
        super().__init__(name="gptforge-server-watch", daemon=True)
        self.home, self.names = home, names
        self._done = threading.Event()

    def run(self) -> None:
        from gptforge.flows import servers

        while not self._done.wait(WATCH_EVERY_S):
            for name in self.names:
                info = servers.read_state(self.home).get(name)
                if info is None:  # stopped on purpose (`gptforge down`): not ours to undo
                    self.names = tuple(n for n in self.names if n != name)
                    continue
                if servers.is_alive(info):
                    continue
                notice(f"gptforge: the local {LABELS[name]} server stopped; restarting it")
                try:
                    ensure(self.home, name, info["port"], info.get("idle_s"))
                except Exception as exc:  # noqa: BLE001 - the command reports what fails next
                    notice(f"gptforge: could not restart the {LABELS[name]} server: {exc}")
                    self.names = tuple(n for n in self.names if n != name)

    def stop(self) -> None:
        self._done.set()
        self.join()


def idle_seconds() -> float:
    return seconds_from_env(IDLE_ENV, DEFAULT_IDLE_S)


@contextmanager
def orchestrator() -> Iterator[str]:
    """Where this command's flows report: the user's `PREFECT_API_URL`, else the embedded
    server, leased for the block. Prefect's settings are bound here, before any flow runs."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    home = gptforge_home()
    with lease(home):
        url = ensure(home, "prefect", idle_s=idle_seconds())["url"] + "/api"
        os.environ["PREFECT_API_URL"] = url
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        # Nobody watches the embedded server for crashed runs, so the flow-run heartbeat
        # (up to 1 s at the end of every flow run, docs/benchmarks.md) buys nothing here.
        updates = {PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        from gptforge.flows.servers import status

        watch = ServerWatch(home, tuple(status(home)))
        watch.start()
        try:
            with temporary_settings(updates=updates):
                yield url
        finally:
            watch.stop()
            os.environ.pop("PREFECT_API_URL", None)


def watch(home: Path, command: list[str]) -> int:
    """Run the server `command` and stop it once it has been unused for the idle time.

    Runs as the process-group leader recorded in servers.json, so `gptforge down` stops the
    watchdog and the server together. `gptforge up` clears `idle_s` to keep the server.
    """
    from gptforge.flows import servers

    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    last_used = time.monotonic()
    while server.poll() is None:
        time.sleep(WATCH_EVERY_S)
        with file_lock(home / LOCK):
            mine = servers.read_state(home).get("prefect", {})
            idle_s = mine.get("idle_s") if mine.get("pid") == os.getpid() else None
            if idle_s is None or active_leases(home):
                last_used = time.monotonic()
                continue
            if time.monotonic() - last_used < idle_s:
                continue
            servers.forget(home, "prefect")
        server.terminate()
        try:
            return server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            return server.wait()
    return server.returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gptforge.flows.embedded")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    cli = parser.parse_args()
    command = cli.command[1:] if cli.command[:1] == ["--"] else cli.command
    sys.exit(watch(cli.home, command))
