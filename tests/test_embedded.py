"""The embedded default on a busy machine: `gptforge` commands as a new user runs them, in
their own processes, with no server started by hand, while two busy loops keep both cores
loaded. One local Prefect server per GPTFORGE_HOME serves concurrent commands, nothing is
written to ~/.prefect, a server that dies mid-run is restarted, and the server stops itself
once unused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psutil
import pytest
from train_helpers import weights
from trees import write_tree

from gptforge.flows import servers
from gptforge.model.checkpoint import read_trainer_state, resolve_checkpoint

pytestmark = pytest.mark.slow

GPTFORGE = Path(sys.executable).with_name("gptforge")
MICRO = ["--model-overrides", "n_layer=1", "n_head=2", "n_embd=32", "block_size=32"]


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two CPU-bound processes, as on a laptop compiling something or a shared CI box."""
    loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A new user's environment: an empty HOME, no Prefect or MLflow variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "GPTFORGE_"))
    }
    env |= {"HOME": str(tmp_path / "user"), "GPTFORGE_HOME": str(tmp_path / "user" / "gptforge")}
    (tmp_path / "user").mkdir()
    yield env
    servers.down(Path(env["GPTFORGE_HOME"]))


def gptforge(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(GPTFORGE), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )


def interruptible() -> None:
    """As typed at a terminal. A suite started in the background (`cmd &` in a script) runs
    with SIGINT ignored, which children inherit, and Python then never raises Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def own_children(proc: subprocess.Popen, home: Path) -> set[int]:
    """The command's descendants, less the shared server it started (which outlives it)."""
    servers_ = {info["pid"] for info in servers.read_state(home).values()}
    return {
        p.pid
        for p in psutil.Process(proc.pid).children(recursive=True)
        if os.getpgid(p.pid) not in servers_
    }


def training_logged(proc: subprocess.Popen, out: Path, tracking_uri: str) -> str:
    """Wait until the run has a train_loss in MLflow: the loop is running, its end far off.
    A precise event, where a fixed sleep is too short on a busy machine and long on a quiet one."""
    run_file, client = out / "mlflow_run.json", mlflow.MlflowClient(tracking_uri)
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, f"ended before it could be interrupted:\n{finish(proc)[1]}"
        assert time.monotonic() < deadline, "no train_loss logged in 300 s"
        if run_file.exists():
            run_id = json.loads(run_file.read_text())["mlflow_run_id"]
            if client.get_metric_history(run_id, "train_loss"):
                return run_id
        time.sleep(0.2)


