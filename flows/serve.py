"""`gptforge serve`: the four flows as deployments (a form per flow in the Prefect UI),
with an optional cron schedule that re-runs `pipeline` to retrain on new documents."""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from gptforge.flows.full_pipeline import pipeline_flow
from gptforge.flows.generate import generate_flow
from gptforge.flows.ingest import ingest_flow
from gptforge.flows.train import train_flow
from gptforge.pipeline.config import ConfigError

DEPLOYMENT = "gptforge"


def deployments(
    retrain_cron: str | None = None,
    sources: list[str] | None = None,
    timezone: str = "UTC",
) -> list[RunnerDeployment]:
    """`ingest/gptforge`, `train/gptforge`, `generate/gptforge`, `pipeline/gptforge`."""
    schedule = None
    if retrain_cron:
        if not sources:
            raise ConfigError("sources", "a retraining schedule needs the folders to re-ingest")
        try:
            schedule = CronSchedule(cron=retrain_cron, timezone=timezone)
        except ValueError as exc:
            raise ConfigError("retrain_cron", f"{retrain_cron!r} is not a cron expression") from exc
    pipeline_defaults = {"sources": sources} if sources else {}
    # Module entrypoints: flow runs import `flows.train` like any package module, wherever
    # gptforge is installed, instead of loading a file path relative to the serving process.
    common = {
        "name": DEPLOYMENT,
        "tags": ["gptforge"],
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    return [
        ingest_flow.to_deployment(**common),
        train_flow.to_deployment(**common),
        generate_flow.to_deployment(**common),
        pipeline_flow.to_deployment(
            **common,
            parameters=pipeline_defaults,
            schedules=[schedule] if schedule else None,
            description="Re-ingest, retrain when the data changed, evaluate, promote.",
        ),
    ]


def serve_all(retrain_cron: str | None, sources: list[str] | None, limit: int = 1) -> None:
    """Blocks, running triggered flow runs in this process, until interrupted."""
    serve(*deployments(retrain_cron, sources), limit=limit, print_starting_message=True)
