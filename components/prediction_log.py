"""Prediction logs: what an endpoint answered, written in batches to Parquet under the storage.

A replica hands every request it routed to a version to ``PredictionLog.offer``, which never blocks and never
raises: the record joins a bounded in-memory queue, or, when the queue is full, is dropped and
counted. A writer thread turns the queue into Parquet files every ``flush_seconds`` (or as soon
as ``flush_records`` are waiting), one file per flush and day::

    <storage>/logs/<model>/date=<YYYY-MM-DD>/<writer>-<sequence>.parquet

through the storage's filesystem (a local folder, s3://, gs://...; a local file appears whole,
under its final name, or not at all). Serialising the request's rows and the response to JSON
happens on that thread, not on the request's path. A file that cannot be written is retried
once at the next flush; its records are then counted as dropped. So every offered request is in
exactly one file, or in ``dropped``, or (not sampled, or asked not to be logged) in neither,
counted as such.

Columns (``SCHEMA``): ``request_id``, ``ts`` (UTC, when the request arrived), ``model``,
``version``, ``route`` (predict, rank), ``answered_by`` (production, canary), ``rows`` (how many
rows or candidates), ``features`` (JSON: the request body as received, minus the dropped
fields), ``outputs`` (JSON: the response body), ``latency_ms`` (arrival to response built),
``shadow_version``, ``shadow_outputs`` and ``shadow_error``: the other version scored on the same
request (a shadow beside production, or production beside a canary; serve/routing.py), its
response body, or why it has none (null without one); ``status`` (the HTTP status answered:
200, or the 4xx/5xx of a request the version refused or failed on, whose ``outputs`` are null)
and ``error`` (why). Files written before ``status`` existed hold answered requests only.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pydantic_core

from components import uris
from components.bundle import Storage

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("route", pa.string()),
        ("answered_by", pa.string()),
        ("rows", pa.int32()),
        ("features", pa.string()),
        ("outputs", pa.string()),
        ("latency_ms", pa.float64()),
        ("shadow_version", pa.int64()),
        ("shadow_outputs", pa.string()),
        ("shadow_error", pa.string()),
        ("status", pa.int32()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class LogSettings:
    """How a replica logs: ``share`` of requests (0 = off, 1 = all; chosen by a hash of the
    request id, so a request is in or out whichever replica answers it), the queue's bound, how
    often it is written, and request fields never written (``drop_fields``: feature names)."""

    share: float = 1.0
    queue_records: int = 100_000
    flush_records: int = 10_000
    flush_seconds: float = 5.0
    drop_fields: tuple[str, ...] = ()


@dataclass
class LogStats:
    """Counts since the log started (what ``/model`` shows)."""

    offered: int = 0  # requests handed to the log
    queued: int = 0  # waiting to be written now
    written: int = 0  # records in files
    files: int = 0
    dropped: int = 0  # lost: the queue was full, or a file could not be written twice
    not_sampled: int = 0  # outside the configured share
    not_logged: int = 0  # the request asked not to be logged (X-Rayline-No-Log)
    write_errors: int = 0
    last_error: str = ""


@dataclass
class Record:
    """One request a version answered or failed on, as the replica hands it over (serialised
    by the writer)."""

    request_id: str
    ts: float  # seconds since the epoch, UTC
    model: str
    version: int
    route: str
    rows: int
    features: Any  # the request body: its JSON bytes, or JSON-able (dicts, pydantic models)
    outputs: Any  # the response body (the same kinds)
    latency_ms: float
    answered_by: str = "production"
    shadow_version: int | None = None
    shadow_outputs: Any = None
    shadow_error: str | None = None
    status: int = 200  # the HTTP status answered; not 200: ``outputs`` is None, ``error`` says why
    error: str | None = None


def sampled(request_id: str, share: float) -> bool:
    """Whether ``request_id`` falls in the logged ``share`` (the same answer on every replica)."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    h = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


def log_folder(storage: str, model: str) -> str:
    """Where ``model``'s prediction logs live: ``<storage>/logs/<model>`` (a URI's query, e.g.
    an S3 endpoint, stays at the end)."""
    return uris.join(storage, "logs", model)


def without_fields(body: Any, drop: Iterable[str]) -> Any:
    """The request body without the ``drop`` features (in every row, candidate and query)."""
    names = set(drop)
    if not names:
        return body

    def row(r: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in names}

    if isinstance(body, Mapping):
        out = dict(body)
        for key in ("rows", "candidates"):
            if key in out and out[key] is not None:
                out[key] = [row(r) for r in out[key]]
        if out.get("query") is not None:
            out["query"] = row(out["query"])
        return out
    return body


def to_table(records: list[Record], drop: Iterable[str] = ()) -> pa.Table:
    """Records as a table of ``SCHEMA`` (bodies as JSON text)."""
    drop = tuple(drop)

    def js(v: Any) -> str | None:
        if isinstance(v, bytes | bytearray):  # already JSON (the bytes sent or answered)
            return bytes(v).decode("utf-8", errors="replace")
        return None if v is None else pydantic_core.to_json(v, inf_nan_mode="null").decode()

    def plain(v: Any) -> Any:  # bodies as dicts, so fields can be dropped
        if not drop:
            return v
        if isinstance(v, bytes | bytearray):
            return json.loads(v)
        return pydantic_core.to_jsonable_python(v)

    return pa.table(
        {
            "request_id": [r.request_id for r in records],
            "ts": pa.array([int(r.ts * 1e6) for r in records], pa.int64()).cast(
                SCHEMA.field("ts").type
            ),
            "model": [r.model for r in records],
            "version": [r.version for r in records],
            "route": [r.route for r in records],
            "answered_by": [r.answered_by for r in records],
            "rows": pa.array([r.rows for r in records], pa.int32()),
            "features": [js(without_fields(plain(r.features), drop)) for r in records],
            "outputs": [js(r.outputs) for r in records],
            "latency_ms": [float(r.latency_ms) for r in records],
            "shadow_version": pa.array([r.shadow_version for r in records], pa.int64()),
            "shadow_outputs": [js(r.shadow_outputs) for r in records],
            "shadow_error": [r.shadow_error for r in records],
            "status": pa.array([r.status for r in records], pa.int32()),
            "error": [r.error for r in records],
        },
        schema=SCHEMA,
    )


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


