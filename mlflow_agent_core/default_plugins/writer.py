"""The live writer: spool every record on the caller's thread, send it from ours.

Flow of one record. The caller's thread encodes it as one spool line, copies it
into this process's spool (:class:`~.spool.SpoolLog`) and appends it to an
in-memory deque, under one lock; that is all a ``log_metric`` costs. The writer
thread takes records from the deque (or, when the deque was trimmed to respect
``queue_cap``, reads them back from the spool) and feeds a
:class:`~.shipper.Shipper`, which sends them. When every record up to a spool
position is stored, that position is acknowledged in the spool, and fully sent
segments are deleted. The records are in the spool all along, so a process that
dies leaves them to the next agent start or ``mlflow-agent sync``
(:func:`~.replay.replay_family`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..contracts import MetricPoint
from .replay import replay_family
from .shipper import (
    FIRST_BACKOFF,
    OUTAGE_FAILURES,
    PROVISIONAL_PREFIX,
    Op,
    Shipper,
    WriterSettings,
    dispatch,
)
from .spool import (
    END,
    METRICS,
    Family,
    Point,
    RecordEncoder,
    SpoolLog,
    families,
    load_run_map,
    record_count,
)
from .transport import Transport

logger = logging.getLogger(__name__)

MIN_SYNC_INTERVAL = 0.02
# Longest pause between retries while a caller waits (end_run, flush, close), so
# that a server back within the wait is found back soon enough to use it.
WAITING_BACKOFF_MAX = 2.0

_WAKE = object()


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
        self._reported_broken = False
        self._reported_fork = False
        self._progress = threading.Condition()
        self._waiters = 0
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
    def acked(self) -> int:
        """The spool position up to which everything is stored on the server."""
        return self._shipper.acked

    @property
    def last_error(self) -> str | None:
        return self._shipper.last_error

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        kept: tuple[Point, ...]
        if len(points) == 1:
            # The per-step log_metric case: no intermediate list to allocate.
            point = points[0]
            kept = ((point.key, point.value, point.timestamp, point.step),)
        else:
            kept = tuple([(p.key, p.value, p.timestamp, p.step) for p in points])
        line = self._encoder.metrics(run_id, kept)
        count = len(kept)
        with self._lock:
            start = self.log.position
            self.log.append(line)
            self._queue.append((start, self.log.position, METRICS, run_id, kept))
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

    def _in_fork(self) -> bool:
        if not self.log.forked:
            return False
        if not self._reported_fork:
            self._reported_fork = True
            logger.warning(
                "Tracking records logged in process %d, a fork of the process that "
                "built the agent, are not sent; build the agent in this process to "
                "track from it", os.getpid(),
            )
        return True

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything logged so far is stored; False on timeout or outage.

        With ``timeout=None`` the wait ends early once the server is known to be
        down (the records stay in the spool); with a timeout it keeps waiting for
        the server to come back until the timeout.
        """
        if self._in_fork():
            return False
        with self._lock:
            target = self.log.position
        return self._wait_for(target, timeout, give_up_on_outage=timeout is None)

    def end_run(self, run_id: str, status: str, timeout: float) -> bool:
        """Queue the end of ``run_id`` after its data; True once the server has it.

        Waits through an outage for at most ``timeout``; on False the end stays
        queued and spooled, and is sent when the server answers.
        """
        if self._in_fork():
            return False
        payload = {"status": status, "end_time": int(time.time() * 1000)}
        target = self.append(END, run_id, payload)
        return self._wait_for(target, timeout, give_up_on_outage=False)

    @property
    def unsent(self) -> int:
        """Records accepted but not yet stored (or refused) by the server."""
        return self._accepted - self._shipper.acked_entities

    def _wait_for(self, target: int, timeout: float | None, *,
                  give_up_on_outage: bool) -> bool:
        self._flush_to = max(self._flush_to, target)
        deadline = None if timeout is None else time.monotonic() + timeout
        shipper = self._shipper
        with self._progress:
            self._waiters += 1
            if not give_up_on_outage:
                self._hurry_retries()
            self._events.put(_WAKE)
            try:
                while shipper.acked < target:
                    if give_up_on_outage and shipper.outage:
                        return False
                    if self._stopped:
                        return False
                    wait = 0.5
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return False
                    self._progress.wait(wait)
            finally:
                self._waiters -= 1
                if not self._waiters:
                    shipper.backoff_max = self.settings.retry_backoff_max
        return True

    def _hurry_retries(self) -> None:
        """While someone waits, retry a down server often enough to notice it back."""
        shipper = self._shipper
        cap = min(self.settings.retry_backoff_max, WAITING_BACKOFF_MAX)
        shipper.backoff_max = cap
        if shipper.failures and shipper.retry_at > time.monotonic() + cap:
            shipper.retry_now()

    def close(self, timeout: float) -> int:
        """Send what we can within ``timeout``; return how many records are left.

        Waits through an outage too: the server may come back within ``timeout``.
        """
        if self._stopped or self._in_fork():
            return 0
        deadline = time.monotonic() + timeout
        self._recovery_stop.set()
        self._closing = True
        shipper = self._shipper
        with self._lock:
            target = self.log.position
        self._wait_for(target, timeout, give_up_on_outage=False)

        self._stopped = True
        self._events.put(_WAKE)
        self._thread.join(max(deadline - time.monotonic(), 0.05))
        shipper.stop()
        left = self._accepted - shipper.acked_entities
        with self._lock:
            self.log.sync()
            self.log.close(delete=left == 0 and shipper.acked >= target)
        if left and self.log.broken not in (None, "closed"):
            logger.error(
                "%d tracking records for %s could not be sent in time and are lost: "
                "the spool in %s could not be written (%s)", left,
                self.transport.shown_uri, self.directory, self.log.broken,
            )
        elif left:
            logger.warning(
                "%d tracking records for %s could not be sent in time; they are "
                "kept in %s and will be sent by the next agent started on it or by "
                "`mlflow-agent sync`", left, self.transport.shown_uri, self.directory,
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
            self._drop_fed()
            if queue_ and queue_[0][0] == self._fed:
                self._feed_memory(shipper.room())
            elif not self._feed_disk(shipper.room()):
                break
        with self._lock:
            self._wake_at = self._queued + self.settings.batch_size

    def _drop_fed(self) -> None:
        # A record appended while the spool was being read may already have been
        # read from the spool; its copy in memory must not be sent twice.
        queue_ = self._queue
        dropped = 0
        while queue_ and queue_[0][1] <= self._fed:
            op = queue_.popleft()
            dropped += record_count(op[2], op[4])
        if dropped:
            with self._lock:
                self._queued -= dropped

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
        if log.broken is not None and not self._reported_broken and not self._stopped:
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
    return [family for family in families(directory) if family.name != own]
