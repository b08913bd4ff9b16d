"""`gptforge up / down / status`: a local Prefect server and MLflow server, data under the home.

Flows run faster against a running Prefect server (no temporary server per run) and the MLflow
UI needs a tracking server. Both bind to 127.0.0.1, keep their databases and logs under
`GPTFORGE_HOME`, and run in their own process groups, recorded in `servers.json`, so `down`
stops exactly what `up` started, workers included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from gptforge.flows.home import QUIET_ENV, gptforge_home
from gptforge.pipeline.atomic import write_text_atomic

STATE_FILE = "servers.json"
HEALTH = {"prefect": "/api/health", "mlflow": "/health"}
PORT_FLAG = {"prefect": "--prefect-port", "mlflow": "--mlflow-port"}
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000}
HOST = "127.0.0.1"
BOOT_SLACK_S = 600.0  # how far clock adjustments may move the boot time within one boot

_children: dict[int, subprocess.Popen] = {}
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy


class ServerError(RuntimeError):
    """A server could not be started or stopped; the message says what to do."""


def up(
    home: Path | None = None,
    prefect_port: int = DEFAULT_PORTS["prefect"],
    mlflow_port: int = DEFAULT_PORTS["mlflow"],
    timeout: float = 180.0,
) -> dict:
    """Start both servers (keeping one already running, the embedded Prefect server included,
    which becomes permanent) and wait until they answer; returns `{"already_running", "servers"}`.
    """
    from gptforge.flows.embedded import LOCK, file_lock

    home = Path(home) if home else gptforge_home()
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    with file_lock(home / LOCK):
        running = {n: info for n, info in status(home).items() if info["alive"]}
        for info in running.values():
            info.pop("idle_s", None)
        missing = {n: port for n, port in ports.items() if n not in running}
        if not missing:
            write_state(home, running)
            return {"already_running": True, "servers": status(home)}
        if len(set(ports.values())) < len(ports):
            raise ServerError(f"Prefect and MLflow cannot share port {prefect_port}")
        for name, port in missing.items():
            if not port_free(port):
                owner = port_owner(port) or "another program?"
                raise ServerError(f"port {port} is in use (by {owner}) — pass {PORT_FLAG[name]}")
        servers = dict(running)
        try:
            for name, port in missing.items():
                servers[name] = start(name, port, home)
                write_state(home, servers)
            for name in missing:
                wait_healthy(name, servers[name], time.monotonic() + timeout)
        except BaseException:
            for name in missing:
                stop(name, home)
            raise
    return {"already_running": False, "servers": status(home)}


def down(home: Path | None = None, timeout: float = 20.0) -> list[str]:
    """Stop the home's `gptforge serve` (it would retry a dead server), then the process
    groups recorded in servers.json (TERM, then KILL); returns the names stopped. The
    embedded Prefect server is one of them when it is running."""
    from gptforge.flows import serve_process

    home = Path(home) if home else gptforge_home()
    stopped = ["serve"] if serve_process.stop(home) else []
    servers = read_state(home)
    stopped += [
        n for n, info in servers.items() if is_alive(info) and _stop_group(info["pid"], timeout)
    ]
    (home / STATE_FILE).unlink(missing_ok=True)
    return stopped


def stop(name: str, home: Path, timeout: float = 20.0) -> None:
    """Stop one recorded server and forget it."""
    info = read_state(home).get(name)
    if info and is_alive(info):
        _stop_group(info["pid"], timeout)
    forget(home, name)


def forget(home: Path, name: str) -> None:
    servers = read_state(home)
    servers.pop(name, None)
    if servers:
        write_state(home, servers)
    else:
        (home / STATE_FILE).unlink(missing_ok=True)


def status(home: Path | None = None) -> dict[str, dict]:
    """What servers.json records, each with `alive`; a file whose servers all died is removed."""
    home = Path(home) if home else gptforge_home()
    servers = read_state(home)
    for info in servers.values():
        info["alive"] = is_alive(info)
    if servers and not any(info["alive"] for info in servers.values()):
        (home / STATE_FILE).unlink(missing_ok=True)
        return {}
    return servers


def active_urls(home: Path | None = None) -> dict[str, str]:
    """The standard variables pointing at those of our servers that are running."""
    variables = {"prefect": "PREFECT_API_URL", "mlflow": "MLFLOW_TRACKING_URI"}
    suffix = {"prefect": "/api", "mlflow": ""}
    return {
        variables[name]: info["url"] + suffix[name]
        for name, info in status(home).items()
        if info["alive"] and name in variables
    }


def use_running_servers() -> dict[str, str]:
    """Point this process at a running local MLflow server; a variable the user set wins.

    Prefect is not set here: `flows.embedded.orchestrator` finds (or starts) the local Prefect
    server and leases it for as long as a command uses it.
    """
    urls = {k: v for k, v in active_urls().items() if k == "MLFLOW_TRACKING_URI"}
    for key, value in urls.items():
        os.environ.setdefault(key, value)
    return urls


def port_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the kernel says is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_owner(port: int) -> str | None:
    """'pid N: command' of the process listening on `port`, when the system lets us see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return f"pid {conn.pid}: {_cmdline(conn.pid)}"
    return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def is_alive(info: dict) -> bool:
    """Its process group has live members and its pid was not reused (say, after a reboot)."""
    started = process_start(info["pid"])
    same = started is None or same_start(started, info)
    return same and bool(group_members(info["pid"]))


def process_start(pid: int) -> dict | None:
    """When `pid` started, if it exists, as a record that tells a reused pid apart.

    psutil's `create_time` is the kernel's boot time plus the process's ticks since boot, and
    the boot time (whole seconds in /proc/stat, recomputed from the wall clock at every read)
    moves by a second whenever NTP slews the clock across one: the same process's start time
    changes. The ticks since boot never do, so they identify the process within one boot.
    """
    try:
        boot = psutil.boot_time()
        since_boot = psutil.Process(pid).create_time() - boot
    except psutil.Error:
        return None
    return {"started": round(since_boot, 2), "boot": boot}


