"""The context class: the one interface between training code and MLflow.

:class:`MLFlowAgent` is a process-wide singleton. It validates every value on the
caller's thread, keeps track of the active runs, and hands the work to the four
strategies that ``agent.yaml`` selects.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from .config import AgentConfig, config_from_dict, load_config
from .contracts import (
    ClientStrategy,
    ConfigurationStrategy,
    RegistryStrategy,
    Run,
    TrackingStrategy,
)
from .errors import (
    AgentError,
    ConfigError,
    InvalidInputError,
    PluginError,
    RunStateError,
)
from .plugins import PluginFilter, PluginHost
from .validation import InputPolicy, InputValidator, overflow_artifact

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from .checks import ConfigReport

logger = logging.getLogger(__name__)

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


class SingletonMeta(type):
    """Makes a class hold one instance per process, created under a lock.

    Calling the class again returns that instance; the class decides through
    ``_check_same_config`` whether the new arguments are compatible with it.
    """

    _instances: ClassVar[dict[type, Any]] = {}
    _lock: ClassVar[threading.RLock] = threading.RLock()

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        with SingletonMeta._lock:
            instance = SingletonMeta._instances.get(cls)
            if instance is None:
                instance = super().__call__(*args, **kwargs)
                SingletonMeta._instances[cls] = instance
                return instance
        instance._check_same_config(*args, **kwargs)
        return instance

    def _drop(cls) -> Any:
        with SingletonMeta._lock:
            return SingletonMeta._instances.pop(cls, None)

    def _current(cls) -> Any:
        return SingletonMeta._instances.get(cls)


class _RunState:
    """What the agent remembers about one open run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.params: dict[str, str] = {}
        self.lock = threading.Lock()


class ActiveRun:
    """The handle ``start_run`` returns; a context manager that ends the run.

    Leaving the ``with`` block normally ends the run FINISHED, an exception ends it
    FAILED, and ``KeyboardInterrupt`` ends it KILLED.
    """

    def __init__(self, agent: MLFlowAgent, run: Run) -> None:
        self._agent = agent
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def experiment_id(self) -> str:
        return self.run.experiment_id

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._agent._end_run(self.run, status)

    def __repr__(self) -> str:
        return f"<ActiveRun run_id={self.run_id!r} name={self.run.run_name!r}>"


