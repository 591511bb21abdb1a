"""The ``mlflow`` configuration backend: what it applies to MLflow's process state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core import ConfigError
from mlflow_agent_core.testing import free_port

REGISTRY_CALL_AGAINST_A_DEAD_SERVER = """
import os
from mlflow_agent_core import MLFlowAgent, ServerUnavailableError

agent = MLFlowAgent(config={{
    "configuration": {{"tracking_uri": "http://127.0.0.1:{port}"}},
    "tracking": {{"offline_ok": True, "spool_dir": "spool", "probe_timeout": 0.5,
                  "exit_timeout": 0.5}},
}})
print(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
      os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"])
try:
    agent.get_model("anything")
except ServerUnavailableError as exc:
    print("unavailable:", exc)
"""


def test_mlflow_http_retries_are_capped_so_a_dead_server_fails_soon(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(REGISTRY_CALL_AGAINST_A_DEAD_SERVER.format(port=free_port()))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}

    # With MLflow's own defaults this call retries for about four minutes.
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    limits, outcome = result.stdout.splitlines()[:2]
    assert limits == "2 30"
    assert outcome.startswith("unavailable: ")
    assert "127.0.0.1" in outcome


def test_the_environment_keeps_precedence_over_the_http_defaults(
    agent_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)

    agent_factory(configuration={"http_timeout": 7})

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("http_max_retries", -1, "must be 0 or more"),
        ("http_timeout", 0, "must be at least 1 second"),
        ("experiment", "  ", "the experiment name is empty"),
    ],
)
def test_bad_options_name_the_key(
    agent_factory: Any, option: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{option}.*{message}|{message}"):
        agent_factory(configuration={option: value})
