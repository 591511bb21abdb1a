"""How the tracking writer talks to MLflow: one short call per request, no retries.

Retrying is the writer's job (with its spool and backoff), so the transports
never retry on their own and classify every failure as :class:`TransientError`
(connection problems, timeouts, 5xx, 429: try again later) or
:class:`RejectedError` (any other 4xx: sending it again will not help).

- :class:`RestTransport` serves ``http(s)`` URIs with its own ``requests`` session
  per thread and a timeout on every call, so MLflow's client defaults (7 retries,
  120 s timeout) never apply. Credentials come from the variables MLflow reads:
  ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` or ``_TOKEN``,
  ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH`` and
  ``MLFLOW_TRACKING_CLIENT_CERT_PATH``.
- :class:`StoreTransport` serves every other URI (sqlite and other databases)
  through :class:`mlflow.MlflowClient`; these stores are local, with nothing to
  wait for.

Artifacts are uploaded with ``MlflowClient`` on both, from the writer's sender
threads, never from the caller's.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from .spool import Point, public_uri

PROVISIONAL_TAG = "mlflow_agent.provisional_id"

_API = "/api/2.0/mlflow"
_NONFINITE_JSON = {math.inf: "Infinity", -math.inf: "-Infinity"}


class TransientError(Exception):
    """The server could not be reached, or asked to be called again later."""


class RejectedError(Exception):
    """The server refused the request; sending it again would fail the same way."""

    def __init__(self, message: str, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def is_auth(self) -> bool:
        return self.status in (401, 403)


class Transport:
    """The calls the writer makes; subclasses implement them for one URI kind."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.shown_uri = public_uri(uri)
        self._experiments: dict[str, str] = {}
        self._client: Any = None
        self._client_lock = threading.Lock()

    def probe(self, experiment: str, timeout: float) -> None:
        """Check the server answers within ``timeout``; raise the transport errors."""

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when it does not exist."""
        cached = self._experiments.get(name)
        if cached is None:
            cached = self._find_or_create_experiment(name)
            self._experiments[name] = cached
        return cached

    def _find_or_create_experiment(self, name: str) -> str:
        raise NotImplementedError

    def create_run(
        self, *, experiment_id: str, run_name: str | None, tags: Mapping[str, str],
        start_time: int,
    ) -> str:
        raise NotImplementedError

    def log_batch(
        self, run_id: str, metrics: Sequence[Point],
        params: Mapping[str, str], tags: Mapping[str, str],
    ) -> None:
        raise NotImplementedError

    def update_run(self, run_id: str, status: str, end_time: int) -> None:
        raise NotImplementedError

    def find_run(self, experiment_id: str, key: str, value: str) -> str | None:
        """The run of ``experiment_id`` whose tag ``key`` equals ``value``, if any."""
        raise NotImplementedError

    def upload(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        """Upload a file or directory as an artifact of ``run_id``."""
        client = self.client()
        _classified(client.log_artifact, run_id, local_path, artifact_path)

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri)
            return self._client


def _classified(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an MlflowClient call, turning its errors into transport errors."""
    from mlflow.exceptions import MlflowException

    try:
        return call(*args, **kwargs)
    except MlflowException as exc:
        status = _http_status(exc)
        if 400 <= status < 500 and status != 429:
            raise RejectedError(
                exc.message, status=status, code=exc.error_code
            ) from exc
        raise TransientError(f"{exc.error_code}: {exc.message}") from exc
    except (OSError, TimeoutError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc


def _http_status(exc: Any) -> int:
    return int(exc.get_http_status_code())


def make_transport(
    uri: str, *, connect_timeout: float, read_timeout: float
) -> Transport:
    """The transport for tracking URI ``uri``."""
    if uri.startswith(("http://", "https://")):
        return RestTransport(
            uri, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
    return StoreTransport(uri)


class RestTransport(Transport):
    """MLflow's REST API over a plain ``requests`` session, without retries."""

    def __init__(
        self, uri: str, *, connect_timeout: float, read_timeout: float
    ) -> None:
        super().__init__(uri)
        self._base = uri.rstrip("/") + _API
        self._timeout = (connect_timeout, read_timeout)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            _apply_credentials(session)
            self._local.session = session
        return session

    def _call(
        self, method: str, endpoint: str, *, body: Any = None,
        params: Mapping[str, str] | None = None, timeout: Any = None,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        try:
            response = self._session().request(
                method,
                self._base + endpoint,
                data=data,
                params=params,
                headers={"Content-Type": "application/json"},
                timeout=timeout or self._timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(f"{type(exc).__name__}: {_short(exc)}") from exc
        if response.ok:
            return response.json() if response.content else {}
        raise _http_error(response)

    def probe(self, experiment: str, timeout: float) -> None:
        try:
            found = self._call(
                "GET", "/experiments/get-by-name",
                params={"experiment_name": experiment}, timeout=(timeout, timeout),
            )
        except RejectedError as exc:
            if exc.is_auth:
                raise
            return  # the server answered: it is up (404: no such experiment yet)
        experiment_id = found.get("experiment", {}).get("experiment_id")
        if experiment_id is not None:
            self._experiments[experiment] = str(experiment_id)

    def _find_or_create_experiment(self, name: str) -> str:
        try:
            found = self._call(
                "GET", "/experiments/get-by-name", params={"experiment_name": name}
            )
            return str(found["experiment"]["experiment_id"])
        except RejectedError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            created = self._call("POST", "/experiments/create", body={"name": name})
            return str(created["experiment_id"])
        except RejectedError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        # Another process created it between our two calls.
        found = self._call(
            "GET", "/experiments/get-by-name", params={"experiment_name": name}
        )
        return str(found["experiment"]["experiment_id"])

    def create_run(
        self, *, experiment_id: str, run_name: str | None, tags: Mapping[str, str],
        start_time: int,
    ) -> str:
        body: dict[str, Any] = {
            "experiment_id": experiment_id,
            "start_time": start_time,
            "user_id": tags.get("mlflow.user", ""),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if run_name is not None:
            body["run_name"] = run_name
        created = self._call("POST", "/runs/create", body=body)
        return str(created["run"]["info"]["run_id"])

    def log_batch(
        self, run_id: str, metrics: Sequence[Point],
        params: Mapping[str, str], tags: Mapping[str, str],
    ) -> None:
        body: dict[str, Any] = {"run_id": run_id}
        if metrics:
            body["metrics"] = [
                {
                    "key": key,
                    "value": value if math.isfinite(value) else _nonfinite(value),
                    "timestamp": timestamp,
                    "step": step,
                }
                for key, value, timestamp, step in metrics
            ]
        if params:
            body["params"] = [{"key": k, "value": v} for k, v in params.items()]
        if tags:
            body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        self._call("POST", "/runs/log-batch", body=body)

    def update_run(self, run_id: str, status: str, end_time: int) -> None:
        self._call(
            "POST", "/runs/update",
            body={"run_id": run_id, "status": status, "end_time": end_time},
        )

    def find_run(self, experiment_id: str, key: str, value: str) -> str | None:
        escaped = value.replace("'", "\\'")
        found = self._call(
            "POST", "/runs/search",
            body={
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{key}` = '{escaped}'",
                "max_results": 1,
            },
        )
        runs = found.get("runs") or []
        return str(runs[0]["info"]["run_id"]) if runs else None


def _nonfinite(value: float) -> str:
    # Protobuf's JSON form, which MLflow's server parses back into the double.
    return "NaN" if math.isnan(value) else _NONFINITE_JSON[value]


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _http_error(response: requests.Response) -> Exception:
    status = response.status_code
    try:
        payload = response.json()
        code = payload.get("error_code")
        message = payload.get("message") or response.reason
    except ValueError:
        code, message = None, (response.text[:300] or response.reason)
    text = f"HTTP {status} {code or response.reason}: {message}"
    if status == 429 or status >= 500:
        return TransientError(text)
    return RejectedError(text, status=status, code=code)


def _apply_credentials(session: requests.Session) -> None:
    env = os.environ
    username = env.get("MLFLOW_TRACKING_USERNAME")
    password = env.get("MLFLOW_TRACKING_PASSWORD")
    token = env.get("MLFLOW_TRACKING_TOKEN")
    if username and password:
        session.auth = (username, password)
    elif token:
        session.headers["Authorization"] = f"Bearer {token}"
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        session.verify = False
    elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        session.verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    if env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        session.cert = env["MLFLOW_TRACKING_CLIENT_CERT_PATH"]


class StoreTransport(Transport):
    """A database store (sqlite, PostgreSQL, ...) through ``MlflowClient``."""

    def _find_or_create_experiment(self, name: str) -> str:
        client = self.client()
        found = _classified(client.get_experiment_by_name, name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(_classified(client.create_experiment, name))
        except RejectedError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        return str(_classified(client.get_experiment_by_name, name).experiment_id)

    def create_run(
        self, *, experiment_id: str, run_name: str | None, tags: Mapping[str, str],
        start_time: int,
    ) -> str:
        run = _classified(
            self.client().create_run,
            experiment_id, start_time=start_time, tags=dict(tags), run_name=run_name,
        )
        return str(run.info.run_id)

    def log_batch(
        self, run_id: str, metrics: Sequence[Point],
        params: Mapping[str, str], tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        _classified(
            self.client().log_batch,
            run_id,
            metrics=[Metric(*point) for point in metrics],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )

    def update_run(self, run_id: str, status: str, end_time: int) -> None:
        _classified(self.client().set_terminated, run_id, status, end_time)

    def find_run(self, experiment_id: str, key: str, value: str) -> str | None:
        escaped = value.replace("'", "\\'")
        runs = _classified(
            self.client().search_runs,
            [experiment_id], filter_string=f"tags.`{key}` = '{escaped}'", max_results=1,
        )
        return str(runs[0].info.run_id) if runs else None
