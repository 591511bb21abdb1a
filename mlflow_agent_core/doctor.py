"""``mlflow-agent doctor``: is this configuration ready for a long training job?

Checks the configuration without starting anything (:mod:`.checks`), then probes
the tracking and registry servers with plain HTTP requests and a short timeout,
so a server that is down is reported within seconds instead of after MLflow's
retries. Local sqlite stores are inspected on disk.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .checks import ConfigReport, check_config
from .config import AgentConfig
from .redaction import redact_text

__all__ = [
    "DoctorReport",
    "Finding",
    "SpoolBacklog",
    "probe_http",
    "probe_spool",
    "probe_sqlite",
    "run_doctor",
    "spool_backlog",
]

logger = logging.getLogger(__name__)

OK = "ok"
FAIL = "fail"
SKIP = "skip"

DEFAULT_TIMEOUT = 3.0
SEARCH_EXPERIMENTS = "/api/2.0/mlflow/experiments/search?max_results=1"
SEARCH_MODELS = "/api/2.0/mlflow/registered-models/search?max_results=1"
CREDENTIAL_ENV = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}
SQLITE_PREFIX = "sqlite:///"


@dataclass
class Finding:
    """The outcome of one check: ``status`` is ``ok``, ``fail`` or ``skip``."""

    check: str
    status: str
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    """Every finding, in the order the checks ran."""

    source: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(finding.status != FAIL for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.source,
            "ok": self.ok,
            "checks": [finding.as_dict() for finding in self.findings],
        }


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


def run_doctor(
    config: AgentConfig, *, timeout: float = DEFAULT_TIMEOUT
) -> DoctorReport:
    """Check ``config`` and probe the servers it names; never raises AgentError."""
    report = DoctorReport(config.source)
    checked = check_config(config)
    report.findings.append(_config_finding(checked))

    resolved = _resolved_configuration(checked)
    if resolved is None:
        report.findings.append(
            Finding(
                "tracking", FAIL,
                "the tracking URI is unknown: the configuration backend could not "
                "be checked (see above)",
            )
        )
    else:
        tracking_uri, registry_uri, credentials = resolved
        tracking = probe_store("tracking", tracking_uri, credentials, timeout)
        report.findings.append(tracking)
        if registry_uri == tracking_uri and tracking.facts.get("unreachable"):
            # Asking the same dead server again would only double the wait.
            report.findings.append(
                Finding(
                    "registry", FAIL, "the tracking server above, unreachable",
                    dict(tracking.facts),
                )
            )
        else:
            report.findings.append(
                probe_store("registry", registry_uri, credentials, timeout)
            )

    report.findings.append(probe_spool(checked))
    return report


def _config_finding(checked: ConfigReport) -> Finding:
    backends = {
        concern: check.backend for concern, check in checked.backends.items()
    }
    if not checked.ok:
        messages = [str(error) for error in checked.errors]
        return Finding(
            "config", FAIL, "; ".join(messages),
            {"errors": messages, "backends": backends},
        )
    listing = ", ".join(f"{concern}={name}" for concern, name in backends.items())
    unchecked = [check.concern for check in checked.unchecked]
    detail = f"{checked.config.source}: {listing}"
    if unchecked:
        detail += f" (options not checked without starting: {', '.join(unchecked)})"
    return Finding("config", OK, detail, {"backends": backends})


def _resolved_configuration(
    checked: ConfigReport,
) -> tuple[str, str, Credentials] | None:
    # The configuration backend's check_options returns what it resolved; the
    # built-in one returns tracking_uri, registry_uri and the credentials.
    check = checked.backends.get("configuration")
    resolved = None if check is None else check.resolved
    tracking_uri = getattr(resolved, "tracking_uri", None)
    if not isinstance(tracking_uri, str):
        return None
    registry_uri = getattr(resolved, "registry_uri", None) or tracking_uri

    values = {
        name: getattr(resolved, name, None) or os.environ.get(variable) or None
        for name, variable in CREDENTIAL_ENV.items()
    }
    return tracking_uri, registry_uri, Credentials(**values)


def probe_store(
    role: str, uri: str, credentials: Credentials, timeout: float
) -> Finding:
    """Probe the tracking or registry store at ``uri``."""
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        return probe_http(role, uri, credentials, timeout)
    if uri.startswith(SQLITE_PREFIX):
        return probe_sqlite(role, uri)
    return Finding(
        role, SKIP,
        f"{redact_text(uri)}: not probed (doctor probes http(s) servers and sqlite "
        "stores)",
        {"uri": redact_text(uri)},
    )


# HTTP servers


def probe_http(
    role: str, uri: str, credentials: Credentials, timeout: float
) -> Finding:
    """Reachable, MLflow version, credentials accepted, and the role's API."""
    # requests comes with MLflow; imported here so that `--help` stays fast.
    import requests

    base = uri.rstrip("/")
    shown = redact_text(base)
    facts: dict[str, Any] = {"uri": shown}
    session = _session(requests, credentials)
    try:
        version = _server_version(session, base, timeout)
        facts["server_version"] = version
        path = SEARCH_EXPERIMENTS if role == "tracking" else SEARCH_MODELS
        response = session.get(base + path, timeout=timeout)
    except requests.RequestException as exc:
        facts["unreachable"] = True
        return Finding(role, FAIL, _unreachable(shown, exc, timeout), facts)
    finally:
        session.close()

    facts["status"] = response.status_code
    return _judge(role, shown, response.status_code, facts)


