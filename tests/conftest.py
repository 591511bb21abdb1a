"""Shared fixtures: real MLflow stores in temporary directories, a loopback server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import MlflowServer, quiet_mlflow_env

# Nothing leaves the machine, and a dead server fails fast instead of retrying.
os.environ.update(
    {
        key: value
        for key, value in quiet_mlflow_env().items()
        if key.startswith("MLFLOW_")
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_AGENT_CONFIG", None)

AgentFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (``sqlite:///mlflow.db``, ``./agent.yaml``) land in tmp."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite store with MLflow's schema, created once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, migrated_store: Path) -> str:
    """A fresh sqlite tracking store for one test.

    Copied from a template: the same contents as a new store, without the seconds
    MLflow spends creating its schema each time.
    """
    target = tmp_path / "store" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_store, target)
    return f"sqlite:///{target}"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def agent_config(tracking_uri: str, tmp_path: Path) -> dict[str, Any]:
    """The config dict ``agent_factory`` starts from."""
    (tmp_path / "store").mkdir(exist_ok=True)
    return {
        "configuration": {
            "backend": "mlflow",
            "tracking_uri": tracking_uri,
            "experiment": "tests",
        },
        "tracking": {"backend": "mlflow", "spool_dir": str(tmp_path / "spool")},
    }


@pytest.fixture
def agent_factory(agent_config: dict[str, Any]) -> Iterator[AgentFactory]:
    """Build an agent on this test's store; extra sections are merged in.

    ``agent_factory(tracking={"flush_interval": 0.1})`` or
    ``agent_factory({"registry": {"backend": "sklearn"}})``.
    """
    from mlflow_agent_core import MLFlowAgent

    def build(config: dict[str, Any] | None = None, **sections: Any) -> Any:
        merged = deep_merge(agent_config, config or {})
        merged = deep_merge(merged, sections)
        return MLFlowAgent(config=merged)

    MLFlowAgent.reset()
    yield build
    MLFlowAgent.reset()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real ``mlflow server`` on loopback for the whole session. Never stop it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture
def server_agent_factory(
    agent_config: dict[str, Any], mlflow_server: MlflowServer
) -> Iterator[AgentFactory]:
    """Like ``agent_factory``, but against the shared loopback server."""
    from mlflow_agent_core import MLFlowAgent

    # A server's first answers are slow while its workers open the store; on a busy
    # machine that exceeds the default 3-second probe.
    base = deep_merge(
        agent_config,
        {
            "configuration": {"tracking_uri": mlflow_server.uri},
            "tracking": {"probe_timeout": 30.0},
        },
    )

    def build(config: dict[str, Any] | None = None, **sections: Any) -> Any:
        merged = deep_merge(base, config or {})
        return MLFlowAgent(config=deep_merge(merged, sections))

    MLFlowAgent.reset()
    yield build
    MLFlowAgent.reset()
