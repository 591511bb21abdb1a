"""Send spooled tracking records to their server: ``mlflow-agent sync``.

The ``mlflow`` tracking backend writes every record to a local spool before
sending it (see :mod:`mlflow_agent_core.default_plugins.spool`). Records a process
could not send - it was killed, or the server was down until it exited - stay
there. :func:`sync_spool` replays them in order, creates runs that were started
offline, and deletes each process's files once everything in them is stored.
Files of processes still running are left to those processes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AuthError, ServerUnavailableError

if TYPE_CHECKING:
    from .default_plugins.replay import ReplayResult

logger = logging.getLogger(__name__)

__all__ = ["SyncProgress", "SyncReport", "sync_spool"]


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync stands, passed to the ``progress`` callback."""

    tracking_uri: str
    source: str  # the spool family being replayed
    sent: int
    rejected: int
    finished: bool


@dataclass
class SyncReport:
    """What :func:`sync_spool` did.

    ``sent`` and ``rejected`` count records (metric points, params, tags, and one
    per run creation, run end or artifact). Refused records are kept in
    ``rejected.jsonl`` next to the spool files.
    """

    spool_dir: str
    tracking_uris: list[str] = field(default_factory=list)
    sent: int = 0
    rejected: int = 0
    remaining: int = 0
    replayed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left to send and no server was unreachable."""
        return not self.errors and self.remaining == 0


def sync_spool(
    spool_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    *,
    progress: Callable[[SyncProgress], None] | None = None,
    give_up_after: float = 30.0,
    probe_timeout: float = 3.0,
    request_timeout: float = 30.0,
    max_in_flight: int = 4,
) -> SyncReport:
    """Replay the spooled records under ``spool_dir`` and report what was sent.

    ``spool_dir`` is the spool root (``tracking.spool_dir``; None for the
    default). With ``tracking_uri``, only that URI's records are sent; without,
    every URI directory under the root is sent to the URI it was written for.
    A server that cannot be reached at the start is reported in ``errors``; one
    that goes away during the replay is retried for ``give_up_after`` seconds.
    """
    from .default_plugins.spool import default_root, recorded_uri, target_dir

    root = Path(spool_dir).expanduser() if spool_dir is not None else default_root()
    report = SyncReport(spool_dir=str(root))
    if tracking_uri is not None:
        targets = [(target_dir(root, tracking_uri), tracking_uri)]
    else:
        targets = []
        for directory in sorted(p for p in root.glob("*") if p.is_dir()):
            uri = recorded_uri(directory)
            if uri is None:
                report.errors.append(f"{directory}: no target.json naming its URI")
            else:
                targets.append((directory, uri))

    for directory, uri in targets:
        _sync_directory(
            directory, uri, report, progress=progress, give_up_after=give_up_after,
            probe_timeout=probe_timeout, request_timeout=request_timeout,
            max_in_flight=max_in_flight,
        )
    return report


def _sync_directory(
    directory: Path,
    uri: str,
    report: SyncReport,
    *,
    progress: Callable[[SyncProgress], None] | None,
    give_up_after: float,
    probe_timeout: float,
    request_timeout: float,
    max_in_flight: int,
) -> None:
    from .default_plugins.replay import replay_family
    from .default_plugins.shipper import WriterSettings
    from .default_plugins.spool import families, load_run_map, public_uri
    from .default_plugins.transport import (
        RejectedError,
        TransientError,
        make_transport,
    )

    shown = public_uri(uri)
    report.tracking_uris.append(shown)
    pending = families(directory) if directory.is_dir() else []
    if not pending:
        return
    transport = make_transport(
        uri, connect_timeout=probe_timeout, read_timeout=request_timeout
    )
    try:
        transport.probe("Default", probe_timeout)
    except TransientError as exc:
        report.errors.append(str(ServerUnavailableError(
            f"tracking server {shown} is unreachable ({exc}); records stay in "
            f"{directory}"
        )))
        return
    except RejectedError as exc:
        report.errors.append(str(AuthError(f"tracking server {shown} refused: {exc}")))
        return

    id_map: dict[str, str | None] = dict(load_run_map(directory))
    before = dict(id_map)
    settings = WriterSettings(
        max_in_flight=1 if uri.startswith("sqlite:") else max_in_flight
    )
    for family in pending:
        if not family.try_lock():
            report.skipped.append(str(family))
            continue

        def relay(result: ReplayResult, *, source: str = str(family)) -> None:
            if progress is not None:
                progress(SyncProgress(shown, source, result.sent, result.rejected,
                                      result.finished))

        result = replay_family(
            family, transport, settings=settings, id_map=id_map,
            stop=threading.Event(), give_up_after=give_up_after, progress=relay,
        )
        result.log(shown)
        report.sent += result.sent
        report.rejected += result.rejected
        report.remaining += result.remaining
        if result.finished:
            report.replayed.append(str(family))
        elif result.error:
            report.errors.append(
                f"{shown} stopped answering ({result.error}); {result.remaining} "
                f"records stay in {family}"
            )
    report.runs.update(
        {k: v for k, v in id_map.items() if v is not None and k not in before}
    )
