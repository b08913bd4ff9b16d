"""The user's day in a real browser: `gptforge up`, `gptforge serve`, a `generate` deployment
run triggered through Prefect's API with a sampling setting, confirmed in the Prefect UI, and
its generations table with that setting shown by the MLflow UI (headless Chromium)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, dump_dom, screenshot, visible_text
from served import served
from test_servers import free_port
from train_helpers import micro_config

from gptforge.flows import servers
from gptforge.flows.home import QUIET_ENV
from gptforge.model.train import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install -y chromium)"
    ),
]

GPTFORGE = Path(sys.executable).with_name("gptforge")
SCREENSHOTS = os.environ.get("GPTFORGE_SCREENSHOTS")  # set to refresh docs/img/
TRIGGER = """
import json, sys, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

run = run_deployment("generate/gptforge-generate", parameters=json.loads(sys.argv[1]), timeout=0)
with get_client(sync_client=True) as client:
    while not (run := client.read_flow_run(run.id)).state.is_final():
        time.sleep(0.5)
print(run.id, run.name, run.state.type.value)
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Local servers on free ports, and `gptforge serve` against them, as a user starts them,
    once it has registered its deployments (the API then finds the generate one)."""
    home = tmp_path_factory.mktemp("browser-home")
    servers.up(home, prefect_port=free_port(), mlflow_port=free_port())
    env = os.environ | QUIET_ENV | {"GPTFORGE_HOME": str(home)}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    api = servers.active_urls(home)["PREFECT_API_URL"]
    registered = f"{api}/deployments/name/generate/gptforge-generate"
    command, log = [str(GPTFORGE), "serve"], home / "serve.log"
    try:
        with served(command, registered, log, env, timeout=300, stop_signal=signal.SIGINT):
            yield home
    finally:
        servers.down(home)


def test_generate_deployment_run_shows_in_both_uis(
    home: Path, token_data: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    urls = servers.active_urls(home)
    assert urls, "servers from `up` are not alive"
    checkpoint = train(micro_config(token_data, tmp_path / "model", max_steps=2)).checkpoint
    parameters = {
        "model": str(checkpoint),
        "prompts": ["Once upon a time"],
        "temperature": 0.65,
        "max_new_tokens": 6,
    }
    env = os.environ | QUIET_ENV | {"PREFECT_API_URL": urls["PREFECT_API_URL"]}
    triggered = subprocess.run(
        [sys.executable, "-c", TRIGGER, json.dumps(parameters)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    serve_log = (home / "serve.log").read_text()[-3000:]
    assert triggered.returncode == 0, triggered.stderr[-3000:] + serve_log
    run_id, run_name, state = triggered.stdout.split()[-3:]
    assert state == "COMPLETED", serve_log

    prefect_ui = urls["PREFECT_API_URL"].removesuffix("/api")
    run_page = f"{prefect_ui}/runs/flow-run/{run_id}"
    text = visible_text(dump_dom(run_page))
    assert run_name in text and "Completed" in text and "generate" in text

    client = MlflowClient(tracking_uri=urls["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "gptforge-generations"]
    (run,) = client.search_runs([experiment.experiment_id], "tags.`gptforge.stage` = 'generate'")
    assert run.data.params["temperature"] == "0.65"
    table_page = (
        f"{urls['MLFLOW_TRACKING_URI']}/#/experiments/{experiment.experiment_id}"
        f"/runs/{run.info.run_id}/artifacts/generations.json"
    )
    table = visible_text(dump_dom(table_page))
    for text in ("View as table", "temperature", "top_k", "0.65", "Once upon a time", "length"):
        assert text in table, text

    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    screenshot(f"{prefect_ui}/deployments", shots / "prefect-deployments.png")
    screenshot(run_page, shots / "prefect-generate-run.png")
    screenshot(table_page, shots / "mlflow-generations-table.png")
    assert (shots / "mlflow-generations-table.png").stat().st_size > 10_000
