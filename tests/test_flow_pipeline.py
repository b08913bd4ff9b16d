"""The `pipeline` flow end to end, as a schedule would run it: the first run trains, a rerun
on the same documents skips training, a new document retrains; every stage's MLflow run
links to the one before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from prefect.artifacts import Artifact

from gptforge.flows.full_pipeline import pipeline_flow
from gptforge.flows.generate import TRAIN_RUN_TAG
from gptforge.flows.home import mlflow_uri
from gptforge.flows.tracking import DIGEST_TAG, STAGE_TAG
from gptforge.flows.train import INGEST_RUN_TAG, MODEL_VERSION_TAG

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
MICRO = {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32}


def run(sources: Path, data: Path, **overrides) -> dict:
    settings = dict(
        sources=[str(sources)],
        data=str(data),
        model_overrides=MICRO,
        max_steps=4,
        batch_size=2,
        precision="fp32",
        model_name="pipeline-test",
        eval_prompts=["The"],
        eval_temperatures=[0.8],
        max_new_tokens=4,
    )
    return pipeline_flow(**(settings | overrides))


def test_schedule_day_trains_skips_then_retrains(prefect, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (REPO / "docs").glob("*.md"):  # text: the screenshots would only add OCR time
        shutil.copy(page, docs)
    data = tmp_path / "data"

    first = run(docs, data)
    assert first["trained"] and first["model_version"] == "1" and first["promoted"]
    mlflow.set_tracking_uri(mlflow_uri())
    ingest = mlflow.get_run(first["ingest_run_id"])
    train = mlflow.get_run(first["train_run_id"])
    generate = mlflow.get_run(first["generate_run_id"])
    assert [r.data.tags[STAGE_TAG] for r in (ingest, train, generate)] == [
        "ingest",
        "train",
        "generate",
    ]
    assert train.data.tags[INGEST_RUN_TAG] == ingest.info.run_id
    assert train.data.tags[DIGEST_TAG] == ingest.data.tags[DIGEST_TAG] == first["dataset_digest"]
    assert generate.data.tags[TRAIN_RUN_TAG] == train.info.run_id
    assert generate.data.tags[MODEL_VERSION_TAG] == "pipeline-test/1"
    for stage in (ingest, train, generate):  # nested under the pipeline's run
        assert stage.data.tags["mlflow.parentRunId"] == first["pipeline_run_id"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("pipeline-test", "champion").version) == "1"
    assert (
        client.get_model_version("pipeline-test", "1").tags[DIGEST_TAG] == first["dataset_digest"]
    )

    again = run(docs, data)
    assert not again["trained"] and "training skipped" in again["reason"]
    assert again["model_version"] == "1" and again["dataset_digest"] == first["dataset_digest"]
    artifact = Artifact.get("pipeline-summary")
    assert artifact is not None and "training skipped" in artifact.data

    (docs / "new-notes.md").write_text("A new document arrived with fresh words. " * 40)
    third = run(docs, data, continue_training=True)
    assert third["trained"] and third["model_version"] == "2"
    assert third["dataset_digest"] != first["dataset_digest"]
    holder = str(client.get_model_version_by_alias("pipeline-test", "champion").version)
    assert holder == ("2" if third["promoted"] else "1")
    assert len(client.search_model_versions("name='pipeline-test'")) == 2
