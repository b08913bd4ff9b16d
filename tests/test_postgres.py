"""Team servers on PostgreSQL, as docs/operations.md sets them up: a real PostgreSQL cluster
(initdb into a temporary directory), a Prefect server and an MLflow server on its databases,
and `gptforge run` pointed at them with the standard variables. The flow runs, the MLflow
runs, the registered model version and any generation traces must then be rows in
PostgreSQL, and nothing in SQLite."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from served import start, stop, wait_until_answers

from gptforge.flows import servers
from gptforge.flows.home import QUIET_ENV
from gptforge.flows.tracking import STAGE_TAG

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
ROLE = "gptforge"
MICRO = ["--model-overrides", "block_size=32", "n_layer=1", "n_head=2", "n_embd=32"]


def postgres_bin() -> Path | None:
    """The directory holding initdb and postgres: on PATH, else Debian's versioned one."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def as_server_user() -> dict:
    """PostgreSQL refuses to run as root: under root its processes run as `nobody`."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": pwd.getpwnam("nobody").pw_gid}


def connect(port: int, database: str):
    return psycopg2.connect(host=servers.HOST, port=port, user=ROLE, dbname=database)


@pytest.fixture
def postgres() -> Iterator[dict]:
    """A PostgreSQL cluster on a free port of 127.0.0.1, trust authentication for role
    `gptforge`, with the databases `prefect` and `mlflow`; stopped and removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or under "
            "/usr/lib/postgresql; scripts/setup.sh installs them (apt-get install postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="gptforge-pg-"))  # not under pytest's 0700 tmp dirs
    user = as_server_user()
    if user:
        shutil.chown(root, user["user"], user["group"])
    data, port = root / "data", servers.free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust"]
    subprocess.run(
        [*initdb, "--no-sync", "-E", "UTF8", "--locale=C"],
        cwd=root,
        check=True,
        capture_output=True,
        **user,
    )
    server = start(
        [str(bindir / "postgres"), "-D", str(data), "-h", servers.HOST, "-p", str(port)]
        + ["-k", str(root), "-c", "fsync=off"],
        root / "postgres.log",
        **user,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connect(port, "postgres").close()
                break
            except psycopg2.OperationalError:
                assert server.poll() is None, (root / "postgres.log").read_text()
                assert time.monotonic() < deadline, (root / "postgres.log").read_text()
                time.sleep(0.2)
        admin = connect(port, "postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE prefect")
            cursor.execute("CREATE DATABASE mlflow")
        admin.close()
        yield {"port": port, "url": f"{ROLE}@{servers.HOST}:{port}"}
    finally:
        stop(server, signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)


def query(port: int, database: str, sql: str, *params) -> list[tuple]:
    with connect(port, database) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    conn.close()
    return rows


def test_pipeline_runs_land_in_postgres(postgres: dict, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= QUIET_ENV | {"GPTFORGE_HOME": str(tmp_path / "home")}
    ports = {"prefect": servers.free_port(), "mlflow": servers.free_port()}
    prefect_port, mlflow_port = ports["prefect"], ports["mlflow"]
    prefect_env = env | {
        "PREFECT_HOME": str(tmp_path / "prefect-server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{postgres['url']}/prefect",
    }
    mlflow_env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    prefect_cmd = [sys.executable, "-m", "prefect", "server", "start"]
    mlflow_cmd = [sys.executable, "-m", "mlflow", "server"]
    mlflow_cmd += ["--backend-store-uri", f"postgresql://{postgres['url']}/mlflow"]
    mlflow_cmd += ["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    started = {
        "prefect": start(
            [*prefect_cmd, "--host", servers.HOST, "--port", str(prefect_port)],
            tmp_path / "prefect.log",
            prefect_env,
        ),
        "mlflow": start(
            [*mlflow_cmd, "--host", servers.HOST, "--port", str(mlflow_port)],
            tmp_path / "mlflow.log",
            mlflow_env,
        ),
    }
    try:
        for name, health in (("prefect", "api/health"), ("mlflow", "health")):
            url = f"http://{servers.HOST}:{ports[name]}/{health}"
            # both create their schemas on first start
            wait_until_answers(url, started[name], tmp_path / f"{name}.log", timeout=300)
        docs = tmp_path / "docs"
        docs.mkdir()
        for page in sorted((REPO / "docs").glob("*.md"))[:4]:  # text only: no OCR
            shutil.copy(page, docs)
        client_env = env | {
            "PREFECT_API_URL": f"http://{servers.HOST}:{prefect_port}/api",
            "MLFLOW_TRACKING_URI": f"http://{servers.HOST}:{mlflow_port}",
        }
        command = [str(Path(sys.executable).with_name("gptforge")), "run", str(docs)]
        command += ["--data", str(tmp_path / "data"), *MICRO, "--max-steps", "3"]
        command += ["--batch-size", "2", "--precision", "fp32", "--model-name", "team-model"]
        command += ["--eval-prompts", "The", "--eval-temperatures", "0.8"]
        command += ["--max-new-tokens", "4"]
        done = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    finally:
        for proc in started.values():
            stop(proc)

    stages = dict(re.findall(r"(ingest|train|generate) ([0-9a-f]{32})", done.stdout))
    assert set(stages) == {"ingest", "train", "generate"}, done.stdout
    home = tmp_path / "home"
    assert not (home / "mlflow.db").exists() and not (home / "prefect" / "prefect.db").exists()

    port = postgres["port"]
    flow_runs = query(
        port,
        "prefect",
        "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id",
    )
    assert {name for name, _ in flow_runs} >= {"pipeline", "ingest", "train", "generate"}
    assert {state for _, state in flow_runs} == {"COMPLETED"}, flow_runs

    runs = query(
        port,
        "mlflow",
        "SELECT t.value, r.run_uuid, r.status FROM runs r JOIN tags t "
        "ON t.run_uuid = r.run_uuid AND t.key = %s WHERE t.value IN %s",
        STAGE_TAG,
        tuple(stages),
    )
    assert sorted(runs) == sorted((stage, run, "FINISHED") for stage, run in stages.items())
    metrics = query(
        port, "mlflow", "SELECT count(*) FROM metrics WHERE run_uuid = %s", stages["train"]
    )
    assert metrics[0][0] > 0
    versions = query(port, "mlflow", "SELECT name, version, run_id FROM model_versions")
    assert versions == [("team-model", 1, stages["train"])]
    aliases = query(port, "mlflow", "SELECT name, alias, version FROM registered_model_aliases")
    assert aliases == [("team-model", "champion", 1)]
    # Generation traces, where the generate flow logs them, are rows too, each logged in the
    # generate run or a child run of it (a store with none is fine until then).
    traces = query(
        port,
        "mlflow",
        "SELECT source.value, parent.value FROM trace_info t "
        "LEFT JOIN trace_request_metadata source "
        "ON source.request_id = t.request_id AND source.key = 'mlflow.sourceRun' "
        "LEFT JOIN tags parent ON parent.run_uuid = source.value "
        "AND parent.key = 'mlflow.parentRunId'",
    )
    assert all(stages["generate"] in trace for trace in traces), traces
