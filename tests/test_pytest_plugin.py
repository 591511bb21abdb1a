"""The pytest plugin shipped with the core: cheap to load, isolating fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from mlflow_agent_core import MLFlowAgent
from mlflow_agent_core.pytest_plugin import merge_config


def test_it_is_registered_through_the_pytest11_entry_point(
    pytestconfig: pytest.Config,
) -> None:
    (entry_point,) = [
        ep for ep in metadata.entry_points(group="pytest11")
        if ep.name == "mlflow_agent"
    ]

    assert entry_point.value == "mlflow_agent_core.pytest_plugin"
    assert pytestconfig.pluginmanager.has_plugin("mlflow_agent")


def test_importing_it_loads_no_mlflow_and_no_agent() -> None:
    code = (
        "import sys\n"
        "import mlflow_agent_core.pytest_plugin\n"
        "print([m for m in ('mlflow', 'requests', 'mlflow_agent_core.agent',"
        " 'mlflow_agent_core.plugins') if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_mlflow_agent_is_the_process_agent_on_a_temporary_store(
    mlflow_agent: MLFlowAgent, mlflow_agent_store: str, tmp_path: Path
) -> None:
    assert MLFlowAgent.current() is mlflow_agent
    assert mlflow_agent.configuration.tracking_uri == mlflow_agent_store
    assert mlflow_agent_store.startswith(f"sqlite:///{tmp_path}")

    with mlflow_agent.start_run(run_name="fixture") as run:
        mlflow_agent.log_metric("x", 1.0)
    assert run.run_id


def test_merge_config_replaces_a_section_whose_backend_changes() -> None:
    base = {
        "tracking": {"backend": "mlflow", "spool_dir": "/s"},
        "configuration": {"backend": "mlflow", "experiment": "a"},
    }

    merged = merge_config(
        base,
        {"tracking": {"backend": "jsonl", "path": "x"},
         "configuration": {"experiment": "b"}},
    )

    assert merged["tracking"] == {"backend": "jsonl", "path": "x"}
    assert merged["configuration"] == {"backend": "mlflow", "experiment": "b"}
    assert base["configuration"]["experiment"] == "a"


SESSION = '''
    import os
    import mlflow
    from mlflow_agent_core import MLFlowAgent, hookimpl

    seen = []
    stores = []

    class Seen:
        @hookimpl
        def mlflow_agent_run_started(self, run):
            seen.append(run.run_name)

    def test_first_uses_the_agent(mlflow_agent, mlflow_agent_store):
        with mlflow_agent.start_run(run_name="one"):
            pass
        assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_agent_store
        stores.append(mlflow_agent_store)

    def test_then_nothing_is_left_behind():
        assert MLFlowAgent.current() is None
        assert "MLFLOW_TRACKING_URI" not in os.environ
        assert mlflow.get_tracking_uri() != stores[0]

    def test_an_inline_plugin_for_one_test(mlflow_agent_plugin, tmp_path):
        agent = mlflow_agent_plugin(
            Seen(), config={"configuration": {"experiment": "inline"}}
        )
        with agent.start_run(run_name="two"):
            pass
        assert seen == ["two"]
        assert agent.configuration.experiment == "inline"

    def test_the_inline_plugin_is_gone():
        assert MLFlowAgent.current() is None
'''


def test_the_fixtures_isolate_tests_in_a_fresh_session(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(textwrap.dedent(SESSION))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "test_session.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout


def test_the_fixture_names_do_not_clash_with_this_projects(
    pytestconfig: pytest.Config,
) -> None:
    from tests import conftest

    plugin = pytestconfig.pluginmanager.get_plugin("mlflow_agent")
    ours = {
        "mlflow_agent", "mlflow_agent_store", "mlflow_agent_config",
        "mlflow_agent_plugin", "mlflow_agent_server",
    }

    assert ours <= set(vars(plugin))
    assert not ours & set(vars(conftest))