def group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while servers.group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_four_commands_at_once_on_a_busy_machine_share_one_server(
    busy_cores: None, user_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(user_env["GPTFORGE_HOME"])
    env = user_env | {"GPTFORGE_PREFECT_IDLE_S": "20"}
    sample = tmp_path / "sample"
    assert finish(gptforge("sample", str(sample), env=env))[0] == 0
    trees = [
        write_tree(
            tmp_path / f"docs{i}", {f"note{j}.md": f"Document {i}.{j}. " * 40 for j in range(5)}
        )
        for i in range(3)
    ]
    commands = [
        gptforge(
            "run",
            str(sample),
            "--data",
            str(tmp_path / "data"),
            "--max-steps",
            "4",
            *MICRO,
            "--max-new-tokens",
            "4",
            env=env,
        ),
    ] + [
        gptforge("ingest", str(t), "--out", str(tmp_path / f"out{i}"), env=env)
        for i, t in enumerate(trees)
    ]
    results = [finish(proc) for proc in commands]

    for code, out in results:
        assert code == 0, out
        assert "Traceback" not in out
    assert "registered model: models:/gptforge/1" in results[0][1]
    starts = sum(out.count("starting the local Prefect server") for _, out in results)
    assert starts == 1, "one server for every command of this home"
    assert not (Path(env["HOME"]) / ".prefect").exists()
    assert (home / "prefect" / "prefect.db").is_file()

    (entry,) = servers.read_state(home).values()
    assert entry["idle_s"] == 20
    assert group_gone(entry["pid"], timeout=120), "an unused embedded server stops by itself"
    assert not (home / "servers.json").exists()
    assert not list((home / "leases").glob("*.lease"))


def test_servers_killed_during_training_are_restarted_and_the_run_completes(
    user_env: dict[str, str], token_data: Path, tmp_path: Path
) -> None:
    home = Path(user_env["GPTFORGE_HOME"])
    up = servers.up(home, prefect_port=servers.free_port(), mlflow_port=servers.free_port())
    out = tmp_path / "run"
    trainer = gptforge(
        "train", "--data", str(token_data), "--out", str(out), "--max-steps", "60",
        "--batch-size", "2", "--eval-tokens", "512", env=user_env,
    )  # fmt: skip
    training_logged(trainer, out, servers.active_urls(home)["MLFLOW_TRACKING_URI"])
    for info in up["servers"].values():
        os.killpg(info["pid"], signal.SIGKILL)

    code, output = finish(trainer)
    assert code == 0, output
    assert output.count("server stopped; restarting it") == 2
    run_id = json.loads((out / "mlflow_run.json").read_text())["mlflow_run_id"]
    mlflow.set_tracking_uri(servers.active_urls(home)["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    history = read_trainer_state(resolve_checkpoint(out))["history"]
    assert steps == [h["step"] for h in history], "no metric lost while the server was away"
    assert client.get_model_version("gptforge", "1").run_id == run_id


def test_sigterm_stops_training_at_a_checkpoint_and_resume_ends_where_a_straight_run_does(
    user_env: dict[str, str], token_data: Path, tmp_path: Path
) -> None:
    common = [
        "--data",
        str(token_data),
        "--max-steps",
        "100",
        "--batch-size",
        "2",
        "--eval-tokens",
        "512",
        "--checkpoint-interval",
        "1000",
        "--seed",
        "7",
        *MICRO,
    ]
    out = tmp_path / "stopped"
    trainer = gptforge("train", *common, "--out", str(out), env=user_env)
    tracking_uri = f"sqlite:///{user_env['GPTFORGE_HOME']}/mlflow.db"
    run_id = training_logged(trainer, out, tracking_uri)
    children = own_children(trainer, Path(user_env["GPTFORGE_HOME"]))
    trainer.send_signal(signal.SIGTERM)
    code, output = finish(trainer, timeout=60)

    assert code == 143, output
    assert "Traceback" not in output
    (line,) = [ln for ln in output.splitlines() if "stopped by SIGTERM" in ln]
    assert "continue it with --resume" in line
    assert not [
        p
        for p in children
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ], "a child was left behind"
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"

    code, output = finish(gptforge("train", *common, "--out", str(out), "--resume", env=user_env))
    assert code == 0, output
    assert f"MLflow run: {run_id}" in output, "resume continues the same MLflow run"
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"
    straight = tmp_path / "straight"
    assert finish(gptforge("train", *common, "--out", str(straight), env=user_env))[0] == 0
    resumed, reference = weights(resolve_checkpoint(out)), weights(resolve_checkpoint(straight))
    assert all((resumed[k] == reference[k]).all() for k in reference)


def test_ctrl_c_during_ingest_leaves_no_process_and_a_rerun_finishes_the_same_dataset(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    from docgen import render_text_image

    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(10):
        render_text_image(f"Page {i}: the quick brown fox jumps over the lazy dog.").save(
            scans / f"page{i}.png"
        )
    out = tmp_path / "data"
    ingest = gptforge("ingest", str(scans), "--out", str(out), env=user_env)
    index = out / "cache" / "v2" / "index.jsonl"
    while not (index.exists() and index.read_bytes().count(b"\n") >= 1):
        assert ingest.poll() is None, "ingest ended before it could be interrupted"
        time.sleep(0.1)
    children = own_children(ingest, Path(user_env["GPTFORGE_HOME"]))
    assert children, "extraction processes are running"
    ingest.send_signal(signal.SIGINT)
    code, output = finish(ingest, timeout=60)

    assert code == 130, output
    assert "Traceback" not in output
    assert "stopped by SIGINT; run it again to continue" in output
    assert not (out / "manifest.json").exists(), "nothing half-done is taken for finished"
    deadline = time.monotonic() + 15  # a tesseract already running finishes its page
    while [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]:
        assert time.monotonic() < deadline, "an extraction process outlived the command"
        time.sleep(0.5)

    assert finish(gptforge("ingest", str(scans), "--out", str(out), env=user_env))[0] == 0
    straight = tmp_path / "straight"
    assert finish(gptforge("ingest", str(scans), "--out", str(straight), env=user_env))[0] == 0
    rerun, reference = (json.loads((d / "manifest.json").read_text()) for d in (out, straight))
    assert rerun["dataset_digest"] == reference["dataset_digest"]
    assert {r["status"] for r in rerun["files"]} == {"ok"}
