"""``mlflow-agent config check`` finds what the ``auto`` registry backend refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_agent_core.cli import main
from mlflow_agent_core.errors import ConfigError
from tests.cli_support import restore_logging  # noqa: F401 - autouse


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


BROKEN = {
    "unknown backend": (
        "registry:\n  backend: auto\n  backends: [onnx]\n",
        3,
        "registry.backends: 'onnx' not installed; installed registry backends: "
        "pytorch, sklearn",
    ),
    "one of two unknown": (
        "registry:\n  backend: auto\n  backends: [pytorch, onnx]\n",
        3,
        "'onnx' not installed",
    ),
    "empty list": (
        "registry:\n  backend: auto\n  backends: []\n",
        3,
        "registry.backends: the list is empty",
    ),
    "blocked plugin": (
        "plugins:\n  block: [sklearn]\n"
        "registry:\n  backend: auto\n  backends: [sklearn]\n",
        5,
        "'sklearn' not installed; installed registry backends: pytorch",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_bad_auto_backends_list_is_reported_at_its_line_and_column(
    tmp_path: Path, case: str
) -> None:
    text, line, words = BROKEN[case]
    path = write(tmp_path, text)

    result = invoke("config", "check", str(path))

    assert result.exit_code == 1, result.output
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith(f"{path}:{line}:3: "), message
    assert words in message


def test_the_check_reports_what_building_the_agent_would_raise(
    agent_factory: Any, tmp_path: Path
) -> None:
    from mlflow_agent_core import MLFlowAgent

    path = write(tmp_path, BROKEN["unknown backend"][0])
    (checked,) = invoke("config", "check", str(path)).stderr.strip().splitlines()

    with pytest.raises(ConfigError) as caught:
        agent_factory(registry={"backend": "auto", "backends": ["onnx"]})

    assert MLFlowAgent.current() is None
    assert checked.endswith(caught.value.message)


def test_installed_auto_backends_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "registry:\n  backend: auto\n  backends: [sklearn]\n")

    result = invoke("config", "check", str(path))

    assert result.exit_code == 0, result.output
    assert "registry: auto" in result.stdout
