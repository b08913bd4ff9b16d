"""`gptforge serve`: the four flows as deployments (a form per flow in the Prefect UI), their
runs executed in this process. `--retrain-on-change` chains them with event triggers
(flows/triggers.py); `--retrain-cron` re-ingests on a schedule and lets the triggers retrain.
Schedules set on the deployments elsewhere (the UI, `prefect deployment schedule`) are kept."""

from __future__ import annotations

import signal
import warnings

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from gptforge.flows.full_pipeline import pipeline_flow
from gptforge.flows.generate import generate_flow
from gptforge.flows.home import gptforge_home
from gptforge.flows.ingest import ingest_flow
from gptforge.flows.progress import notice
from gptforge.flows.serve_process import ServerWatchdog, recorded
from gptforge.flows.train import train_flow
from gptforge.flows.triggers import retrain_triggers
from gptforge.pipeline.config import ConfigError

DEPLOYMENT = "gptforge-{flow}"  # distinct names: ingest/gptforge-ingest, ...


def deployments(
    retrain_cron: str | None = None,
    sources: list[str] | None = None,
    data: str | None = None,
    retrain_on_change: bool = False,
    timezone: str = "UTC",
) -> list[RunnerDeployment]:
    """`ingest/gptforge-ingest`, `train/gptforge-train`, `generate/gptforge-generate`,
    `pipeline/gptforge-pipeline`; with `retrain_cron`, ingest runs on that schedule and the
    retraining triggers are on."""
    schedule = None
    if retrain_cron:
        if not sources:
            raise ConfigError("sources", "a retraining schedule needs the folders to re-ingest")
        try:
            schedule = CronSchedule(cron=retrain_cron, timezone=timezone)
        except ValueError as exc:
            raise ConfigError("retrain_cron", f"{retrain_cron!r} is not a cron expression") from exc
    triggers = (
        retrain_triggers(DEPLOYMENT.format(flow="train")) if retrain_on_change or schedule else {}
    )
    ingest_defaults = {"sources": sources, "out": data or default_data()} if sources else {}
    pipeline_defaults = {"sources": sources} if sources else {}
    pipeline_defaults |= {"data": data} if data else {}
    # Module entrypoints: flow runs import `flows.train` like any package module, wherever
    # gptforge is installed, instead of loading a file path relative to the serving process.
    common = {"tags": ["gptforge"], "entrypoint_type": EntrypointType.MODULE_PATH}
    flows = {"ingest": ingest_flow, "train": train_flow, "generate": generate_flow}
    found = [
        flow.to_deployment(
            DEPLOYMENT.format(flow=name),
            **common,
            triggers=triggers.get(name),
            parameters=ingest_defaults if name == "ingest" else None,
            schedules=[schedule] if schedule and name == "ingest" else None,
        )
        for name, flow in flows.items()
    ]
    pipeline = pipeline_flow.to_deployment(
        DEPLOYMENT.format(flow="pipeline"),
        **common,
        parameters=pipeline_defaults,
        description="Re-ingest, retrain when the data changed, evaluate, promote.",
    )
    return [*found, pipeline]


def default_data() -> str:
    """Where the scheduled ingest writes: the `pipeline` flow's default dataset directory."""
    return str(gptforge_home() / "datasets" / "gptforge")


def checked_deployments(
    retrain_cron: str | None,
    sources: list[str] | None,
    limit: int,
    data: str | None = None,
    retrain_on_change: bool = False,
) -> list[RunnerDeployment]:
    """The deployments, every serve setting checked (the CLI calls this before Prefect
    starts, so a bad value is refused at once)."""
    if limit < 1:
        raise ConfigError("limit", f"must be >= 1, got {limit}")
    return deployments(retrain_cron, sources, data, retrain_on_change)


def keep_schedules(found: list[RunnerDeployment]) -> list[str]:
    """Give each deployment that serve does not schedule the schedules it already has on the
    server (registering it again would replace them with none); returns what serve did."""
    said = []
    with get_client(sync_client=True) as client:
        for deployment in found:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(name).schedules
            except ObjectNotFound:
                continue
            described = ", ".join(_describe(s) for s in existing)
            if not deployment.schedules and existing:
                deployment.schedules = [_recreate(s) for s in existing]
                said.append(f"keeping the schedule set on {name}: {described}")
            elif existing and described != ", ".join(map(_describe, deployment.schedules)):
                said.append(f"--retrain-cron replaces the schedule of {name}: {described}")
    return said


def _recreate(schedule: DeploymentSchedule) -> DeploymentScheduleCreate:
    return DeploymentScheduleCreate(
        schedule=schedule.schedule,
        active=schedule.active,
        max_scheduled_runs=schedule.max_scheduled_runs,
        parameters=schedule.parameters,
        slug=schedule.slug,
    )


def _describe(schedule: DeploymentSchedule | DeploymentScheduleCreate) -> str:
    spec = schedule.schedule
    what = getattr(spec, "cron", None) or getattr(spec, "rrule", None)
    what = what or f"every {getattr(spec, 'interval', '?')}"
    return f"{what!r}" + ("" if schedule.active else " (inactive)")


def serve_all(
    retrain_cron: str | None,
    sources: list[str] | None,
    limit: int = 1,
    data: str | None = None,
    retrain_on_change: bool = False,
) -> None:
    """Blocks, running triggered flow runs in this process, until interrupted."""
    found = checked_deployments(retrain_cron, sources, limit, data, retrain_on_change)
    home, api_url = gptforge_home(), PREFECT_API_URL.value()
    with recorded(home, api_url):
        for done in keep_schedules(found):
            notice(f"gptforge serve: {done}")
        if retrain_cron:
            notice(
                f"gptforge serve: ingest/gptforge-ingest re-ingests {sources} at {retrain_cron!r}"
            )
        if retrain_on_change or retrain_cron:
            notice(
                "gptforge serve: retraining on change: gptforge.dataset.changed -> train, "
                "gptforge.model.registered (by train/gptforge-train) -> generate"
            )
        # `gptforge down` stops serve with SIGINT, as Ctrl-C does, even when it was started
        # in the background by a shell that ignores SIGINT there.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Prefect's SIGTERM handler calls an async stop without awaiting it; the stop happens
        # (deployments paused) but Python warns about the coroutine.
        warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited")
        watchdog = ServerWatchdog(home, api_url)
        watchdog.start()
        try:
            serve(*found, limit=limit, print_starting_message=True)
        finally:
            watchdog.stop()
