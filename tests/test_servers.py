"""`gptforge up/down`: real Prefect and MLflow servers on free ports under a temporary home."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gptforge.flows import servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listen_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def live_processes() -> dict[int, int]:
    """pid -> parent pid of every process that is not a zombie."""
    parents = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            parents[int(proc.name)] = int(fields[1])
    return parents


def process_tree(pid: int) -> set[int]:
    """`pid` and its live descendants by parent id, so a child that left the group still counts."""
    parents = live_processes()
    tree = {pid} if pid in parents else set()
    while grown := {p for p, parent in parents.items() if parent in tree and p not in tree}:
        tree |= grown
    return tree


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.mark.slow
def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    ports = {"prefect": free_port(), "mlflow": free_port()}
    started = servers.up(tmp_path, prefect_port=ports["prefect"], mlflow_port=ports["mlflow"])
    try:
        assert not started["already_running"]
        info = started["servers"]
        assert json.loads(get(info["prefect"]["url"] + "/api/health")) is True
        assert get(info["mlflow"]["url"] + "/health") == b"OK"
        for port in ports.values():
            assert listen_addresses(port) == {"0100007F"}, "must listen on 127.0.0.1 only"
        assert (tmp_path / "prefect" / "prefect.db").is_file()
        assert (tmp_path / "mlflow.db").is_file()

        again = servers.up(tmp_path, prefect_port=free_port(), mlflow_port=free_port())
        assert again["already_running"]
        assert {n: s["pid"] for n, s in again["servers"].items()} == {
            n: s["pid"] for n, s in info.items()
        }
        assert servers.active_urls(tmp_path) == {
            "PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        }
        members = set().union(*(process_tree(s["pid"]) for s in info.values()))
        assert len(members) >= 3, "MLflow runs its app in a uvicorn child"
    finally:
        stopped = servers.down(tmp_path)
    assert sorted(stopped) == ["mlflow", "prefect"]
    assert not (tmp_path / "servers.json").exists()
    for s in info.values():
        assert servers.group_members(s["pid"]) == []
    assert members.isdisjoint(live_processes()), "stray server processes"
    assert servers.status(tmp_path) == {}
    assert servers.down(tmp_path) == []


def test_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(servers.ServerError, match=f"port {port} is in use .* --mlflow-port"):
            servers.up(tmp_path, prefect_port=free_port(), mlflow_port=port)
    assert not (tmp_path / "servers.json").exists()
    assert not (tmp_path / "logs").exists()


def test_stale_state_is_cleaned_up(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = {"pid": dead.pid, "port": 1, "url": "http://127.0.0.1:1", "log": "x"}
    servers.write_state(tmp_path, {"prefect": state, "mlflow": state})
    assert servers.active_urls(tmp_path) == {}
    assert not (tmp_path / "servers.json").exists()


def test_standard_variables_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {"PREFECT_API_URL": "http://ours/api", "MLFLOW_TRACKING_URI": "http://ours"}
    monkeypatch.setattr(servers, "active_urls", lambda home=None: urls)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team-server")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    servers.use_running_servers()
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://team-server"
    assert "PREFECT_API_URL" not in os.environ, "Prefect is leased by flows.embedded instead"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A process in a group of its own, standing in for a recorded server."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_server_is_still_ours_after_the_clock_moves_the_boot_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen
) -> None:
    """When NTP slews the clock across a second, /proc/stat's boot time moves by one and so
    does every process's wall-clock start time (psutil's create_time); `down` must still
    recognise the servers it recorded."""
    state = {"pid": sleeper.pid, **servers.process_start(sleeper.pid), "port": 1, "url": "x"}
    servers.write_state(tmp_path, {"prefect": state | {"log": "x"}})
    real_boot = psutil._psplatform.boot_time
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: real_boot() + 1.0)
    moved = state["boot"] + state["started"] + 1.0
    assert psutil.Process(sleeper.pid).create_time() == pytest.approx(moved, abs=0.02)
    assert servers.status(tmp_path)["prefect"]["alive"]
    assert servers.down(tmp_path) == ["prefect"]
    assert sleeper.wait(timeout=10) is not None


def test_a_record_from_an_earlier_gptforge_still_names_its_server(
    tmp_path: Path, sleeper: subprocess.Popen
) -> None:
    """servers.json written before the start since boot was recorded: the wall-clock start."""
    started = psutil.Process(sleeper.pid).create_time()
    state = {"pid": sleeper.pid, "started": started, "port": 1, "url": "x", "log": "x"}
    servers.write_state(tmp_path, {"prefect": state})
    assert servers.down(tmp_path) == ["prefect"]


def test_a_reused_pid_is_left_alone(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    """After a reboot servers.json may name pids that now belong to someone else."""
    state = {"pid": sleeper.pid, "started": "0", "port": 1, "url": "http://x", "log": "x"}
    servers.write_state(tmp_path, {"prefect": state, "mlflow": state})
    assert servers.down(tmp_path) == []
    assert sleeper.poll() is None
    servers.write_state(tmp_path, {"prefect": state, "mlflow": state})
    assert servers.status(tmp_path) == {}
