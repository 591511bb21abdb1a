"""Tracking against a real ``mlflow server`` that goes away and comes back.

The module owns one server (never the shared session one), which its tests stop
and restart on the same port and store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_agent_core.default_plugins.spool import METRICS, families, target_dir
from mlflow_agent_core.errors import ServerUnavailableError
from mlflow_agent_core.sync import sync_spool
from tests.servers import STARTUP_TIMEOUT, MlflowServer, free_port, quiet_mlflow_env

# A sanity bound for "fails fast"; the probe itself waits at most probe_timeout.
FAIL_FAST_SECONDS = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    own = MlflowServer(tmp_path_factory.mktemp("outage-server"))
    yield own
    own.stop()


@pytest.fixture
def spool_root(agent_config: dict[str, Any]) -> Path:
    """The spool root that the agent fixtures configure."""
    return Path(agent_config["tracking"]["spool_dir"])


def running(server: MlflowServer) -> MlflowServer:
    if server.process is None:
        server.start()
    return server


def steps_of(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def spooled_points(spool_root: Path, uri: str) -> int:
    total = 0
    for family in families(target_dir(spool_root, uri)):
        records, _, _ = family.read(family.acked(), None, 1_000_000)
        total += sum(len(r[4]) for r in records if r[2] == METRICS)
    return total


def test_an_unreachable_server_fails_fast_with_server_unavailable(
    agent_factory: Any,
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=uri):
        agent_factory(configuration={"tracking_uri": uri})
    assert time.monotonic() - started < FAIL_FAST_SECONDS


def test_a_server_that_never_answers_fails_within_the_probe_timeout(
    agent_factory: Any,
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers a request
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="unreachable"):
            agent_factory(
                configuration={"tracking_uri": uri}, tracking={"probe_timeout": 1.0}
            )
        assert time.monotonic() - started < FAIL_FAST_SECONDS


def test_sync_to_a_server_still_down_reports_it_and_keeps_the_records(
    agent_factory: Any, spool_root: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    agent = agent_factory(
        configuration={"tracking_uri": uri},
        tracking={"offline_ok": True, "exit_timeout": 0.5},
    )
    with agent.start_run("offline"):
        for step in range(100):
            agent.log_metric("x", float(step), step=step)
    agent.reset()

    report = sync_spool(spool_root, uri, give_up_after=1.0)

    assert not report.ok
    assert uri in report.errors[0] and "unreachable" in report.errors[0]
    assert spooled_points(spool_root, uri) == 100


def test_a_server_killed_mid_run_gets_every_point_exactly_once(
    server: MlflowServer, agent_factory: Any
) -> None:
    running(server)
    agent = agent_factory(
        configuration={"tracking_uri": server.uri},
        tracking={"retry_backoff_max": 1.0, "flush_interval": 0.2},
    )
    with agent.start_run("outage", params={"lr": 0.1}) as run:
        for step in range(9000):
            agent.log_metric("loss", 1.0 / (step + 1), step=step)
            if step == 3000:
                server.stop()
                agent.set_tag("phase", "down")
            if step == 6000:
                agent.set_tag("phase", "back")
                server.start()
        assert agent.flush(120)

    steps = steps_of(server.uri, run.run_id, "loss")
    assert sorted(steps) == list(range(9000)), "each point stored exactly once"
    stored = MlflowClient(server.uri).get_run(run.run_id)
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["phase"] == "back"
    assert stored.info.status == "FINISHED"


def test_offline_ok_logs_to_the_spool_and_sync_creates_the_runs(
    server: MlflowServer, agent_factory: Any, tmp_path: Path, spool_root: Path
) -> None:
    server.stop()
    spool = spool_root
    agent = agent_factory(
        configuration={"tracking_uri": server.uri, "experiment": "offline"},
        tracking={"offline_ok": True, "exit_timeout": 0.5},
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("written offline")
    with agent.start_run("offline-parent", params={"seed": 7}) as parent:
        agent.set_tag("where", "plane")
        agent.log_artifact(notes)
        for step in range(1500):
            agent.log_metric("loss", float(step), step=step)
        with agent.start_run("offline-child", nested=True) as child:
            agent.log_metric("child", 1.0, step=0)
        assert parent.run_id.startswith("pending-")
        assert spooled_points(spool, server.uri) == 1501
    agent.reset()

    running(server)
    report = sync_spool(spool, server.uri)
    assert report.ok, report.errors
    assert set(report.runs) == {parent.run_id, child.run_id}
    client = MlflowClient(server.uri)
    real_parent = client.get_run(report.runs[parent.run_id])
    real_child = client.get_run(report.runs[child.run_id])
    assert real_parent.info.run_name == "offline-parent"
    assert real_parent.info.status == "FINISHED"
    assert real_parent.data.params == {"seed": "7"}
    assert real_parent.data.tags["where"] == "plane"
    assert real_child.data.tags["mlflow.parentRunId"] == real_parent.info.run_id
    assert steps_of(server.uri, real_parent.info.run_id, "loss") == list(range(1500))
    artifact = client.download_artifacts(real_parent.info.run_id, "notes.txt",
                                         str(tmp_path))
    assert Path(artifact).read_text() == "written offline"
    assert families(target_dir(spool, server.uri)) == []


def test_ending_a_run_during_a_short_outage_waits_for_the_server(
    server: MlflowServer, agent_factory: Any
) -> None:
    running(server)
    # Room for the restart: the wait must end because the server is back.
    exit_timeout = STARTUP_TIMEOUT + 30.0
    agent = agent_factory(
        configuration={"tracking_uri": server.uri},
        tracking={"exit_timeout": exit_timeout},
    )
    with agent.start_run("blip") as run:
        for step in range(2000):
            agent.log_metric("loss", float(step), step=step)
        server.stop()
        comeback = threading.Timer(3.0, server.start)
        comeback.start()
    comeback.join()

    # Leaving the block waited for the server, so the run is complete already.
    stored = MlflowClient(server.uri).get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert steps_of(server.uri, run.run_id, "loss") == list(range(2000))


def test_ending_a_run_during_a_long_outage_leaves_its_end_queued(
    server: MlflowServer, agent_factory: Any, spool_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running(server)
    agent = agent_factory(
        configuration={"tracking_uri": server.uri},
        tracking={"exit_timeout": 2.0, "retry_backoff_max": 1.0},
    )
    with agent.start_run("long-outage") as run:
        for step in range(500):
            agent.log_metric("loss", float(step), step=step)
        server.stop()
        caplog.clear()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    ended = [m for m in warnings if run.run_id in m]
    assert len(ended) == 1, warnings
    assert "mlflow-agent sync" in ended[0]
    assert str(target_dir(spool_root, server.uri)) in ended[0]

    # The agent has no run left: a new one fails fast while the server is down...
    assert agent.active_run is None
    with pytest.raises(ServerUnavailableError):
        agent.start_run("while-down")
    # ...and once it is back, this process's writer sends the first run's end.
    server.start()
    assert agent.flush(60)
    stored = MlflowClient(server.uri).get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert steps_of(server.uri, run.run_id, "loss") == list(range(500))
    with agent.start_run("after") as after:
        agent.log_metric("loss", 1.0, step=0)
    assert MlflowClient(server.uri).get_run(after.run_id).info.status == "FINISHED"


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from mlflow_agent_core import MLFlowAgent

    uri, spool, exit_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    agent = MLFlowAgent(config={
        "configuration": {"tracking_uri": uri, "experiment": "exit"},
        "tracking": {"spool_dir": spool, "exit_timeout": exit_timeout},
    })
    agent.start_run("exit")
    for step in range(500):
        agent.log_metric("x", float(step), step=step)
    agent.flush(60)
    print("ready", flush=True)
    sys.stdin.readline()  # the test stops the server now
    for step in range(500, 5500):
        agent.log_metric("x", float(step), step=step)
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("failure", ["killed", "silent"])
def test_exit_with_the_server_down_returns_within_exit_timeout(
    server: MlflowServer, tmp_path: Path, failure: str
) -> None:
    running(server)
    spool, exit_timeout = tmp_path / "exit-spool", 4.0
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, server.uri, str(spool), str(exit_timeout)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=quiet_mlflow_env(), text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        server.stop()
        if failure == "silent":
            # Connections are accepted on the server's port, requests never answered.
            silent.bind(("127.0.0.1", server.port))
            silent.listen(64)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "exiting"
        exiting = time.monotonic()
        child.wait(timeout=60)
        took = time.monotonic() - exiting
    finally:
        child.kill()
        child.wait()
        silent.close()
    stderr = child.stderr.read() if child.stderr else ""

    # The bound is generous: interpreter start-up is not in it, teardown is.
    assert took < exit_timeout + 3.0, f"exit took {took:.1f} s\n{stderr}"
    assert spooled_points(spool, server.uri) >= 5000
    assert "could not be sent in time" in stderr and os.fspath(spool) in stderr
