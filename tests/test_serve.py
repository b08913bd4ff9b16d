"""`gptforge serve` as a user runs it, against real local Prefect servers on 127.0.0.1: the
retraining chain (a real ingest's event -> a served train -> its registered version -> a served
evaluation generate), `down` stopping serve, serve ending with one line when its server goes
away, and a schedule set outside serve surviving a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import CHROMIUM, dump_dom, screenshot, visible_text
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from gptforge.flows import servers
from gptforge.flows.serve import deployments
from gptforge.flows.triggers import EVALUATION
from gptforge.pipeline.config import ConfigError

GPTFORGE = Path(sys.executable).with_name("gptforge")
PREFECT = Path(sys.executable).with_name("prefect")
MICRO = {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32}


def test_retrain_cron_reingests_and_turns_the_chain_on(tmp_path: Path) -> None:
    by_flow = {d.flow_name: d for d in deployments("0 3 * * *", [str(tmp_path)])}
    (schedule,) = by_flow["ingest"].schedules
    assert schedule.schedule.cron == "0 3 * * *"
    assert by_flow["ingest"].parameters["sources"] == [str(tmp_path)]
    assert not by_flow["pipeline"].schedules, "the cron only re-ingests"
    assert [t.expect for t in by_flow["train"].triggers] == [{"gptforge.dataset.changed"}]
    assert [t.expect for t in by_flow["generate"].triggers] == [{"gptforge.model.registered"}]
    assert all(not d.triggers for d in deployments()), "no chain unless asked"
    assert all(not d.schedules for d in deployments(retrain_on_change=True))
    with pytest.raises(ConfigError, match="sources"):
        deployments("0 3 * * *")


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment with a home of its own; whatever the test leaves is stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"GPTFORGE_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect")}
    yield env
    servers.down(Path(env["GPTFORGE_HOME"]))


@contextmanager
def serving(env: dict[str, str], log: Path, *options: str) -> Iterator[subprocess.Popen]:
    """`gptforge serve` in the background, once its deployments are registered."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(GPTFORGE), "serve", *options],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        # Prefect prints this once the deployments are registered. Not a deployment's name:
        # serve names them earlier (a kept schedule), before it handles Ctrl-C as a stop.
        wait_for(lambda: "deployments are being served" in log.read_text(), 180, log, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_for(ready: Callable[[], object], timeout: float, log: Path, proc=None) -> object:
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; serve's output:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return found


def api_url(env: dict[str, str]) -> str:
    """The server serve uses, from its record."""
    return json.loads((Path(env["GPTFORGE_HOME"]) / "serve.json").read_text())["api_url"]


@contextmanager
def api(env: dict[str, str]) -> Iterator[SyncPrefectClient]:
    with temporary_settings({PREFECT_API_URL: api_url(env)}), get_client(sync_client=True) as c:
        yield c


def runs_of(client: SyncPrefectClient, deployment: str) -> list[FlowRun]:
    found = client.read_deployment_by_name(deployment)
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id]))
    )


