"""The example plugin of the guide, installed with pip and run through real agents."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_agent_core import ConfigError, MLFlowAgent, hookimpl
from mlflow_agent_core.cli import main
from tests.cli_support import restore_logging  # noqa: F401 - autouse

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mlflow-agent-example"
SUMMARY_TAG = "example.summary"
# Code blocks of the guide naming these are quoted from the example's sources.
QUOTED_NAMES = ("JsonlOptions", "JsonlTracking", "SUMMARY_TAG")


@pytest.fixture(scope="module")
def example_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's sources, copied so that building leaves the repo clean."""
    copy = tmp_path_factory.mktemp("example") / "mlflow-agent-example"
    shutil.copytree(
        EXAMPLE, copy,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    return copy


@pytest.fixture(scope="module")
def example_site(example_copy: Path) -> Path:
    """``pip install --target`` of the example: a real distribution, offline."""
    site = example_copy.parent / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", str(site), str(example_copy),
        ],
        check=True, capture_output=True, timeout=300,
    )
    return site


@pytest.fixture
def example(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(example_site))
    for name in ("MLFLOW_AGENT_PLUGINS_ALLOW", "MLFLOW_AGENT_PLUGINS_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    MLFlowAgent.reset()
    yield
    MLFlowAgent.reset()


def stored_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags)


@pytest.mark.usefixtures("example")
def test_the_installed_example_is_listed_with_its_hooks_and_backend() -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])

    assert result.exit_code == 0, result.output
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    example = plugins["example"]
    assert (example["distribution"], example["version"]) == (
        "mlflow-agent-example", "0.1.0"
    )
    assert example["entry_point"] == "example = mlflow_agent_example.plugin"
    assert example["hooks"] == [
        "mlflow_agent_model_registered",
        "mlflow_agent_register_strategies",
        "mlflow_agent_run_finished",
        "mlflow_agent_run_started",
    ]
    assert example["strategies"] == {"tracking": ["jsonl"]}


@pytest.mark.usefixtures("example")
def test_every_run_gets_a_summary_tag_in_mlflow(
    agent_factory: Any, tracking_uri: str
) -> None:
    agent = agent_factory()
    with agent.start_run(run_name="ok") as finished:
        agent.log_metric("loss", 0.25)
    with pytest.raises(RuntimeError), agent.start_run(run_name="boom") as failed:
        raise RuntimeError("diverged")
    agent.flush()

    assert stored_tags(tracking_uri, finished.run_id)[SUMMARY_TAG].startswith(
        "FINISHED after "
    )
    assert stored_tags(tracking_uri, failed.run_id)[SUMMARY_TAG].startswith(
        "FAILED after "
    )


@pytest.mark.usefixtures("example")
def test_the_jsonl_backend_selected_in_agent_yaml(
    tmp_path: Path, tracking_uri: str
) -> None:
    records = tmp_path / "out" / "runs.jsonl"
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(
        "configuration:\n"
        f"  tracking_uri: {tracking_uri}\n"
        "tracking:\n"
        "  backend: jsonl\n"
        f"  path: {records}\n"
    )

    agent = MLFlowAgent.from_yaml(config_file)
    with agent.start_run(run_name="file", params={"epochs": 3}) as run:
        agent.log_metrics({"loss": 0.5, "acc": 0.75}, step=2)
    MLFlowAgent.reset()

    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [line["event"] for line in lines] == [
        "start", "params", "metrics", "end", "tags"
    ]
    assert {line["run_id"] for line in lines} == {run.run_id}
    assert lines[1]["params"] == {"epochs": "3"}
    assert sorted(p[:2] + [p[3]] for p in lines[2]["points"]) == [
        ["acc", 0.75, 2], ["loss", 0.5, 2]
    ]
    assert lines[4]["tags"][SUMMARY_TAG].startswith("FINISHED")


@pytest.mark.usefixtures("example")
def test_config_check_checks_the_example_backend_options(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("tracking:\n  backend: jsonl\n  fsync: maybe\n")

    result = CliRunner().invoke(main, ["config", "check", str(config_file)])

    assert result.exit_code == 1
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith(f"{config_file}:3:")
    assert "tracking.fsync: expected bool" in message


@pytest.mark.usefixtures("example")
def test_model_registered_reaches_the_example_and_inline_plugins(
    agent_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.linear_model import LinearRegression

    seen: list[tuple[str, str]] = []

    class Watcher:
        @hookimpl
        def mlflow_agent_model_registered(
            self, agent: Any, model_version: Any
        ) -> None:
            seen.append((model_version.name, str(model_version.version)))

    config = {**agent_config, "registry": {"backend": "sklearn"}}
    agent = MLFlowAgent(config=config, plugins=[Watcher()])
    model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    with caplog.at_level(logging.INFO, logger="mlflow_agent_example"):
        version = agent.register_model(model, "Line_Fit")

    assert seen == [("Line_Fit", str(version.version))]
    assert f"Registered Line_Fit version {version.version}" in caplog.text


@pytest.mark.usefixtures("example")
def test_blocking_the_example_removes_its_hook_and_backend(
    agent_factory: Any,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_AGENT_PLUGINS_BLOCK", "mlflow-agent-example")

    agent = agent_factory()
    with agent.start_run() as run:
        pass
    agent.flush()
    MLFlowAgent.reset()
    with pytest.raises(ConfigError, match="no installed plugin provides 'jsonl'"):
        agent_factory(tracking={"backend": "jsonl"})

    assert SUMMARY_TAG not in stored_tags(tracking_uri, run.run_id)


def test_the_example_test_suite_passes_with_the_pytest_fixtures(
    example_copy: Path, example_site: Path
) -> None:
    paths = [str(example_site), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=example_copy, env=env, capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 passed" in result.stdout


def test_the_guide_quotes_the_example_as_it_is() -> None:
    guide = (EXAMPLE.parents[1] / "docs" / "writing-a-plugin.md").read_text()
    sources = "\n".join(
        path.read_text() for path in sorted(EXAMPLE.rglob("*.py"))
    )
    blocks = [part.split("```", 1)[0] for part in guide.split("```python\n")[1:]]
    quoted = [b for b in blocks if any(word in b for word in QUOTED_NAMES)]

    assert len(quoted) >= 3
    for block in quoted:
        for line in block.splitlines():
            if line.strip() and line.strip() != "...":
                assert line.rstrip() in sources, f"not in the example: {line!r}"
