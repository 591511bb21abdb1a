"""Registering and promoting models: the shared base of registry backends, and ``auto``.

Plugin authors subclass :class:`MlflowRegistry`. A subclass says which objects it
takes (:meth:`~MlflowRegistry.supports`) and how to write one as an MLflow model
directory (:meth:`~MlflowRegistry._save_model`, usually one call to
``mlflow.<flavor>.save_model``); the base class does the rest: options (per
``agent.yaml`` and per call), pip requirements without MLflow's slow inference,
the logged model, the upload, the link to the run, the model version, stages and
aliases. A complete backend::

    import sys
    from dataclasses import dataclass

    import mlflow.onnx

    from mlflow_agent_core import hookimpl
    from mlflow_agent_core.default_plugins.registry import (
        MlflowRegistry, RegistryOptions, SavedModel,
    )


    @dataclass
    class OnnxOptions(RegistryOptions):
        pass


    class OnnxRegistry(MlflowRegistry):
        backend_name = "onnx"
        options_class = OnnxOptions

        def supports(self, model):
            onnx = sys.modules.get("onnx")  # not imported: cannot be an ONNX model
            return onnx is not None and isinstance(model, onnx.ModelProto)

        def _save_model(self, model, path, *, options, input_example):
            requirements = self.requirement_kwargs(options, ["onnx", "onnxruntime"])
            mlflow.onnx.save_model(
                model, path, input_example=input_example, **requirements
            )
            return SavedModel("onnx")


    @hookimpl
    def mlflow_agent_register_strategies(register):
        register("registry", "onnx", OnnxRegistry)

The model is written to a local temporary directory before anything is sent, so a
model that cannot be saved is refused without leaving a half-made version behind.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar, cast

import requests
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..config import Options
from ..contracts import RegistryStrategy
from ..errors import (
    AgentError,
    AuthError,
    ConfigError,
    InvalidInputError,
    ModelNotFoundError,
    PluginError,
    ServerUnavailableError,
)
from ..hookspecs import Register, hookimpl
from ..validation import canonical_stage

if TYPE_CHECKING:
    from mlflow.entities import LoggedModel
    from mlflow.entities.model_registry import ModelVersion

    from ..contracts import Run

__all__ = [
    "BACKEND_TAG",
    "DEVICE_TAG",
    "FORMAT_TAG",
    "STAGE_ALIASES",
    "AutoOptions",
    "AutoRegistry",
    "MlflowRegistry",
    "RegistryOptions",
    "SavedModel",
    "distributions_of",
    "mlflow_requirement",
    "pinned_requirement",
    "quiet_pickle_caution",
]

logger = logging.getLogger(__name__)

BACKEND_TAG = "mlflow_agent.backend"
"""Version tag (and MLmodel metadata key): the registry backend that wrote it."""
FORMAT_TAG = "mlflow_agent.serialization_format"
"""Version tag (and MLmodel metadata key): e.g. ``pt2``, ``pickle``, ``skops``.

Informational only: anyone who can write to the registry can set it, so a loader
must decide whether a model is safe to load from its files, not from this tag.
"""
DEVICE_TAG = "mlflow_agent.device"
"""Version tag: the device(s) the caller's model was on when it was registered."""

STAGE_ALIASES: Mapping[str, str] = {"Production": "production", "Staging": "staging"}
"""Stages that ``promote(stage=...)`` mirrors as an alias when ``stage_aliases``."""

_MLMODEL = "MLmodel"
_LOGGED_MODEL_NAME_CHARS = re.compile(r"[/:.%\"']")
_MLFLOW_DISTRIBUTIONS = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing"})
_POLL_SECONDS = 0.5


# ------------------------------------------------------------------------- options