def gptforge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GPTFORGE), *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_changed_dataset_trains_and_the_new_version_is_evaluated(
    user_env: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with serving(user_env, log, "--retrain-on-change") as serve, api(user_env) as client:
        # As a user would in the UI: small training defaults for the train deployment.
        train = client.read_deployment_by_name("train/gptforge-train")
        tiny = {"model_overrides": MICRO, "max_steps": 2, "batch_size": 2}
        tiny |= {"eval_interval": 2, "eval_tokens": 512}
        client.update_deployment(train.id, DeploymentUpdate(parameters=tiny))
        # A version registered outside the train deployment (a CLI run) is not evaluated.
        emitted = subprocess.run(
            [str(PREFECT), "event", "emit", "gptforge.model.registered", "--resource-id",
             "gptforge.model.cli/1", "--payload", '{"model_uri": "models:/cli/1"}'],
            env=user_env | {"PREFECT_API_URL": api_url(user_env)}, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr

        data = tmp_path / "data"
        ingested = gptforge("ingest", str(corpus), "--out", str(data), env=user_env)
        assert ingested.returncode == 0, ingested.stderr
        prefix = f"Prefect flow run: {api_url(user_env).removesuffix('/api')}/runs/flow-run/"
        (link,) = [line for line in ingested.stdout.splitlines() if line.startswith(prefix)]
        assert client.read_flow_run(link.removeprefix(prefix)).name == "ingest-data"

        (trained,) = wait_for(lambda: runs_of(client, "train/gptforge-train"), 120, log, serve)
        assert trained.parameters == tiny | {"data": str(data), "experiment": "gptforge"}

        def evaluated() -> list[FlowRun]:
            found = runs_of(client, "generate/gptforge-generate")
            return found if found and found[0].state.is_final() else []

        (evaluation,) = wait_for(evaluated, 300, log, serve)
        assert client.read_flow_run(trained.id).state.is_completed(), log.read_text()[-3000:]
        assert evaluation.state.is_completed(), log.read_text()[-3000:]
        assert evaluation.parameters == {
            "model": "models:/gptforge/1",
            "experiment": "gptforge",
            **EVALUATION,
        }
        if CHROMIUM.exists():  # the chain in the UI (GPTFORGE_SCREENSHOTS=docs/img: screenshots)
            ui = api_url(user_env).removesuffix("/api")
            feed = visible_text(dump_dom(f"{ui}/events", budget_ms=20000))
            assert "Deployment gptforge-generate Automation evaluate a retrained model" in feed
            if shots := os.environ.get("GPTFORGE_SCREENSHOTS"):
                for page in ("automations", "events"):
                    path = Path(shots) / f"prefect-{page}.png"
                    screenshot(f"{ui}/{page}", path, budget_ms=20000)
        down = gptforge("down", env=user_env)
        assert down.stdout.strip() == "stopped: serve, prefect", down.stdout + down.stderr
        assert serve.wait(timeout=10) == 0


@pytest.mark.slow
def test_a_schedule_set_in_the_ui_survives_a_restart_and_down_stops_serve(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with serving(user_env, log) as first, api(user_env) as client:
        pipeline = client.read_deployment_by_name("pipeline/gptforge-pipeline")
        client.create_deployment_schedules(pipeline.id, [(CronSchedule(cron="15 4 * * *"), True)])
        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(timeout=60) == 0, log.read_text()[-3000:]

    with serving(user_env, log) as second, api(user_env) as client:
        (schedule,) = client.read_deployment_by_name("pipeline/gptforge-pipeline").schedules
        assert schedule.schedule.cron == "15 4 * * *" and schedule.active
        out = log.read_text()
        assert "keeping the schedule set on pipeline/gptforge-pipeline: '15 4 * * *'" in out
        prefect = servers.read_state(Path(user_env["GPTFORGE_HOME"]))["prefect"]

        down = gptforge("down", env=user_env)
        assert down.returncode == 0 and down.stdout.strip() == "stopped: serve, prefect"
        assert second.wait(timeout=10) == 0
    assert not (Path(user_env["GPTFORGE_HOME"]) / "serve.json").exists()
    assert not servers.group_members(prefect["pid"])


@pytest.mark.slow
def test_serve_ends_with_one_line_when_its_server_goes_away(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    """A server that is not this home's (a team's): nobody restarts it."""
    team = tmp_path / "team"
    port = servers.free_port()
    server = servers.start("prefect", port, team)
    servers.wait_healthy("prefect", server, time.monotonic() + 180)
    env = user_env | {"PREFECT_API_URL": f"{server['url']}/api", "GPTFORGE_SERVE_GRACE_S": "5"}
    log = tmp_path / "serve.log"
    try:
        with serving(env, log) as serve:
            os.killpg(server["pid"], signal.SIGKILL)
            assert serve.wait(timeout=60) == 1
    finally:
        if servers.group_members(server["pid"]):
            os.killpg(server["pid"], signal.SIGKILL)
    after = log.read_text().split("gptforge-pipeline", 1)[1]
    assert "Traceback" not in after
    lines = [line for line in after.splitlines() if line.strip(" │└─┘")]
    assert lines[-1] == (
        f"gptforge serve: the Prefect server at {server['url']}/api has not answered for 5 s; "
        "serve stopped (start it again once the server is back)"
    ), after
    assert not (Path(user_env["GPTFORGE_HOME"]) / "serve.json").exists()
