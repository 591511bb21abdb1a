"""An example mlflow-agent plugin.

It adds a ``run_finished`` hook that tags every run with a one-line summary, and a
``jsonl`` tracking backend that writes runs to a local JSON-lines file instead of
MLflow. The hook implementations live in :mod:`mlflow_agent_example.plugin`, the
entry point of this distribution.
"""

from __future__ import annotations

__version__ = "0.1.0"
