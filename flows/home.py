"""Where gptforge keeps things, and the quiet, offline defaults for Prefect and MLflow.

Standard variables win (`MLFLOW_TRACKING_URI`, `PREFECT_API_URL`); without them everything
lives under one directory, `GPTFORGE_HOME` (default `~/.gptforge`), never the current one.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def gptforge_home() -> Path:
    home = Path(os.environ.get("GPTFORGE_HOME", "~/.gptforge")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def use_home() -> Path:
    """Keep Prefect's own files (profiles, local storage) under the home too, unless the user
    chose a `PREFECT_HOME`: nothing is written to `~/.prefect` behind their back."""
    home = gptforge_home()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    return home


def apply_quiet_env() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def local_mlflow_uri() -> str:
    return f"sqlite:///{gptforge_home() / 'mlflow.db'}"


def mlflow_uri() -> str:
    """The tracking store: `MLFLOW_TRACKING_URI`, else SQLite under the home directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_mlflow_uri()


def mlflow_artifact_root(experiment: str) -> str | None:
    """Local artifacts live next to the local store; a team server decides its own."""
    if mlflow_uri() != local_mlflow_uri():
        return None
    return (gptforge_home() / "mlartifacts" / experiment).as_uri()
