"""Fixtures for the sklearn backend's tests, built on the core's pytest plugin."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlflow_agent_core import MLFlowAgent


@pytest.fixture
def registry_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_agent: MLFlowAgent
) -> MLFlowAgent:
    """A real agent on a fresh sqlite store, for building the backend under test."""
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    return mlflow_agent


@pytest.fixture
def agent_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captured log records of the agent's and plugins' loggers, INFO and up."""
    caplog.set_level(logging.INFO)
    return caplog
