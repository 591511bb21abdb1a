"""The class names of the original design, kept as thin entry points onto the agent.

Code written against the original design runs unchanged apart from the package
name::

    import mlflow_agent_core.client as mlflow_client

    mlflow_client.MLFlowConfiguration.set_tracking_uri("http://localhost:5001")
    client = mlflow_client.MLFlowClient()
    client.get_model("Pytorch_Model", model_stage="Production")

Each class talks to the process's :class:`~mlflow_agent_core.MLFlowAgent`,
building it from ``MLFLOW_AGENT_CONFIG``, ``./agent.yaml`` or the defaults when
none exists yet. New code should use the agent directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .agent import ActiveRun, MLFlowAgent

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "MLFlowClient",
    "MLFlowConfiguration",
    "MLFlowModelRegistry",
    "MLFlowTracking",
]


def _agent() -> MLFlowAgent:
    return MLFlowAgent.current() or MLFlowAgent()


class MLFlowConfiguration:
    """Where MLflow lives: ``agent.configuration`` under its original name."""

    @staticmethod
    def set_tracking_uri(uri: str) -> None:
        """Point the agent, and plain ``mlflow`` calls, at ``uri``."""
        _agent().configuration.set_tracking_uri(uri)

    @staticmethod
    def get_tracking_uri() -> str:
        """The resolved tracking URI."""
        return _agent().configuration.tracking_uri


class MLFlowTracking:
    """Runs, params and metrics through the agent."""

    def __init__(self) -> None:
        self.agent = _agent()

    def start_run(
        self,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
    ) -> ActiveRun:
        return self.agent.start_run(run_name, params=params, tags=tags, nested=nested)

    def end_run(self, status: str = "FINISHED") -> None:
        self.agent.end_run(status)

    def log_param(self, key: str, value: Any) -> None:
        self.agent.log_param(key, value)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.agent.log_params(params)

    def log_metric(self, key: str, value: Any, step: Any = None) -> None:
        self.agent.log_metric(key, value, step)

    def log_metrics(self, metrics: Mapping[str, Any], step: Any = None) -> None:
        self.agent.log_metrics(metrics, step)


class MLFlowModelRegistry:
    """Registering and promoting models through the agent."""

    def __init__(self) -> None:
        self.agent = _agent()

    def register_model(
        self, model: Any, name: str, *, input_example: Any = None, **kwargs: Any
    ) -> ModelVersion:
        return self.agent.register_model(
            model, name, input_example=input_example, **kwargs
        )

    def promote(
        self,
        name: str,
        version: str | int,
        *,
        alias: str | None = None,
        stage: str | None = None,
    ) -> ModelVersion:
        return self.agent.promote(name, version, alias=alias, stage=stage)


class MLFlowClient:
    """Finding model versions and loading models through the agent."""

    def __init__(self) -> None:
        self.agent = _agent()

    def get_model(
        self,
        name: str,
        version: str | int | None = None,
        alias: str | None = None,
        model_stage: str | None = None,
    ) -> ModelVersion:
        return self.agent.get_model(
            name, version=version, alias=alias, model_stage=model_stage
        )

    def load_model(self, uri: str, *, allow_pickle: bool | None = None) -> Any:
        return self.agent.load_model(uri, allow_pickle=allow_pickle)