class MLFlowAgent(metaclass=SingletonMeta):
    """The single interface from training code to MLflow.

    Build it from ``agent.yaml`` with :meth:`from_yaml`, from a dict with the same
    schema with ``MLFlowAgent(config=...)``, or with no argument to use
    ``MLFLOW_AGENT_CONFIG``, ``./agent.yaml`` or the built-in defaults, in that
    order. Asking again with the same config returns the same instance; a
    different config raises :class:`ConfigError` until :meth:`reset` is called.

    ``plugins`` adds plugin objects (modules or instances with hook
    implementations) to this agent only, beside the installed ones.
    """

    configuration: ConfigurationStrategy
    tracking: TrackingStrategy
    registry: RegistryStrategy
    client: ClientStrategy

    def __init__(
        self,
        config: Mapping[str, Any] | AgentConfig | None = None,
        *,
        plugins: Iterable[object] = (),
    ) -> None:
        self.config = _as_config(config)
        self._runs: list[_RunState] = []
        self._runs_lock = threading.RLock()
        self._closed = False

        self.plugins = PluginHost(
            plugin_filter=PluginFilter.from_sources(
                self.config.allow, self.config.block
            ),
            extra_plugins=plugins,
        )
        self.inputs = InputValidator(self.config.options("inputs").parse(InputPolicy))

        # Configuration first: the other strategies read URIs from it.
        self.configuration = self._build("configuration", ConfigurationStrategy)
        self.tracking = self._build("tracking", TrackingStrategy)
        self.registry = self._build("registry", RegistryStrategy)
        self.client = self._build("client", ClientStrategy)
        _register_exit_handler()
        logger.info(
            "mlflow-agent ready: tracking %s, experiment %r (config from %s)",
            self.configuration.tracking_uri,
            self.configuration.experiment,
            self.config.source,
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> MLFlowAgent:
        """The agent configured by the YAML file at ``path``."""
        agent: MLFlowAgent = cls(config=load_config(path))
        return agent

    @classmethod
    def check_config(
        cls,
        config: Mapping[str, Any] | AgentConfig | None = None,
        *,
        plugins: Iterable[object] = (),
    ) -> ConfigReport:
        """Check a configuration without building an agent or contacting a server.

        Loads the plugins it allows, resolves every backend and has each one check
        its options; the report lists every problem (``report.ok``, ``.errors``).
        Errors loading the configuration itself are raised as ConfigError.
        """
        from .checks import check_config

        return check_config(_as_config(config), plugins=plugins)

    @classmethod
    def current(cls) -> MLFlowAgent | None:
        """The agent of this process, or None when none was built yet."""
        agent: MLFlowAgent | None = type(cls)._current(cls)
        return agent

    @classmethod
    def reset(cls, timeout: float | None = None) -> None:
        """Drop the agent of this process, ending its open runs and flushing.

        The next ``MLFlowAgent(...)`` builds a new one. Meant for tests and
        notebooks that need a different configuration.
        """
        agent: MLFlowAgent | None = type(cls)._drop(cls)
        if agent is not None:
            agent.close(timeout=timeout)

    def _check_same_config(
        self,
        config: Mapping[str, Any] | AgentConfig | None = None,
        *,
        plugins: Iterable[object] = (),
    ) -> None:
        if config is None and not plugins:
            return
        requested = _as_config(config)
        if requested != self.config or plugins:
            raise ConfigError(
                "an MLFlowAgent already exists in this process with a different "
                f"configuration (from {self.config.source}); call "
                "MLFlowAgent.reset() first to replace it",
                source=requested.source,
            )

    def _build(self, concern: str, contract: type) -> Any:
        backend = self.config.backend(concern)
        registration = self.plugins.resolve(
            concern, backend, self.config.position((concern, "backend"))
        )
        options = self.config.options(concern)
        try:
            strategy = registration.factory(agent=self, options=options)
        except AgentError:
            raise
        except Exception as exc:
            raise PluginError(
                f"the {concern} backend {backend!r} of {registration.plugin.label} "
                f"failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        missing = _missing_members(strategy, contract)
        if missing:
            raise PluginError(
                f"the {concern} backend {backend!r} of {registration.plugin.label} "
                f"built a {type(strategy).__name__}, which lacks "
                f"{', '.join(missing)} required by {contract.__name__}"
            )
        return strategy

    # Runs

    @property
    def active_run(self) -> Run | None:
        """The innermost open run, or None."""
        runs = self._runs
        return runs[-1].run if runs else None

    def start_run(
        self,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
    ) -> ActiveRun:
        """Start a run; use it as ``with agent.start_run() as run:``.

        ``params`` and ``tags`` are validated before the run is created. With a
        run already open, ``nested=True`` starts a child run of it; otherwise
        :class:`RunStateError` names the open run.
        """
        self._check_open()
        name = self.inputs.run_name(run_name)
        batch = self.inputs.params(params or {})
        clean_tags = self.inputs.tags(tags or {})

        with self._runs_lock:
            parent = self.active_run
            if parent is not None and not nested:
                raise RunStateError(
                    f"run {parent.run_id} ({parent.run_name or 'unnamed'}) is still "
                    "active. End it with agent.end_run(), or pass nested=True to "
                    "start a child run"
                )
            run = self.tracking.start_run(
                run_name=name, tags=clean_tags, parent=parent
            )
            state = _RunState(run)
            self._runs.append(state)

        if batch.values:
            self._log_param_batch(state, batch.values, batch.overflow)
        logger.info("Started run %s (%s)", run.run_id, run.run_name or "unnamed")
        try:
            self.plugins.run_started(self, run)
        except PluginError:
            # The caller never gets the run, so it cannot end it: end it here.
            self._end_run(run, "FAILED")
            raise
        return ActiveRun(self, run)

    def end_run(self, status: str = "FINISHED") -> None:
        """End the innermost open run with ``status``; no-op without one."""
        if status not in RUN_STATUSES:
            raise InvalidInputError(
                f"end_run status {status!r} is not one of {', '.join(RUN_STATUSES)}"
            )
        run = self.active_run
        if run is None:
            logger.debug("end_run called with no active run")
            return
        self._end_run(run, status)

    def _end_run(self, run: Run, status: str) -> None:
        with self._runs_lock:
            index = next(
                (i for i, s in enumerate(self._runs) if s.run.run_id == run.run_id),
                None,
            )
            if index is None:
                return
            # Children still open end with their parent, innermost first.
            closing = [state.run for state in reversed(self._runs[index:])]
            del self._runs[index:]

        for each in closing:
            self.tracking.end_run(each, status)
            logger.info("Ended run %s as %s", each.run_id, status)
            self.plugins.run_finished(self, each, status)

    def _check_open(self) -> None:
        if self._closed:
            raise RunStateError(
                "this MLFlowAgent was closed by MLFlowAgent.reset() or at exit; "
                "use the current one, MLFlowAgent(...)"
            )

    def _require_run(self) -> _RunState:
        self._check_open()
        runs = self._runs
        if not runs:
            raise RunStateError(
                "no active run: start one with `with agent.start_run():` first"
            )
        return runs[-1]

    # Params, metrics, tags, artifacts

    def log_param(self, key: str, value: Any) -> None:
        """Log one param; see :meth:`log_params`."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; nested mappings are flattened to dotted keys.

        Logging a key again with the same value is a no-op; with a different
        value it raises :class:`ParamConflictError`.
        """
        state = self._require_run()
        batch = self.inputs.params(params)
        self._log_param_batch(state, batch.values, batch.overflow)

    def _log_param_batch(
        self, state: _RunState, values: Mapping[str, str], overflow: Mapping[str, str]
    ) -> None:
        with state.lock:
            new = self.inputs.check_param_conflicts(state.params, values)
            if not new:
                return
            self.tracking.log_params(state.run, new)
            state.params.update(new)
        # Only values this call stored: a repeated key's full text is already there.
        for key in new:
            artifact = overflow_artifact(key)
            if artifact in overflow:
                self.tracking.log_text(state.run, overflow[artifact], artifact)

    def log_metric(self, key: str, value: Any, step: Any = None) -> None:
        """Log one metric point, stamped now; returns without waiting for I/O."""
        state = self._require_run()
        point = self.inputs.metric(key, value, step, int(time.time() * 1000))
        if point is not None:
            self.tracking.log_metrics(state.run, (point,))

    def log_metrics(self, metrics: Mapping[str, Any], step: Any = None) -> None:
        """Log several metric points at one step; all are checked before any is sent."""
        state = self._require_run()
        points = self.inputs.metrics(metrics, step, int(time.time() * 1000))
        if points:
            self.tracking.log_metrics(state.run, points)

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag on the active run."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the active run."""
        state = self._require_run()
        clean = self.inputs.tags(tags)
        if clean:
            self.tracking.set_tags(state.run, clean)

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Upload a local file or directory as an artifact of the active run."""
        state = self._require_run()
        path = os.fspath(local_path)
        if not os.path.exists(path):
            raise InvalidInputError(
                f"log_artifact: {path!r} does not exist; pass the path of an "
                "existing file or directory"
            )
        self.tracking.log_artifact(state.run, path, artifact_path)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued; False if ``timeout`` ran out (the rest stays queued
        or spooled and is sent later)."""
        return self.tracking.flush(timeout)

    # Models

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        tags: Mapping[str, Any] | None = None,
        **backend_kwargs: Any,
    ) -> ModelVersion:
        """Register ``model`` as a new version of ``name`` and return that version.

        The version is linked to the active run when there is one. Extra keyword
        arguments go to the registry backend.
        """
        self._check_open()
        model_name = self.inputs.model_name(name)
        clean_tags = self.inputs.tags(tags or {})
        self.tracking.flush()

        version = self.registry.register_model(
            model,
            model_name,
            run=self.active_run,
            input_example=input_example,
            tags=clean_tags,
            **backend_kwargs,
        )
        logger.info("Registered %s version %s", version.name, version.version)
        self.plugins.model_registered(self, version)
        return version

    def promote(
        self,
        name: str,
        version: str | int,
        *,
        alias: str | None = None,
        stage: str | None = None,
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` and/or move it to ``stage``."""
        if alias is None and stage is None:
            raise InvalidInputError(
                f"promote({name!r}, {version!r}): give alias=..., stage=... or both"
            )
        return self.registry.promote(
            self.inputs.model_name(name),
            self.inputs.version(version),
            alias=None if alias is None else self.inputs.alias(alias),
            stage=None if stage is None else self.inputs.stage(stage),
        )

    def get_model(
        self,
        name: str,
        *,
        version: str | int | None = None,
        alias: str | None = None,
        model_stage: str | None = None,
    ) -> ModelVersion:
        """The model version selected by version, alias or stage (else the latest)."""
        chosen = [k for k, v in (("version", version), ("alias", alias),
                                 ("model_stage", model_stage)) if v is not None]
        if len(chosen) > 1:
            raise InvalidInputError(
                f"get_model({name!r}): pass one of version, alias or model_stage, "
                f"not {' and '.join(chosen)}"
            )
        return self.client.get_model(
            self.inputs.model_name(name),
            version=None if version is None else self.inputs.version(version),
            alias=None if alias is None else self.inputs.alias(alias),
            model_stage=None if model_stage is None else self.inputs.stage(model_stage),
        )

    def load_model(self, uri: str, *, allow_pickle: bool | None = None) -> Any:
        """Load the model behind ``models:/name/<version|stage|latest>`` or
        ``models:/name@alias``."""
        return self.client.load_model(uri, allow_pickle=allow_pickle)

    # Shutdown

    def before_tracking_uri_change(self) -> None:
        """Called by configuration backends before the tracking URI changes.

        Refuses while a run is open (its data belongs to the old server), and
        sends what is queued to the old server first.
        """
        run = self.active_run
        if run is not None:
            raise RunStateError(
                f"cannot change the tracking URI while run {run.run_id} is active; "
                "end the run first"
            )
        tracking = getattr(self, "tracking", None)
        if tracking is not None:
            tracking.flush()

    def close(self, timeout: float | None = None) -> None:
        """End open runs FINISHED and flush, waiting at most ``timeout`` seconds.

        What cannot be sent in time stays in the tracking backend's spool.
        """
        if self._closed:
            return
        self._closed = True
        while self._runs:
            run = self._runs[0].run
            try:
                self._end_run(run, "FINISHED")
            except Exception:
                logger.exception("Could not end run %s at shutdown", run.run_id)
                with self._runs_lock:
                    self._runs = [s for s in self._runs if s.run is not run]
        self.tracking.close(timeout)


def _as_config(config: Mapping[str, Any] | AgentConfig | None) -> AgentConfig:
    if config is None:
        return load_config()
    if isinstance(config, AgentConfig):
        return config
    return config_from_dict(config)


def _missing_members(strategy: object, contract: type) -> list[str]:
    wanted = [name for name in dir(contract) if not name.startswith("_")]
    return [name for name in wanted if not hasattr(strategy, name)]


_exit_handler_registered = False


def _register_exit_handler() -> None:
    global _exit_handler_registered
    if not _exit_handler_registered:
        atexit.register(_close_at_exit)
        _exit_handler_registered = True


def _close_at_exit() -> None:
    agent = MLFlowAgent.current()
    if agent is not None:
        agent.close()
