"""Pytest fixtures for projects and plugins built on the agent.

Installing mlflow-agent-core registers this module through the ``pytest11`` entry
point, so it loads in every pytest session on that machine: importing it must stay
cheap, which is why MLflow and the agent are imported inside the fixtures.

Fixtures (all prefixed ``mlflow_agent_``):

``mlflow_agent_store``
    A fresh ``sqlite:///<tmp>/mlflow.db`` URI for one test.
``mlflow_agent_config``
    The config dict the agent fixtures build from; override it in a
    ``conftest.py`` to select other backends.
``mlflow_agent``
    An :class:`~mlflow_agent_core.MLFlowAgent` on that store, reset after the test.
``mlflow_agent_plugin``
    ``mlflow_agent_plugin(plugin, ..., config=None)`` builds an agent with inline
    plugin objects registered for this test only.
``mlflow_agent_server``
    A real ``mlflow server`` on a free loopback port, shared by the session.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .agent import MLFlowAgent
    from .testing import MlflowServer

__all__ = [
    "merge_config",
    "mlflow_agent",
    "mlflow_agent_config",
    "mlflow_agent_plugin",
    "mlflow_agent_server",
    "mlflow_agent_store",
]

# Nothing leaves the machine, and a server that is down fails fast.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

PluginBuilder = Callable[..., "MLFlowAgent"]


def merge_config(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section.

    A section of ``extra`` naming another ``backend`` replaces the base section,
    since options belong to one backend.
    """
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            if "backend" in value and value["backend"] != current.get("backend"):
                merged[key] = dict(value)
            else:
                merged[key] = merge_config(current, value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def mlflow_agent_migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite store with MLflow's schema, made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-agent-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_agent_store(tmp_path: Path, mlflow_agent_migrated_store: Path) -> str:
    """A fresh sqlite tracking and registry store for one test.

    Copied from a migrated template: the same as a new store, without the seconds
    MLflow spends creating its schema every time.
    """
    target = tmp_path / "mlflow-agent-store" / "mlflow.db"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(mlflow_agent_migrated_store, target)
    return f"sqlite:///{target}"


@pytest.fixture
def mlflow_agent_config(mlflow_agent_store: str, tmp_path: Path) -> dict[str, Any]:
    """The configuration the agent fixtures use; override it to change backends."""
    return {
        "configuration": {
            "backend": "mlflow",
            "tracking_uri": mlflow_agent_store,
            "experiment": "tests",
        },
        "tracking": {
            "backend": "mlflow",
            "spool_dir": str(tmp_path / "mlflow-agent-spool"),
        },
    }


@pytest.fixture
def mlflow_agent(
    mlflow_agent_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MLFlowAgent]:
    """An agent of its own on a temporary sqlite store; reset after the test."""
    from .agent import MLFlowAgent

    with _isolated_agent_state(monkeypatch):
        yield MLFlowAgent(config=mlflow_agent_config)


@pytest.fixture
def mlflow_agent_plugin(
    mlflow_agent_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[PluginBuilder]:
    """Build an agent with inline plugins registered for this test only.

    ``agent = mlflow_agent_plugin(MyPlugin(), config={"registry": {...}})``; the
    config is merged into ``mlflow_agent_config``. Each call replaces the agent
    built before, so one test can compare several plugin setups.
    """
    from .agent import MLFlowAgent

    def build(*plugins: object, config: Mapping[str, Any] | None = None) -> MLFlowAgent:
        MLFlowAgent.reset()
        merged = merge_config(mlflow_agent_config, config or {})
        return MLFlowAgent(config=merged, plugins=plugins)

    with _isolated_agent_state(monkeypatch):
        yield build


@pytest.fixture(scope="session")
def mlflow_agent_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 for the session (``.uri``, ``.port``).

    Shared by every test of the session: do not stop it; start your own
    :class:`mlflow_agent_core.testing.MlflowServer` to test an outage.
    """
    from .testing import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-agent-server"))
    server.start()
    yield server
    server.stop()


@contextmanager
def _isolated_agent_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reset the process's agent around a test and undo its MLflow globals.

    The configuration backend points MLflow (and the ``MLFLOW_*`` environment) at
    the test's store; both are put back afterwards so that the next test does not
    write into a deleted temporary folder.
    """
    from .agent import MLFlowAgent

    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    MLFlowAgent.reset()
    try:
        yield
    finally:
        MLFlowAgent.reset()
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            if key not in saved:
                del os.environ[key]
        os.environ.update(saved)
        _restore_mlflow_uris(saved)


def _restore_mlflow_uris(saved: Mapping[str, str]) -> None:
    # Only when the test imported MLflow; importing it here would slow every session.
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    mlflow.set_tracking_uri(saved.get("MLFLOW_TRACKING_URI"))
    mlflow.set_registry_uri(saved.get("MLFLOW_REGISTRY_URI"))
