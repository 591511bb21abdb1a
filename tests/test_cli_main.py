"""The command line as a whole: help, exit codes, errors, logging, its reference."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlflow_agent_core.cli import main
from tests.cli_support import CLI, restore_logging  # noqa: F401 - autouse

ROOT = Path(__file__).resolve().parents[1]


def command_paths(
    group: click.Group = main, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


COMMANDS = list(command_paths())


def test_every_command_of_the_issue_exists() -> None:
    expected = {
        ("quickstart",), ("plugins",), ("config", "check"), ("config", "show"),
        ("doctor",), ("sync",), ("models", "list"), ("models", "show"),
        ("models", "promote"), ("models", "load-check"),
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert "Usage: main " + " ".join(path) in result.output
    assert len(result.output.splitlines()) > 3


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_is_in_the_cli_reference(path: tuple[str, ...]) -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()

    assert f"mlflow-agent {' '.join(path)}" in reference


@pytest.mark.parametrize(
    "arguments",
    [
        ["no-such-command"],
        ["models", "show"],  # NAME missing
        ["doctor", "--timeout", "soon"],
        ["plugins", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(arguments: list[str]) -> None:
    result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr


def test_promote_without_alias_or_stage_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["models", "promote", "m", "1"])

    assert result.exit_code == 2
    assert "give --alias, --stage or both" in result.stderr


def test_an_agent_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    result = CliRunner().invoke(main, ["config", "show", str(missing)])

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: config file ")
    assert "does not exist" in lines[0]
    assert "Traceback" not in result.stderr


def test_verbose_logs_go_to_stderr_and_stdout_stays_parsable(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("configuration:\n  experiment: logs\n")

    result = CliRunner().invoke(main, ["-v", "config", "show", str(config_file)])

    assert result.exit_code == 0, result.output
    assert "Using agent configuration from" in result.stderr
    assert "INFO" not in result.stdout
    assert "experiment: logs" in result.stdout


def test_quiet_hides_info_logs(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("configuration:\n  experiment: quiet\n")

    result = CliRunner().invoke(main, ["-q", "config", "show", str(config_file)])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert logging.getLogger().level == logging.ERROR


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])

    assert result.exit_code == 0
    assert result.output.startswith("mlflow-agent, version ")


def test_the_installed_command_runs_and_fails_cleanly(tmp_path: Path) -> None:
    help_run = subprocess.run(
        [CLI, "--help"], capture_output=True, text=True, timeout=60
    )
    missing = subprocess.run(
        [CLI, "config", "check", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    usage = subprocess.run(
        [CLI, "models"], capture_output=True, text=True, timeout=60
    )

    assert help_run.returncode == 0 and "doctor" in help_run.stdout
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert usage.returncode == 2


def test_help_does_not_import_mlflow() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from mlflow_agent_core.cli import main\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "print('mlflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
