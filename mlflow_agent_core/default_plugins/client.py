"""The ``mlflow`` client backend: find model versions and load models safely.

``client: {backend: mlflow}`` in ``agent.yaml`` selects it. It talks to the
registry named by ``agent.configuration.registry_uri`` at the time of each call.

* :meth:`MlflowClientStrategy.get_model` resolves a version, alias, stage (any
  case) or, with no selector, the latest version. A stage the server does not
  report (stage API missing, or nothing in that stage) is looked up through the
  lower-case alias of the same name (``production``), which the registry backend's
  ``promote`` keeps in step with the stage.
* :meth:`MlflowClientStrategy.load_model` takes ``models:/name/<version>``,
  ``models:/name/<Stage>``, ``models:/name/latest`` and ``models:/name@alias``. It
  resolves the URI to a concrete version on every call, so a promotion takes
  effect at once, and keeps loaded models in an LRU cache keyed by registry, name
  and version. A cached model is returned as the same object to every caller:
  copy it (``copy.deepcopy``) before changing it in place.
* Formats that run code from the registry when loaded are refused unless allowed;
  see :mod:`mlflow_agent_core.default_plugins.model_loading`.

No MLflow exception escapes: a missing model, version, alias or stage raises
:class:`ModelNotFoundError` listing what exists, refused credentials
:class:`AuthError`, an unreachable server :class:`ServerUnavailableError`.
"""

from __future__ import annotations

import difflib
import logging
import re
import shutil
import tempfile
import threading
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from ..errors import (
    AgentError,
    AuthError,
    InvalidInputError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from ..hookspecs import Register, hookimpl
from . import model_loading
from .model_loading import LoadPlan

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

logger = logging.getLogger(__name__)

T = TypeVar("T")

STAGES = ("None", "Staging", "Production", "Archived")
_STAGE_BY_LOWER = {stage.lower(): stage for stage in STAGES}
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://)[^/@]*@")
_USERINFO_ANYWHERE = re.compile(r"([A-Za-z][\w+.-]*://)[^/@\s]*@")
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST"})
# The sqlalchemy store reports an unknown alias as a bad parameter, not a 404.
_ALIAS_NOT_FOUND_CODES = _NOT_FOUND_CODES | {"INVALID_PARAMETER_VALUE"}
_AUTH_CODES = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"}
)
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
_LISTED_AT_MOST = 20
_URI_FORMS = (
    "models:/<name>/<version>, models:/<name>/<Stage>, models:/<name>/latest or "
    "models:/<name>@<alias>"
)


@dataclass(frozen=True)
class ClientOptions:
    """The ``client:`` section of ``agent.yaml`` for ``backend: mlflow``."""

    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Load models whose format runs stored code when loaded (pickle, "
            "cloudpickle, bundled code). Only for registries whose writers you trust."
        },
    )
    cache_size: int = field(
        default=8,
        metadata={
            "help": "How many loaded models load_model keeps in memory (least "
            "recently used dropped first); 0 turns the cache off."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory for downloaded model files; a temporary directory "
            "removed at exit when not set."
        },
    )
    stage_aliases: bool = field(
        default=True,
        metadata={
            "help": "Resolve a stage the server does not report through the "
            "lower-case alias of the same name (Production -> production)."
        },
    )


@dataclass(frozen=True)
class ModelRef:
    """What a caller asked for: a version, an alias, a stage, or the latest."""

    name: str
    version: str | None = None
    alias: str | None = None
    stage: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"version {self.version}"
        if self.alias is not None:
            return f"alias {self.alias!r}"
        if self.stage is not None:
            return f"stage {self.stage!r}"
        return "latest version"


@dataclass
class _CacheEntry:
    model: Any
    plan: LoadPlan
    directory: Path


_CacheKey = tuple[str, str, str]


def canonical_stage(stage: object, *, where: str) -> str:
    """``stage`` in MLflow's spelling (``production`` -> ``Production``)."""
    if isinstance(stage, str) and stage.strip().lower() in _STAGE_BY_LOWER:
        return _STAGE_BY_LOWER[stage.strip().lower()]
    raise InvalidInputError(
        f"{where}: stage {stage!r} is not a registry stage; use one of "
        f"{', '.join(STAGES)} (any case), or an alias for other names"
    )


