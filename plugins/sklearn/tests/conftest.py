"""Fixtures for the sklearn backend's tests: a real sqlite store per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import pytest

from mlflow_agent_core.config import Options
from mlflow_agent_core.default_plugins.configuration import MlflowConfiguration

QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@pytest.fixture
def registry_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """What a registry backend reads from its agent, on a fresh sqlite store.

    The real ``mlflow`` configuration backend resolves the URIs and points MLflow's
    globals at the store, as it does inside an agent; they are put back afterwards.
    """
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    agent = SimpleNamespace()
    agent.configuration = MlflowConfiguration(
        agent=agent,
        options=Options(
            {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
            section="configuration",
        ),
    )
    yield agent
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def agent_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captured log records of the agent's and plugins' loggers, INFO and up."""
    caplog.set_level(logging.INFO)
    return caplog
