"""The summary tag reaches MLflow itself: a sqlite store and a loopback server."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow_agent_core import MLFlowAgent

from mlflow_agent_example.plugin import SUMMARY_TAG


def test_the_summary_tag_is_stored_with_the_run(
    mlflow_agent: MLFlowAgent, mlflow_agent_store: str
) -> None:
    with mlflow_agent.start_run(run_name="sqlite") as run:
        mlflow_agent.log_metric("accuracy", 0.9)
    mlflow_agent.flush()

    stored = MlflowClient(tracking_uri=mlflow_agent_store).get_run(run.run_id)
    assert stored.data.tags[SUMMARY_TAG].startswith("FINISHED after ")
    assert stored.data.metrics["accuracy"] == 0.9


def test_the_summary_tag_reaches_a_server(
    mlflow_agent_plugin: Any, mlflow_agent_server: Any
) -> None:
    agent = mlflow_agent_plugin(
        config={"configuration": {"tracking_uri": mlflow_agent_server.uri}}
    )
    with agent.start_run(run_name="server") as run:
        pass
    agent.flush()

    stored = MlflowClient(tracking_uri=mlflow_agent_server.uri).get_run(run.run_id)
    assert stored.data.tags[SUMMARY_TAG].startswith("FINISHED")
