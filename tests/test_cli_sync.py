"""``mlflow-agent sync`` after an outage, and the spool as ``doctor`` reports it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_agent_core import MLFlowAgent
from mlflow_agent_core.cli import main
from mlflow_agent_core.testing import free_port
from tests.cli_support import CLI, TcpRelay, restore_logging  # noqa: F401


def spool_offline_run(tmp_path: Path, uri: str) -> str:
    """Log a run while nothing answers at ``uri``; return its run name."""
    MLFlowAgent.reset()
    agent = MLFlowAgent(
        config={
            "configuration": {"tracking_uri": uri, "experiment": "sync-test"},
            "tracking": {
                "spool_dir": str(tmp_path / "spool"),
                "offline_ok": True,
                "probe_timeout": 0.5,
                "exit_timeout": 0.5,
            },
        }
    )
    try:
        with agent.start_run(run_name="offline-run", params={"lr": 0.01}):
            for step in range(5):
                agent.log_metric("loss", 1.0 / (step + 1), step=step)
    finally:
        MLFlowAgent.reset(timeout=0.5)
    return "offline-run"


def write_config(tmp_path: Path, uri: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "configuration:\n"
        f"  tracking_uri: {uri}\n"
        "tracking:\n"
        f"  spool_dir: {tmp_path / 'spool'}\n"
    )
    return path


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


def spool_check(config_file: Path) -> dict[str, Any]:
    result = invoke("doctor", "--json", "--config", str(config_file))
    report = json.loads(result.stdout)
    return next(c for c in report["checks"] if c["check"] == "spool")


def test_sync_sends_a_run_spooled_during_an_outage(
    tmp_path: Path, mlflow_server: Any
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    run_name = spool_offline_run(tmp_path, uri)
    config_file = write_config(tmp_path, uri)

    waiting = spool_check(config_file)
    still_down = invoke("sync", "--config", str(config_file))
    relay = TcpRelay(port, mlflow_server.port)
    try:
        sent = invoke("sync", "--config", str(config_file))
        again = invoke("sync", "--config", str(config_file), "--json")
        drained = spool_check(config_file)
    finally:
        relay.close()

    assert waiting["status"] == "fail"
    (backlog,) = waiting["facts"]["backlog"]
    assert backlog["tracking_uri"] == uri and backlog["waiting"] >= 8
    assert "mlflow-agent sync" in waiting["detail"]

    assert still_down.exit_code == 1
    assert "unreachable" in still_down.stderr

    assert sent.exit_code == 0, sent.output
    assert f"Sent {backlog['waiting']} records to {uri}" in sent.stdout
    assert "Created 1 run started offline" in sent.stdout

    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["sent"] == 0
    assert drained["status"] == "ok"

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("sync-test")
    assert experiment is not None
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.run_name = '{run_name}'",
    )
    assert run.data.params == {"lr": "0.01"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [point.step for point in history] == [0, 1, 2, 3, 4]
    assert run.info.status == "FINISHED"


def test_sync_with_nothing_spooled_as_a_subprocess(tmp_path: Path) -> None:
    result = subprocess.run(
        [CLI, "sync", "--spool-dir", str(tmp_path / "empty-spool")],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Nothing to send in ")


def test_sync_refuses_a_file_store_uri_with_the_migration_hint(tmp_path: Path) -> None:
    result = invoke(
        "sync", "--spool-dir", str(tmp_path / "spool"), "--tracking-uri", "./mlruns"
    )

    assert result.exit_code == 2
    assert "--tracking-uri" in result.output
    assert "mlflow migrate-filestore" in result.output


def test_sync_matches_a_relative_sqlite_uri_to_its_absolute_spool(
    tmp_path: Path,
) -> None:
    absolute = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MLFlowAgent.reset()
    agent = MLFlowAgent(
        config={
            "configuration": {"tracking_uri": absolute},
            "tracking": {"spool_dir": str(tmp_path / "spool")},
        }
    )
    try:
        with agent.start_run():
            agent.log_metric("loss", 0.5)
    finally:
        MLFlowAgent.reset()

    # The test runs in tmp_path, so the relative URI names the same store.
    result = invoke(
        "sync", "--json", "--spool-dir", str(tmp_path / "spool"),
        "--tracking-uri", "sqlite:///mlflow.db",
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tracking_uris"] == [absolute]


def test_sync_sends_only_the_configured_uri_unless_asked_for_all(
    tmp_path: Path,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    spool_offline_run(tmp_path, down)
    elsewhere = write_config(tmp_path, f"sqlite:///{tmp_path / 'other.db'}")

    configured = invoke("sync", "--json", "--config", str(elsewhere))
    every = invoke("sync", "--json", "--all", "--config", str(elsewhere))
    both = invoke("sync", "--all", "--tracking-uri", down, "--config", str(elsewhere))

    assert configured.exit_code == 0, configured.output
    assert json.loads(configured.stdout)["sent"] == 0
    assert down not in configured.stdout
    assert every.exit_code == 1
    assert json.loads(every.stdout)["tracking_uris"] == [down]
    assert both.exit_code == 2
