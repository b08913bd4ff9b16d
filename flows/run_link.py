"""The Prefect UI page of a flow run the CLI starts, printed as the run begins: its logs,
artifacts and progress can be followed there while the terminal shows the progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptforge.flows.progress import notice

if TYPE_CHECKING:
    from prefect import Flow


def announced(flow: Flow) -> Flow:
    """`flow`, printing its run's page once the run is running (with no Prefect API URL,
    Prefect's temporary server, there is no page to print)."""
    return flow.with_options(on_running=[*flow.on_running_hooks, print_link])


def print_link(flow: Flow, flow_run: Any, state: Any) -> None:
    from prefect.utilities.urls import url_for

    if url := url_for("flow-run", obj_id=flow_run.id):
        notice(f"Prefect flow run: {url}")
