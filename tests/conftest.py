"""Shared fixtures: real MLflow stores in temporary directories, a loopback server.

They build on the fixtures the package ships for plugin authors
(``mlflow_agent_core.pytest_plugin``), so the suite exercises those too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core.pytest_plugin import merge_config
from tests.servers import MlflowServer

AgentFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (``sqlite:///mlflow.db``, ``./agent.yaml``) land in tmp."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tracking_uri(mlflow_agent_store: str) -> str:
    """A fresh sqlite tracking store for one test."""
    return mlflow_agent_store


@pytest.fixture
def agent_config(mlflow_agent_config: dict[str, Any]) -> dict[str, Any]:
    """The config dict ``agent_factory`` starts from: this test's store and spool."""
    return mlflow_agent_config


def _factory(base: dict[str, Any]) -> Iterator[AgentFactory]:
    from mlflow_agent_core import MLFlowAgent

    def build(config: dict[str, Any] | None = None, **sections: Any) -> Any:
        merged = merge_config(merge_config(base, config or {}), sections)
        return MLFlowAgent(config=merged)

    MLFlowAgent.reset()
    yield build
    MLFlowAgent.reset()


@pytest.fixture
def agent_factory(agent_config: dict[str, Any]) -> Iterator[AgentFactory]:
    """Build an agent on this test's store; extra sections are merged in.

    ``agent_factory(tracking={"flush_interval": 0.1})`` or
    ``agent_factory({"registry": {"backend": "sklearn"}})``.
    """
    yield from _factory(agent_config)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_agent_server: MlflowServer) -> MlflowServer:
    """The session's loopback ``mlflow server``. Never stop it."""
    return mlflow_agent_server


@pytest.fixture
def server_agent_factory(
    agent_config: dict[str, Any], mlflow_server: MlflowServer
) -> Iterator[AgentFactory]:
    """Like ``agent_factory``, but against the shared loopback server."""
    # A server's first answers are slow while its workers open the store; on a busy
    # machine that exceeds the default 3-second probe.
    yield from _factory(
        merge_config(
            agent_config,
            {
                "configuration": {"tracking_uri": mlflow_server.uri},
                "tracking": {"probe_timeout": 30.0},
            },
        )
    )