def parse_model_uri(uri: object) -> ModelRef:
    """Check a ``models:/`` URI and split it into a :class:`ModelRef`.

    Raises :class:`InvalidInputError` saying what is wrong and which forms work.
    """
    if not isinstance(uri, str):
        raise InvalidInputError(
            f"load_model: expected a models:/ URI string, got {type(uri).__name__} "
            f"{uri!r}; use {_URI_FORMS}"
        )
    return _parse_path(uri, _uri_path(uri))


def _uri_path(uri: str) -> str:
    if uri != uri.strip() or any(c in uri for c in "?#"):
        raise _bad_uri(uri, "it has surrounding spaces, a query or a fragment")
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() != "models":
        raise _bad_uri(uri, "only models:/ URIs are loaded through the registry")
    if rest.startswith("//"):
        raise _bad_uri(uri, "models: takes one slash (models:/name/1), not two")
    if not rest.startswith("/") or len(rest) == 1:
        raise _bad_uri(uri, "it names no model")
    return rest[1:]


def _parse_path(uri: str, path: str) -> ModelRef:
    parts = path.split("/")
    if any(not part.strip() for part in parts):
        raise _bad_uri(uri, "it has an empty part (a doubled or trailing slash)")
    if len(parts) > 2:
        raise _bad_uri(uri, "paths inside a model version are not supported")
    if len(parts) == 1:
        return _parse_alias(uri, parts[0])
    name, suffix = parts
    if "@" in name:
        raise _bad_uri(uri, "it gives both an alias and a version or stage")
    return _parse_suffix(uri, name, suffix)


def _parse_alias(uri: str, part: str) -> ModelRef:
    name, sep, alias = part.rpartition("@")
    if not sep:
        raise _bad_uri(
            uri, f"it names no version: write models:/{part}/latest, or a version, "
            "stage or alias (logged-model ids are not registry URIs)"
        )
    if not name or not _ALIAS_PATTERN.match(alias):
        raise _bad_uri(
            uri, "an alias URI is models:/<name>@<alias>, the alias made of letters, "
            "digits, '_' and '-'"
        )
    return ModelRef(name, alias=alias)


def _parse_suffix(uri: str, name: str, suffix: str) -> ModelRef:
    if suffix.isdigit():
        if int(suffix) < 1:
            raise _bad_uri(uri, "model versions start at 1")
        return ModelRef(name, version=str(int(suffix)))
    if suffix.lower() == "latest":
        return ModelRef(name)
    if suffix.lower() in _STAGE_BY_LOWER:
        return ModelRef(name, stage=_STAGE_BY_LOWER[suffix.lower()])
    raise _bad_uri(
        uri, f"{suffix!r} is not a version number, 'latest' or a stage "
        f"({', '.join(STAGES)}); for an alias write models:/{name}@{suffix}"
    )


def _bad_uri(uri: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"load_model: {uri!r} is not a model URI this client loads: {why}. "
        f"Use {_URI_FORMS}."
    )


def redact_uri(uri: str) -> str:
    """``uri`` without user, password or query, fit for messages and logs."""
    without_user = _USERINFO.sub(r"\1", uri)
    return without_user.split("?", 1)[0].split("#", 1)[0]


