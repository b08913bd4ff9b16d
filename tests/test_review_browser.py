"""The reviewer's view in a real browser: the MLflow UI's Traces tab lists a generation job's
traces, and one trace shows its code scores and a human rating (headless Chromium)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from browser import CHROMIUM, dump_dom, screenshot, visible_text
from mlflow.entities import AssessmentSource
from served import served
from train_helpers import micro_config

from gptforge.flows.generate import generate_flow
from gptforge.flows.home import QUIET_ENV, mlflow_uri
from gptforge.flows.servers import free_port
from gptforge.flows.tracking import generations_experiment
from gptforge.model.train import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install -y chromium)"
    ),
]
SCREENSHOTS = os.environ.get("GPTFORGE_SCREENSHOTS")  # set to refresh docs/img/
WIDE = (1900, 1000)  # the trace list shows its assessment columns


@pytest.fixture(scope="module")
def mlflow_ui(gptforge_home: Path) -> Iterator[str]:
    """`mlflow server` on the tests' store, as `gptforge up` starts it (one worker)."""
    port = free_port()
    env = os.environ | QUIET_ENV | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_uri()]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with served(command, f"{url}/health", gptforge_home / "mlflow-ui.log", env, timeout=120):
        yield url


def test_the_traces_tab_lists_a_jobs_traces_and_one_traces_assessments(
    prefect, mlflow_ui: str, token_data: Path, tmp_path: Path
) -> None:
    checkpoint = train(micro_config(token_data, tmp_path / "model", max_steps=2)).checkpoint
    generate_flow(
        model=str(checkpoint),
        prompts=["Once upon a time", "The data flows"],
        temperature=[0.7, 1.0],
        max_new_tokens=8,
        out=str(tmp_path / "gen.jsonl"),
        experiment="browser-review",
    )
    mlflow.set_tracking_uri(mlflow_uri())
    experiment = mlflow.get_experiment_by_name(generations_experiment("browser-review"))
    traces = mlflow.search_traces(
        locations=[experiment.experiment_id],
        filter_string="tags.temperature = '0.7'",
        return_type="list",
    )
    trace_id = traces[0].info.trace_id
    reviewer = AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com")
    mlflow.log_feedback(trace_id=trace_id, name="quality", value=4, source=reviewer)

    page = f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/traces"
    listed = visible_text(dump_dom(page, budget_ms=15000))
    assert "Once upon a time" in listed and "The data flows" in listed
    trace_page = f"{page}?selectedEvaluationId={trace_id}"
    shown = visible_text(dump_dom(trace_page, budget_ms=15000))
    for text in ("distinct_1", "repeated_3gram_rate", "finish_reason", "quality"):
        assert text in shown, text

    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    screenshot(page, shots / "mlflow-traces.png", WIDE, budget_ms=15000)
    screenshot(trace_page, shots / "mlflow-trace-assessments.png", WIDE, budget_ms=15000)
    runs = f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs"
    screenshot(runs, shots / "mlflow-generation-runs.png", WIDE, budget_ms=15000)
    assert (shots / "mlflow-trace-assessments.png").stat().st_size > 10_000