def _session(requests: Any, credentials: Credentials) -> Any:
    session = requests.Session()
    session.verify = _tls_verify()
    if credentials.token:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials.username and credentials.password:
        session.auth = (credentials.username, credentials.password)
    return session


def _tls_verify() -> bool | str:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


def _server_version(session: Any, base: str, timeout: float) -> str | None:
    response = session.get(base + "/version", timeout=timeout)
    text = response.text.strip()
    if response.ok and text and len(text) < 40 and "<" not in text:
        return str(text)
    return None


def _judge(role: str, shown: str, status: int, facts: dict[str, Any]) -> Finding:
    version = facts.get("server_version")
    server = f"MLflow {version}" if version else "server of unknown version"
    if status in (401, 403):
        return Finding(
            role, FAIL,
            f"AuthError: {shown} ({server}) refused the credentials (HTTP {status}). "
            "Set configuration.username and password, or token (from the "
            "environment, e.g. ${MLFLOW_TRACKING_TOKEN}), to credentials the "
            "server accepts",
            facts,
        )
    if status == 404 and role == "registry":
        return Finding(
            role, FAIL,
            f"{shown} ({server}) has no model registry API (HTTP 404). Point "
            "configuration.registry_uri at a server or database with a registry",
            facts,
        )
    if status >= 400:
        return Finding(
            role, FAIL,
            f"{shown} ({server}) answered HTTP {status} to the {role} API; check "
            "that the URI points at an MLflow tracking server",
            facts,
        )
    what = "tracking API" if role == "tracking" else "model registry"
    return Finding(
        role, OK, f"{shown}: {server}, credentials accepted, {what} ok", facts
    )


def _unreachable(shown: str, exc: Exception, timeout: float) -> str:
    reason = type(exc).__name__
    return (
        f"ServerUnavailableError: {shown} could not be reached within {timeout:g} s "
        f"({reason}). Start the server or fix configuration.tracking_uri; runs "
        "logged while it is down are spooled if tracking.offline_ok is set"
    )


# Local sqlite stores


