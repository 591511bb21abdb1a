"""Allow and block lists, from agent.yaml and the environment, and hook tracing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core import ConfigError, MLFlowAgent, hookimpl
from mlflow_agent_core.contracts import Run
from mlflow_agent_core.plugins import PluginHost
from tests.cli_support import REGISTRY_PLUGIN, install_plugin

MUST_NOT_LOAD = "raise RuntimeError('this plugin must not be imported')\n"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_AGENT_PLUGINS_ALLOW", "MLFLOW_AGENT_PLUGINS_BLOCK",
                 "MLFLOW_AGENT_TRACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def two_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``listed`` provides a registry backend; ``noisy`` fails when imported."""
    install_plugin(
        tmp_path, monkeypatch, REGISTRY_PLUGIN,
        dist="mlflow-agent-listed", entry_point="listed",
    )
    install_plugin(
        tmp_path, monkeypatch, MUST_NOT_LOAD,
        dist="mlflow-agent-noisy", entry_point="noisy",
    )


def loaded(agent: Any) -> set[str]:
    return {info.name for info in agent.plugins.plugins()}


def skipped(agent: Any) -> set[str]:
    return {info.name for info in agent.plugins.skipped}


@pytest.mark.usefixtures("two_plugins")
def test_allow_list_in_yaml_loads_only_those(agent_factory: Any) -> None:
    agent = agent_factory(
        plugins={"allow": ["listed"]}, registry={"backend": "listed"}
    )

    assert "listed" in loaded(agent)
    assert {"noisy", "pytorch", "sklearn"} <= skipped(agent)
    assert type(agent.registry).__name__ == "ListedRegistry"


@pytest.mark.usefixtures("two_plugins")
def test_allow_list_matches_distribution_names(agent_factory: Any) -> None:
    agent = agent_factory(
        plugins={"allow": ["mlflow-agent-listed"]}, registry={"backend": "listed"}
    )

    assert "listed" in loaded(agent) and "noisy" in skipped(agent)


class InlineRegistry:
    """An inline plugin: never filtered, so the agent has a registry backend."""

    @hookimpl
    def mlflow_agent_register_strategies(self, register: Any) -> None:
        register("registry", "inline", _NoRegistry)