@dataclass
class _Pending:
    """A batch that failed to write once: retried at the next flush."""

    day: str
    records: list[Record]
    name: str


@dataclass
class PredictionLog:
    """One replica's prediction log (see the module doc). ``start()`` runs the writer thread;
    ``close()`` writes what is queued and stops it. Without ``start()``, ``flush()`` writes on
    the caller's thread (tests, batch tools)."""

    storage: str
    model: str
    settings: LogSettings = field(default_factory=LogSettings)
    writer: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    on_written: Callable[[LogStats], None] | None = None  # e.g. update Serve's metrics
    stats: LogStats = field(default_factory=LogStats)

    def __post_init__(self) -> None:
        self._queue: deque[Record] = deque()
        self._lock = threading.Lock()  # the queue, the counters, the sequence
        self._flushing = threading.Lock()  # one flush at a time (writer thread, close())
        self._inflight = 0  # records taken off the queue by a flush and not yet settled
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry: list[_Pending] = []
        self._seq = 0
        self._store: Storage | None = None  # opened at the first write: a log never fails a start

    # -- the request's side: never blocks, never raises ----------------------------------------
    def would_log(self, request_id: str, no_log: bool = False) -> bool:
        """Whether ``offer`` would queue this request now (before anything else is computed
        for its record, e.g. a shadow's outputs); counts nothing."""
        return not (self._closed or no_log) and sampled(request_id, self.settings.share)

    def offer(self, record: Record, no_log: bool = False) -> bool:
        """Queue ``record`` for writing; False when it is not logged (not sampled, asked not
        to be, or dropped because the queue is full)."""
        with self._lock:
            self.stats.offered += 1
            if self._closed:  # the replica moved on to a new log; never queued forever
                self.stats.dropped += 1
                return False
            if no_log:
                self.stats.not_logged += 1
                return False
            if not sampled(record.request_id, self.settings.share):
                self.stats.not_sampled += 1
                return False
            if len(self._queue) >= self.settings.queue_records:
                self.stats.dropped += 1
                return False
            self._queue.append(record)
            waiting = len(self._queue)
        if waiting >= self.settings.flush_records:
            self._wake.set()
        return True

    # -- the writer's side --------------------------------------------------------------------
    def flush(self) -> int:
        """Write what is queued (and retry what failed last time); the records written."""
        with self._flushing:
            with self._lock:
                records = list(self._queue)
                self._queue.clear()
                retry, self._retry = self._retry, []
                self._inflight = len(records) + sum(len(p.records) for p in retry)
            written = 0
            for p in retry:
                written += self._write(p, last_try=True)
            by_day: dict[str, list[Record]] = {}
            for r in records:
                by_day.setdefault(_day(r.ts), []).append(r)
            for day, batch in by_day.items():
                written += self._write(_Pending(day, batch, self._next_name()), last_try=False)
        if self.on_written is not None:  # every flush: the metrics follow every count
            self.on_written(self.snapshot())
        return written

    def _next_name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{self.writer}-{self._seq:06d}.parquet"

    def _write(self, p: _Pending, last_try: bool) -> int:
        rel = f"date={p.day}/{p.name}"
        try:
            sink = pa.BufferOutputStream()
            pq.write_table(to_table(p.records, self.settings.drop_fields), sink)
            if self._store is None:
                self._store = Storage(log_folder(self.storage, self.model))
            self._store.write_bytes(rel, sink.getvalue().to_pybytes())
        except Exception as e:  # a log must never take the replica down
            with self._lock:
                self._inflight -= len(p.records)
                self.stats.write_errors += 1
                where = uris.display(uris.join(log_folder(self.storage, self.model), rel))
                self.stats.last_error = f"{where}: {type(e).__name__}: {e}"[:500]
                if last_try:
                    self.stats.dropped += len(p.records)
                else:
                    self._retry.append(p)
            return 0
        with self._lock:
            self._inflight -= len(p.records)
            self.stats.written += len(p.records)
            self.stats.files += 1
        return len(p.records)

    def snapshot(self) -> LogStats:
        """The counts now (a copy)."""
        with self._lock:
            out = LogStats(**asdict(self.stats))
            out.queued = (
                len(self._queue) + self._inflight + sum(len(p.records) for p in self._retry)
            )
        return out

    def start(self) -> PredictionLog:
        """Run the writer thread (a daemon: it never keeps a process alive)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rayline-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking records (later offers count as dropped), write everything queued and
        stop the writer thread. Blocks while it writes: call it off a request's event loop."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()  # safe beside a writer still busy: flushes take turns
        if self._retry:  # one more try for what just failed, then it counts as dropped
            self.flush()


def new_request_id() -> str:
    return uuid.uuid4().hex
