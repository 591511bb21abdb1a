"""The typed contract of each concern's strategy.

A backend registered for a concern must provide the methods of that concern's
protocol; the agent checks this when it builds the strategy and raises
:class:`~mlflow_agent_core.errors.PluginError` naming what is missing.

Strategies do I/O; the agent does the bookkeeping. Values reaching a tracking
strategy were already validated and normalized on the caller's thread, and the
agent, not the strategy, keeps track of which run is active.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

__all__ = [
    "ClientStrategy",
    "ConfigurationStrategy",
    "MetricPoint",
    "RegistryStrategy",
    "Run",
    "TrackingStrategy",
]


@dataclass(frozen=True)
class Run:
    """A run started through the agent. ``run_id`` is MLflow's run id."""

    run_id: str
    experiment_id: str
    run_name: str | None = None
    parent_run_id: str | None = None


@dataclass(frozen=True)
class MetricPoint:
    """One metric value, stamped on the caller's thread when it was logged.

    ``timestamp`` is in milliseconds since the epoch, as MLflow stores it.
    """

    key: str
    value: float
    timestamp: int
    step: int


@runtime_checkable
class ConfigurationStrategy(Protocol):
    """Where MLflow lives: tracking and registry URIs, experiment, credentials."""

    @property
    def tracking_uri(self) -> str:
        """The resolved tracking URI (relative sqlite paths made absolute)."""

    @property
    def registry_uri(self) -> str:
        """The resolved registry URI (the tracking URI unless configured)."""

    @property
    def experiment(self) -> str:
        """The name of the experiment new runs go to."""

    def set_tracking_uri(self, uri: str) -> None:
        """Validate, resolve and apply a new tracking URI."""


@runtime_checkable
class TrackingStrategy(Protocol):
    """Runs, params, metrics, tags and artifacts."""

    def start_run(
        self, *, run_name: str | None, tags: Mapping[str, str], parent: Run | None
    ) -> Run:
        """Create a run (a child of ``parent`` when given) and return it."""

    def end_run(self, run: Run, status: str) -> None:
        """Flush what is queued for ``run``, then end it with ``status``."""

    def log_params(self, run: Run, params: Mapping[str, str]) -> None:
        """Store params; values are canonical strings within MLflow's limits."""

    def log_metrics(self, run: Run, points: Sequence[MetricPoint]) -> None:
        """Store metric points, keeping each point's timestamp and step."""

    def set_tags(self, run: Run, tags: Mapping[str, str]) -> None:
        """Set tags on ``run``."""

    def log_artifact(
        self, run: Run, local_path: str, artifact_path: str | None = None
    ) -> None:
        """Upload a local file or directory as an artifact of ``run``."""

    def log_text(self, run: Run, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` of ``run``."""

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued; return False if ``timeout`` ran out first."""

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` and release resources; keep what is unsent."""


@runtime_checkable
class RegistryStrategy(Protocol):
    """Registering and promoting models."""

    def supports(self, model: object) -> bool:
        """Whether this backend can register ``model`` (used by ``backend: auto``)."""

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        run: Run | None,
        input_example: Any = None,
        tags: Mapping[str, str] | None = None,
        **backend_kwargs: Any,
    ) -> ModelVersion:
        """Log ``model`` and register it as a new version of ``name``.

        The version is linked to ``run`` when one is given.
        """

    def promote(
        self, name: str, version: str, *, alias: str | None = None,
        stage: str | None = None,
    ) -> ModelVersion:
        """Point ``alias`` and/or move ``stage`` to ``version``."""


@runtime_checkable
class ClientStrategy(Protocol):
    """Finding model versions and loading models."""

    def get_model(
        self,
        name: str,
        *,
        version: str | int | None = None,
        alias: str | None = None,
        model_stage: str | None = None,
    ) -> ModelVersion:
        """Resolve one version; :class:`ModelNotFoundError` if there is none."""

    def load_model(self, uri: str, *, allow_pickle: bool | None = None) -> Any:
        """Load the model behind a ``models:/`` URI."""

    def list_models(self) -> Sequence[RegisteredModel]:
        """Every registered model."""

    def list_versions(self, name: str) -> Sequence[ModelVersion]:
        """Every version of the registered model ``name``."""
