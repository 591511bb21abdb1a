"""The hook implementations of the example plugin (its entry point).

``mlflow_agent_run_started`` notes when a run starts; ``mlflow_agent_run_finished``
tags the run with ``example.summary`` (its status and duration);
``mlflow_agent_model_registered`` logs a line per new model version; and
``mlflow_agent_register_strategies`` offers the ``jsonl`` tracking backend.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from mlflow_agent_core import hookimpl

from .jsonl import JsonlTracking

if TYPE_CHECKING:
    from mlflow_agent_core import MLFlowAgent
    from mlflow_agent_core.contracts import Run
    from mlflow_agent_core.hookspecs import Register

logger = logging.getLogger(__name__)

SUMMARY_TAG = "example.summary"

# Start times by run id; runs may start and end on different threads.
_started: dict[str, float] = {}
_lock = threading.Lock()


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("tracking", "jsonl", JsonlTracking)


@hookimpl
def mlflow_agent_run_started(run: Run) -> None:
    with _lock:
        _started[run.run_id] = time.monotonic()


@hookimpl
def mlflow_agent_run_finished(agent: MLFlowAgent, run: Run, status: str) -> None:
    with _lock:
        started = _started.pop(run.run_id, None)
    summary = status if started is None else (
        f"{status} after {time.monotonic() - started:.1f} s"
    )
    # The run has ended, but MLflow still accepts tags on it; going through the
    # tracking backend keeps the tag in its queue (and spool) with the rest.
    agent.tracking.set_tags(run, {SUMMARY_TAG: summary})
    logger.info("Run %s: %s", run.run_id, summary)


@hookimpl
def mlflow_agent_model_registered(model_version: Any) -> None:
    logger.info(
        "Registered %s version %s", model_version.name, model_version.version
    )
