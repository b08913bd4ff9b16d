"""The retraining chain, as Prefect deployment triggers (`gptforge serve --retrain-on-change`):

    ingest --gptforge.dataset.changed--> train --gptforge.model.registered--> generate

`ingest` emits `gptforge.dataset.changed` when a dataset's digest moved (flows/ingest.py);
`train` emits `gptforge.model.registered` with the new version's URI once it is registered
(a flow-run Completed event carries no result, so the version would have to be guessed).
Each trigger is an automation owned by its deployment; its parameters are Jinja templates
the server fills from the event, the rest are the deployment's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.events import DeploymentEventTrigger, emit_event

from gptforge.flows.tracking import DEFAULT_EXPERIMENT

DATASET_CHANGED = "gptforge.dataset.changed"
MODEL_REGISTERED = "gptforge.model.registered"
# The event's experiment; events emitted by hand (`prefect event emit`) may not say one.
EXPERIMENT = f"{{{{ (event.payload.experiment or {DEFAULT_EXPERIMENT!r}) }}}}"
# The evaluation job, as the `pipeline` flow runs it after training.
EVALUATION = {
    "prompts": ["The", "def ", "In this document"],
    "temperature": [0.7, 1.0],
    "max_new_tokens": 48,
}


def retrain_triggers(train_deployment: str) -> dict[str, list[DeploymentEventTrigger]]:
    """Triggers by flow name: a changed dataset trains on that directory; a model version
    registered by a run of `train_deployment` (not a CLI or pipeline training) is evaluated."""
    retrain = DeploymentEventTrigger(
        name="retrain when a dataset changes",
        description=f"{DATASET_CHANGED} -> train on the event's dataset directory",
        expect={DATASET_CHANGED},
        match={"prefect.resource.id": "gptforge.dataset.*"},
        parameters={"data": "{{ event.payload.directory }}", "experiment": EXPERIMENT},
    )
    evaluate = DeploymentEventTrigger(
        name="evaluate a retrained model",
        description=f"{MODEL_REGISTERED} by {train_deployment} -> generate with the new version",
        expect={MODEL_REGISTERED},
        match={"prefect.resource.id": "gptforge.model.*"},
        match_related={
            "prefect.resource.role": "deployment",
            "prefect.resource.name": train_deployment,
        },
        parameters={
            "model": "{{ event.payload.model_uri }}",
            "experiment": EXPERIMENT,
            **EVALUATION,
        },
    )
    return {"train": [retrain], "generate": [evaluate]}


def emit_model_registered(summary: dict[str, Any], data_dir: Path, experiment: str) -> None:
    """Announce a new registered version (from a training flow run's summary); inside a
    deployment's run, Prefect relates the event to that deployment, which the evaluation
    trigger matches on."""
    name, version = summary["model_name"], summary["model_version"]
    emit_event(
        event=MODEL_REGISTERED,
        resource={
            "prefect.resource.id": f"gptforge.model.{name}/{version}",
            "prefect.resource.name": f"{name}/{version}",
        },
        related=[
            {
                "prefect.resource.id": f"mlflow.run.{summary['mlflow_run_id']}",
                "prefect.resource.role": "mlflow-run",
            },
            {
                "prefect.resource.id": f"gptforge.dataset.{data_dir}",
                "prefect.resource.role": "dataset",
            },
        ],
        payload={
            "model_uri": summary["model_uri"],
            "model_name": name,
            "model_version": version,
            "mlflow_run_id": summary["mlflow_run_id"],
            "dataset_digest": summary["dataset_digest"],
            "data": str(data_dir),
            "experiment": experiment,
        },
    )
