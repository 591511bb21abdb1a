"""The on-disk spool: every record the tracking backend accepts, until it is sent.

Layout. Under the spool root (``tracking.spool_dir``, by default
``$XDG_CACHE_HOME/mlflow-agent/spool`` or ``~/.cache/mlflow-agent/spool``) each
tracking URI has its own directory, named by a hash of the URI without
credentials, holding ``target.json`` (that URI). In it, each process writes one
*family* of files, named ``<created-ms>-<pid>-<random>``:

- ``<family>.<n>.spool``: segments of append-only JSON lines (8 MB, allocated
  up front). The first line is a header (``{"mlflow_agent_spool": 1,
  "tracking_uri": ..., "base": ...}``); every other line is one record (see
  :func:`decode`). The caller's thread copies each record into the memory-mapped
  segment before ``log_*`` returns, so it survives the process being killed; the
  writer thread fsyncs the segment after each batch it takes. A segment is cut to
  its records when it is closed; one left by a killed process ends with zeros,
  and possibly a torn last line, which readers skip.
- ``<family>.ack``: the position up to which every record was stored by the server.
- ``<family>.lock``: held (``flock``) by the live process; a family whose lock can
  be taken belongs to a process that is gone, and is replayed by the next agent
  started on this directory or by ``mlflow-agent sync``.

Positions count record bytes across the family's segments (headers excluded), so
they stay valid when a segment is rotated. ``rejected.jsonl`` keeps records the
server refused, with its answer; ``runs.jsonl`` maps provisional run ids to the
run ids the server gave them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import mmap
import os
import secrets
import socket
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# A metric point as the writer keeps it: (key, value, timestamp ms, step). A tuple
# of atoms, which the garbage collector stops tracking, so that the many records
# queued during an outage do not lengthen its pauses on the training threads.
Point = tuple[str, float, int, int]

FORMAT_VERSION = 1
SEGMENT_SUFFIX = ".spool"
TARGET_FILE = "target.json"
REJECTED_FILE = "rejected.jsonl"
RUNS_FILE = "runs.jsonl"
ARTIFACTS_DIR = "artifacts"

# Record kinds; the letters are the JSON keys of a record line.
METRICS, PARAMS, TAGS, CREATE, END, ARTIFACT = range(6)
_KIND_KEYS = ("m", "p", "t", "c", "e", "a")

_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_KEY_CACHE_LIMIT = 10_000


def default_root() -> Path:
    """The spool root used when ``tracking.spool_dir`` is not set."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "mlflow-agent" / "spool"


def public_uri(uri: str) -> str:
    """``uri`` without user and password, fit for logs and files."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def target_dir(root: str | os.PathLike[str] | None, uri: str) -> Path:
    """The spool directory of tracking URI ``uri`` under ``root``."""
    base = Path(root).expanduser() if root is not None else default_root()
    shown = public_uri(uri)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    return base / digest


def ensure_target_dir(directory: Path, uri: str) -> None:
    """Create ``directory`` and record which URI it belongs to."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / TARGET_FILE
    if not target.exists():
        _write_atomic(target, json.dumps({"tracking_uri": public_uri(uri)}) + "\n")


def recorded_uri(directory: Path) -> str | None:
    """The tracking URI a spool directory was written for, if it says."""
    try:
        data = json.loads((directory / TARGET_FILE).read_text())
    except (OSError, ValueError):
        return None
    uri = data.get("tracking_uri") if isinstance(data, dict) else None
    return uri if isinstance(uri, str) else None


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ------------------------------------------------------------------ record lines


