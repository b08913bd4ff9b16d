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

from flows.home import QUIET_ENV, gptforge_home

STATE_FILE = "servers.json"
HEALTH = {"prefect": "/api/health", "mlflow": "/health"}
PORT_FLAG = {"prefect": "--prefect-port", "mlflow": "--mlflow-port"}
HOST = "127.0.0.1"

_children: dict[int, subprocess.Popen] = {}
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy


class ServerError(RuntimeError):
    """A server could not be started or stopped; the message says what to do."""


def up(
    home: Path | None = None,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    timeout: float = 180.0,
) -> dict:
    """Start both servers and wait until they answer; returns `{"already_running", "servers"}`."""
    home = Path(home) if home else gptforge_home()
    running = status(home)
    if set(running) == set(HEALTH) and all(info["alive"] for info in running.values()):
        return {"already_running": True, "servers": running}
    if running:
        down(home)
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    if prefect_port == mlflow_port:
        raise ServerError(f"Prefect and MLflow cannot share port {prefect_port}")
    for name, port in ports.items():
        if not port_free(port):
            owner = port_owner(port) or "another program?"
            raise ServerError(f"port {port} is in use (by {owner}) — pass {PORT_FLAG[name]}")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    servers: dict[str, dict] = {}
    try:
        for name, port in ports.items():
            servers[name] = _start(name, port, home)
            _write_state(home, servers)
        for name, info in servers.items():
            _wait_healthy(name, info, time.monotonic() + timeout)
    except BaseException:
        down(home)
        raise
    return {"already_running": False, "servers": status(home)}


def down(home: Path | None = None, timeout: float = 20.0) -> list[str]:
    """Stop the process groups `up` recorded (TERM, then KILL); returns the names stopped."""
    home = Path(home) if home else gptforge_home()
    servers = _read_state(home)
    stopped = [
        n for n, info in servers.items() if _alive(info) and _stop_group(info["pid"], timeout)
    ]
    (home / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(home: Path | None = None) -> dict[str, dict]:
    """What servers.json records, each with `alive`; a file whose servers all died is removed."""
    home = Path(home) if home else gptforge_home()
    servers = _read_state(home)
    for info in servers.values():
        info["alive"] = _alive(info)
    if servers and not any(info["alive"] for info in servers.values()):
        (home / STATE_FILE).unlink(missing_ok=True)
        return {}
    return servers


def active_urls(home: Path | None = None) -> dict[str, str]:
    """The standard variables pointing at our servers when both are up, else nothing."""
    servers = status(home)
    if set(servers) != set(HEALTH) or not all(info["alive"] for info in servers.values()):
        return {}
    return {
        "PREFECT_API_URL": servers["prefect"]["url"] + "/api",
        "MLFLOW_TRACKING_URI": servers["mlflow"]["url"],
    }


def use_running_servers() -> dict[str, str]:
    """Point this process at `gptforge up`'s servers; variables the user set win."""
    urls = active_urls()
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


def port_owner(port: int) -> str | None:
    """'pid N: command' of the process listening on `port`, when /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in _proc_dirs():
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return f"pid {proc.name}: {_cmdline(proc)}"
            except OSError:
                continue
    return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for proc in _proc_dirs():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(proc.name))
    return members


def _alive(info: dict) -> bool:
    """Its process group has live members and its pid was not reused (say, after a reboot)."""
    started = _start_time(info["pid"])
    same = started is None or started == info.get("started")
    return same and bool(group_members(info["pid"]))


def _start_time(pid: int) -> str | None:
    """Clock ticks after boot when `pid` started (/proc/PID/stat field 22), if it exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


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


def _start(name: str, port: int, home: Path) -> dict:
    log = home / "logs" / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _command(name, port, home),
            cwd=home,
            env=_server_env(name, port, home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return {
        "pid": proc.pid,
        "started": _start_time(proc.pid),
        "port": port,
        "url": f"http://{HOST}:{port}",
        "log": str(log),
    }


def _wait_healthy(name: str, info: dict, deadline: float) -> None:
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


def _read_state(home: Path) -> dict[str, dict]:
    try:
        return json.loads((home / STATE_FILE).read_text())["servers"]
    except (OSError, ValueError, KeyError):
        return {}


def _write_state(home: Path, servers: dict[str, dict]) -> None:
    """Write-then-rename: a reader never sees half a file."""
    tmp = home / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"home": str(home), "servers": servers}, indent=2) + "\n")
    os.replace(tmp, home / STATE_FILE)


def _tail(path: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _proc_dirs() -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:120]
    except OSError:
        return "?"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `up`, `down` and `status`; each sets `args.handler(args) -> int`."""
    start = subparsers.add_parser("up", help="start local Prefect and MLflow servers")
    start.add_argument("--prefect-port", type=int, default=4200)
    start.add_argument("--mlflow-port", type=int, default=5000)
    start.set_defaults(handler=run_up)
    stop = subparsers.add_parser("down", help="stop the servers `up` started")
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
    parser = argparse.ArgumentParser(prog="python -m flows.servers")
    add_commands(parser.add_subparsers(dest="command", required=True))
    cli_args = parser.parse_args()
    sys.exit(cli_args.handler(cli_args))