def _scrub(text: str, limit: int = 300) -> str:
    """An MLflow error text without credentials in URLs, cut to ``limit``."""
    text = _USERINFO_ANYWHERE.sub(r"\1", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unreachable_reason(text: str) -> str:
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    return _scrub(text)


class MlflowClientStrategy:
    """The ``mlflow`` client backend. Built as ``MlflowClientStrategy(agent=,
    options=)``; ``options.parse(ClientOptions)`` validates the section."""

    def __init__(self, *, agent: Any, options: Any) -> None:
        self._agent = agent
        self.options: ClientOptions = self.check_options(options)
        self._clients: dict[tuple[str, str], MlflowClient] = {}
        self._cache: OrderedDict[_CacheKey, _CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        # One download at a time: two callers missing the cache for the same
        # version must not both fetch it.
        self._fetch_lock = threading.Lock()
        self._root: Path | None = None

    @classmethod
    def check_options(cls, options: Any) -> ClientOptions:
        """Parse and check the options without creating anything (config check)."""
        parsed: ClientOptions = options.parse(ClientOptions)
        if parsed.cache_size < 0:
            raise options.error(
                "cache_size",
                f"cache_size must be 0 or more, got {parsed.cache_size}; "
                "0 turns the load cache off",
            )
        return parsed

    # Resolution

    def get_model(
        self,
        name: str,
        *,
        version: str | int | None = None,
        alias: str | None = None,
        model_stage: str | None = None,
    ) -> ModelVersion:
        """The version of ``name`` selected by one of ``version``, ``alias`` or
        ``model_stage`` (any case), or the latest version when none is given."""
        ref = self._ref(name, version=version, alias=alias, model_stage=model_stage)
        client = self._client()
        found = self._resolve(client, ref)
        if ref.version is None and ref.alias is None:
            # Versions from stage and latest listings may lack their aliases.
            found = self._call(
                f"get_model({name!r})", client.get_model_version, name, found.version
            )
        return found

    def list_models(self) -> Sequence[RegisteredModel]:
        """Every registered model, by name."""
        client = self._client()
        models = self._paged("list_models()", client.search_registered_models)
        return sorted(models, key=lambda model: model.name)

    def list_versions(self, name: str) -> Sequence[ModelVersion]:
        """Every version of ``name``, oldest first, with its aliases filled in."""
        self._check_name(name, "list_versions")
        client = self._client()
        registered = self._lookup(
            f"list_versions({name!r})", client.get_registered_model, name
        )
        if registered is None:
            raise ModelNotFoundError(self._missing_model_message(client, name))
        versions = self._all_versions(client, name)
        for found in versions:
            found.aliases = sorted(
                a for a, v in registered.aliases.items() if str(v) == str(found.version)
            )
        return versions

    # Loading

    def load_model(self, uri: str, *, allow_pickle: bool | None = None) -> Any:
        """Load the model behind a ``models:/`` URI (the cached object if this
        version was loaded before; it is shared, not copied)."""
        ref = parse_model_uri(uri)
        allowed = self._allowed(allow_pickle)
        client = self._client()
        found = self._resolve(client, ref)
        key = (self._uris()[1], found.name, str(found.version))

        entry = self._cached(key)
        if entry is None:
            with self._fetch_lock:
                entry = self._cached(key)
                if entry is None:
                    entry = self._fetch(client, found, uri, allowed)
                    self._remember(key, entry)
        if entry.plan.unsafe is not None and not allowed:
            # The same answer whether or not someone else loaded it first.
            raise model_loading.refuse(uri, entry.plan)
        return entry.model

    def clear_cache(self) -> None:
        """Forget every loaded model and remove their downloaded files."""
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
        for entry in entries:
            self._discard(entry)

    # Internals: clients and errors

    def _uris(self) -> tuple[str, str]:
        configuration = self._agent.configuration
        return str(configuration.tracking_uri), str(configuration.registry_uri)

    def _client(self) -> MlflowClient:
        uris = self._uris()
        with self._lock:
            client = self._clients.get(uris)
            if client is None:
                client = MlflowClient(tracking_uri=uris[0], registry_uri=uris[1])
                self._clients[uris] = client
        return client

    def _call(self, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with every MLflow or transport error made an AgentError."""
        try:
            return fn(*args)
        except (MlflowException, requests.RequestException, OSError) as exc:
            raise self._translate(exc, action) from exc

    def _lookup(
        self,
        action: str,
        fn: Callable[..., T],
        *args: Any,
        missing: frozenset[str] = _NOT_FOUND_CODES,
    ) -> T | None:
        """Like :meth:`_call`, but ``None`` when MLflow says the thing is missing."""
        try:
            return fn(*args)
        except MlflowException as exc:
            if exc.error_code in missing:
                return None
            raise self._translate(exc, action) from exc
        except (requests.RequestException, OSError) as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: Exception, action: str) -> AgentError:
        where = redact_uri(self._uris()[1])
        status = _http_status(exc)
        code = getattr(exc, "error_code", None)
        raw = getattr(exc, "message", None) or str(exc)
        detail = _scrub(raw)
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(
                f"{action}: the registry at {where} refused the credentials "
                f"({detail}). Set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, to credentials "
                "with access to the model registry."
            )
        if _is_unreachable(exc, status):
            return ServerUnavailableError(
                f"{action}: the registry at {where} could not be reached "
                f"({_unreachable_reason(raw)}). "
                "Check that the server is running and the URI is right; "
                "MLFLOW_HTTP_REQUEST_TIMEOUT and MLFLOW_HTTP_REQUEST_MAX_RETRIES "
                "set how long to wait."
            )
        if code in _NOT_FOUND_CODES or (code is None and status == 404):
            return ModelNotFoundError(f"{action}: not found at {where} ({detail})")
        if code == "INVALID_PARAMETER_VALUE":
            return InvalidInputError(
                f"{action}: the registry at {where} said: {detail}"
            )
        return AgentError(f"{action} failed at {where}: {detail}")

    # Internals: resolution

    def _ref(
        self,
        name: str,
        *,
        version: str | int | None,
        alias: str | None,
        model_stage: str | None,
    ) -> ModelRef:
        self._check_name(name, "get_model")
        given = [
            key
            for key, value in (
                ("version", version), ("alias", alias), ("model_stage", model_stage)
            )
            if value is not None
        ]
        if len(given) > 1:
            raise InvalidInputError(
                f"get_model({name!r}): pass one of version, alias or model_stage, "
                f"not {' and '.join(given)}"
            )
        return ModelRef(
            name,
            version=None if version is None else _check_version(name, version),
            alias=None if alias is None else _check_alias(name, alias),
            stage=None
            if model_stage is None
            else canonical_stage(model_stage, where=f"get_model({name!r})"),
        )

    @staticmethod
    def _check_name(name: object, where: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(
                f"{where}: the model name must be a non-empty string, got {name!r}"
            )

    def _resolve(self, client: MlflowClient, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` points at now (one request, two for a stage found
        only through its alias), or ModelNotFoundError listing what exists."""
        action = f"resolving {ref.describe()} of model {ref.name!r}"
        if ref.version is not None:
            found = self._lookup(
                action, client.get_model_version, ref.name, ref.version
            )
        elif ref.alias is not None:
            found = self._by_alias(client, ref.name, ref.alias, action)
        elif ref.stage is not None:
            found = self._by_stage(client, ref, action)
        else:
            found = self._latest(client, ref.name, action)
        if found is None:
            raise ModelNotFoundError(self._not_found_message(client, ref))
        return found

    def _by_alias(
        self, client: MlflowClient, name: str, alias: str, action: str
    ) -> ModelVersion | None:
        return self._lookup(
            action,
            client.get_model_version_by_alias,
            name,
            alias,
            missing=_ALIAS_NOT_FOUND_CODES,
        )

    def _by_stage(
        self, client: MlflowClient, ref: ModelRef, action: str
    ) -> ModelVersion | None:
        assert ref.stage is not None
        in_stage = self._stage_versions(client, ref.name, ref.stage, action)
        if in_stage:
            return max(in_stage, key=lambda found: int(found.version))
        if not self.options.stage_aliases:
            return None
        logger.debug(
            "No version of %s reported in stage %s; trying alias %r",
            ref.name, ref.stage, ref.stage.lower(),
        )
        return self._by_alias(client, ref.name, ref.stage.lower(), action)

    def _stage_versions(
        self, client: MlflowClient, name: str, stage: str, action: str
    ) -> list[ModelVersion]:
        """Versions the server reports in ``stage``; empty if it has no stage API."""
        try:
            with _quiet_stage_deprecation():
                return list(client.get_latest_versions(name, [stage]))
        except MlflowException as exc:
            error = self._translate(exc, action)
            if isinstance(error, (AuthError, ServerUnavailableError)):
                raise error from exc
            if exc.error_code in _NOT_FOUND_CODES:
                return []
            logger.debug("Stage lookup unavailable for %s: %s", name, exc.message)
            return []
        except (requests.RequestException, OSError) as exc:
            raise self._translate(exc, action) from exc

    def _latest(
        self, client: MlflowClient, name: str, action: str
    ) -> ModelVersion | None:
        registered = self._lookup(action, client.get_registered_model, name)
        if registered is None or not registered.latest_versions:
            return None
        latest: ModelVersion = max(
            registered.latest_versions, key=lambda found: int(found.version)
        )
        return latest

    # Internals: not-found messages

    def _not_found_message(self, client: MlflowClient, ref: ModelRef) -> str:
        action = f"listing model {ref.name!r}"
        registered = self._lookup(action, client.get_registered_model, ref.name)
        if registered is None:
            return self._missing_model_message(client, ref.name)
        versions = self._all_versions(client, ref.name)
        asked = ref.describe()
        if ref.stage is not None and self.options.stage_aliases:
            asked += f" (nor alias {ref.stage.lower()!r})"
        return (
            f"model {ref.name!r} has no {asked}; {_inventory(registered, versions)}. "
            "Ask for one of these, or promote a version first."
        )

    def _missing_model_message(self, client: MlflowClient, name: str) -> str:
        names = [
            model.name
            for model in self._paged(
                "listing registered models", client.search_registered_models, limit=1000
            )
        ]
        close = _close_names(name, names)
        if close:
            listing = f"close names: {', '.join(map(repr, close))}"
        elif names:
            shown = ", ".join(map(repr, sorted(names)[:_LISTED_AT_MOST]))
            listing = f"registered models: {shown} ({len(names)} in all)"
        else:
            listing = "the registry has no registered models"
        return (
            f"registered model {name!r} does not exist at "
            f"{redact_uri(self._uris()[1])}; {listing}. Check the name (it is "
            "case-sensitive) or register a model under it first."
        )

    def _all_versions(self, client: MlflowClient, name: str) -> list[ModelVersion]:
        versions = self._paged(
            f"listing versions of {name!r}",
            client.search_model_versions,
            _name_filter(name),
        )
        return sorted(versions, key=lambda found: int(found.version))

    def _paged(
        self,
        action: str,
        search: Callable[..., Any],
        *args: Any,
        limit: int | None = None,
    ) -> list[Any]:
        """Every result of an MLflow search, following page tokens."""
        results: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(action, lambda: search(*args, page_token=token))
            results.extend(page)
            token = page.token
            if not token or (limit is not None and len(results) >= limit):
                return results

    # Internals: the load cache

    def _allowed(self, allow_pickle: bool | None) -> bool:
        if allow_pickle is None:
            return self.options.allow_pickle
        if not isinstance(allow_pickle, bool):
            raise InvalidInputError(
                f"load_model: allow_pickle must be True, False or None, got "
                f"{allow_pickle!r}"
            )
        return allow_pickle

    def _cached(self, key: _CacheKey) -> _CacheEntry | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
        if entry is not None:
            logger.debug("Model %s version %s served from the load cache", *key[1:])
        return entry

    def _remember(self, key: _CacheKey, entry: _CacheEntry) -> None:
        evicted: list[_CacheEntry] = []
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.options.cache_size:
                evicted.append(self._cache.popitem(last=False)[1])
        for old in evicted:
            self._discard(old)

    @staticmethod
    def _discard(entry: _CacheEntry) -> None:
        # The object may still be in use; only files it no longer reads go.
        if not entry.plan.keep_files:
            shutil.rmtree(entry.directory, ignore_errors=True)

    def _fetch(
        self, client: MlflowClient, found: ModelVersion, uri: str, allowed: bool
    ) -> _CacheEntry:
        """Download and load one version; refuse unsafe formats before download."""
        action = f"downloading model {found.name!r} version {found.version}"
        source = self._call(
            action, client.get_model_version_download_uri, found.name, found.version
        )
        repo = get_artifact_repository(source, tracking_uri=self._uris()[0])
        directory = self._new_directory(found)
        try:
            plan = self._plan(repo, directory, action)
            if plan.unsafe is not None and not allowed:
                raise model_loading.refuse(uri, plan)
            self._call(action, repo.download_artifacts, "", str(directory))
            model = self._deserialize(directory, plan, found, allowed)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        logger.info(
            "Loaded model %s version %s (%s, %s) from %s",
            found.name, found.version, plan.flavor, plan.detail,
            redact_uri(self._uris()[1]),
        )
        return _CacheEntry(model, plan, directory)

    def _plan(
        self, repo: ArtifactRepository, directory: Path, action: str
    ) -> LoadPlan:
        mlmodel = self._call(action, repo.download_artifacts, "MLmodel", str(directory))
        flavors = Model.load(mlmodel).flavors

        def list_dir(path: str) -> list[str]:
            return [item.path for item in self._call(action, repo.list_artifacts, path)]

        return model_loading.assess(flavors, list_dir)

    def _deserialize(
        self, directory: Path, plan: LoadPlan, found: ModelVersion, allowed: bool
    ) -> Any:
        try:
            return model_loading.load(directory, plan, allowed=allowed)
        except AgentError:
            raise
        except Exception as exc:
            raise AgentError(
                f"loading model {found.name!r} version {found.version} "
                f"({plan.flavor}, {plan.detail}) failed: {exc}. The files are "
                "readable but this environment cannot rebuild the model; check "
                "that its library versions match the model's requirements.txt."
            ) from exc

    def _new_directory(self, found: ModelVersion) -> Path:
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", found.name)[:64]
        directory = (
            self._download_root()
            / safe_name
            / f"v{found.version}-{uuid.uuid4().hex[:8]}"
        )
        directory.mkdir(parents=True)
        return directory

    def _download_root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = self._make_root()
            return self._root

    def _make_root(self) -> Path:
        if self.options.cache_dir is not None:
            root = Path(self.options.cache_dir).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
            return root
        root = Path(tempfile.mkdtemp(prefix="mlflow-agent-models-"))
        weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
        return root


def _check_version(name: str, version: str | int) -> str:
    text = str(version).strip() if isinstance(version, (str, int)) else ""
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidInputError(
            f"get_model({name!r}): version must be a positive whole number (1, '3'), "
            f"got {version!r}"
        )
    return str(int(text))


def _check_alias(name: str, alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_PATTERN.match(alias):
        raise InvalidInputError(
            f"get_model({name!r}): alias {alias!r} is not an alias name; aliases "
            "are letters, digits, '_' and '-'"
        )
    return alias


def _name_filter(name: str) -> str:
    quote = '"' if "'" in name else "'"
    return f"name={quote}{name}{quote}"


def _http_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return int(response.status_code)
    if isinstance(exc, MlflowException):
        status: int = exc.get_http_status_code()  # type: ignore[no-untyped-call]
        return None if status == 500 else status
    return None


def _is_unreachable(exc: Exception, status: int | None) -> bool:
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if status in _UNAVAILABLE_STATUSES:
        return True
    # MLflow's REST client wraps refused connections and timeouts in a plain
    # MlflowException whose message is the only trace of the cause.
    message = getattr(exc, "message", "")
    return isinstance(exc, MlflowException) and message.startswith("API request to")


def _close_names(name: str, names: Sequence[str]) -> list[str]:
    folded = [other for other in names if other.lower() == name.lower()]
    similar = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return list(dict.fromkeys(folded + similar))


def _inventory(registered: RegisteredModel, versions: Sequence[ModelVersion]) -> str:
    """"versions: 1, 2; aliases: champion -> 2; stages: Production -> 2"."""
    if not versions:
        return "it has no versions yet"
    numbers = [str(found.version) for found in versions]
    shown = ", ".join(numbers[-_LISTED_AT_MOST:])
    if len(numbers) > _LISTED_AT_MOST:
        shown = f"... {shown} ({len(numbers)} in all)"
    aliases = ", ".join(
        f"{alias} -> {version}" for alias, version in sorted(registered.aliases.items())
    )
    stages = ", ".join(
        f"{found.current_stage} -> {found.version}"
        for found in versions
        if found.current_stage not in (None, "None")
    )
    return (
        f"versions: {shown}; aliases: {aliases or 'none'}; "
        f"stages: {stages or 'none'}"
    )


@contextmanager
def _quiet_stage_deprecation() -> Iterator[None]:
    # Stages are part of this agent's interface; MLflow's advice to move to
    # aliases is handled here (stage_aliases), so users are not told each call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("client", "mlflow", MlflowClientStrategy)
