"""What the CLI changes in Prefect's settings around a flow run, and only when it should."""

from __future__ import annotations

import pytest
from prefect.settings import get_current_settings

from flows.home import ephemeral_run_settings


def test_the_heartbeat_is_off_only_on_prefects_temporary_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    with ephemeral_run_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with ephemeral_run_settings():
        assert get_current_settings().flows.heartbeat_frequency == default
