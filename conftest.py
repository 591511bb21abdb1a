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
