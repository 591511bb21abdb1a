"""A training process killed with SIGKILL loses nothing it had accepted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_agent_core.default_plugins.spool import families, target_dir
from mlflow_agent_core.sync import SyncProgress, sync_spool
from tests.servers import quiet_mlflow_env

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# The child prints how many points it has logged after each call returns, so
# the test knows exactly which points were accepted when it is killed.
TRAINING_SCRIPT = textwrap.dedent(
    """
    import sys
    from mlflow_agent_core import MLFlowAgent

    uri, spool = sys.argv[1], sys.argv[2]
    agent = MLFlowAgent(config={
        "configuration": {"tracking_uri": uri, "experiment": "crash"},
        # Long interval: the last partial batch is only in the spool when killed.
        "tracking": {"spool_dir": spool, "flush_interval": 60},
    })
    run = agent.start_run("crash")
    print(run.run_id, flush=True)
    step = 0
    while True:
        agent.log_metric("x", float(step), step=step)
        step += 1
        print(step, flush=True)
    """
)


@pytest.fixture
def spool_root(agent_config: dict[str, Any]) -> Path:
    """The spool root that the agent fixtures configure."""
    return Path(agent_config["tracking"]["spool_dir"])


def train_and_kill(uri: str, spool: Path, accepted_at_least: int) -> tuple[str, int]:
    """Run the training child, SIGKILL it; return its run id and accepted count."""
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINING_SCRIPT, uri, str(spool)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=quiet_mlflow_env(),
        text=True,
    )
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        accepted = 0
        while accepted < accepted_at_least:
            accepted = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        # Counts printed between our last read and the kill were accepted too.
        for line in child.stdout.read().split():
            accepted = int(line)
    finally:
        child.kill()
        child.wait()
    return run_id, accepted


def stored_steps(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "x"))


def assert_every_accepted_point_stored_once(steps: list[int], accepted: int) -> None:
    # The point being logged when the kill came may or may not have been accepted.
    assert steps[:accepted] == list(range(accepted))
    assert steps in (list(range(accepted)), list(range(accepted + 1)))


def test_sync_after_sigkill_stores_every_accepted_point(
    tracking_uri: str, spool_root: Path
) -> None:
    spool = spool_root
    run_id, accepted = train_and_kill(tracking_uri, spool, accepted_at_least=4000)
    updates: list[SyncProgress] = []

    report = sync_spool(spool, tracking_uri, progress=updates.append)

    assert report.ok, report.errors
    assert report.sent > 0, "the killed process left unsent records in the spool"
    assert updates and updates[-1].finished
    steps = stored_steps(tracking_uri, run_id)
    assert_every_accepted_point_stored_once(steps, accepted)
    assert families(target_dir(spool, tracking_uri)) == []


def test_the_next_agent_start_replays_what_a_killed_process_left(
    tracking_uri: str, spool_root: Path, agent_factory: Any
) -> None:
    spool = spool_root
    run_id, accepted = train_and_kill(tracking_uri, spool, accepted_at_least=2500)
    directory = target_dir(spool, tracking_uri)
    [left] = families(directory)

    agent_factory()  # same URI and spool directory as the killed process

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        steps = stored_steps(tracking_uri, run_id)
        if len(steps) >= accepted and left.name not in {
            f.name for f in families(directory)
        }:
            break
        time.sleep(0.5)
    steps = stored_steps(tracking_uri, run_id)
    assert_every_accepted_point_stored_once(steps, accepted)
    assert left.name not in {f.name for f in families(directory)}