def probe_sqlite(role: str, uri: str) -> Finding:
    """A sqlite store: its file, its MLflow schema, and the registry tables."""
    path = Path(uri[len(SQLITE_PREFIX):].partition("?")[0])
    facts: dict[str, Any] = {"uri": uri, "path": str(path)}
    if not path.exists():
        parent = _existing_parent(path)
        if not os.access(parent, os.W_OK):
            return Finding(
                role, FAIL,
                f"{path} does not exist and {parent} is not writable; choose a "
                "store in a writable folder",
                facts,
            )
        return Finding(role, OK, f"{path}: new store, created at first use", facts)

    try:
        tables = _sqlite_tables(path)
    except sqlite3.Error as exc:
        return Finding(
            role, FAIL, f"{path} is not a readable sqlite database ({exc})", facts
        )
    return _judge_sqlite(role, path, tables, facts)


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _sqlite_tables(path: Path) -> set[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    try:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall()
    finally:
        connection.close()
    return {str(row[0]) for row in rows}


def _judge_sqlite(
    role: str, path: Path, tables: set[str], facts: dict[str, Any]
) -> Finding:
    if not tables:
        return Finding(role, OK, f"{path}: empty store, set up at first use", facts)
    if "alembic_version" not in tables or "experiments" not in tables:
        return Finding(
            role, FAIL,
            f"{path} is a sqlite database but not an MLflow store; choose another "
            "file",
            facts,
        )
    if role == "registry" and "registered_models" not in tables:
        return Finding(
            role, FAIL, f"{path}: MLflow store without registry tables", facts
        )
    return Finding(role, OK, f"{path}: MLflow store", facts)


# The spool of the mlflow tracking backend


def probe_spool(checked: ConfigReport) -> Finding:
    """What the tracking backend's spool holds that no server has stored yet."""
    check = checked.backends.get("tracking")
    options = None if check is None else check.resolved
    if options is None or not hasattr(options, "spool_dir"):
        backend = "?" if check is None else check.backend
        return Finding(
            "spool", SKIP, f"the {backend!r} tracking backend keeps no spool"
        )

    backlogs = spool_backlog(options.spool_dir)
    facts = {"backlog": [asdict(backlog) for backlog in backlogs]}
    waiting = [b for b in backlogs if b.waiting]
    if waiting:
        where = "; ".join(
            f"{b.waiting} for {b.tracking_uri} in {b.directory}" for b in waiting
        )
        return Finding(
            "spool", FAIL,
            f"records of processes that ended were never sent: {where}. Send them "
            "with `mlflow-agent sync` once the server is reachable",
            facts,
        )
    live = sum(b.live for b in backlogs)
    if live:
        return Finding(
            "spool", OK, f"{live} records of running processes wait to be sent", facts
        )
    return Finding("spool", OK, "nothing waiting to be sent", facts)


@dataclass
class SpoolBacklog:
    """Records of one tracking URI's spool directory not yet stored on the server.

    ``waiting`` counts entities (metric points, params, tags, and one per run
    creation, run end or artifact) of processes that are gone: ``mlflow-agent
    sync`` sends them. ``live`` counts those of processes still running, which
    send their own.
    """

    tracking_uri: str
    directory: str
    waiting: int = 0
    live: int = 0
    files: int = 0


def spool_backlog(
    root: str | os.PathLike[str] | None, tracking_uri: str | None = None
) -> list[SpoolBacklog]:
    """The backlog of every URI directory under ``root`` (or of one URI)."""
    from .default_plugins import spool

    base = Path(root).expanduser() if root is not None else spool.default_root()
    if tracking_uri is not None:
        directories = [spool.target_dir(base, tracking_uri)]
    else:
        directories = sorted(p for p in base.glob("*") if p.is_dir())

    found = []
    for directory in directories:
        if not directory.is_dir():
            continue
        uri = spool.recorded_uri(directory) or tracking_uri or "<unknown>"
        backlog = SpoolBacklog(spool.public_uri(uri), str(directory))
        for family in spool.families(directory):
            _count_family(spool, family, backlog)
        if backlog.files:
            found.append(backlog)
    return found


def _count_family(spool: Any, family: Any, backlog: SpoolBacklog) -> None:
    entities = 0
    position = family.acked()
    while True:
        records, _bad, next_position = family.read(position)
        entities += sum(spool.record_count(r[2], r[4]) for r in records)
        if next_position <= position:
            break
        position = next_position
    if not entities:
        return

    backlog.files += 1
    # A family whose lock can be taken belongs to a process that is gone.
    if family.try_lock():
        family.unlock()
        backlog.waiting += entities
    else:
        backlog.live += entities