class _NoRegistry:
    def __init__(self, *, agent: Any, options: Any) -> None:
        pass

    def supports(self, model: object) -> bool:
        return False

    def register_model(self, model: Any, name: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def promote(self, name: str, version: str, **kwargs: Any) -> Any:
        raise NotImplementedError


def inline_agent(config: dict[str, Any], **sections: Any) -> Any:
    merged = {**config, "registry": {"backend": "inline"}, **sections}
    return MLFlowAgent(config=merged, plugins=[InlineRegistry()])


@pytest.mark.usefixtures("two_plugins", "agent_factory")
def test_empty_allow_list_loads_only_the_builtins(
    agent_config: dict[str, Any],
) -> None:
    agent = inline_agent(agent_config, plugins={"allow": []})

    assert loaded(agent) == {
        "builtin.configuration", "builtin.tracking", "builtin.registry",
        "builtin.client", "inline.InlineRegistry",
    }
    assert {"listed", "noisy", "pytorch", "sklearn"} <= skipped(agent)


@pytest.mark.usefixtures("two_plugins", "agent_factory")
def test_empty_allow_list_from_the_environment(
    agent_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_AGENT_PLUGINS_ALLOW", "")

    agent = inline_agent(agent_config)

    assert all(
        name.startswith(("builtin.", "inline.")) for name in loaded(agent)
    )
    assert {"listed", "noisy", "pytorch", "sklearn"} <= skipped(agent)


@pytest.mark.usefixtures("two_plugins")
def test_block_list_from_the_environment(
    agent_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_AGENT_PLUGINS_BLOCK", "noisy, mlflow-agent-sklearn")

    agent = agent_factory()

    assert {"listed", "pytorch"} <= loaded(agent)
    assert {"noisy", "sklearn"} <= skipped(agent)


@pytest.mark.usefixtures("two_plugins")
def test_block_wins_over_allow(
    agent_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_AGENT_PLUGINS_ALLOW", "listed,noisy,pytorch")

    agent = agent_factory(plugins={"block": ["noisy"]})

    assert "noisy" in skipped(agent) and "listed" in loaded(agent)


@pytest.mark.usefixtures("two_plugins")
def test_selecting_a_backend_of_a_plugin_kept_out_says_so(
    agent_factory: Any,
) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_factory(
            plugins={"block": ["listed", "noisy"]}, registry={"backend": "listed"}
        )

    message = str(caught.value)
    assert "registry.backend" in message and "'listed'" in message
    assert "not allowed by the plugins allow/block lists" in message


def test_without_lists_every_installed_plugin_loads(agent_factory: Any) -> None:
    agent = agent_factory()

    assert {"pytorch", "sklearn"} <= loaded(agent)
    assert agent.plugins.skipped == []


TRACED_SCRIPT = """
    import sys
    from mlflow_agent_core import MLFlowAgent, hookimpl

    class Counter:
        @hookimpl
        def mlflow_agent_run_finished(self, run, status):
            return f"counted {{status}}"

    agent = MLFlowAgent(
        config={{"configuration": {{"tracking_uri": "{store}", "experiment": "t"}},
                 "tracking": {{"spool_dir": "{spool}"}}}},
        plugins=[Counter()],
    )
    with agent.start_run(run_name="traced", params={{"lr": 0.5}}):
        agent.log_metric("loss", 1.5)
    MLFlowAgent.reset()
    print("done")
"""


def run_traced(tmp_path: Path, trace: str | None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "traced.py"
    script.write_text(
        textwrap.dedent(TRACED_SCRIPT).format(
            store=f"sqlite:///{tmp_path / 'mlflow.db'}", spool=tmp_path / "spool"
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AGENT_TRACE"}
    if trace is not None:
        env["MLFLOW_AGENT_TRACE"] = trace
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env,
        timeout=120, cwd=tmp_path,
    )


def test_trace_prints_every_hook_call_with_arguments_and_results(
    tmp_path: Path,
) -> None:
    result = run_traced(tmp_path, "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    trace = [
        line for line in result.stderr.splitlines()
        if line.startswith("mlflow-agent trace: ")
    ]
    text = "\n".join(trace)
    assert "call mlflow_agent_register_strategies(register=" in text
    assert "builtin.tracking registered tracking backend 'mlflow'" in text
    assert "call mlflow_agent_run_started(agent=" in text
    assert "run=Run(run_id=" in text and "run_name='traced'" in text
    assert "call mlflow_agent_run_finished(" in text and "status='FINISHED'" in text
    assert "mlflow_agent_run_finished returned ['counted FINISHED']" in text


class Echo:
    @hookimpl
    def mlflow_agent_run_started(self, run: Any) -> str:
        return f"saw {run.run_name}"


def start_on_a_host(run_name: str) -> None:
    host = PluginHost(extra_plugins=[Echo()])
    run = Run(run_id="r1", experiment_id="0", run_name=run_name)
    host.run_started(agent=None, run=run)  # type: ignore[arg-type]


def test_trace_in_process_goes_to_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_AGENT_TRACE", "1")

    start_on_a_host("in-process")

    err = capsys.readouterr().err
    assert "trace: call mlflow_agent_run_started(agent=None, run=Run(" in err
    assert "-> [inline.Echo]" in err
    assert "mlflow_agent_run_started returned ['saw in-process']" in err


@pytest.mark.parametrize("value", [None, "0", ""])
def test_no_trace_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str | None,
) -> None:
    if value is not None:
        monkeypatch.setenv("MLFLOW_AGENT_TRACE", value)

    start_on_a_host("quiet")

    assert "mlflow-agent trace" not in capsys.readouterr().err
