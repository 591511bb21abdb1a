"""Issue 4, kind 5: the run lifecycle, checked against real MLflow stores."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_agent_core.errors import AgentError, InvalidInputError
from tests.inputs_support import (
    run_ids,
    stored_run,
)
from tests.servers import MlflowServer, quiet_mlflow_env

ROOT = Path(__file__).resolve().parents[1]


def test_leaving_the_block_normally_ends_finished(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run(run_name="ok") as run:
        agent.log_metric("loss", 0.1)

    stored = stored_run(agent, run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "ok"
    assert agent.active_run is None


def test_exception_in_the_block_ends_failed(agent_factory: Any) -> None:
    agent = agent_factory()

    with pytest.raises(ZeroDivisionError), agent.start_run() as run:
        agent.log_metric("loss", 0.1, step=1)
        _ = 1 / 0

    stored = stored_run(agent, run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.metrics == {"loss": 0.1}
    assert agent.active_run is None


def test_keyboard_interrupt_ends_killed(agent_factory: Any) -> None:
    agent = agent_factory()

    with pytest.raises(KeyboardInterrupt), agent.start_run() as run:
        raise KeyboardInterrupt

    assert stored_run(agent, run.run_id).info.status == "KILLED"
    assert agent.active_run is None


def test_start_run_twice_names_the_active_run(agent_factory: Any) -> None:
    agent = agent_factory()
    first = agent.start_run(run_name="cell-1")

    with pytest.raises(AgentError) as caught:
        agent.start_run(run_name="cell-1-again")

    assert first.run_id in str(caught.value)
    assert "nested=True" in str(caught.value)
    assert agent.active_run is not None
    assert agent.active_run.run_id == first.run_id
    agent.end_run()
    assert run_ids(agent) == [first.run_id]


def test_nested_run_is_a_child_in_the_parents_experiment(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run(run_name="parent") as parent:
        with agent.start_run(run_name="child", nested=True) as child:
            assert agent.active_run is not None
            assert agent.active_run.run_id == child.run_id
        assert agent.active_run is not None
        assert agent.active_run.run_id == parent.run_id

    stored_child = stored_run(agent, child.run_id)
    stored_parent = stored_run(agent, parent.run_id)
    assert stored_child.data.tags["mlflow.parentRunId"] == parent.run_id
    assert stored_child.info.experiment_id == stored_parent.info.experiment_id
    assert stored_child.info.status == stored_parent.info.status == "FINISHED"


def test_end_run_with_status(agent_factory: Any) -> None:
    agent = agent_factory()
    run = agent.start_run()

    agent.end_run(status="KILLED")

    assert stored_run(agent, run.run_id).info.status == "KILLED"
    agent.end_run()
    assert agent.active_run is None


def test_bad_run_name_or_params_create_no_run(agent_factory: Any) -> None:
    agent = agent_factory()

    for kwargs in (
        {"run_name": ""},
        {"run_name": 42},
        {"params": {"bad:key": 1}},
        {"params": {"fn": lambda: 0}},
        {"tags": {"t": ["a", "b"]}},
    ):
        with pytest.raises(InvalidInputError):
            agent.start_run(**kwargs)
        assert agent.active_run is None

    assert run_ids(agent) == []


def test_end_run_clears_local_state_when_the_server_is_down(
    agent_factory: Any, tracking_uri: str, tmp_path: Path  # noqa: F811 - fixture
) -> None:
    server = MlflowServer(tmp_path / "own-server").start()
    try:
        agent = agent_factory(
            configuration={"tracking_uri": server.uri},
            tracking={"probe_timeout": 30.0},
        )
        run = agent.start_run(run_name="outage")
        server.stop()

        # Reporting the outage is allowed; keeping the run open is not.
        with contextlib.suppress(AgentError):
            agent.end_run()
        assert agent.active_run is None

        # The end never reached the server: its own store still has the run open.
        on_server = MlflowClient(server.store_uri).get_run(run.run_id)
        assert on_server.info.status == "RUNNING"

        # Nothing local is left to block a new run (here on another store).
        agent.configuration.set_tracking_uri(tracking_uri)
        with agent.start_run(run_name="after") as after:
            pass
        stored = MlflowClient(tracking_uri).get_run(after.run_id)
        assert stored.info.status == "FINISHED"
    finally:
        server.stop()


def test_run_left_open_is_finished_and_flushed_at_exit(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'exit.db'}"
    spool = str(tmp_path / "spool")
    script = textwrap.dedent(
        f"""
        from mlflow_agent_core import MLFlowAgent

        agent = MLFlowAgent(config={{
            "configuration": {{"tracking_uri": {uri!r}, "experiment": "exit"}},
            "tracking": {{"backend": "mlflow", "spool_dir": {spool!r}}},
        }})
        run = agent.start_run(run_name="left-open")
        agent.log_params({{"depth": 3}})
        for step in range(50):
            agent.log_metric("loss", 1.0 / (step + 1), step=step)
        print(run.run_id)
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=quiet_mlflow_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    client = MlflowClient(uri)
    stored = client.get_run(run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"depth": "3"}
    assert len(client.get_metric_history(run_id, "loss")) == 50