@dataclass
class RegistryOptions:
    """Options every :class:`MlflowRegistry` backend accepts (``registry:`` section).

    Subclasses add their own fields; every field can also be given per call as a
    keyword argument of ``register_model``.
    """

    stage_aliases: bool = field(
        default=True,
        metadata={"help": "promote(stage=...) also moves the lower-case alias of "
                  "that stage ('production', 'staging')"},
    )
    extra_requirements: list[str] = field(
        default_factory=list,
        metadata={"help": "pip requirements added to the computed ones, e.g. "
                  "'pandas>=2.0'"},
    )
    infer_requirements: bool = field(
        default=False,
        metadata={"help": "let MLflow infer pip requirements by reloading the model "
                  "in a subprocess (slow; for dependencies the backend cannot see)"},
    )
    await_registration: float = field(
        default=300.0,
        metadata={"help": "seconds to wait for a registry that creates versions "
                  "asynchronously to mark the new version READY"},
    )

    def __post_init__(self) -> None:
        for requirement in self.extra_requirements:
            try:
                Requirement(requirement)
            except InvalidRequirement as exc:
                raise ValueError(
                    f"extra_requirements: {requirement!r} is not a pip requirement "
                    f"({exc}); write it as in requirements.txt, e.g. 'pandas>=2.0'"
                ) from None
        if self.await_registration < 0:
            raise ValueError(
                f"await_registration: {self.await_registration} is negative; give "
                "a number of seconds (0 to not wait)"
            )


@dataclass(frozen=True)
class SavedModel:
    """What :meth:`MlflowRegistry._save_model` wrote.

    ``serialization_format`` is recorded as the ``mlflow_agent.serialization_format``
    version tag and MLmodel metadata; ``tags`` are added to the version's tags.
    """

    serialization_format: str
    tags: Mapping[str, str] = field(default_factory=dict)


# -------------------------------------------------------------------- requirements


def pinned_requirement(distribution: str) -> str | None:
    """``name==version`` of an installed distribution, or None when it is missing.

    A local version label (``2.13.0+cpu``) is dropped, as MLflow does, so the
    requirement can be installed from PyPI.
    """
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    return f"{distribution}=={version.split('+', 1)[0]}"


def mlflow_requirement() -> str:
    """The pinned requirement of the installed MLflow (full or skinny)."""
    for distribution in ("mlflow", "mlflow-skinny"):
        requirement = pinned_requirement(distribution)
        if requirement is not None:
            return requirement
    raise PluginError(
        "neither mlflow nor mlflow-skinny is installed; pip install mlflow"
    )


@lru_cache(maxsize=1)
def _module_owners() -> Mapping[str, list[str]]:
    # Scanning every installed distribution takes ~0.1 s: once per process.
    return metadata.packages_distributions()


def distributions_of(objects: Iterable[object]) -> tuple[list[str], list[str]]:
    """Installed distributions providing ``objects`` (classes, functions or instances).

    Returns ``(distributions, unowned_modules)``: the distributions owning the
    top-level module of each class or function (of each instance's class), the
    standard library, builtins and ``__main__`` skipped; and the top-level modules
    that no installed distribution provides (a local source tree, say).
    """
    distributions: dict[str, None] = {}
    unowned: dict[str, None] = {}
    for obj in objects:
        named = isinstance(obj, (type, types.FunctionType))
        module = getattr(obj if named else type(obj), "__module__", None) or ""
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("__main__", "builtins"):
            continue
        owners = _module_owners().get(top)
        if not owners:
            unowned[top] = None
        for owner in owners or ():
            distributions[owner] = None
    return list(distributions), list(unowned)


def _requirements(
    distributions: Iterable[str], extra: Sequence[str]
) -> list[str]:
    lines = [mlflow_requirement()]
    seen = {canonicalize_name(name) for name in _MLFLOW_DISTRIBUTIONS}
    for distribution in distributions:
        key = canonicalize_name(distribution)
        if key in seen:
            continue
        seen.add(key)
        requirement = pinned_requirement(distribution)
        if requirement is not None:
            lines.append(requirement)
    return lines + [line for line in extra if line not in lines]


