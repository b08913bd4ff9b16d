"""The Prefect UI page of a flow run the CLI starts, printed as the run begins: its logs,
artifacts and progress can be followed there while the terminal shows the progress bar.
It goes to stdout with the run's other results; stderr keeps progress and the one line an
expected failure prints."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect import Flow


def announced(flow: Flow) -> Flow:
    """`flow`, printing its run's page once the run is running (with no Prefect API URL,
    Prefect's temporary server, there is no page to print)."""
    return flow.with_options(on_running=[*flow.on_running_hooks, print_link])


def print_link(flow: Flow, flow_run: Any, state: Any) -> None:
    from prefect.utilities.urls import url_for
    from tqdm import tqdm

    if url := url_for("flow-run", obj_id=flow_run.id):
        tqdm.write(f"Prefect flow run: {url}", file=sys.stdout)  # a bar on stderr is redrawn