def same_start(now: dict, record: dict) -> bool:
    """`now` (process_start) is the process `record` was made for: the same start since boot,
    in the same boot (a reboot moves the boot time by far more than clock adjustments do).
    A record without `boot` (from an earlier gptforge) holds the wall-clock start."""
    try:
        if "boot" not in record:
            return abs(now["boot"] + now["started"] - float(record["started"])) < 2.0
        return (
            abs(now["started"] - float(record["started"])) < 0.05
            and abs(now["boot"] - float(record["boot"])) < BOOT_SLACK_S
        )
    except (KeyError, TypeError, ValueError):
        return False


def _command(name: str, port: int, home: Path) -> list[str]:
    if name == "prefect":
        return [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
        ]
    artifacts = (home / "mlartifacts").as_uri()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--default-artifact-root",
        artifacts,
        "--artifacts-destination",
        artifacts,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def _server_env(name: str, port: int, home: Path) -> dict[str, str]:
    """Quiet, lean settings; a team's PREFECT_API_URL must not leak into our server's UI."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env.update(QUIET_ENV)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PREFECT_HOME"] = str(home / "prefect")
    if name == "prefect":
        env["PREFECT_UI_API_URL"] = f"http://{HOST}:{port}/api"
    return env


def start(name: str, port: int, home: Path, idle_s: float | None = None) -> dict:
    """Launch a server in a process group of its own; with `idle_s`, under the embedded
    server's watchdog (flows/embedded.py), which stops it when unused for that long."""
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = home / "logs" / f"{name}.log"
    command = _command(name, port, home)
    if idle_s is not None:
        command = [
            sys.executable,
            "-m",
            "gptforge.flows.embedded",
            "--home",
            str(home),
            "--",
            *command,
        ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=home,
            env=_server_env(name, port, home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    info = {
        "pid": proc.pid,
        **(process_start(proc.pid) or {}),
        "port": port,
        "url": f"http://{HOST}:{port}",
        "log": str(log),
    }
    return info | ({"idle_s": idle_s} if idle_s is not None else {})


def wait_healthy(name: str, info: dict, deadline: float) -> None:
    url = info["url"] + HEALTH[name]
    while True:
        try:
            with _direct.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if not group_members(info["pid"]):
            raise ServerError(f"{name} server exited during start:\n{_tail(info['log'])}")
        if time.monotonic() > deadline:
            raise ServerError(f"{name} server did not answer {url} in time:\n{_tail(info['log'])}")
        time.sleep(0.5)


def _stop_group(pgid: int, timeout: float) -> bool:
    """TERM the whole group, KILL what is left after `timeout`; reap our own child."""
    if not group_members(pgid):
        _reap(pgid)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            if not group_members(pgid):
                return True
            time.sleep(0.2)
    _reap(pgid)
    if group_members(pgid):
        raise ServerError(f"process group {pgid} survived SIGKILL")
    return True


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]


def read_state(home: Path) -> dict[str, dict]:
    try:
        return json.loads((home / STATE_FILE).read_text())["servers"]
    except (OSError, ValueError, KeyError):
        return {}


def write_state(home: Path, servers: dict[str, dict]) -> None:
    write_text_atomic(
        home / STATE_FILE, json.dumps({"home": str(home), "servers": servers}, indent=2) + "\n"
    )


def _tail(path: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:120]
    except psutil.Error:
        return "?"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `up`, `down` and `status`; each sets `args.handler(args) -> int`."""
    start = subparsers.add_parser("up", help="start local Prefect and MLflow servers")
    start.add_argument("--prefect-port", type=int, default=DEFAULT_PORTS["prefect"])
    start.add_argument("--mlflow-port", type=int, default=DEFAULT_PORTS["mlflow"])
    start.set_defaults(handler=run_up)
    stop = subparsers.add_parser("down", help="stop the servers `up` started, and serve")
    stop.set_defaults(handler=run_down)
    show = subparsers.add_parser("status", help="show the local servers")
    show.set_defaults(handler=run_status)


def run_up(args: argparse.Namespace) -> int:
    try:
        result = up(prefect_port=args.prefect_port, mlflow_port=args.mlflow_port)
    except ServerError as exc:
        print(f"gptforge up: {exc}", file=sys.stderr)
        return 1
    if result["already_running"]:
        print("already running:")
    _print_servers(result["servers"])
    print(f"data and logs: {gptforge_home()}  (stop with: gptforge down)")
    print("for `prefect deployment run`, `mlflow models serve` and other tools in this shell:")
    for variable, url in active_urls().items():
        print(f"  export {variable}={url}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    try:
        stopped = down()
    except ServerError as exc:
        print(f"gptforge down: {exc}", file=sys.stderr)
        return 1
    print(f"stopped: {', '.join(stopped)}" if stopped else "no servers were running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    servers = status()
    if not servers:
        print("no servers running (start them with: gptforge up)")
        return 1
    _print_servers(servers)
    return 0


def _print_servers(servers: dict[str, dict]) -> None:
    labels = {"prefect": "Prefect UI", "mlflow": "MLflow UI"}
    for name, info in servers.items():
        state = "" if info.get("alive", True) else "  (not running; see " + info["log"] + ")"
        print(f"{labels.get(name, name)}: {info['url']}{state}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gptforge.flows.servers")
    add_commands(parser.add_subparsers(dest="command", required=True))
    cli_args = parser.parse_args()
    sys.exit(cli_args.handler(cli_args))
