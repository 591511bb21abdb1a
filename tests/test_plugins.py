"""Plugin discovery and the hook contract, through real entry points."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core import (
    ConfigError,
    MLFlowAgent,
    PluginError,
    RunStateError,
    hookimpl,
)
from tests.distributions import make_distribution

REGISTRY_PLUGIN = """
from mlflow_agent_core import hookimpl

class RecordingRegistry:
    def __init__(self, *, agent, options):
        self.agent = agent
        self.options = dict(options)

    def supports(self, model):
        return True

    def register_model(self, model, name, *, run, input_example=None, tags=None,
                       **kwargs):
        raise NotImplementedError

    def promote(self, name, version, *, alias=None, stage=None):
        raise NotImplementedError

@hookimpl
def mlflow_agent_register_strategies(register):
    register("registry", "recording", RecordingRegistry)
"""


@pytest.fixture(autouse=True)
def _no_agent_left() -> Any:
    MLFlowAgent.reset()
    yield
    MLFlowAgent.reset()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    dist: str = "mlflow-agent-recording",
    entry_point: str = "recording",
) -> str:
    """Put a one-module distribution on sys.path; return its module name."""
    module = unique("mlflow_agent_testplugin")
    root = make_distribution(
        tmp_path / unique("site"),
        dist,
        modules={f"{module}.py": source},
        entry_points={entry_point: module},
    )
    monkeypatch.syspath_prepend(str(root))
    return module


def test_installed_plugin_replaces_the_registry_backend_with_its_options(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_config: dict[str, Any],
) -> None:
    module = install(tmp_path, monkeypatch, REGISTRY_PLUGIN)
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(
        "configuration:\n"
        f"  tracking_uri: {agent_config['configuration']['tracking_uri']}\n"
        "registry:\n"
        "  backend: recording\n"
        "  bucket: models-prod\n"
        "  retries: 3\n"
    )

    agent = MLFlowAgent.from_yaml(config_file)
    try:
        assert type(agent.registry).__module__ == module
        assert agent.registry.options == {"bucket": "models-prod", "retries": 3}
        assert agent.registry.agent is agent
        labels = {info.name: info.label for info in agent.plugins.plugins()}
        assert "mlflow-agent-recording 1.0.0" in labels["recording"]
    finally:
        MLFlowAgent.reset()


def test_plugin_that_fails_to_import_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> None:
    install(
        tmp_path, monkeypatch, "import a_module_that_is_not_there\n",
        dist="mlflow-agent-broken", entry_point="broken",
    )

    with pytest.raises(PluginError) as caught:
        agent_factory()

    message = str(caught.value)
    assert "broken" in message
    assert "mlflow-agent-broken 1.0.0" in message
    assert "a_module_that_is_not_there" in message
    assert "block" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_two_plugins_registering_the_same_backend_are_both_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> None:
    install(tmp_path, monkeypatch, REGISTRY_PLUGIN, "mlflow-agent-one", "one")
    install(tmp_path, monkeypatch, REGISTRY_PLUGIN, "mlflow-agent-two", "two")

    with pytest.raises(PluginError) as caught:
        agent_factory()

    message = str(caught.value)
    assert "mlflow-agent-one" in message and "mlflow-agent-two" in message
    assert "'recording'" in message


def test_blocked_plugin_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> None:
    install(
        tmp_path, monkeypatch, "raise RuntimeError('must not be imported')\n",
        dist="mlflow-agent-noisy", entry_point="noisy",
    )

    agent = agent_factory(plugins={"block": ["mlflow-agent-noisy"]})

    assert "noisy" not in {info.name for info in agent.plugins.plugins()}
    assert "noisy" in {info.name for info in agent.plugins.skipped}


def test_unknown_backend_lists_what_is_installed(agent_factory: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_factory(client={"backend": "nonexistent"})

    message = str(caught.value)
    assert "client.backend" in message
    assert "'nonexistent'" in message
    assert "'mlflow' from builtin.client (mlflow-agent-core (built-in))" in message


def test_unknown_backend_in_yaml_points_at_the_line(
    tmp_path: Path, agent_config: dict[str, Any]
) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(
        "configuration:\n"
        f"  tracking_uri: {agent_config['configuration']['tracking_uri']}\n"
        "tracking:\n"
        "  backend: kafka\n"
    )

    with pytest.raises(ConfigError) as caught:
        MLFlowAgent.from_yaml(config_file)

    assert str(caught.value).startswith(f"{config_file}:4:")


class BadConcern:
    @hookimpl
    def mlflow_agent_register_strategies(self, register: Any) -> None:
        register("storage", "s3", object)


class NotCallable:
    @hookimpl
    def mlflow_agent_register_strategies(self, register: Any) -> None:
        register("client", "broken", "not a factory")


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (BadConcern(), "concern must be one of configuration, tracking"),
        (NotCallable(), "the factory must be callable"),
    ],
)
def test_bad_registrations_are_rejected(
    agent_config: dict[str, Any], plugin: object, expected: str
) -> None:
    with pytest.raises(PluginError, match=expected):
        MLFlowAgent(config=agent_config, plugins=[plugin])


def test_hook_with_unknown_argument_is_rejected(
    agent_config: dict[str, Any]
) -> None:
    class WrongArgument:
        @hookimpl
        def mlflow_agent_run_started(self, agent: Any, experiment: Any) -> None:
            pass

    with pytest.raises(PluginError, match="experiment"):
        MLFlowAgent(config=agent_config, plugins=[WrongArgument()])


def test_misspelled_hook_is_rejected(agent_config: dict[str, Any]) -> None:
    class Misspelled:
        @hookimpl
        def mlflow_agent_run_startd(self, run: Any) -> None:
            pass

    with pytest.raises(PluginError, match="mlflow_agent_run_startd"):
        MLFlowAgent(config=agent_config, plugins=[Misspelled()])


def test_strategy_missing_contract_methods_is_rejected(
    agent_config: dict[str, Any]
) -> None:
    class HalfClient:
        def __init__(self, *, agent: Any, options: Any) -> None:
            pass

        def get_model(self, name: str, **kwargs: Any) -> None:
            pass

    class Provides:
        @hookimpl
        def mlflow_agent_register_strategies(self, register: Any) -> None:
            register("client", "half", HalfClient)

    config = {**agent_config, "client": {"backend": "half"}}
    with pytest.raises(PluginError, match="lacks list_models, list_versions, "
                       "load_model required by ClientStrategy"):
        MLFlowAgent(config=config, plugins=[Provides()])


def test_fan_out_hooks_reach_every_plugin_with_the_arguments_they_ask_for(
    agent_config: dict[str, Any]
) -> None:
    calls: list[tuple[str, Any]] = []

    class OnlyRun:
        @hookimpl
        def mlflow_agent_run_started(self, run: Any) -> None:
            calls.append(("started", run.run_id))

    class Everything:
        @hookimpl
        def mlflow_agent_run_started(self, agent: Any, run: Any) -> None:
            calls.append(("started-with-agent", agent is MLFlowAgent.current()))

        @hookimpl
        def mlflow_agent_run_finished(self, status: str, run: Any) -> None:
            calls.append(("finished", status))

    agent = MLFlowAgent(config=agent_config, plugins=[OnlyRun(), Everything()])
    try:
        with agent.start_run(run_name="hooks") as run:
            pass
    finally:
        MLFlowAgent.reset()

    assert ("started", run.run_id) in calls
    assert ("started-with-agent", True) in calls
    assert calls[-1] == ("finished", "FINISHED")


def test_importing_the_package_loads_no_mlflow_torch_or_plugins() -> None:
    code = (
        "import sys, mlflow_agent_core\n"
        "from mlflow_agent_core import MLFlowAgent, hookimpl\n"
        "heavy = [m for m in ('mlflow', 'torch', 'sklearn', 'mlflow_agent_pytorch',"
        " 'mlflow_agent_core.default_plugins.tracking') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_hook_that_raises_is_a_plugin_error_and_the_run_ends_failed(
    agent_config: dict[str, Any]
) -> None:
    class Exploding:
        @hookimpl
        def mlflow_agent_run_started(self, run: Any) -> None:
            raise RuntimeError("exploded in run_started")

    agent = MLFlowAgent(config=agent_config, plugins=[Exploding()])
    with pytest.raises(PluginError) as caught:
        agent.start_run(run_name="hooked")

    message = str(caught.value)
    assert "inline.Exploding" in message
    assert "mlflow_agent_run_started" in message
    assert "exploded in run_started" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert agent.active_run is None
    agent.flush()
    from mlflow import MlflowClient

    client = MlflowClient(agent.configuration.tracking_uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name(agent.configuration.experiment).experiment_id]
    )
    assert run.info.run_name == "hooked" and run.info.status == "FAILED"


def test_an_agent_after_reset_refuses_to_work(agent_config: dict[str, Any]) -> None:
    agent = MLFlowAgent(config=agent_config)
    MLFlowAgent.reset()

    with pytest.raises(RunStateError, match="MLFlowAgent.reset"):
        agent.start_run(run_name="zombie")
    with pytest.raises(RunStateError, match="MLFlowAgent.reset"):
        agent.log_metric("loss", 1.0)