class RecordEncoder:
    """Turns records into spool lines; the metric path is tuned for the hot path.

    Not thread-safe in the strict sense, but its only state is a cache of encoded
    strings whose races are harmless (two threads may encode the same key).
    """

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}

    def _string(self, text: str) -> str:
        encoded = self._strings.get(text)
        if encoded is None:
            if len(self._strings) >= _KEY_CACHE_LIMIT:
                self._strings.clear()
            encoded = self._strings[text] = json.dumps(text)
        return encoded

    def metrics(self, run_id: str, points: Sequence[Point]) -> bytes:
        if len(points) == 1:
            # The per-step log_metric case: no intermediate list to allocate.
            body = self._point(points[0])
        else:
            body = ",".join([self._point(point) for point in points])
        return f'{{"r":{self._string(run_id)},"m":[{body}]}}\n'.encode()

    def _point(self, point: Point) -> str:
        key, number, timestamp, step = point
        value = repr(float(number))
        if value[-1] in "nf":
            value = _NONFINITE[value]
        return f"[{self._string(key)},{value},{timestamp},{step}]"

    def other(self, kind: int, run_id: str, payload: Mapping[str, Any]) -> bytes:
        record = {"r": run_id, _KIND_KEYS[kind]: payload}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> tuple[int, str, Any]:
    """``(kind, run_id, payload)`` of a record line; ValueError if it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("r"), str):
        raise ValueError("not a spool record")
    for kind, key in enumerate(_KIND_KEYS):
        if key in record:
            payload = record[key]
            if kind == METRICS:
                payload = [(k, float(v), int(t), int(s)) for k, v, t, s in payload]
            elif not isinstance(payload, dict):
                raise ValueError(f"record {key!r} is not an object")
            return kind, record["r"], payload
    raise ValueError("spool record of unknown kind")


def record_count(kind: int, payload: Any) -> int:
    """How many entities a record holds (points, params or tags; 1 otherwise)."""
    if kind in (METRICS, PARAMS, TAGS):
        return len(payload)
    return 1


# ------------------------------------------------------------------ file families


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@dataclass
class _Segment:
    path: Path
    base: int
    header_len: int
    size: int  # bytes of complete and torn records, header and padding excluded
    torn: int = 0  # bytes after the last newline

    @property
    def end(self) -> int:
        return self.base + self.size - self.torn


class Family:
    """The spool files of one process, as a reader sees them."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.ack_path = directory / f"{name}.ack"
        self.lock_path = directory / f"{name}.lock"
        self._lock_fd: int | None = None
        self._segments: list[_Segment] | None = None

    def __repr__(self) -> str:
        return str(self.directory / self.name)

    # Locking

    def try_lock(self) -> bool:
        """Take the family's lock; False when a live process holds it."""
        if self._lock_fd is None:
            self._lock_fd = _lock(self.lock_path)
        return self._lock_fd is not None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # Positions

    def acked(self) -> int:
        try:
            return int(self.ack_path.read_bytes().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def segments(self) -> list[_Segment]:
        """The family's segments by position (read once: the family is closed)."""
        if self._segments is None:
            found = []
            for path in self.directory.glob(f"{self.name}.*{SEGMENT_SUFFIX}"):
                segment = _read_segment(path)
                if segment is not None:
                    found.append(segment)
            self._segments = sorted(found, key=lambda s: s.base)
        return self._segments

    def end(self) -> int:
        segments = self.segments()
        return segments[-1].end if segments else 0

    def torn_bytes(self) -> int:
        """Bytes of a last record torn by a killed process."""
        segments = self.segments()
        return segments[-1].torn if segments else 0

    # Reading

    def read(
        self, start: int, stop: int | None = None, max_records: int = 10_000
    ) -> tuple[list[tuple[int, int, int, str, Any]], list[tuple[bytes, str]], int]:
        """Records from position ``start``: ``(records, bad_lines, next_position)``.

        Each record is ``(start, end, kind, run_id, payload)``. Reading stops at
        ``stop``, after ``max_records`` entities, or at the end of the records.
        """
        records: list[tuple[int, int, int, str, Any]] = []
        bad: list[tuple[bytes, str]] = []
        position = start
        entities = 0
        for segment in self.segments():
            if segment.end <= position:
                continue
            limit = segment.end if stop is None else min(segment.end, stop)
            if limit <= position:
                break
            for line_start, line in _lines(segment, max(position, segment.base), limit):
                try:
                    kind, run_id, payload = decode(line)
                except (ValueError, TypeError, KeyError) as exc:
                    bad.append((line, f"unreadable spool line: {exc}"))
                else:
                    records.append((line_start, line_start + len(line), kind, run_id,
                                    payload))
                    entities += record_count(kind, payload)
                position = line_start + len(line)
                if entities >= max_records:
                    return records, bad, position
            if position < limit:
                break  # a line without its newline: nothing after it is readable
        return records, bad, position

    def delete(self) -> None:
        """Remove every file of the family (after all of it was sent)."""
        for segment in self.segments():
            segment.path.unlink(missing_ok=True)
        self.ack_path.unlink(missing_ok=True)
        self.unlock()
        self.lock_path.unlink(missing_ok=True)


def _read_segment(path: Path) -> _Segment | None:
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
            header = json.loads(first)
            base = int(header["base"])
            data = handle.read()
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("Ignoring %s: it has no readable spool header", path)
        return None
    # A process that died leaves the preallocated tail of its segment as zeros.
    used = data.find(b"\0")
    used = len(data) if used < 0 else used
    torn = used - (data.rfind(b"\n", 0, used) + 1)
    return _Segment(path, base, len(first), used, torn)


def _lines(segment: _Segment, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """Complete lines of ``segment`` between positions ``start`` and ``stop``."""
    with open(segment.path, "rb") as handle:
        handle.seek(segment.header_len + start - segment.base)
        data = handle.read(stop - start)
    offset = 0
    while True:
        newline = data.find(b"\n", offset)
        if newline < 0:
            return
        yield start + offset, data[offset : newline + 1]
        offset = newline + 1


def families(directory: Path) -> list[Family]:
    """Every family in a URI's spool directory, oldest first."""
    names = {
        path.name.split(".", 1)[0]
        for path in directory.glob(f"*{SEGMENT_SUFFIX}")
    }
    return [Family(directory, name) for name in sorted(names)]


class _Mapped:
    """One segment file mapped in memory, preallocated so writes cannot fail."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.size = capacity
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # Reserve the blocks now: writing into a mapped hole of a full disk
            # would kill the process with SIGBUS instead of raising.
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self.fd, 0, capacity)
            else:  # pragma: no cover - platforms without fallocate
                os.ftruncate(self.fd, capacity)
            self.map = mmap.mmap(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            path.unlink(missing_ok=True)
            raise
        self.header_len = 0
        self.base = 0

    def start(self, header: bytes, base: int) -> None:
        self.map.write(header)
        self.header_len = len(header)
        self.base = base

    def finish(self, end: int) -> None:
        """Unmap, cut the file to its records and make it durable."""
        used = self.header_len + end - self.base
        self.map.close()
        os.ftruncate(self.fd, used)
        os.fsync(self.fd)
        os.close(self.fd)


class SpoolLog(Family):
    """The live, append-only spool of this process for one URI.

    Records are copied into a memory-mapped, preallocated segment: no system
    call on the caller's thread, and the bytes are in the page cache, so they
    survive the process being killed. Appends happen under the writer's lock
    (this class takes none); fsync, rotation housekeeping and acks come from the
    writer thread.
    """

    def __init__(
        self, directory: Path, tracking_uri: str, segment_bytes: int = 8 << 20
    ) -> None:
        ensure_target_dir(directory, tracking_uri)
        name = f"{int(time.time() * 1000)}-{os.getpid()}-{secrets.token_hex(3)}"
        super().__init__(directory, name)
        if not self.try_lock():
            raise OSError(f"cannot lock {self.lock_path}")
        self.tracking_uri = public_uri(tracking_uri)
        self.segment_bytes = segment_bytes
        self.position = 0
        self.broken: str | None = None
        self._numbers = itertools.count()
        self._current: _Mapped | None = None
        self._spare: _Mapped | None = None
        self._limit = 0
        self._retired: list[_Mapped] = []
        self._known: list[_Segment] = []
        self._synced = 0
        self._ack_fd: int | None = None
        self._acked = 0
        self._closed = False
        self.forked = False
        self._switch(0)
        _LIVE_LOGS.add(self)

    # Caller side (under the writer's lock)

    def append(self, line: bytes) -> None:
        """Copy one record line into the current segment."""
        end = self.position + len(line)
        if end > self._limit:
            self._switch(len(line))
        current = self._current
        if current is not None:
            current.map.write(line)
        self.position = end

    def _switch(self, needed: int) -> None:
        header = (json.dumps({
            "mlflow_agent_spool": FORMAT_VERSION,
            "tracking_uri": self.tracking_uri,
            "base": self.position,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "created": int(time.time() * 1000),
        }) + "\n").encode()
        spare, self._spare = self._spare, None
        if spare is None or spare.size < len(header) + needed:
            if spare is not None:
                self._retired.append(spare)
            try:
                spare = self._new_mapped(len(header) + needed)
            except OSError as exc:
                self._break(exc)
                return
        if self._current is not None:
            self._retired.append(self._current)
        if self._known:
            self._known[-1].size = self.position - self._known[-1].base
        spare.start(header, self.position)
        self._current = spare
        self._limit = self.position + spare.size - len(header)
        self._known.append(_Segment(spare.path, self.position, len(header), 0))

    def _new_mapped(self, needed: int) -> _Mapped:
        number = next(self._numbers)
        path = self.directory / f"{self.name}.{number:06d}{SEGMENT_SUFFIX}"
        return _Mapped(path, max(self.segment_bytes, needed))

    def _break(self, exc: OSError) -> None:
        self.broken = f"{type(exc).__name__}: {exc}"
        if self._current is not None:
            self._retired.append(self._current)
        self._current = None
        self._limit = 1 << 62

    # Writer side

    def segments(self) -> list[_Segment]:
        if self._known:
            self._known[-1].size = self.position - self._known[-1].base
        return self._known

    def maintain(self, lock: Any) -> None:
        """Prepare the next segment, finish rotated ones (writer thread)."""
        if self._closed:
            return
        if self.broken is None and self._spare is None and self._current is not None:
            used = self.position - self._current.base
            if used * 2 >= self._current.size:
                try:
                    spare = self._new_mapped(0)
                except OSError as exc:
                    logger.warning("Cannot prepare the next spool segment: %s", exc)
                else:
                    with lock:
                        previous, self._spare = self._spare, spare
                    if previous is not None:
                        self._discard(previous)
        with lock:
            retired, self._retired = self._retired, []
        for mapped in retired:
            self._finish(mapped)

    def _finish(self, mapped: _Mapped) -> None:
        ends = [s.base + s.size for s in self._known if s.path == mapped.path]
        if not ends:
            self._discard(mapped)  # a spare that was never used
            return
        try:
            mapped.finish(ends[0])
        except OSError as exc:
            logger.warning("Could not close the spool segment %s: %s", mapped.path, exc)

    @staticmethod
    def _discard(mapped: _Mapped) -> None:
        mapped.map.close()
        os.close(mapped.fd)
        mapped.path.unlink(missing_ok=True)

    def sync(self) -> None:
        """fsync the current segment if records were added since the last sync."""
        current = self._current
        if current is not None and not self._closed and self._synced != self.position:
            self._synced = self.position
            try:
                os.fsync(current.fd)
            except OSError as exc:
                logger.warning("Could not fsync the spool %s: %s", current.path, exc)

    def ack(self, position: int) -> None:
        """Record that everything before ``position`` is stored on the server."""
        if position <= self._acked or self._closed:
            return
        self._acked = position
        if self._ack_fd is None:
            self._ack_fd = os.open(self.ack_path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(self._ack_fd, b"%020d\n" % position, 0)
        known = self._known
        while len(known) > 1 and known[0].base + known[0].size <= position:
            known.pop(0).path.unlink(missing_ok=True)

    def detach(self) -> None:
        """In a forked child: stop writing into files the parent still owns."""
        self.forked = True
        self.broken = "this process is a fork of the one that owns the spool"
        self._closed = True
        self._current = self._spare = None
        self._retired = []
        self._limit = 1 << 62
        self._ack_fd = self._lock_fd = None

    def close(self, *, delete: bool) -> None:
        """Close the files (caller holds the writer's lock); ``delete`` if all sent."""
        if self.forked:
            return
        self.segments()
        self._closed = True
        if self._current is not None:
            self._retired.append(self._current)
            self._current = None
        if self._spare is not None:
            self._retired.append(self._spare)
            self._spare = None
        self._limit = 1 << 62
        self.broken = self.broken or "closed"
        for mapped in self._retired:
            self._finish(mapped)
        self._retired = []
        if self._ack_fd is not None:
            os.close(self._ack_fd)
            self._ack_fd = None
        if delete:
            self.delete()
        else:
            self.unlock()


_LIVE_LOGS: weakref.WeakSet[SpoolLog] = weakref.WeakSet()


def _detach_after_fork() -> None:
    # A forked child shares the parent's mapped segments: writing or truncating
    # them would corrupt the parent's spool (or kill it with SIGBUS).
    for log in list(_LIVE_LOGS):
        log.detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_detach_after_fork)


# ------------------------------------------------------------------ side files


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single write (safe across processes)."""
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_run_map(directory: Path) -> dict[str, str]:
    """Provisional run id -> server run id, as recorded by earlier replays."""
    mapping: dict[str, str] = {}
    try:
        lines = (directory / RUNS_FILE).read_text().splitlines()
    except OSError:
        return mapping
    for line in lines:
        try:
            entry = json.loads(line)
            mapping[entry["provisional"]] = entry["run_id"]
        except (ValueError, KeyError, TypeError):
            continue
    return mapping
