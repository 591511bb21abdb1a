"""``mlflow-agent config check`` and ``config show``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_agent_core.cli import main
from tests.cli_support import CLI, restore_logging  # noqa: F401 - autouse

TOKEN = "tok-4f9a2c7e1b"
PASSWORD = "hunter2-pw"


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


# config check


def test_a_good_config_checks_ok(tmp_path: Path, tracking_uri: str) -> None:
    path = write(
        tmp_path,
        "configuration:\n"
        f"  tracking_uri: {tracking_uri}\n"
        "  experiment: checked\n"
        "registry:\n"
        "  backend: sklearn\n"
        "inputs:\n"
        "  nonfinite: error\n",
    )

    result = invoke("config", "check", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: ok (configuration: mlflow, ")
    assert "registry: sklearn" in result.stdout


BROKEN = {
    "syntax error": (
        "configuration:\n  tracking_uri: [unclosed\n  experiment: x\n",
        3,
        "invalid YAML",
    ),
    "unknown section": ("configuration:\n  experiment: x\ntrackin:\n  a: 1\n", 3,
                        "did you mean 'tracking'"),
    "unknown key": (
        "configuration:\n  experiment: x\n  trackin_uri: sqlite:///x.db\n",
        3,
        "did you mean 'tracking_uri'",
    ),
    "wrong type": ("configuration:\n  experiment: [a, b]\n", 2, "expected str"),
    "wrong registry option type": (
        "registry:\n  backend: sklearn\n  infer_requirements: often\n",
        3,
        "expected bool",
    ),
    "unknown backend": ("tracking:\n  backend: kafka\n", 2, "no installed plugin"),
    "bad inputs policy": ("inputs:\n  nonfinite: sometimes\n", 2, "nonfinite"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_config_reports_file_line_and_column(
    tmp_path: Path, case: str
) -> None:
    text, line, words = BROKEN[case]
    path = write(tmp_path, text)

    result = invoke("config", "check", str(path))

    assert result.exit_code == 1, result.output
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith(f"{path}:{line}:"), message
    location, _, _ = message.partition(": ")
    assert location.split(":")[-1].isdigit()  # the column
    assert words in message


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "configuration:\n"
        "  experiment: [a]\n"
        "tracking:\n"
        "  backend: kafka\n"
        "client:\n"
        "  backend: nowhere\n",
    )

    result = invoke("config", "check", str(path))

    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1
    assert [line.split(":")[1] for line in lines] == ["2", "4", "6"]


def test_check_json_gives_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "configuration:\n  experiment: x\n  colour: blue\n")

    result = invoke("config", "check", str(path), "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    (error,) = report["errors"]
    assert (error["file"], error["line"], error["column"]) == (str(path), 3, 3)
    assert error["type"] == "ConfigError"
    assert "colour" in error["message"]


def test_check_json_when_ok_lists_backends(tmp_path: Path) -> None:
    path = write(tmp_path, "configuration:\n  experiment: ok\n")

    result = invoke("config", "check", str(path), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["errors"] == []
    assert report["backends"]["registry"] == "pytorch"


def test_check_finds_agent_yaml_in_the_current_directory(tmp_path: Path) -> None:
    write(tmp_path, "tracking:\n  backend: kafka\n")

    result = invoke("config", "check")

    assert result.exit_code == 1
    assert result.stderr.startswith("agent.yaml:2:")


def test_check_contacts_no_server_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "never" / "mlflow.db"
    path = write(
        tmp_path,
        "configuration:\n"
        f"  tracking_uri: sqlite:///{store}\n"
        "  registry_uri: http://127.0.0.1:9/\n",
    )

    result = invoke("config", "check", str(path))

    assert result.exit_code == 0, result.output
    assert not store.parent.exists()


def test_check_as_a_subprocess(tmp_path: Path) -> None:
    path = write(tmp_path, "client:\n  backend: mlflow\n  cache_size: lots\n")

    result = subprocess.run(
        [CLI, "config", "check", str(path)],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:3:")
    assert "cache_size" in result.stderr


# config show


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("SHARED_API_KEY", "k3y-value-991")


SECRET_CONFIG = (
    "configuration:\n"
    f"  tracking_uri: https://alice:{PASSWORD}@127.0.0.1:5999/mlflow\n"
    "  token: ${MLFLOW_TRACKING_TOKEN}\n"
    "  experiment: run-${SHARED_API_KEY}\n"
    "registry:\n"
    "  backend: sklearn\n"
)


@pytest.mark.usefixtures("secret_env")
def test_show_masks_every_secret_and_names_sources(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET_CONFIG)

    result = invoke("config", "show", str(path))

    assert result.exit_code == 0, result.output
    out = result.stdout
    for secret in (TOKEN, PASSWORD, "k3y-value-991"):
        assert secret not in out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert "https://alice:***@127.0.0.1:5999/mlflow" in lines["tracking_uri"]
    assert f"# {path}:2" in lines["tracking_uri"]
    assert "'***'" in lines["token"]
    assert f"# env MLFLOW_TRACKING_TOKEN ({path}:3)" in lines["token"]
    assert "run-***" in lines["experiment"]
    assert "# default" in out  # client.backend and tracking.backend
    assert f"# {path}:6" in out  # registry.backend


@pytest.mark.usefixtures("secret_env")
def test_show_json_is_parsable_and_masked(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET_CONFIG)

    result = invoke("config", "show", str(path), "--json")

    assert result.exit_code == 0, result.output
    for secret in (TOKEN, PASSWORD, "k3y-value-991"):
        assert secret not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["config"] == str(path)
    assert shown["values"]["configuration"]["token"] == "***"
    assert shown["values"]["client"] == {"backend": "mlflow"}
    assert shown["origins"]["configuration.token"] == (
        f"env MLFLOW_TRACKING_TOKEN ({path}:3)"
    )
    assert shown["origins"]["tracking.backend"] == "default"


def test_show_defaults_without_any_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")

    result = invoke("config", "show", "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["config"] == "<defaults>"
    assert shown["values"]["configuration"]["tracking_uri"] == "sqlite:///from-env.db"
    assert shown["origins"]["configuration.tracking_uri"] == (
        "env MLFLOW_TRACKING_URI (default)"
    )


def test_show_as_a_subprocess_never_prints_the_token(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET_CONFIG)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_TOKEN": TOKEN,
        "SHARED_API_KEY": "k3y-value-991",
    }

    result = subprocess.run(
        [CLI, "-v", "config", "show", str(path)],
        capture_output=True, text=True, timeout=120, env=env,
    )

    assert result.returncode == 0, result.stderr
    assert "token: '***'" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_check_config_from_python_builds_no_agent(
    agent_config: dict[str, Any],
) -> None:
    from mlflow_agent_core import ConfigError, MLFlowAgent

    MLFlowAgent.reset()
    config = {
        **agent_config,
        "client": {"backend": "mlflow", "cache_size": -1},
        "registry": {"backend": "nowhere"},
    }

    report = MLFlowAgent.check_config(config)

    assert MLFlowAgent.current() is None
    assert not report.ok
    assert all(isinstance(error, ConfigError) for error in report.errors)
    messages = " | ".join(str(error) for error in report.errors)
    assert "registry.backend" in messages and "client.cache_size" in messages
    assert MLFlowAgent.check_config(agent_config).ok
