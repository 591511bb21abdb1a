"""The ``mlflow`` configuration backend: where MLflow lives and who we are there.

Options (``configuration:`` in ``agent.yaml``): see :class:`ConfigurationOptions`.
URIs are resolved once, here: surrounding whitespace is stripped, relative sqlite
paths are made absolute against the current directory, and file stores, which
MLflow 3 refuses, are rejected with the command that migrates them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..config import Options
from ..errors import ConfigError
from ..hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from ..agent import MLFlowAgent

logger = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
# Tracking URIs that MLflow accepts without a scheme; any other bare value is a path.
SCHEMELESS_URIS = ("databricks", "databricks-uc", "uc")
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) kept a call to a
# dead server blocked for about four minutes. The agent lowers them unless the
# environment already sets them.
HTTP_ENV = {
    "http_max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "http_timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT",
}
HTTP_BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
CREDENTIAL_ENV = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}


@dataclass
class ConfigurationOptions:
    tracking_uri: str = field(
        default="sqlite:///mlflow.db",
        metadata={"help": "tracking server or store; relative sqlite paths allowed"},
    )
    registry_uri: str | None = field(
        default=None, metadata={"help": "model registry URI; defaults to tracking_uri"}
    )
    experiment: str = field(
        default="quickstart", metadata={"help": "experiment that new runs go to"}
    )
    username: str | None = field(
        default=None, metadata={"help": "HTTP basic auth user for the server"}
    )
    password: str | None = field(
        default=None, metadata={"help": "HTTP basic auth password; use ${VAR}"}
    )
    token: str | None = field(
        default=None, metadata={"help": "bearer token for the server; use ${VAR}"}
    )
    http_max_retries: int = field(
        default=2,
        metadata={"help": "retries of MLflow's own HTTP requests (registry, "
                  "models); MLflow's default of 7 can block a call for minutes"},
    )
    http_timeout: int = field(
        default=30,
        metadata={"help": "seconds MLflow's own HTTP requests wait for an answer"},
    )


class UriError(ValueError):
    """A URI that MLflow 3 cannot use; the message says what to use instead."""


def resolve_uri(uri: str) -> str:
    """Strip, make relative sqlite paths absolute, and refuse file stores."""
    cleaned = uri.strip()
    if not cleaned:
        raise UriError("the URI is empty; use e.g. sqlite:///mlflow.db")

    scheme = urlparse(cleaned).scheme
    is_path = not scheme and cleaned not in SCHEMELESS_URIS
    if scheme == "file" or is_path:
        raise UriError(
            f"{cleaned!r} is a file store, which MLflow 3 no longer accepts. Use a "
            "database, e.g. sqlite:///mlflow.db; to move existing runs, run "
            f"`mlflow migrate-filestore --source {_file_store_path(cleaned)} "
            "--target sqlite:///mlflow.db`"
        )
    if cleaned.startswith(SQLITE_PREFIX):
        return _absolute_sqlite(cleaned)
    return cleaned


def _file_store_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _absolute_sqlite(uri: str) -> str:
    path, _, query = uri[len(SQLITE_PREFIX):].partition("?")
    if path in ("", ":memory:"):
        return uri
    absolute = Path(path).expanduser()
    if not absolute.is_absolute():
        absolute = Path.cwd() / absolute
    resolved = f"{SQLITE_PREFIX}{absolute}"
    return f"{resolved}?{query}" if query else resolved


@dataclass(frozen=True)
class ResolvedConfiguration:
    """The options after checking: resolved URIs, the experiment, credentials."""

    tracking_uri: str
    registry_uri: str | None
    experiment: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    http_max_retries: int = 2
    http_timeout: int = 30


class MlflowConfiguration:
    """Resolves the URIs and experiment, and applies them to MLflow."""

    def __init__(self, *, agent: MLFlowAgent, options: Options) -> None:
        self._agent = agent
        resolved = self.check_options(options)
        self._experiment = resolved.experiment
        self._tracking_uri = resolved.tracking_uri
        self._registry_override = resolved.registry_uri
        self._apply_credentials(resolved)
        self._apply_http_limits(resolved)
        self._apply()

    @classmethod
    def check_options(cls, options: Options) -> ResolvedConfiguration:
        """Validate and resolve the options without touching MLflow or the disk."""
        parsed = options.parse(ConfigurationOptions)
        experiment = parsed.experiment.strip()
        if not experiment:
            raise options.error("experiment", "the experiment name is empty")
        if parsed.http_max_retries < 0:
            raise options.error("http_max_retries", "must be 0 or more")
        if parsed.http_timeout < 1:
            raise options.error("http_timeout", "must be at least 1 second")

        return ResolvedConfiguration(
            tracking_uri=cls._resolve(options, "tracking_uri", parsed.tracking_uri),
            registry_uri=(
                None
                if parsed.registry_uri is None
                else cls._resolve(options, "registry_uri", parsed.registry_uri)
            ),
            experiment=experiment,
            username=parsed.username,
            password=parsed.password,
            token=parsed.token,
            http_max_retries=parsed.http_max_retries,
            http_timeout=parsed.http_timeout,
        )

    @staticmethod
    def _resolve(options: Options, key: str, uri: str) -> str:
        try:
            resolved = resolve_uri(uri)
        except UriError as exc:
            raise options.error(key, str(exc)) from None
        if resolved != uri:
            logger.info("configuration.%s %r resolved to %s", key, uri, resolved)
        return resolved

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def registry_uri(self) -> str:
        return self._registry_override or self._tracking_uri

    @property
    def experiment(self) -> str:
        return self._experiment

    def set_tracking_uri(self, uri: str) -> None:
        """Point the agent (and plain ``mlflow`` calls) at another tracking URI."""
        try:
            resolved = resolve_uri(uri)
        except UriError as exc:
            raise ConfigError(f"set_tracking_uri: {exc}") from None
        self._agent.before_tracking_uri_change()
        self._tracking_uri = resolved
        self._apply()
        logger.info("Tracking URI set to %s", resolved)

    def _apply(self) -> None:
        import mlflow

        for uri in {self.tracking_uri, self.registry_uri}:
            if uri.startswith(SQLITE_PREFIX):
                _make_parent_dir(uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)

    @staticmethod
    def _apply_credentials(parsed: ResolvedConfiguration) -> None:
        # MLflow reads credentials from the environment on every request.
        for option, variable in CREDENTIAL_ENV.items():
            value: Any = getattr(parsed, option)
            if value is not None:
                os.environ[variable] = str(value)

    @staticmethod
    def _apply_http_limits(parsed: ResolvedConfiguration) -> None:
        for option, variable in HTTP_ENV.items():
            os.environ.setdefault(variable, str(getattr(parsed, option)))
        os.environ.setdefault(HTTP_BACKOFF_ENV, "1")


def _make_parent_dir(uri: str) -> None:
    path = uri[len(SQLITE_PREFIX):].partition("?")[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("configuration", "mlflow", MlflowConfiguration)
