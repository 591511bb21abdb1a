"""Settings for every test of the repository, the plugins' own tests included."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from mlflow_agent_core.testing import quiet_mlflow_env

# Nothing leaves the machine, and a dead server fails fast instead of retrying.
os.environ.update(
    {k: v for k, v in quiet_mlflow_env().items() if k.startswith("MLFLOW_")}
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_AGENT_CONFIG", None)

# The default spool lives under the user's cache folder; tests that do not set
# tracking.spool_dir must not leave spools there.
_CACHE = tempfile.mkdtemp(prefix="mlflow-agent-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _mlflow_uri_variables_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow exports ``set_tracking_uri`` to the environment; undo it per test,
    so that one test's server or store never reaches the next one's subprocesses.
    """
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