# ---------------------------------------------------------------- quieter MLflow


class _PickleCautionFilter(logging.Filter):
    """Drops MLflow's 'pickle needs caution' warning on threads that asked for it."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.local, "depth", 0):
            return True
        return "exercising caution" not in record.getMessage()


_caution_filter = _PickleCautionFilter()
_filtered_loggers: set[str] = set()
_filter_lock = threading.Lock()


@contextmanager
def quiet_pickle_caution(*logger_names: str) -> Iterator[None]:
    """Hide MLflow's pickle-format caution logged on these loggers by this thread.

    Backends use it when they already logged their own line about the format (or
    the user chose it), so the operator reads one explanation, not two.
    """
    with _filter_lock:
        for name in logger_names:
            if name not in _filtered_loggers:
                logging.getLogger(name).addFilter(_caution_filter)
                _filtered_loggers.add(name)
    local = _caution_filter.local
    local.depth = getattr(local, "depth", 0) + 1
    try:
        yield
    finally:
        local.depth -= 1


@contextmanager
def _stage_warnings_hidden() -> Iterator[None]:
    # The caller asked for stages; MLflow's deprecation notice is not news to them.
    # catch_warnings swaps process-wide filters: a stage warning raised by another
    # thread during this call is hidden too, which is harmless.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*Model registry stages", category=FutureWarning
        )
        yield


# ------------------------------------------------------------------------- errors


def _is_connection_problem(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout)):
            return True
        text = str(current)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _translated(action: str, uri: str, *, not_found: bool = False) -> Iterator[None]:
    """Turn MLflow's errors into the agent's: server down, auth, missing model."""
    try:
        yield
    except AgentError:
        raise
    except MlflowException as exc:
        if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise AuthError(
                f"{action}: the server at {uri} refused the credentials "
                f"({exc.message}); check configuration.username/password/token"
            ) from exc
        if not_found and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(f"{action}: {exc.message}") from exc
        if _is_connection_problem(exc):
            raise _unavailable(action, uri, exc) from exc
        raise
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _unavailable(action, uri, exc) from exc


def _unavailable(action: str, uri: str, exc: BaseException) -> ServerUnavailableError:
    return ServerUnavailableError(
        f"{action}: the registry at {uri} did not answer ({type(exc).__name__}); "
        "start the server or fix configuration.tracking_uri/registry_uri, then retry"
    )


def _log_alias(alias: str, name: str, version: str) -> None:
    logger.info("Alias %r of %r now points at version %s", alias, name, version)


def _installed_backends(agent: Any) -> list[str]:
    """Names of the agent's registry backends, sorted; empty when it has no plugins."""
    plugins = getattr(agent, "plugins", None)
    if plugins is None:
        return []
    return sorted(plugins.strategies("registry"))


def _describe(model: object) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------- the base


