"""``mlflow-agent plugins``: what is installed, what it provides, what is selected."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_agent_core.cli import main
from tests.cli_support import (  # noqa: F401 - restore_logging is autouse
    CLI,
    REGISTRY_PLUGIN,
    install_plugin,
    restore_logging,
)


def listing(*arguments: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["plugins", "--json", *arguments])
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {plugin["name"]: plugin for plugin in report["plugins"]}


def test_json_lists_builtins_installed_plugins_and_the_selection() -> None:
    code, report = listing()

    assert code == 0, report["errors"]
    plugins = by_name(report)
    tracking = plugins["builtin.tracking"]
    assert tracking["builtin"] is True
    assert tracking["hooks"] == ["mlflow_agent_register_strategies"]
    assert tracking["strategies"] == {"tracking": ["mlflow"]}
    pytorch = plugins["pytorch"]
    assert pytorch["distribution"] == "mlflow-agent-pytorch"
    assert pytorch["version"] and pytorch["builtin"] is False
    assert pytorch["strategies"] == {"registry": ["pytorch"]}
    assert report["selected"]["registry"]["backend"] == "pytorch"
    assert report["selected"]["registry"]["plugin"] == "pytorch"
    assert report["selected"]["tracking"]["plugin"] == "builtin.tracking"
    assert report["skipped"] == []


def test_a_plugin_from_a_distribution_shows_its_hooks_and_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, REGISTRY_PLUGIN,
        dist="mlflow-agent-listed", entry_point="listed",
    )
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("registry:\n  backend: listed\n")

    code, report = listing("--config", str(config_file))

    assert code == 0, report["errors"]
    listed = by_name(report)["listed"]
    assert listed["distribution"] == "mlflow-agent-listed"
    assert listed["version"] == "1.0.0"
    assert listed["hooks"] == [
        "mlflow_agent_register_strategies", "mlflow_agent_run_started"
    ]
    assert listed["strategies"] == {"registry": ["listed"]}
    assert report["selected"]["registry"]["plugin"] == "listed"


def test_text_output_names_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, REGISTRY_PLUGIN,
        dist="mlflow-agent-listed", entry_point="listed",
    )

    result = CliRunner().invoke(main, ["plugins"])

    assert result.exit_code == 0, result.output
    assert "  listed (mlflow-agent-listed 1.0.0)" in result.stdout
    assert "    registry: listed" in result.stdout
    assert "    registry: pytorch (plugin pytorch, mlflow-agent-pytorch 0." in (
        result.stdout
    )
    assert "    tracking: mlflow (built-in)" in result.stdout


def test_a_broken_plugin_is_shown_with_its_error_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, "import a_module_that_is_not_installed\n",
        dist="mlflow-agent-broken", entry_point="broken",
    )

    code, report = listing()
    text = CliRunner().invoke(main, ["plugins"])

    assert code == 1
    (error,) = report["errors"]
    assert "mlflow-agent-broken 1.0.0" in error
    assert "a_module_that_is_not_installed" in error
    assert {"name": "broken", "loaded": False}.items() <= by_name(report)[
        "broken"
    ].items()
    assert text.exit_code == 1
    assert "error: plugin broken (distribution mlflow-agent-broken 1.0.0)" in (
        text.stderr
    )
    assert "Traceback" not in text.output


def test_a_blocked_broken_plugin_is_listed_as_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, "raise RuntimeError('must not be imported')\n",
        dist="mlflow-agent-broken", entry_point="broken",
    )
    monkeypatch.setenv("MLFLOW_AGENT_PLUGINS_BLOCK", "broken")

    code, report = listing()

    assert code == 0, report["errors"]
    assert "broken" not in by_name(report)
    assert [p["distribution"] for p in report["skipped"]] == ["mlflow-agent-broken"]


def test_a_missing_selected_backend_exits_1(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("client:\n  backend: elsewhere\n")

    code, report = listing("--config", str(config_file))

    assert code == 1
    assert report["selected"]["client"]["plugin"] is None
    assert report["selected"]["client"]["error"].startswith(f"{config_file}:2:")


def test_plugins_as_a_subprocess_with_an_allow_list(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(
        "registry:\n  backend: sklearn\nplugins:\n  allow: [sklearn]\n"
    )

    result = subprocess.run(
        [CLI, "plugins", "--json", "--config", str(config_file)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "MLFLOW_AGENT_PLUGINS_BLOCK": ""},
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = set(by_name(report))
    assert "sklearn" in names and "pytorch" not in names
    assert "pytorch" in {plugin["name"] for plugin in report["skipped"]}
