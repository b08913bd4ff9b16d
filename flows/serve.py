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

DEPLOYMENT = "gptforge-{flow}"  # distinct names: ingest/gptforge-ingest, ...


def deployments(
    retrain_cron: str | None = None,
    sources: list[str] | None = None,
    timezone: str = "UTC",
) -> list[RunnerDeployment]:
    """`ingest/gptforge-ingest`, `train/gptforge-train`, `generate/gptforge-generate`,
    `pipeline/gptforge-pipeline`."""
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
    common = {"tags": ["gptforge"], "entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        ingest_flow.to_deployment(DEPLOYMENT.format(flow="ingest"), **common),
        train_flow.to_deployment(DEPLOYMENT.format(flow="train"), **common),
        generate_flow.to_deployment(DEPLOYMENT.format(flow="generate"), **common),
        pipeline_flow.to_deployment(
            DEPLOYMENT.format(flow="pipeline"),
            **common,
            parameters=pipeline_defaults,
            schedules=[schedule] if schedule else None,
            description="Re-ingest, retrain when the data changed, evaluate, promote.",
        ),
    ]


def checked_deployments(
    retrain_cron: str | None, sources: list[str] | None, limit: int
) -> list[RunnerDeployment]:
    """The deployments, every serve setting checked (the CLI calls this before Prefect
    starts, so a bad value is refused at once)."""
    if limit < 1:
        raise ConfigError("limit", f"must be >= 1, got {limit}")
    return deployments(retrain_cron, sources)


def serve_all(retrain_cron: str | None, sources: list[str] | None, limit: int = 1) -> None:
    """Blocks, running triggered flow runs in this process, until interrupted."""
    found = checked_deployments(retrain_cron, sources, limit)
    serve(*found, limit=limit, print_starting_message=True)
