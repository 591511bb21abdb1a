"""mlflow-agent: one small, stable interface between training code and MLflow.

``from mlflow_agent_core import MLFlowAgent`` is all training code needs. Importing
the package is cheap: MLflow, plugins and their dependencies load when an agent is
built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AgentError,
    AuthError,
    ConfigError,
    InvalidInputError,
    ModelNotFoundError,
    ParamConflictError,
    PluginError,
    RunStateError,
    ServerUnavailableError,
    UnsafeModelError,
)
from .hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from .agent import ActiveRun, MLFlowAgent, SingletonMeta

__all__ = [
    "ActiveRun",
    "AgentError",
    "AuthError",
    "ConfigError",
    "InvalidInputError",
    "MLFlowAgent",
    "ModelNotFoundError",
    "ParamConflictError",
    "PluginError",
    "RunStateError",
    "ServerUnavailableError",
    "SingletonMeta",
    "UnsafeModelError",
    "hookimpl",
    "hookspec",
]

_FROM_AGENT = ("ActiveRun", "MLFlowAgent", "SingletonMeta")


def __getattr__(name: str) -> Any:
    # The agent module pulls in YAML and the validators; load it on first use.
    if name in _FROM_AGENT:
        from . import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'mlflow_agent_core' has no attribute {name!r}")
