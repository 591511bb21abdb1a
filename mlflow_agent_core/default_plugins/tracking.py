"""The ``mlflow`` tracking backend: batching, non-blocking and durable.

Every param, metric, tag and artifact the agent hands over is written to a local
spool and queued on the caller's thread, then sent by a background writer in
``log_batch`` requests (:mod:`.writer`; :mod:`.shipper` for batching, order and
retries; :mod:`.spool` for the files; :mod:`.transport` for the calls). Nothing
on the caller's thread waits for the network except ``start_run`` (one short
request), ``flush``, ``end_run`` and ``close``, and those wait with a bound.
``log_artifact`` and ``log_text`` copy the file into the spool and return; the
upload follows in order with the run's other records.

Durability. A record is in the spool's memory-mapped file when ``log_*``
returns, so the process being killed loses nothing it accepted; the file is
fsynced after each batch the writer takes, which bounds what an operating system
crash can lose.

Ending and exit. ``end_run`` queues the run's end after its records and waits
for them, through an outage too, at most ``exit_timeout``; ``close`` (agent
reset, interpreter exit) likewise. An outage never raises there: what is not
sent in time, the run's end included, stays queued and spooled, one log line
says so, and it is sent when the server answers (by this process, the next
agent started on the spool, or ``mlflow-agent sync``). Waits that ran out share
one budget until the server answers again, so ending many runs and exiting
during an outage wait ``exit_timeout`` in all.

Starting. Building the backend probes an ``http(s)`` tracking server within
``probe_timeout``; an unreachable one raises
:class:`~mlflow_agent_core.errors.ServerUnavailableError`, unless
``offline_ok: true``. Records left in the URI's spool directory by earlier
processes (killed, or out of time at exit) are replayed in the background.

Offline runs. With ``offline_ok: true``, a run started while the server cannot
be reached gets a provisional id, ``pending-<32 hex>``, and its creation is
spooled like any record. When the server answers again (in this process, the
next one, or ``mlflow-agent sync``), the run is created with its original name,
start time and tags plus the tag ``mlflow_agent.provisional_id``; every later
record of the provisional id goes to the new run, and the mapping is appended to
``runs.jsonl`` in the spool directory. The tag makes the replay idempotent: a
replay that died after creating the run finds it instead of creating another.
:meth:`MlflowTracking.resolve_run_id` gives the server's id once known.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..contracts import MetricPoint, Run
from ..errors import (
    AgentError,
    AuthError,
    ConfigError,
    InvalidInputError,
    ServerUnavailableError,
)
from ..hookspecs import Register, hookimpl
from .shipper import PROVISIONAL_PREFIX, WriterSettings
from .spool import ARTIFACT, ARTIFACTS_DIR, CREATE, PARAMS, TAGS, public_uri, target_dir
from .transport import RejectedError, TransientError, Transport, make_transport
from .writer import Writer

if TYPE_CHECKING:
    from ..agent import MLFlowAgent
    from ..config import Options

logger = logging.getLogger(__name__)

MAX_BATCH_SIZE = 1000


@dataclass(frozen=True)
class TrackingOptions:
    """The ``tracking:`` section of ``agent.yaml`` for ``backend: mlflow``."""

    flush_interval: float = field(
        default=1.0,
        metadata={"help": "seconds between sends of a partly filled batch"},
    )
    batch_size: int = field(
        default=1000,
        metadata={"help": "most metrics per log_batch request (1 to 1000)"},
    )
    max_in_flight: int = field(
        default=4, metadata={"help": "requests sent at the same time (1 to 32)"}
    )
    queue_cap: int = field(
        default=100_000,
        metadata={"help": "records held in memory; beyond, they are read back "
                          "from the spool when their turn comes"},
    )
    spool_dir: str | None = field(
        default=None,
        metadata={"help": "spool root; one subdirectory per tracking URI "
                          "(default ~/.cache/mlflow-agent/spool)"},
    )
    exit_timeout: float = field(
        default=10.0,
        metadata={"help": "seconds close, end_run and interpreter exit wait for "
                          "the server; the rest stays in the spool"},
    )
    offline_ok: bool = field(
        default=False,
        metadata={"help": "start and log to the spool when the server is down"},
    )
    probe_timeout: float = field(
        default=3.0,
        metadata={"help": "seconds to wait for the server at start (also the "
                          "connect timeout of every request)"},
    )
    request_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds to wait for the answer to one request"},
    )
    retry_backoff_max: float = field(
        default=30.0,
        metadata={"help": "longest pause between retries while the server is down"},
    )


def parse_options(options: Options) -> TrackingOptions:
    """Parse and check the ``tracking:`` options."""
    parsed = options.parse(TrackingOptions)
    positive = ("flush_interval", "exit_timeout", "probe_timeout", "request_timeout",
                "retry_backoff_max", "queue_cap")
    for name in positive:
        if getattr(parsed, name) <= 0:
            value = getattr(parsed, name)
            raise options.error(name, f"must be greater than 0, got {value}")
    if not 1 <= parsed.batch_size <= MAX_BATCH_SIZE:
        raise options.error(
            "batch_size", f"must be 1 to {MAX_BATCH_SIZE} (MLflow's limit per "
            f"request), got {parsed.batch_size}",
        )
    if not 1 <= parsed.max_in_flight <= 32:
        raise options.error(
            "max_in_flight", f"must be 1 to 32, got {parsed.max_in_flight}"
        )
    return parsed


class _Target:
    """The writer and transport of one tracking URI."""

    def __init__(self, uri: str, opts: TrackingOptions, experiment: str) -> None:
        self.uri = uri
        self.shown_uri = public_uri(uri)
        self.directory = target_dir(opts.spool_dir, uri)
        self.transport: Transport = make_transport(
            uri, connect_timeout=opts.probe_timeout, read_timeout=opts.request_timeout
        )
        reachable = self._probe(opts, experiment)
        settings = WriterSettings(
            flush_interval=opts.flush_interval,
            batch_size=opts.batch_size,
            max_in_flight=1 if uri.startswith("sqlite:") else opts.max_in_flight,
            queue_cap=opts.queue_cap,
            retry_backoff_max=opts.retry_backoff_max,
        )
        try:
            self.writer = Writer(
                self.transport, self.directory, settings, reachable=reachable
            )
        except OSError as exc:
            raise ConfigError(
                f"tracking.spool_dir: cannot write the spool in {self.directory} "
                f"({exc}); set spool_dir to a writable directory"
            ) from None
        self.writer.start_recovery()

    def _probe(self, opts: TrackingOptions, experiment: str) -> bool:
        try:
            self.transport.probe(experiment, opts.probe_timeout)
        except TransientError as exc:
            if not opts.offline_ok:
                raise ServerUnavailableError(
                    f"tracking server {self.shown_uri} is unreachable ({exc}). Start "
                    "it or fix configuration.tracking_uri; to train anyway and send "
                    "the records later, set tracking.offline_ok: true"
                ) from None
            logger.warning(
                "Tracking server %s is unreachable (%s); logging to the spool %s "
                "until it answers", self.shown_uri, exc, self.directory,
            )
            return False
        except RejectedError as exc:
            raise AuthError(
                f"tracking server {self.shown_uri} refused the credentials ({exc}); "
                "check configuration.username/password/token or "
                "MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN"
            ) from None
        return True


class MlflowTracking:
    """Tracking through MLflow, with the writer and spool described above."""

    # For `mlflow-agent config check`: the options without starting a writer.
    check_options = staticmethod(parse_options)

    def __init__(self, *, agent: MLFlowAgent, options: Options) -> None:
        self._agent = agent
        self.options = parse_options(options)
        self._targets: dict[str, _Target] = {}
        self._run_targets: dict[str, _Target] = {}
        self._targets_lock = threading.Lock()
        self._closed = False
        # When a wait for the server ran out, on which writer, and how far that
        # writer had got then; cleared once it gets further.
        self._stall: tuple[float, Writer, int] | None = None
        self._target()
        _close_at_exit(self)

    # Targets

    def _target(self) -> _Target:
        configuration = self._agent.configuration
        uri = configuration.tracking_uri
        target = self._targets.get(uri)
        if target is None:
            with self._targets_lock:
                target = self._targets.get(uri)
                if target is None:
                    target = _Target(uri, self.options, configuration.experiment)
                    self._targets[uri] = target
        return target

    def _writer_of(self, run: Run) -> Writer:
        target = self._run_targets.get(run.run_id)
        return (target or self._target()).writer

    def spool_directory(self) -> Path:
        """The spool directory of the current tracking URI."""
        return self._target().directory

    def resolve_run_id(self, run_id: str) -> str:
        """The server's id for ``run_id``; provisional ids map once created."""
        for target in self._targets.values():
            resolved = target.writer.resolve(run_id)
            if resolved != run_id:
                return resolved
        return run_id

    # Runs

    def start_run(
        self, *, run_name: str | None, tags: Mapping[str, str], parent: Run | None
    ) -> Run:
        target = self._run_targets.get(parent.run_id) if parent else None
        target = target or self._target()
        experiment = self._agent.configuration.experiment
        all_tags = _context_tags(tags)
        start_time = int(time.time() * 1000)
        parent_id = target.writer.resolve(parent.run_id) if parent else None

        run: Run | None = None
        # Offline, a known outage skips the attempt; otherwise we always try once,
        # since the server may be back before the writer's next retry.
        offline = (target.writer.outage and self.options.offline_ok) or (
            parent_id is not None and target.writer.is_unresolved(parent_id)
        )
        if not offline:
            run = self._create_online(
                target, experiment, run_name, all_tags, parent, parent_id, start_time
            )
        if run is None:
            if not self.options.offline_ok:
                raise self._unavailable(target, "cannot start a run")
            run = self._create_offline(
                target, experiment, run_name, all_tags, parent, start_time
            )
        self._run_targets[run.run_id] = target
        return run

    def _create_online(
        self, target: _Target, experiment: str, run_name: str | None,
        tags: dict[str, str], parent: Run | None, parent_id: str | None,
        start_time: int,
    ) -> Run | None:
        transport = target.transport
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        try:
            experiment_id = (
                parent.experiment_id if parent and parent.experiment_id
                else transport.experiment_id(experiment)
            )
            run_id = transport.create_run(
                experiment_id=experiment_id, run_name=run_name, tags=tags,
                start_time=start_time,
            )
        except TransientError as exc:
            if not self.options.offline_ok:
                raise ServerUnavailableError(
                    f"cannot start a run on {target.shown_uri}: {exc}. Check the "
                    "server, or set tracking.offline_ok: true to log to the spool"
                ) from None
            logger.warning("Cannot reach %s to start a run (%s); starting it offline",
                           target.shown_uri, exc)
            tags.pop("mlflow.parentRunId", None)
            return None
        except RejectedError as exc:
            raise _refused(target, "start a run", exc) from None
        return Run(run_id, experiment_id, run_name,
                   parent.run_id if parent else None)

    def _create_offline(
        self, target: _Target, experiment: str, run_name: str | None,
        tags: dict[str, str], parent: Run | None, start_time: int,
    ) -> Run:
        run_id = PROVISIONAL_PREFIX + uuid.uuid4().hex
        experiment_id = (parent.experiment_id if parent else "") or ""
        target.writer.append(CREATE, run_id, {
            "experiment": experiment,
            "experiment_id": experiment_id or None,
            "run_name": run_name,
            "tags": tags,
            "parent": parent.run_id if parent else None,
            "start_time": start_time,
        })
        logger.warning(
            "Started run %s offline: it will be created on %s when the server "
            "answers, and its records are kept in %s until then",
            run_id, target.shown_uri, target.directory,
        )
        return Run(run_id, experiment_id, run_name, parent.run_id if parent else None)

    def end_run(self, run: Run, status: str) -> None:
        """End the run after its records, waiting at most ``exit_timeout``.

        An outage never raises: the end stays spooled and is sent later.
        """
        target = self._run_targets.pop(run.run_id, None) or self._target()
        writer = target.writer
        started = time.monotonic()
        if writer.end_run(run.run_id, status, self._wait_budget(None, writer)):
            self._stall = None
            return
        if self._stall is None:
            self._stall = (started, writer, writer.acked)
        if writer.outage:
            reason = f"{target.shown_uri} is unreachable ({writer.last_error})"
        else:
            reason = f"not all of it reached {target.shown_uri} in time"
        logger.warning(
            "Run %s ended, but %s: its end and %d tracking records wait in %s and "
            "are sent when the server answers, by this process, the next agent "
            "started on that spool or `mlflow-agent sync`",
            run.run_id, reason, writer.unsent, target.directory,
        )

    def _wait_budget(
        self, timeout: float | None, writer: Writer | None = None
    ) -> float:
        """Seconds a wait may take: ``exit_timeout`` (or ``timeout``), minus what
        waits that ran out since the server last answered took already.

        So the agent ending its runs and then closing at exit waits at most
        ``exit_timeout`` in all, however many runs were open. A wait on another
        server's ``writer`` than the stalled one gets the whole budget.
        """
        budget = self.options.exit_timeout if timeout is None else timeout
        if self._stall is None:
            return budget
        since, stalled, acked_then = self._stall
        if writer is not None and writer is not stalled:
            return budget
        if stalled.acked > acked_then:
            self._stall = None  # the server answered since: a fresh budget
            return budget
        return max(budget - (time.monotonic() - since), 0.0)

    def _unavailable(self, target: _Target, what: str) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"{what}: tracking server {target.shown_uri} is unreachable "
            f"({target.writer.last_error or 'no answer'}). Records are kept in "
            f"{target.directory} and sent when it answers, or with "
            "`mlflow-agent sync`; set tracking.offline_ok: true to keep training "
            "while it is down"
        )

    # Records

    def log_params(self, run: Run, params: Mapping[str, str]) -> None:
        self._writer_of(run).append(PARAMS, run.run_id, dict(params))

    def log_metrics(self, run: Run, points: Sequence[MetricPoint]) -> None:
        target = self._run_targets.get(run.run_id)
        writer = target.writer if target is not None else self._target().writer
        writer.log_metrics(run.run_id, points)

    def set_tags(self, run: Run, tags: Mapping[str, str]) -> None:
        self._writer_of(run).append(TAGS, run.run_id, dict(tags))

    def log_artifact(
        self, run: Run, local_path: str, artifact_path: str | None = None
    ) -> None:
        writer = self._writer_of(run)
        copy_dir = self._artifact_dir(writer)
        source = Path(local_path)
        copy = copy_dir / (source.name or "artifact")
        try:
            if source.is_dir():
                shutil.copytree(source, copy)
            else:
                shutil.copy2(source, copy)
        except OSError as exc:
            shutil.rmtree(copy_dir, ignore_errors=True)
            raise InvalidInputError(
                f"log_artifact: cannot read {local_path!r} ({exc}); pass a readable "
                "file or directory"
            ) from None
        writer.append(ARTIFACT, run.run_id,
                      {"path": str(copy), "artifact_path": artifact_path})

    def log_text(self, run: Run, text: str, artifact_file: str) -> None:
        writer = self._writer_of(run)
        directory, _, name = artifact_file.rpartition("/")
        copy = self._artifact_dir(writer) / name
        copy.write_text(text, encoding="utf-8")
        writer.append(ARTIFACT, run.run_id,
                      {"path": str(copy), "artifact_path": directory or None})

    @staticmethod
    def _artifact_dir(writer: Writer) -> Path:
        # A private copy: the caller may change or delete the file once we return.
        directory = writer.directory / ARTIFACTS_DIR / uuid.uuid4().hex
        directory.mkdir(parents=True)
        return directory

    # Flushing and shutdown

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        complete = True
        for target in list(self._targets.values()):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            complete = target.writer.flush(left) and complete
        return complete

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self._wait_budget(timeout)
        for target in list(self._targets.values()):
            target.writer.close(max(deadline - time.monotonic(), 0.0))


def _context_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's run context tags (user, source, git commit), then the caller's."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        resolved: dict[str, str] = resolve_tags(dict(tags))
    except Exception as exc:  # noqa: BLE001 - context providers are third-party plugins
        logger.debug("Could not resolve MLflow's run context tags: %s", exc)
        return dict(tags)
    return resolved


def _refused(target: _Target, what: str, exc: RejectedError) -> AgentError:
    if exc.is_auth:
        return AuthError(
            f"tracking server {target.shown_uri} refused to {what}: {exc}; check "
            "the configured credentials"
        )
    return AgentError(f"tracking server {target.shown_uri} refused to {what}: {exc}")


def _close_at_exit(tracking: MlflowTracking) -> None:
    """Close the backend at interpreter exit if the agent did not."""
    reference = weakref.ref(tracking)

    def close() -> None:
        alive = reference()
        if alive is not None:
            alive.close()

    atexit.register(close)


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("tracking", "mlflow", MlflowTracking)


__all__ = ["MlflowTracking", "TrackingOptions", "parse_options"]
