"""The jsonl backend and the summary hook, through a real agent.

Written with the fixtures that mlflow-agent-core gives every pytest session:
overriding ``mlflow_agent_config`` selects this plugin's backend for the module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow_agent_core import ConfigError, MLFlowAgent, hookimpl
from mlflow_agent_core.pytest_plugin import merge_config

from mlflow_agent_example.jsonl import read_records
from mlflow_agent_example.plugin import SUMMARY_TAG


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    return tmp_path / "runs.jsonl"


@pytest.fixture
def mlflow_agent_config(
    mlflow_agent_config: dict[str, Any], records_file: Path
) -> dict[str, Any]:
    return merge_config(
        mlflow_agent_config,
        {"tracking": {"backend": "jsonl", "path": str(records_file)}},
    )


def events(path: Path, kind: str) -> list[dict[str, Any]]:
    return [record for record in read_records(path) if record["event"] == kind]


def test_a_finished_run_is_written_and_summarised(
    mlflow_agent: MLFlowAgent, records_file: Path
) -> None:
    with mlflow_agent.start_run(run_name="train", params={"lr": 0.1}) as run:
        mlflow_agent.log_metric("loss", 0.5, step=1)

    (start,) = events(records_file, "start")
    assert start["run_id"] == run.run_id and start["name"] == "train"
    assert events(records_file, "params")[0]["params"] == {"lr": "0.1"}
    assert events(records_file, "metrics")[0]["points"][0][:2] == ["loss", 0.5]
    assert events(records_file, "end")[0]["status"] == "FINISHED"
    (summary,) = events(records_file, "tags")
    assert summary["tags"][SUMMARY_TAG].startswith("FINISHED after ")


def test_a_failing_run_is_summarised_as_failed(
    mlflow_agent: MLFlowAgent, records_file: Path
) -> None:
    with pytest.raises(ValueError), mlflow_agent.start_run():
        raise ValueError("diverged")

    (summary,) = events(records_file, "tags")
    assert summary["tags"][SUMMARY_TAG].startswith("FAILED after ")


def test_an_inline_plugin_sees_the_same_runs(
    mlflow_agent_plugin: Any, records_file: Path
) -> None:
    finished: list[str] = []

    class Recorder:
        @hookimpl
        def mlflow_agent_run_finished(self, run: Any, status: str) -> None:
            finished.append(status)

    agent = mlflow_agent_plugin(Recorder())
    with agent.start_run():
        pass

    assert finished == ["FINISHED"]
    assert events(records_file, "tags")


def test_a_wrong_option_type_points_at_its_line(
    tmp_path: Path, mlflow_agent_store: str
) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(
        "configuration:\n"
        f"  tracking_uri: {mlflow_agent_store}\n"
        "tracking:\n"
        "  backend: jsonl\n"
        "  fsync: sometimes\n"
    )

    MLFlowAgent.reset()
    try:
        with pytest.raises(ConfigError) as caught:
            MLFlowAgent.from_yaml(config_file)
    finally:
        MLFlowAgent.reset()

    assert str(caught.value).startswith(f"{config_file}:5:")
    assert "fsync" in str(caught.value)