class MlflowRegistry:
    """Base class of registry backends that save models with an MLflow flavor.

    Subclasses set :attr:`backend_name` and :attr:`options_class` and implement
    :meth:`supports` and :meth:`_save_model`. ``self.options`` holds the parsed
    ``registry:`` section; ``self.agent`` is the agent that built the backend.
    """

    backend_name: ClassVar[str] = "mlflow"
    """The name ``agent.yaml`` selects; used in log lines, errors and tags."""
    options_class: ClassVar[type[RegistryOptions]] = RegistryOptions
    """The dataclass validating this backend's options."""
    supported_models: ClassVar[str] = "the models its supports() accepts"
    """What this backend registers, for errors, e.g. ``torch.nn.Module models``."""

    _warned_modules: ClassVar[set[str]] = set()

    def __init__(self, *, agent: Any, options: Mapping[str, Any] | None = None) -> None:
        self.agent = agent
        self._raw_options = dict(options or {})
        parsable = options if isinstance(options, Options) else Options(
            self._raw_options, section="registry"
        )
        self.options = parsable.parse(self.options_class)
        self._clients: dict[tuple[str, str], MlflowClient] = {}
        self._experiments: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    # What subclasses implement

    def supports(self, model: object) -> bool:
        """Whether this backend can register ``model``; must not raise."""
        raise NotImplementedError(f"{type(self).__name__} must implement supports()")

    def _save_model(
        self,
        model: Any,
        path: str,
        *,
        options: Any,
        input_example: Any,
    ) -> SavedModel:
        """Write ``model`` as an MLflow model directory at ``path`` (not yet existing).

        ``options`` is an instance of :attr:`options_class` with this call's
        overrides applied. Raise :class:`InvalidInputError` for a model or input
        example that cannot be saved; nothing was sent to MLflow yet.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _save_model()")

    # Helpers for subclasses

    def requirement_kwargs(
        self,
        options: RegistryOptions,
        distributions: Iterable[str],
        objects: Iterable[object] = (),
    ) -> dict[str, list[str]]:
        """Keyword arguments for ``save_model``: pinned pip requirements.

        The installed MLflow, ``distributions`` (those installed), the
        distributions of the classes of ``objects`` (pass them for formats that
        import the model's classes when loading) and ``extra_requirements``.
        With ``infer_requirements`` MLflow infers them instead (slow).
        """
        if options.infer_requirements:
            return {"extra_pip_requirements": list(options.extra_requirements)}
        owners, unowned = distributions_of(objects)
        for module in unowned:
            self._warn_unowned(module)
        return {
            "pip_requirements": _requirements(
                [*distributions, *owners], options.extra_requirements
            )
        }

    def _warn_unowned(self, module: str) -> None:
        if module in MlflowRegistry._warned_modules:
            return
        MlflowRegistry._warned_modules.add(module)
        logger.warning(
            "The model uses classes from module %r, which no installed "
            "distribution provides, so it is not in the model's requirements: hosts "
            "loading the model must be able to import %r themselves (package and "
            "install it, or add it with registry: {extra_requirements: [...]})",
            module,
            module,
        )

    # The strategy contract

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
        """Save ``model`` locally, log it (under ``run`` if given), register it.

        Keyword arguments override this backend's options for this call.
        """
        options = self._call_options(backend_kwargs)
        if not self.supports(model):
            raise self._unsupported(model)

        with tempfile.TemporaryDirectory(prefix="mlflow-agent-model-") as tmp:
            path = os.path.join(tmp, "model")
            saved = self._save_model(
                model, path, options=options, input_example=input_example
            )
            version_tags = {
                **(tags or {}),
                **saved.tags,
                BACKEND_TAG: self.backend_name,
                FORMAT_TAG: saved.serialization_format,
            }
            uri = self.agent.configuration.registry_uri
            with _translated(f"registering model {name!r}", uri):
                return self._log_and_register(
                    path, name, run, version_tags, saved, options
                )

    def promote(
        self,
        name: str,
        version: str,
        *,
        alias: str | None = None,
        stage: str | None = None,
    ) -> ModelVersion:
        """Move ``version`` to ``stage`` and/or point ``alias`` at it.

        A stage of Production or Staging archives the versions that held it, so
        exactly one version remains there; with ``stage_aliases`` the lower-case
        alias of that stage moves along, and a version leaving a stage loses that
        stage's alias.
        """
        version = str(version)
        canonical = None if stage is None else canonical_stage(stage)
        client = self._client()
        uri = self.agent.configuration.registry_uri
        with _translated(f"promoting {name!r} version {version}", uri, not_found=True):
            current = self._existing_version(client, name, version)
            if canonical is not None:
                self._move_stage(client, current, canonical)
            if alias is not None:
                client.set_registered_model_alias(name, alias, version)
                _log_alias(alias, name, version)
            return client.get_model_version(name, version)

    # Registration steps

    def _unsupported(self, model: object) -> InvalidInputError:
        installed = ", ".join(_installed_backends(self.agent)) or "none"
        return InvalidInputError(
            f"the {self.backend_name!r} registry backend cannot register a "
            f"{_describe(model)}: it registers {self.supported_models}. Installed "
            f"registry backends: {installed}. Pass such a model, select the backend "
            "for this kind of model in registry: {backend: ...}, or set registry: "
            "{backend: auto} to pick one per model"
        )

    def _call_options(self, overrides: Mapping[str, Any]) -> Any:
        if not overrides:
            return self.options
        merged = Options({**self._raw_options, **overrides}, section="register_model")
        try:
            return merged.parse(self.options_class)
        except ConfigError as exc:
            raise InvalidInputError(
                f"{exc.message}. Keyword arguments of register_model are options of "
                f"the {self.backend_name!r} registry backend"
            ) from None

    def _log_and_register(
        self,
        path: str,
        name: str,
        run: Run | None,
        tags: dict[str, str],
        saved: SavedModel,
        options: RegistryOptions,
    ) -> ModelVersion:
        client = self._client()
        logged = self._create_logged_model(client, name, run, tags)
        try:
            self._stamp_mlmodel(path, logged, run, saved)
            client.log_model_artifacts(logged.model_id, path)
        except BaseException:
            self._mark_failed(client, logged.model_id)
            raise
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        if run is not None:
            client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])

        version = self._create_version(client, name, logged, run, tags)
        version = self._await_ready(client, version, options.await_registration)
        logger.info(
            "Registered %r version %s (%s format, logged model %s%s)",
            name,
            version.version,
            saved.serialization_format,
            logged.model_id,
            f", run {run.run_id}" if run is not None else ", no run",
        )
        return version

    def _create_logged_model(
        self, client: MlflowClient, name: str, run: Run | None, tags: dict[str, str]
    ) -> LoggedModel:
        if run is None:
            experiment_id, params = self._experiment_id(client), {}
        else:
            # Like MLflow's log_model: the logged model shows its run's params.
            experiment_id = run.experiment_id
            params = client.get_run(run.run_id).data.params
        return client.create_logged_model(
            experiment_id=experiment_id,
            name=_LOGGED_MODEL_NAME_CHARS.sub("_", name),
            source_run_id=None if run is None else run.run_id,
            tags=tags,
            params=params,
        )

    def _stamp_mlmodel(
        self, path: str, logged: LoggedModel, run: Run | None, saved: SavedModel
    ) -> None:
        # The flavor wrote MLmodel before the logged model existed; add its ids.
        mlmodel_path = os.path.join(path, _MLMODEL)
        mlmodel = Model.load(mlmodel_path)
        mlmodel.artifact_path = logged.artifact_location
        mlmodel.model_uuid = logged.model_id
        mlmodel.model_id = logged.model_id
        mlmodel.run_id = None if run is None else run.run_id
        mlmodel.metadata = {
            **(mlmodel.metadata or {}),
            BACKEND_TAG: self.backend_name,
            FORMAT_TAG: saved.serialization_format,
        }
        mlmodel.save(mlmodel_path)

    @staticmethod
    def _mark_failed(client: MlflowClient, model_id: str) -> None:
        try:
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception:
            logger.debug(
                "Could not mark logged model %s FAILED", model_id, exc_info=True
            )

    def _create_version(
        self,
        client: MlflowClient,
        name: str,
        logged: LoggedModel,
        run: Run | None,
        tags: dict[str, str],
    ) -> ModelVersion:
        def create() -> ModelVersion:
            return client.create_model_version(
                name,
                f"models:/{logged.model_id}",
                run_id=None if run is None else run.run_id,
                tags=tags,
                await_creation_for=0,
                model_id=logged.model_id,
            )

        # Most versions belong to an existing model: try first, create on demand.
        try:
            return create()
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            client.create_registered_model(name)
            logger.info("Created registered model %r", name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return create()

    @staticmethod
    def _await_ready(
        client: MlflowClient, version: ModelVersion, timeout: float
    ) -> ModelVersion:
        deadline = time.monotonic() + timeout
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            version = client.get_model_version(version.name, version.version)
        if version.status == "FAILED_REGISTRATION":
            raise AgentError(
                f"the registry failed to create {version.name!r} version "
                f"{version.version}: {version.status_message}"
            )
        return version

    # Promotion steps

    def _existing_version(
        self, client: MlflowClient, name: str, version: str
    ) -> ModelVersion:
        try:
            return client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise ModelNotFoundError(
            f"cannot promote {name!r} version {version}: it does not exist. "
            f"{self._existing_versions_text(client, name)}"
        )

    @staticmethod
    def _existing_versions_text(client: MlflowClient, name: str) -> str:
        quoted = name.replace("'", "\\'")
        versions = client.search_model_versions(f"name = '{quoted}'")
        if not versions:
            return f"No model named {name!r} is registered; register it first"
        numbers = sorted(int(v.version) for v in versions)
        return f"Existing versions: {', '.join(map(str, numbers))}"

    def _move_stage(
        self, client: MlflowClient, current: ModelVersion, stage: str
    ) -> None:
        name, version = current.name, current.version
        with _stage_warnings_hidden():
            client.transition_model_version_stage(
                name, version, stage, archive_existing_versions=stage in STAGE_ALIASES
            )
        logger.info("Moved %r version %s to stage %s", name, version, stage)
        if not self.options.stage_aliases:
            return

        stage_alias = STAGE_ALIASES.get(stage)
        if stage_alias is not None:
            client.set_registered_model_alias(name, stage_alias, version)
            _log_alias(stage_alias, name, version)
        for alias in STAGE_ALIASES.values():
            if alias != stage_alias and alias in (current.aliases or ()):
                client.delete_registered_model_alias(name, alias)
                logger.info("Removed alias %r of %r (version %s left that stage)",
                            alias, name, version)

    # Clients and experiments

    def _client(self) -> MlflowClient:
        configuration = self.agent.configuration
        key = (configuration.tracking_uri, configuration.registry_uri)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = MlflowClient(tracking_uri=key[0], registry_uri=key[1])
                self._clients[key] = client
            return client

    def _experiment_id(self, client: MlflowClient) -> str:
        name = self.agent.configuration.experiment
        key = (self.agent.configuration.tracking_uri, name)
        cached = self._experiments.get(key)
        if cached is not None:
            return cached

        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                # Another process created it between our two requests.
                raced = client.get_experiment_by_name(name)
                if raced is None:
                    raise
                experiment_id = raced.experiment_id
        elif experiment.lifecycle_stage == "deleted":
            raise InvalidInputError(
                f"experiment {name!r} is deleted, so models cannot be logged to it; "
                f"restore it (mlflow experiments restore --experiment-id "
                f"{experiment.experiment_id}) or set configuration.experiment"
            )
        else:
            experiment_id = experiment.experiment_id
        self._experiments[key] = experiment_id
        return experiment_id


# --------------------------------------------------------------------- auto


@dataclass
class AutoOptions(RegistryOptions):
    """Options of ``registry: {backend: auto}``."""

    backends: list[str] | None = field(
        default=None,
        metadata={"help": "registry backends to try, in this order; default: every "
                  "installed one except auto, by name"},
    )


class AutoRegistry(MlflowRegistry):
    """Picks, per model, the first installed registry backend that supports it.

    Candidates are the agent's registered ``registry`` backends other than
    ``auto`` (or the ``backends`` option, in its order), each built on first use
    with empty options. Promotion does not depend on the model and is done here.
    """

    backend_name = "auto"
    options_class = AutoOptions

    def __init__(self, *, agent: Any, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(agent=agent, options=options)
        installed = self._installed()
        self._order = self._candidate_names(
            cast(AutoOptions, self.options), installed, options
        )
        self._factories = installed
        self._built: dict[str, RegistryStrategy] = {}

    @classmethod
    def check_options(
        cls, options: Options, *, installed: Iterable[str] | None = None
    ) -> AutoOptions:
        """Parse the section and, given the installed backends, check ``backends``.

        ``mlflow-agent config check`` passes ``installed`` (every registered
        registry backend), so an unknown name is found without building an agent.
        """
        parsed = options.parse(cls.options_class)
        if installed is not None:
            names = [name for name in installed if name != cls.backend_name]
            cls._candidate_names(parsed, sorted(names), options)
        return parsed

    @classmethod
    def _candidate_names(
        cls, parsed: AutoOptions, installed: Iterable[str], options: object
    ) -> list[str]:
        """The backends to try, in order; ConfigError for names not installed."""
        installed = list(installed)
        chosen = parsed.backends
        if chosen is not None:
            unknown = [name for name in chosen if name not in installed]
            if unknown:
                raise cls._option_error(
                    options, "backends",
                    f"{', '.join(map(repr, unknown))} not installed; installed "
                    f"registry backends: {', '.join(installed) or 'none'}",
                )
        if chosen == []:
            raise cls._option_error(
                options, "backends",
                "the list is empty; name at least one registry backend "
                f"({', '.join(installed) or 'none installed'}), or leave the key "
                "out to try every installed one",
            )
        order = list(chosen if chosen is not None else installed)
        if not order:
            raise cls._option_error(
                options, "backends",
                "no registry backend is installed besides auto; install one, e.g. "
                "pip install mlflow-agent-pytorch",
            )
        return order

    @staticmethod
    def _option_error(options: object, key: str, message: str) -> ConfigError:
        if isinstance(options, Options):
            return options.error(key, message)
        return ConfigError(f"registry.{key}: {message}")

    def _installed(self) -> dict[str, Callable[..., Any]]:
        strategies = self.agent.plugins.strategies("registry")
        # Registrations carry the factory; a plain mapping of factories works too.
        return {
            name: getattr(registration, "factory", registration)
            for name, registration in sorted(strategies.items())
            if name != self.backend_name
        }

    def _candidate(self, name: str) -> RegistryStrategy:
        backend = self._built.get(name)
        if backend is not None:
            return backend
        try:
            built = self._factories[name](
                agent=self.agent, options=Options({}, section="registry")
            )
        except AgentError:
            raise
        except Exception as exc:
            raise PluginError(
                f"registry auto: the {name!r} backend failed to start with empty "
                f"options: {type(exc).__name__}: {exc}. Fix or uninstall its plugin, "
                "or leave it out with registry: {backends: [...]}"
            ) from exc
        if not isinstance(built, RegistryStrategy):
            raise PluginError(
                f"registry auto: the {name!r} backend built a {type(built).__name__}, "
                "which lacks supports/register_model/promote of RegistryStrategy"
            )
        self._built[name] = built
        return built

    def choose(self, model: object) -> tuple[str, RegistryStrategy] | None:
        """The first candidate, by name and backend, that supports ``model``."""
        for name in self._order:
            backend = self._candidate(name)
            if backend.supports(model):
                return name, backend
        return None

    def supports(self, model: object) -> bool:
        return self.choose(model) is not None

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
        """Register ``model`` with the first backend that supports it."""
        chosen = self.choose(model)
        if chosen is None:
            raise InvalidInputError(
                f"registry auto: no installed registry backend supports a "
                f"{_describe(model)}. Installed registry backends: "
                f"{', '.join(self._order)}. Install a plugin for this kind of model, "
                "or convert the model to one of these"
            )
        backend_name, backend = chosen
        logger.info(
            "registry auto: registering %r (%s) with the %r backend",
            name, _describe(model), backend_name,
        )
        return backend.register_model(
            model, name, run=run, input_example=input_example, tags=tags,
            **backend_kwargs,
        )


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("registry", "auto", AutoRegistry)
