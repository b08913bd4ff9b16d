"""The Prefect and MLflow UIs as a person sees them: `gptforge up`'s servers in headless Chromium.

Each UI is checked with data in it (a finished flow run; a run with a generations table), so a
pass means the app rendered what its API returned, not just its empty shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, dump_dom, screenshot, visible_text
from test_servers import free_port

from flows import servers
from flows.home import QUIET_ENV

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install -y chromium)"
    ),
]

CHECK_FLOW = """
from prefect import flow

@flow(name="browser-check")
def check(word: str) -> str:
    return word

check(word="forge")
"""


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("servers-home")
    started = servers.up(home, prefect_port=free_port(), mlflow_port=free_port())
    try:
        yield {name: info["url"] for name, info in started["servers"].items()}
    finally:
        servers.down(home)


def test_prefect_ui_shows_a_finished_flow_run(urls: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **QUIET_ENV, "PREFECT_API_URL": urls["prefect"] + "/api"}
    subprocess.run([sys.executable, "-c", CHECK_FLOW], env=env, check=True, timeout=300)

    dashboard = visible_text(dump_dom(urls["prefect"] + "/dashboard"))
    for text in ("Dashboard", "Flow Runs", "Deployments", "1 total"):
        assert text in dashboard
    runs = visible_text(dump_dom(urls["prefect"] + "/runs"))
    assert "browser-check" in runs and "Completed" in runs
    screenshot(urls["prefect"] + "/dashboard", tmp_path / "prefect-dashboard.png")
    screenshot(urls["prefect"] + "/runs", tmp_path / "prefect-runs.png")


def test_mlflow_ui_shows_a_generations_table(urls: dict[str, str], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=urls["mlflow"])
    experiment_id = client.create_experiment("browser-check")
    run_id = client.create_run(experiment_id, run_name="sampling-check").info.run_id
    rows = {"prompt": ["Once upon"], "completion": ["a forge"], "temperature": [0.8]}
    client.log_table(run_id, rows, artifact_file="generations.json")
    client.set_terminated(run_id)

    experiments = visible_text(dump_dom(urls["mlflow"] + "/#/experiments"))
    assert "Experiments" in experiments and "browser-check" in experiments
    table_url = f"{urls['mlflow']}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/"
    table = visible_text(dump_dom(table_url + "generations.json"))
    for text in ("sampling-check", "View as table", "temperature", "Once upon", "a forge"):
        assert text in table
    screenshot(urls["mlflow"] + "/#/experiments", tmp_path / "mlflow-experiments.png")
    screenshot(table_url + "generations.json", tmp_path / "mlflow-generations.png")
