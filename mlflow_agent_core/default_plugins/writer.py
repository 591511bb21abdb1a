"""The background writer: spool every record, batch it, send it, retry it.

Flow of one record. The caller's thread encodes it as one spool line, writes it
to this process's spool (:class:`~.spool.SpoolLog`) and appends it to an
in-memory deque, under one lock; that is all a ``log_metric`` costs. The writer
thread takes records from the deque (or, when the deque was trimmed to respect
``queue_cap``, reads them back from the spool), and a :class:`Shipper` turns
them into ``log_batch`` requests within MLflow's limits, sent by a few sender
threads. When every record up to a spool position is stored, that position is
acknowledged in the spool, and fully sent segments are deleted.

Order. Each run's requests are kept in a FIFO. Metric-only requests of one run
may be in flight together, since MLflow orders a metric's history by timestamp,
step and value, not by arrival. A request carrying tags, a run's creation or its
end waits until the run has nothing in flight, and holds the run until answered;
so tags keep their last value and a run ends after all of its data.

Failures. A connection error, timeout, 5xx or 429 puts the request back at the
head of its FIFO and pauses sending for a capped exponential backoff; then one
request probes the server, and a success resumes full speed. The records are in
the spool all along, so a process that dies leaves them to the next agent start
or ``mlflow-agent sync`` (:func:`replay_family`). Any other 4xx is final: the
request goes to ``rejected.jsonl`` with the server's answer and an error is
logged, and the writer moves on.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contracts import MetricPoint
from .spool import (
    ARTIFACT,
    CREATE,
    END,
    METRICS,
    PARAMS,
    REJECTED_FILE,
    RUNS_FILE,
    TAGS,
    Family,
    RecordEncoder,
    SpoolLog,
    append_jsonl,
    load_run_map,
    record_count,
)
from .transport import PROVISIONAL_TAG, RejectedError, TransientError, Transport

logger = logging.getLogger(__name__)

PROVISIONAL_PREFIX = "pending-"

MAX_PARAMS_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
# MLflow refuses log_batch bodies over 1,000,000 bytes; our estimate keeps a margin.
MAX_REQUEST_BYTES = 900_000
FIRST_BACKOFF = 0.5
# Consecutive failures after which waiters stop waiting for the server (one
# retry is allowed to absorb a blip).
OUTAGE_FAILURES = 2
MIN_SYNC_INTERVAL = 0.02

Op = tuple[int, int, int, str, Any]  # (start, end, kind, run_id, payload)

_WAKE = object()
_OK, _TRANSIENT, _REJECTED = range(3)
_KIND_NAMES = {METRICS: "batch", CREATE: "create_run", END: "end_run",
               ARTIFACT: "artifact"}


@dataclass(frozen=True)
class WriterSettings:
    """The tracking options the writer uses (see ``TrackingOptions``)."""

    flush_interval: float = 1.0
    batch_size: int = 1000
    max_in_flight: int = 4
    queue_cap: int = 100_000
    retry_backoff_max: float = 30.0


# ------------------------------------------------------------------ batches


class _Chunk:
    """Records taken from the spool in one go; acked when all its requests are."""

    __slots__ = ("end", "outstanding")

    def __init__(self, end: int) -> None:
        self.end = end
        self.outstanding = 0


class Batch:
    """One request: a ``log_batch`` of one run, or a create, end or artifact."""

    __slots__ = ("seq", "run", "kind", "chunk", "metrics", "params", "tags",
                 "payload", "barrier", "entities", "size")

    def __init__(self, seq: int, run: str, kind: int, chunk: _Chunk,
                 payload: Any = None) -> None:
        self.seq = seq
        self.run = run
        self.kind = kind
        self.chunk = chunk
        self.metrics: list[MetricPoint] = []
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.payload = payload
        self.barrier = kind in (CREATE, END)
        self.entities = 0 if kind == METRICS else 1
        self.size = 200

    def fits_metric(self, point: MetricPoint, batch_size: int) -> bool:
        return (
            len(self.metrics) < batch_size
            and self.entities < MAX_ENTITIES_PER_REQUEST
            and self.size + len(point.key) + 80 <= MAX_REQUEST_BYTES
        )

    def fits_pair(self, table: dict[str, str], key: str, value: str) -> int:
        """Bytes the pair adds, or 0 when it does not fit."""
        cost = len(json.dumps(key)) + len(json.dumps(value)) + 30
        if (
            key not in table and len(table) >= MAX_PARAMS_TAGS_PER_REQUEST
            or self.entities >= MAX_ENTITIES_PER_REQUEST
            or self.size + cost > MAX_REQUEST_BYTES
        ):
            return 0
        return cost

    def as_record(self) -> dict[str, Any]:
        """A JSON form for ``rejected.jsonl``."""
        record: dict[str, Any] = {"run_id": self.run, "kind": _KIND_NAMES[self.kind]}
        if self.kind == METRICS:
            record["metrics"] = [[p.key, p.value, p.timestamp, p.step]
                                 for p in self.metrics]
            record["params"] = self.params
            record["tags"] = self.tags
        else:
            record["payload"] = self.payload
        return record


# ------------------------------------------------------------------ the shipper


class Shipper:
    """Sends batches in per-run order with up to ``max_in_flight`` requests.

    Everything but the sender threads runs on one thread (the writer's, or the
    replaying one); completions arrive on ``events`` as tuples and must be handed
    to :meth:`complete`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        events: queue.SimpleQueue[Any],
        directory: Path,
        settings: WriterSettings,
        id_map: dict[str, str | None],
        start: int = 0,
        name: str = "mlflow-agent-sender",
    ) -> None:
        self.transport = transport
        self.directory = directory
        self.settings = settings
        self.id_map = id_map
        self.acked = start
        self.acked_entities = 0
        self.rejected_entities = 0
        self.failures = 0
        self.attempts = 0
        self.last_error: str | None = None
        self.retry_at = 0.0
        self.backoff_max = settings.retry_backoff_max
        self.in_flight = 0
        self._events = events
        self._name = name
        self._fifos: dict[str, deque[Batch]] = {}
        self._run_in_flight: dict[str, int] = {}
        self._held: set[str] = set()
        self._chunks: deque[_Chunk] = deque()
        self._pending = 0
        self._seq = 0
        self._jobs: queue.SimpleQueue[tuple[Batch, str, str | None] | None] = (
            queue.SimpleQueue()
        )
        self._senders: list[threading.Thread] = []

    # State

    @property
    def outage(self) -> bool:
        return self.failures >= OUTAGE_FAILURES

    def has_room(self) -> bool:
        limit = (self.settings.max_in_flight + 2) * self.settings.batch_size
        return self._pending < limit

    def room(self) -> int:
        limit = (self.settings.max_in_flight + 2) * self.settings.batch_size
        return max(limit - self._pending, 0)

    def idle(self) -> bool:
        return not self._chunks

    def pending_entities(self) -> int:
        return self._pending

    # Building batches

    def feed(self, ops: Sequence[Op], end: int,
             bad_lines: Iterable[tuple[bytes, str]] = ()) -> None:
        """Turn the records of one contiguous spool range into queued batches."""
        chunk = _Chunk(end)
        self._chunks.append(chunk)
        for line, reason in bad_lines:
            self._reject_raw(line, reason)
        open_batches: dict[str, Batch] = {}
        for _start, _end, kind, run, payload in ops:
            if kind == METRICS:
                self._add_metrics(open_batches, chunk, run, payload)
            elif kind in (PARAMS, TAGS):
                self._add_pairs(open_batches, chunk, run, kind, payload)
            else:
                open_batches.pop(run, None)
                self._queue(Batch(self._next_seq(), run, kind, chunk, payload))
        self._advance()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _queue(self, batch: Batch) -> None:
        batch.chunk.outstanding += 1
        self._pending += batch.entities
        fifo = self._fifos.get(batch.run)
        if fifo is None:
            fifo = self._fifos[batch.run] = deque()
        fifo.append(batch)

    def _open(self, open_batches: dict[str, Batch], chunk: _Chunk, run: str) -> Batch:
        batch = Batch(self._next_seq(), run, METRICS, chunk)
        open_batches[run] = batch
        self._queue(batch)
        return batch

    def _add_metrics(self, open_batches: dict[str, Batch], chunk: _Chunk, run: str,
                     points: Sequence[MetricPoint]) -> None:
        batch = open_batches.get(run) or self._open(open_batches, chunk, run)
        batch_size = self.settings.batch_size
        for point in points:
            if not batch.fits_metric(point, batch_size):
                batch = self._open(open_batches, chunk, run)
            batch.metrics.append(point)
            batch.entities += 1
            batch.size += len(point.key) + 80
        self._pending += len(points)

    def _add_pairs(self, open_batches: dict[str, Batch], chunk: _Chunk, run: str,
                   kind: int, pairs: Mapping[str, str]) -> None:
        batch = open_batches.get(run) or self._open(open_batches, chunk, run)
        for key, value in pairs.items():
            table = batch.tags if kind == TAGS else batch.params
            cost = batch.fits_pair(table, key, value)
            if not cost:
                batch = self._open(open_batches, chunk, run)
                table = batch.tags if kind == TAGS else batch.params
                cost = batch.fits_pair(table, key, value)
            # Every pair counts, repeated keys too, so that the entities acked
            # add up to the records accepted.
            batch.entities += 1
            self._pending += 1
            table[key] = value
            batch.size += cost
            batch.barrier = batch.barrier or kind == TAGS

    # Sending

    def pump(self) -> None:
        """Submit every batch that may go now."""
        if self.failures and time.monotonic() < self.retry_at:
            return
        limit = 1 if self.failures else self.settings.max_in_flight
        for run in list(self._fifos):
            if self.in_flight >= limit:
                return
            self._pump_run(run, limit)

    def _pump_run(self, run: str, limit: int) -> None:
        fifo = self._fifos[run]
        while fifo and self.in_flight < limit and run not in self._held:
            batch = fifo[0]
            if batch.barrier and self._run_in_flight.get(run):
                return
            if batch.kind == CREATE and self.id_map.get(run):
                fifo.popleft()  # created by an earlier replay
                self._done(batch)
                continue
            target = self._resolve(batch)
            if target is _WAIT:
                return
            fifo.popleft()
            if target is None:
                self._reject(batch, f"run {run} was never created on "
                             f"{self.transport.shown_uri}")
                self._done(batch)
                continue
            self._submit(batch, target)
        if not fifo:
            del self._fifos[run]

    def _resolve(self, batch: Batch) -> Any:
        """The server's id for the batch's run; None if it cannot exist; or _WAIT."""
        run = batch.run
        if batch.kind == CREATE:
            parent = batch.payload.get("parent")
            if parent and parent.startswith(PROVISIONAL_PREFIX):
                if parent not in self.id_map and (
                    parent in self._fifos or self._run_in_flight.get(parent)
                ):
                    return _WAIT
            return run
        if not run.startswith(PROVISIONAL_PREFIX):
            return run
        if run in self.id_map:
            return self.id_map[run]
        if self._run_in_flight.get(run):
            return _WAIT
        return None

    def _submit(self, batch: Batch, target: str) -> None:
        if not self._senders:
            self._start_senders()
        self.in_flight += 1
        self._run_in_flight[batch.run] = self._run_in_flight.get(batch.run, 0) + 1
        if batch.barrier:
            self._held.add(batch.run)
        parent = None
        if batch.kind == CREATE and batch.payload.get("parent"):
            parent = self.id_map.get(batch.payload["parent"], batch.payload["parent"])
        self._jobs.put((batch, target, parent))

    def _start_senders(self) -> None:
        for index in range(self.settings.max_in_flight):
            thread = threading.Thread(
                target=self._sender, name=f"{self._name}-{index}", daemon=True
            )
            thread.start()
            self._senders.append(thread)

    def _sender(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, target, parent = job
            try:
                result = self._send(batch, target, parent)
            except TransientError as exc:
                self._events.put((self, batch, _TRANSIENT, str(exc)))
            except RejectedError as exc:
                self._events.put((self, batch, _REJECTED, str(exc)))
            except Exception as exc:
                # A bug or an unexpected answer: keep the batch, never loop on it.
                logger.exception("Unexpected error sending a tracking request")
                self._events.put((self, batch, _REJECTED, f"{type(exc).__name__}: {exc}"))
            else:
                self._events.put((self, batch, _OK, result))

    def _send(self, batch: Batch, target: str, parent: str | None) -> str | None:
        transport = self.transport
        if batch.kind == METRICS:
            transport.log_batch(target, batch.metrics, batch.params, batch.tags)
        elif batch.kind == END:
            transport.update_run(target, batch.payload["status"], batch.payload["end_time"])
        elif batch.kind == ARTIFACT:
            transport.upload(target, batch.payload["path"], batch.payload.get("artifact_path"))
        elif batch.kind == CREATE:
            return self._create(batch, parent)
        return None

    def _create(self, batch: Batch, parent: str | None) -> str:
        payload = batch.payload
        transport = self.transport
        experiment_id = payload.get("experiment_id") or transport.experiment_id(
            payload["experiment"]
        )
        # A replay that died after creating the run must not create it twice.
        existing = transport.find_run(experiment_id, PROVISIONAL_TAG, batch.run)
        if existing is not None:
            return existing
        tags = dict(payload.get("tags") or {})
        tags[PROVISIONAL_TAG] = batch.run
        if parent is not None and not parent.startswith(PROVISIONAL_PREFIX):
            tags["mlflow.parentRunId"] = parent
        return transport.create_run(
            experiment_id=experiment_id,
            run_name=payload.get("run_name"),
            tags=tags,
            start_time=payload["start_time"],
        )

    # Completions

    def complete(self, batch: Batch, outcome: int, detail: Any) -> None:
        """Account for the answer to ``batch`` (called on the shipper's thread)."""
        self.in_flight -= 1
        self.attempts += 1
        run = batch.run
        self._run_in_flight[run] -= 1
        if not self._run_in_flight[run]:
            del self._run_in_flight[run]
        if batch.barrier:
            self._held.discard(run)

        if outcome == _TRANSIENT:
            self._retry_later(batch, detail)
            return
        if self.failures:
            logger.info(
                "Reached %s again; sending the records kept in the spool",
                self.transport.shown_uri,
            )
        self.failures = 0
        self.last_error = None
        if outcome == _OK:
            self._succeeded(batch, detail)
        else:
            self._reject(batch, detail)
            if batch.kind == CREATE:
                self.id_map[run] = None
        self._done(batch)

    def _succeeded(self, batch: Batch, result: str | None) -> None:
        if batch.kind == CREATE and result is not None:
            self.id_map[batch.run] = result
            append_jsonl(self.directory / RUNS_FILE,
                         {"provisional": batch.run, "run_id": result})
            logger.info(
                "Run %s, logged while %s was unreachable, is now run %s there",
                batch.run, self.transport.shown_uri, result,
            )
        elif batch.kind == ARTIFACT:
            copy = Path(batch.payload["path"]).parent
            shutil.rmtree(copy, ignore_errors=True)

    def _retry_later(self, batch: Batch, error: str) -> None:
        self.failures += 1
        self.last_error = error
        delay = min(self.backoff_max, FIRST_BACKOFF * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
        if self.failures == 1:
            logger.warning(
                "Cannot send to %s (%s); records are kept in the spool %s and "
                "retried with backoff up to %.0f s",
                self.transport.shown_uri, error, self.directory, self.backoff_max,
            )
        fifo = self._fifos.get(batch.run)
        if fifo is None:
            fifo = self._fifos[batch.run] = deque()
        index = 0
        while index < len(fifo) and fifo[index].seq < batch.seq:
            index += 1
        fifo.insert(index, batch)

    def retry_now(self) -> None:
        self.retry_at = 0.0

    def _done(self, batch: Batch) -> None:
        self._pending -= batch.entities
        self.acked_entities += batch.entities
        batch.chunk.outstanding -= 1
        self._advance()

    def _advance(self) -> None:
        chunks = self._chunks
        while chunks and chunks[0].outstanding == 0:
            self.acked = chunks.popleft().end

    def _reject(self, batch: Batch, reason: str) -> None:
        self.rejected_entities += batch.entities
        path = self.directory / REJECTED_FILE
        append_jsonl(path, {
            "time": int(time.time() * 1000),
            "tracking_uri": self.transport.shown_uri,
            "error": reason,
            "record": batch.as_record(),
        })
        logger.error(
            "%s refused a %s of run %s (%d records): %s. They are kept in %s",
            self.transport.shown_uri, _KIND_NAMES[batch.kind], batch.run,
            batch.entities, reason, path,
        )

    def _reject_raw(self, line: bytes, reason: str) -> None:
        self.rejected_entities += 1
        self.acked_entities += 1
        path = self.directory / REJECTED_FILE
        append_jsonl(path, {"time": int(time.time() * 1000), "error": reason,
                            "line": line.decode("utf-8", "replace")})
        logger.error("Skipped a spool line (%s); it is kept in %s", reason, path)

    def stop(self) -> None:
        for _ in self._senders:
            self._jobs.put(None)


_WAIT = object()


def dispatch(event: Any) -> None:
    """Hand a completion taken from an events queue to its shipper."""
    shipper, batch, outcome, detail = event
    shipper.complete(batch, outcome, detail)


# ------------------------------------------------------------------ the live writer


class Writer:
    """This process's spool and sender for one tracking URI.

    ``log_*`` methods are called on the caller's thread and never wait for the
    network; :meth:`flush`, :meth:`end_run` and :meth:`close` wait, each with a
    bound.
    """

    def __init__(
        self,
        transport: Transport,
        directory: Path,
        settings: WriterSettings,
        *,
        reachable: bool = True,
    ) -> None:
        self.transport = transport
        self.directory = directory
        self.settings = settings
        self.log = SpoolLog(directory, transport.uri)
        self.id_map: dict[str, str | None] = dict(load_run_map(directory))
        self._encoder = RecordEncoder()
        self._lock = threading.Lock()
        self._queue: deque[Op] = deque()
        self._queued = 0
        self._accepted = 0
        self._wake_at = settings.batch_size
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._shipper = Shipper(
            transport, events=self._events, directory=directory, settings=settings,
            id_map=self.id_map,
        )
        if not reachable:
            self._shipper.failures = OUTAGE_FAILURES
            self._shipper.retry_at = time.monotonic() + FIRST_BACKOFF
        self._fed = 0
        self._flush_to = 0
        self._closing = False
        self._stopped = False
        self._last_sync = 0.0
        self._next_tick = 0.0
        self._progress = threading.Condition()
        self._recovery: threading.Thread | None = None
        self._recovery_stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="mlflow-agent-writer", daemon=True
        )
        self._thread.start()

    # Caller side

    @property
    def outage(self) -> bool:
        return self._shipper.outage

    @property
    def last_error(self) -> str | None:
        return self._shipper.last_error

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        line = self._encoder.metrics(run_id, points)
        count = len(points)
        with self._lock:
            start = self.log.position
            self.log.append(line)
            self._queue.append((start, self.log.position, METRICS, run_id, points))
            self._queued += count
            self._accepted += count
            if self._queued >= self._wake_at:
                self._wake_at = 1 << 62
                self._events.put(_WAKE)

    def append(self, kind: int, run_id: str, payload: Mapping[str, Any]) -> int:
        """Queue a params, tags, create, end or artifact record; its end position."""
        line = self._encoder.other(kind, run_id, payload)
        count = record_count(kind, payload)
        with self._lock:
            start = self.log.position
            self.log.append(line)
            end = self.log.position
            self._queue.append((start, end, kind, run_id, payload))
            self._queued += count
            self._accepted += count
        self._events.put(_WAKE)
        return end

    def resolve(self, run_id: str) -> str:
        """The server's id of ``run_id`` (itself unless it is provisional)."""
        return self.id_map.get(run_id) or run_id

    def is_unresolved(self, run_id: str) -> bool:
        return run_id.startswith(PROVISIONAL_PREFIX) and not self.id_map.get(run_id)

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything logged so far is stored; False on timeout or outage.

        With ``timeout=None`` the wait ends early once the server is known to be
        down (the records stay in the spool); with a timeout it keeps waiting for
        the server to come back until the timeout.
        """
        with self._lock:
            target = self.log.position
        return self._wait_for(target, timeout, give_up_on_outage=timeout is None)

    def end_run(self, run_id: str, status: str, timeout: float) -> bool:
        """Queue the end of ``run_id`` after its data; True once the server has it."""
        payload = {"status": status, "end_time": int(time.time() * 1000)}
        target = self.append(END, run_id, payload)
        return self._wait_for(target, timeout, give_up_on_outage=True)

    def _wait_for(self, target: int, timeout: float | None, *,
                  give_up_on_outage: bool, attempts_after: int | None = None) -> bool:
        self._flush_to = max(self._flush_to, target)
        self._events.put(_WAKE)
        deadline = None if timeout is None else time.monotonic() + timeout
        shipper = self._shipper
        with self._progress:
            while shipper.acked < target:
                if give_up_on_outage and shipper.outage and (
                    attempts_after is None or shipper.attempts > attempts_after
                ):
                    return False
                if self._stopped:
                    return False
                wait = 0.5
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                self._progress.wait(wait)
        return True

    def close(self, timeout: float) -> int:
        """Send what we can within ``timeout``; returns the records left in the spool."""
        if self._stopped:
            return 0
        deadline = time.monotonic() + timeout
        self._recovery_stop.set()
        self._closing = True
        shipper = self._shipper
        attempts = shipper.attempts
        if shipper.outage:
            # One fresh attempt: if the server is back we use the time left.
            shipper.retry_now()
        with self._lock:
            target = self.log.position
        self._wait_for(target, timeout, give_up_on_outage=True, attempts_after=attempts)

        self._stopped = True
        self._events.put(_WAKE)
        self._thread.join(max(deadline - time.monotonic(), 0.05))
        shipper.stop()
        left = self._accepted - shipper.acked_entities
        with self._lock:
            self.log.sync()
            self.log.close(delete=left == 0 and shipper.acked >= target)
        if left:
            logger.warning(
                "%d tracking records for %s were not sent within %.1f s; they are "
                "kept in %s and will be sent by the next agent started on it or by "
                "`mlflow-agent sync`", left, self.transport.shown_uri, timeout,
                self.directory,
            )
        return left

    # Writer thread

    def _run(self) -> None:
        try:
            while not self._stopped:
                self._wait_event()
                self._step()
        except Exception:
            logger.exception(
                "The tracking writer for %s stopped; unsent records stay in %s",
                self.transport.shown_uri, self.directory,
            )
            self._stopped = True
            with self._progress:
                self._progress.notify_all()

    def _wait_event(self) -> None:
        now = time.monotonic()
        shipper = self._shipper
        timeout = max(self._next_tick - now, 0.0)
        if shipper.failures and (self._queue or not shipper.idle()):
            timeout = min(timeout, max(shipper.retry_at - now, 0.0))
        if self._flush_to > self._fed and shipper.has_room():
            timeout = 0.0
        try:
            event = self._events.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return
        while True:
            if event is not _WAKE:
                dispatch(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _step(self) -> None:
        now = time.monotonic()
        tick = now >= self._next_tick
        if tick:
            self._next_tick = now + self.settings.flush_interval
        urgent = self._closing or self._flush_to > self._fed
        if tick or urgent or self._queued >= self.settings.batch_size:
            self._feed()
        self._shipper.pump()
        self._trim()
        self._maintain_spool(now)
        with self._progress:
            self._progress.notify_all()

    def _feed(self) -> None:
        shipper = self._shipper
        while shipper.has_room():
            queue_ = self._queue
            if queue_ and queue_[0][0] == self._fed:
                self._feed_memory(shipper.room())
            elif not self._feed_disk(shipper.room()):
                break
        with self._lock:
            self._wake_at = self._queued + self.settings.batch_size

    def _feed_memory(self, room: int) -> None:
        queue_ = self._queue
        ops: list[Op] = []
        taken = 0
        while queue_ and taken < room:
            op = queue_.popleft()
            ops.append(op)
            taken += record_count(op[2], op[4])
        with self._lock:
            self._queued -= taken
        self._fed = ops[-1][1]
        self._shipper.feed(ops, self._fed)

    def _feed_disk(self, room: int) -> bool:
        """Read records trimmed from memory back from the spool; False if none."""
        if self.log.broken is not None:
            return False
        queue_ = self._queue
        stop = queue_[0][0] if queue_ else self.log.position
        if self._fed >= stop:
            return False
        records, bad, position = self.log.read(self._fed, stop, max(room, 1))
        if position == self._fed:
            return False
        self._fed = position
        self._shipper.feed(records, position, bad)
        return True

    def _trim(self) -> None:
        """Keep at most ``queue_cap`` records in memory; the rest is in the spool."""
        cap = self.settings.queue_cap
        if self._queued <= cap or self.log.broken is not None:
            return
        queue_ = self._queue
        dropped = 0
        excess = self._queued - cap // 2
        while queue_ and dropped < excess:
            op = queue_.popleft()
            dropped += record_count(op[2], op[4])
        with self._lock:
            self._queued -= dropped

    def _maintain_spool(self, now: float) -> None:
        log = self.log
        log.ack(self._shipper.acked)
        if now - self._last_sync >= MIN_SYNC_INTERVAL:
            self._last_sync = now
            log.sync()
        log.maintain(self._lock)
        if log.broken is not None and not getattr(self, "_reported_broken", False):
            self._reported_broken = True
            logger.error(
                "Cannot write the spool in %s (%s); records are kept in memory only "
                "until sent", self.directory, log.broken,
            )

    # Records left by earlier processes

    def start_recovery(self, max_in_flight: int = 2) -> None:
        """Replay, in the background, spool families that no live process holds."""
        others = [f for f in _families_except(self.directory, self.log.name)]
        if not others:
            return
        self._recovery = threading.Thread(
            target=self._recover, args=(others, max_in_flight),
            name="mlflow-agent-recovery", daemon=True,
        )
        self._recovery.start()

    def _recover(self, others: list[Family], max_in_flight: int) -> None:
        settings = WriterSettings(
            batch_size=self.settings.batch_size, max_in_flight=max_in_flight,
            retry_backoff_max=self.settings.retry_backoff_max,
        )
        for family in others:
            if self._recovery_stop.is_set():
                return
            if not family.try_lock():
                continue
            logger.info(
                "Sending the records an earlier process left in %s to %s",
                family, self.transport.shown_uri,
            )
            result = replay_family(
                family, self.transport, settings=settings, id_map=self.id_map,
                stop=self._recovery_stop,
            )
            result.log(self.transport.shown_uri)


def _families_except(directory: Path, own: str) -> list[Family]:
    from .spool import families

    return [family for family in families(directory) if family.name != own]


# ------------------------------------------------------------------ replay


@dataclass
class ReplayResult:
    """What replaying one spool family achieved."""

    family: str
    sent: int = 0
    rejected: int = 0
    remaining: int = 0
    torn_bytes: int = 0
    finished: bool = False
    error: str | None = None

    def log(self, uri: str) -> None:
        if self.finished:
            logger.info(
                "Sent %d spooled records from %s to %s (%d refused, kept in %s)",
                self.sent, self.family, uri, self.rejected, REJECTED_FILE,
            )
        else:
            logger.warning(
                "Stopped replaying %s to %s with %d records left (%s); they stay "
                "in the spool", self.family, uri, self.remaining,
                self.error or "stopped",
            )


ProgressCallback = Callable[[ReplayResult], None]


def replay_family(
    family: Family,
    transport: Transport,
    *,
    settings: WriterSettings,
    id_map: dict[str, str | None],
    stop: threading.Event | None = None,
    give_up_after: float | None = None,
    progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Send a locked family's unacknowledged records in order; delete it when done.

    Outages are waited out with the usual backoff, until ``stop`` is set or, with
    ``give_up_after``, once the server has been unreachable that many seconds.
    """
    result = ReplayResult(str(family), torn_bytes=family.torn_bytes())
    if result.torn_bytes:
        logger.warning(
            "The last %d bytes of %s are a torn record (the process died while "
            "writing it); they are skipped", result.torn_bytes, family,
        )
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    start = family.acked()
    shipper = Shipper(
        transport, events=events, directory=family.directory, settings=settings,
        id_map=id_map, start=start, name="mlflow-agent-replay",
    )
    end = family.end()
    fed = start
    down_since: float | None = None
    try:
        while True:
            fed, end = _replay_feed(family, shipper, fed, end)
            shipper.pump()
            if fed >= end and shipper.idle():
                result.finished = True
                break
            if stop is not None and stop.is_set():
                break
            _replay_wait(events, shipper)
            _write_ack(family, shipper.acked)
            result.sent = shipper.acked_entities - shipper.rejected_entities
            result.rejected = shipper.rejected_entities
            if progress is not None:
                progress(result)
            if shipper.failures:
                down_since = down_since or time.monotonic()
                if give_up_after is not None and (
                    time.monotonic() - down_since > give_up_after
                ):
                    result.error = shipper.last_error
                    break
            else:
                down_since = None
    finally:
        shipper.stop()
    result.sent = shipper.acked_entities - shipper.rejected_entities
    result.rejected = shipper.rejected_entities
    if result.finished:
        family.delete()
    else:
        _write_ack(family, shipper.acked)
        result.remaining = _count_from(family, shipper.acked)
        family.unlock()
    if progress is not None:
        progress(result)
    return result


def _replay_feed(family: Family, shipper: Shipper, fed: int, end: int) -> tuple[int, int]:
    while shipper.has_room() and fed < end:
        records, bad, position = family.read(fed, end, max(shipper.room(), 1))
        if position == fed:
            return fed, fed  # a torn last record: nothing more to read
        shipper.feed(records, position, bad)
        fed = position
    return fed, end


def _replay_wait(events: queue.SimpleQueue[Any], shipper: Shipper) -> None:
    timeout = 1.0
    if shipper.failures and not shipper.in_flight:
        timeout = max(shipper.retry_at - time.monotonic(), 0.0) + 0.001
    try:
        event = events.get(timeout=timeout)
    except queue.Empty:
        return
    while True:
        dispatch(event)
        try:
            event = events.get_nowait()
        except queue.Empty:
            return


def _write_ack(family: Family, position: int) -> None:
    if position > 0:
        temporary = family.ack_path.with_suffix(".ack.tmp")
        temporary.write_bytes(b"%020d\n" % position)
        temporary.replace(family.ack_path)


def _count_from(family: Family, position: int) -> int:
    total = 0
    while True:
        records, bad, next_position = family.read(position, None, 100_000)
        total += sum(record_count(kind, payload) for _, _, kind, _, payload in records)
        total += len(bad)
        if next_position == position:
            return total
        position = next_position
