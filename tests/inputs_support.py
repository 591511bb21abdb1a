"""Reading back what the agent stored, for the tests/test_inputs_*.py modules.

Every check goes through a plain ``MlflowClient`` on the agent's own tracking URI,
so what is asserted is what MLflow holds, not what the agent believes it sent.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from mlflow import MlflowClient
from mlflow.entities import Run as StoredRun

# One agent per test function serves every example; the store grows, which is fine.
THROUGH_AGENT = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FLUSH_TIMEOUT = 60.0
# A server's first answers are slow while each worker opens its store; on a busy
# machine that exceeds the tracking backend's default 3-second probe.
PATIENT_PROBE = {"tracking": {"probe_timeout": 30.0}}


def store(agent: Any) -> MlflowClient:
    return MlflowClient(agent.configuration.tracking_uri)


def stored_run(agent: Any, run_id: str) -> StoredRun:
    """The run as MLflow holds it, after everything queued was sent."""
    assert agent.flush(FLUSH_TIMEOUT), "the agent could not flush in time"
    return store(agent).get_run(run_id)


def history(agent: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every stored point of metric ``key``, ordered by step."""
    assert agent.flush(FLUSH_TIMEOUT), "the agent could not flush in time"
    points = store(agent).get_metric_history(run_id, key)
    return sorted((point.step, point.value) for point in points)


def same_float(a: float, b: float) -> bool:
    """Equality that treats NaN as equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def run_ids(agent: Any) -> list[str]:
    """Every run of the agent's experiment."""
    client = store(agent)
    experiment = client.get_experiment_by_name(agent.configuration.experiment)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [run.info.run_id for run in runs]
