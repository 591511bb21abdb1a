"""A real ``mlflow server`` on a free loopback port, for tests and benchmarks.

The implementation ships with the package (``mlflow_agent_core.testing``) so that
the pytest plugin offered to plugin authors and this project's tests share it.
"""

from __future__ import annotations

from mlflow_agent_core.testing import (
    STARTUP_TIMEOUT,
    MlflowServer,
    free_port,
    quiet_mlflow_env,
)

__all__ = ["STARTUP_TIMEOUT", "MlflowServer", "free_port", "quiet_mlflow_env"]
