"""Issue 4, kind 7: tracking URIs as users write them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_agent_core.errors import ConfigError


def test_whitespace_stripped_and_relative_sqlite_made_absolute(
    agent_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = agent_factory(configuration={"tracking_uri": "  sqlite:///rel/mlflow.db\n"})
    expected = f"sqlite:///{os.path.abspath(tmp_path / 'rel' / 'mlflow.db')}"

    assert agent.configuration.tracking_uri == expected
    assert agent.configuration.registry_uri == expected

    # Moving elsewhere must not send the run to another database.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with agent.start_run() as run:
        agent.log_param("where", "rel")
    assert agent.flush(60)

    stored = MlflowClient(expected).get_run(run.run_id)
    assert stored.data.params == {"where": "rel"}
    assert not (elsewhere / "rel").exists()


@pytest.mark.parametrize(
    "uri", ["file:///tmp/mlruns", "./mlruns", "mlruns", "/srv/mlruns", " file:./x "]
)
def test_file_stores_rejected_with_the_migration_hint(
    agent_factory: Any, uri: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_factory(configuration={"tracking_uri": uri})

    assert "migrate-filestore" in str(caught.value)


def test_set_tracking_uri_applies_the_same_rules(
    agent_factory: Any, tmp_path: Path
) -> None:
    agent = agent_factory()

    agent.configuration.set_tracking_uri("\tsqlite:///second.db  ")
    assert agent.configuration.tracking_uri == (
        f"sqlite:///{os.path.abspath(tmp_path / 'second.db')}"
    )

    with pytest.raises(ConfigError, match="migrate-filestore"):
        agent.configuration.set_tracking_uri("file:///tmp/mlruns")
    assert agent.configuration.tracking_uri.endswith("second.db")

    with agent.start_run() as run:
        agent.log_metric("m", 1.0)
    assert agent.flush(60)
    stored = MlflowClient(agent.configuration.tracking_uri).get_run(run.run_id)
    assert stored.data.metrics == {"m": 1.0}


def test_server_uri_with_whitespace(agent_factory: Any, mlflow_server: Any) -> None:
    agent = agent_factory(
        configuration={"tracking_uri": f"  {mlflow_server.uri}/ \n"},
        tracking={"probe_timeout": 30.0},
    )

    assert agent.configuration.tracking_uri.rstrip("/") == mlflow_server.uri

    with agent.start_run() as run:
        agent.set_tag("via", "server")
    assert agent.flush(60)
    stored = MlflowClient(mlflow_server.uri).get_run(run.run_id)
    assert stored.data.tags["via"] == "server"


@pytest.mark.parametrize("uri", ["", "   "])
def test_empty_uri_rejected(agent_factory: Any, uri: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        agent_factory(configuration={"tracking_uri": uri})
