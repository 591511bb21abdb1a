"""Replaying a spool family left by another process (or an earlier agent).

Used in the background when an agent starts on a spool directory holding
families no live process owns, and by :func:`mlflow_agent_core.sync.sync_spool`.
Records are sent from the family's acknowledged position on, in order; the
acknowledged position is written back as requests succeed, so a replay that is
interrupted resumes where it stopped. A family fully sent is deleted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .shipper import Shipper, WriterSettings, dispatch
from .spool import REJECTED_FILE, Family, record_count
from .transport import Transport

logger = logging.getLogger(__name__)


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


def _replay_feed(
    family: Family, shipper: Shipper, fed: int, end: int
) -> tuple[int, int]:
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
