"""Turning spooled records into MLflow requests, in order, with retries.

A :class:`Shipper` receives records in spool order (:meth:`Shipper.feed`), packs
them into requests within MLflow's limits (1000 metrics, 100 params, 100 tags,
1000 entities, about 1 MB per ``log_batch``) and sends them from a few sender
threads. The live writer and the replay of old spools both drive one.

Order. Each run's requests are kept in a FIFO. Metric-only requests of one run
may be in flight together, since MLflow orders a metric's history by timestamp,
step and value, not by arrival. A request carrying tags, a run's creation or its
end waits until the run has nothing in flight, and holds the run until answered;
so tags keep their last value and a run ends after all of its data.

Failures. A connection error, timeout, 5xx or 429 puts the request back at the
head of its FIFO and pauses sending for a capped exponential backoff; then one
request probes the server, and a success resumes full speed. Any other 4xx is
final: the request goes to ``rejected.jsonl`` with the server's answer, an error
is logged, and the shipper moves on.

Acknowledgement. Records are fed in contiguous spool ranges (chunks); once every
request built from a chunk and from all chunks before it was answered,
:attr:`Shipper.acked` moves to the chunk's end.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spool import (
    ARTIFACT,
    CREATE,
    END,
    METRICS,
    PARAMS,
    REJECTED_FILE,
    RUNS_FILE,
    TAGS,
    Point,
    append_jsonl,
)
from .transport import PROVISIONAL_TAG, RejectedError, TransientError, Transport

logger = logging.getLogger(__name__)

PROVISIONAL_PREFIX = "pending-"

MAX_PARAMS_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
# MLflow refuses log_batch bodies over 1,000,000 bytes; our estimate keeps a margin.
MAX_REQUEST_BYTES = 900_000
FIRST_BACKOFF = 0.5
# Consecutive failures after which the server counts as down, so that flush()
# without a timeout and offline start_run stop trying (one retry absorbs a blip).
OUTAGE_FAILURES = 2

Op = tuple[int, int, int, str, Any]  # (start, end, kind, run_id, payload)

_OK, _TRANSIENT, _REJECTED = range(3)
_WAIT = object()  # a batch that must wait for another to be answered
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


class _Chunk:
    """Records taken from the spool in one go; acked when all its requests are."""

    __slots__ = ("end", "outstanding")

    def __init__(self, end: int) -> None:
        self.end = end
        self.outstanding = 0


class Batch:
    """One request: a ``log_batch`` of one run, or a create, end or artifact."""

    __slots__ = (
        "barrier",
        "chunk",
        "entities",
        "kind",
        "metrics",
        "params",
        "payload",
        "run",
        "seq",
        "size",
        "tags",
    )

    def __init__(self, seq: int, run: str, kind: int, chunk: _Chunk,
                 payload: Any = None) -> None:
        self.seq = seq
        self.run = run
        self.kind = kind
        self.chunk = chunk
        self.metrics: list[Point] = []
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.payload = payload
        self.barrier = kind in (CREATE, END)
        self.entities = 0 if kind == METRICS else 1
        self.size = 200

    def fits_metric(self, point: Point, batch_size: int) -> bool:
        return (
            len(self.metrics) < batch_size
            and self.entities < MAX_ENTITIES_PER_REQUEST
            and self.size + len(point[0]) + 80 <= MAX_REQUEST_BYTES
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
            record["metrics"] = [list(point) for point in self.metrics]
            record["params"] = self.params
            record["tags"] = self.tags
        else:
            record["payload"] = self.payload
        return record


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
                     points: Sequence[Point]) -> None:
        batch = open_batches.get(run) or self._open(open_batches, chunk, run)
        batch_size = self.settings.batch_size
        for point in points:
            if not batch.fits_metric(point, batch_size):
                batch = self._open(open_batches, chunk, run)
            batch.metrics.append(point)
            batch.entities += 1
            batch.size += len(point[0]) + 80
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
            parent_pending = parent in self._fifos or self._run_in_flight.get(parent)
            if (
                parent
                and parent.startswith(PROVISIONAL_PREFIX)
                and parent not in self.id_map
                and parent_pending
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
                reason = f"{type(exc).__name__}: {exc}"
                self._events.put((self, batch, _REJECTED, reason))
            else:
                self._events.put((self, batch, _OK, result))

    def _send(self, batch: Batch, target: str, parent: str | None) -> str | None:
        transport = self.transport
        payload = batch.payload
        if batch.kind == METRICS:
            transport.log_batch(target, batch.metrics, batch.params, batch.tags)
        elif batch.kind == END:
            transport.update_run(target, payload["status"], payload["end_time"])
        elif batch.kind == ARTIFACT:
            transport.upload(target, payload["path"], payload.get("artifact_path"))
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



def dispatch(event: Any) -> None:
    """Hand a completion taken from an events queue to its shipper."""
    shipper, batch, outcome, detail = event
    shipper.complete(batch, outcome, detail)
