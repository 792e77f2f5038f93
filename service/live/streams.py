"""The stream endpoint's service: live state per model and series, kept in the database.

A request carries new points of one series (or a ``batch`` of several series). For each series
the service, in one database transaction (shared by concurrent requests, below):

1. locks the series' row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN
   IMMEDIATE`` serialises writers) and, in this process, a per-series lock;
2. applies the timestamp policy (below) and restores the monitor from the row's state, or reuses
   this process's copy when the row's ``revision`` shows nobody else moved it on;
3. scores the new points causally (the monitor keeps the context, so a client sends only what is
   new); when the model's active version changed since the last request, the state is handed to
   the new version first (``with_detector``: no burst of alerts at the switch);
4. writes the events that these points opened, updated or closed, the outbox rows of the alerts
   those changes cause (same transaction: an alert is never lost nor queued twice), the points
   for the stored history, and the new state.

Timestamp policy, per series: points of one request must be strictly increasing. A point at or
before the last accepted one is an exact duplicate when the same timestamp with the same values
was accepted among the last ``stream_dedup_points`` points: duplicates are skipped and counted
(retries are idempotent). Any other point at or before the last accepted one is refused with 409
and nothing of the request is applied (the monitor is causal: it cannot score the past; store
late data through ``/data`` instead).

Concurrent requests are applied together (``service.live.batcher``): up to
``stream_batch_max`` requests of one model version in one transaction, in arrival order. The
rows of all their series are read (and on PostgreSQL locked, in one order) with one statement;
the requests are then checked and scored in memory, in waves of requests that share no series,
each wave's series with one forward pass of the model (``Monitor.update_points``). A refused
request (409, 422) fails alone before anything of it is applied (the row a first request
creates is inserted in a savepoint and removed again); the others of the batch commit, written
with one statement per table: the new states (one executemany UPDATE that checks each row's
revision), the points, the events. When the commit itself fails, every request of the batch
fails, nothing of it is applied, and the monitors it moved on are dropped from this process's
cache (restored from the row next time).

Streamed points wait in ``stream_points`` until the flusher appends them to the stored history
(every ``stream_flush_interval_s``), where scheduled retraining reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import (
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from detector import Detector
from detector.errors import InputError
from detector.feedback import NormalMemory
from detector.monitor import Points, Scores
from service.db import Database, json_column_values
from service.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
)
from service.feedback import normal_events
from service.live.batcher import Batcher
from service.live.channels import queue_alerts
from service.live.monitoring import (
    LiveMonitor,
    check_options,
    handover,
    handover_state,
    new_monitor,
    restore,
)
from service.parsing import numeric_array, parse_json, parse_timestamps
from service.scoring import LoadedVersion, ScoringService
from service.storage import TIMESTAMP, HistoryStore
from service.tables import AnomalyEvent, Model, Stream, StreamPoint, utc_index, utcnow

__all__ = ["StreamItem", "StreamService", "parse_stream_body"]

logger = logging.getLogger(__name__)

_ITEM_KEYS = {"series", "timestamps", "values", "options"}
_MAX_SERIES_NAME = 200


@dataclass
class StreamItem:
    """New points of one series."""

    series: str
    index: pd.DatetimeIndex
    values: dict[str, Any]
    options: dict[str, Any] | None
    n_points: int


@dataclass
class StreamRequest:
    """A parsed stream body."""

    items: list[StreamItem]
    batch: bool
    expected: bool


@dataclass
class _Item:
    """A series item checked, its timestamps not yet parsed (:func:`_index_items`)."""

    where: str
    series: str
    stamps: list[Any]
    values: dict[str, Any]
    options: dict[str, Any] | None


def _parse_item(raw: Any, where: str) -> _Item:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where} must be an object with 'timestamps' and 'values'")
    unknown = sorted(set(raw) - _ITEM_KEYS)
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown field(s) {unknown}; allowed {sorted(_ITEM_KEYS)}"
        )
    series = raw.get("series")
    if series is None:
        series = ""
    elif not isinstance(series, str) or not 1 <= len(series) <= _MAX_SERIES_NAME:
        raise InvalidInputError(
            f"{where}.series must be a string of 1-{_MAX_SERIES_NAME} characters"
        )
    stamps = raw.get("timestamps")
    if not isinstance(stamps, list) or not stamps:
        raise InvalidInputError(
            f"{where}.timestamps must be a non-empty list (ISO-8601 strings or epoch seconds)"
        )
    values = raw.get("values")
    if not isinstance(values, dict) or not values:
        raise InvalidInputError(
            f"{where}.values must be an object mapping each feature to a list of numbers"
        )
    for name, column in values.items():
        if not isinstance(column, list) or len(column) != len(stamps):
            raise InvalidInputError(
                f"{where}.values[{name!r}] must be a list with one entry per timestamp "
                f"({len(stamps)})"
            )
    options = raw.get("options")
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"{where}.options must be an object of monitor options")
    return _Item(where, series, stamps, values, options)


def _index_items(items: list[_Item]) -> list[StreamItem]:
    """The items with their timestamps parsed.

    All of a body's timestamps are parsed in one call and cut per item: the parser's cost is
    mostly per call, and on a batch body of 100 one-point series parsing each item alone was
    two thirds of the event loop's time. Where the whole does not parse (a bad value, or
    items that use different forms, each valid alone), every item is parsed alone, so that
    an error names its item.
    """
    whole = None
    if len(items) > 1:
        with contextlib.suppress(InvalidInputError):
            whole = parse_timestamps([t for item in items for t in item.stamps], "timestamps")
    out: list[StreamItem] = []
    start = 0
    for item in items:
        n = len(item.stamps)
        if whole is None:
            index = parse_timestamps(item.stamps, f"{item.where}.timestamps")
        else:
            index = whole[start : start + n]
        start += n
        if n > 1 and not (np.diff(index.asi8) > 0).all():
            raise InvalidInputError(f"{item.where}.timestamps must be strictly increasing")
        out.append(StreamItem(item.series, index, item.values, item.options, n))
    return out


def parse_stream_body(body: bytes, max_points: int) -> StreamRequest:
    """Validate a stream body: one series, or ``{"batch": [...]}`` of several.

    Raises
    ------
    BadRequestError, InvalidInputError, PayloadTooLargeError
    """
    data = parse_json(body)
    if not isinstance(data, dict):
        raise InvalidInputError("the body must be a JSON object with 'timestamps' and 'values'")
    expected = data.pop("expected", True)
    if not isinstance(expected, bool):
        raise InvalidInputError("expected must be true or false")
    batch = "batch" in data
    if batch:
        if set(data) != {"batch"}:
            raise InvalidInputError("a batch body holds only 'batch' (and 'expected')")
        raw_items = data["batch"]
        if not isinstance(raw_items, list) or not raw_items:
            raise InvalidInputError("batch must be a non-empty list of series items")
        items = [_parse_item(raw, f"batch[{i}]") for i, raw in enumerate(raw_items)]
        seen = [item.series for item in items]
        if len(set(seen)) != len(seen):
            raise InvalidInputError("batch lists a series twice; send its points in one item")
    else:
        items = [_parse_item(data, "body")]
    total = sum(len(item.stamps) for item in items)
    if total > max_points:
        raise PayloadTooLargeError(
            f"the request holds {total} points; the limit is {max_points} "
            "(stream_max_points_per_request): send fewer per request"
        )
    return StreamRequest(_index_items(items), batch, expected)


def _point_hash(ts: int, row: list[float | None]) -> str:
    return hashlib.blake2b(orjson.dumps([ts, row]), digest_size=8).hexdigest()


@dataclass
class _Job:
    """One parsed stream request waiting for its batch."""

    loaded: LoadedVersion
    items: list[StreamItem]
    values: list[np.ndarray]  # per item, (T, F) in the model's feature order


@dataclass
class _Cached:
    revision: int
    version: int
    monitor: LiveMonitor
    recent: list[Any]  # the row's duplicate-detection entries at that revision


@dataclass
class _Outcome:
    """What one series' share of a request produced (before encoding)."""

    series: str
    version: int
    index: pd.DatetimeIndex
    scores: Scores | None  # None: no new point (all duplicates)
    event_ids: list[int | None]
    duplicates: int
    events: list[AnomalyEvent] = field(default_factory=list)


#: The columns of a series' row the stream transaction reads.
_ROW_COLUMNS = (
    Stream.id,
    Stream.model_id,
    Stream.series,
    Stream.version,
    Stream.options,
    Stream.revision,
    Stream.n_points,
    Stream.last_ts,
    Stream.updated_at,
)


@dataclass
class _Row:
    """A series' row as the stream transaction sees it: read once, written once at the end
    (its state is read only when this process has no current monitor of it)."""

    id: int
    model_id: str
    series: str
    version: int
    options: dict[str, Any]
    revision: int
    n_points: int
    last_ts: datetime | None
    recent: list[Any]
    updated_at: datetime
    stored_revision: int  # in the database now (-1: created in this transaction)

    @classmethod
    def of(cls, r: Any, recent: list[Any] | None = None) -> _Row:
        """From a result row of :data:`_ROW_COLUMNS` with its ``recent`` entries, or from a
        result row or ``Stream`` that holds them."""
        return cls(
            r.id,
            r.model_id,
            r.series,
            r.version,
            r.options,
            r.revision,
            r.n_points,
            r.last_ts,
            list(r.recent) if recent is None else recent,
            r.updated_at,
            r.revision,
        )


@dataclass
class _Step:
    """One series' share of one request, checked and waiting for its wave's scoring."""

    index: int  # the item's position in the request
    row: _Row
    item: StreamItem
    values: np.ndarray  # (T, F)
    keep: np.ndarray  # (T,) the points to score (duplicates left out)
    entries: list[list[Any]]  # dedup entries of the points kept
    monitor: LiveMonitor | None  # None: nothing new


@dataclass
class _Txn:
    """What one group's transaction holds in memory."""

    session: Session
    loaded: LoadedVersion
    prepared: dict[str, tuple[int | None, LiveMonitor]]
    local: dict[int, _Cached]  # monitors moved on in this transaction, by stream id
    rows: dict[str, _Row]  # by series
    open_events: dict[int, dict[int, AnomalyEvent]] = field(default_factory=dict)
    dirty: dict[int, _Row] = field(default_factory=dict)  # rows to write, by id
    points: list[dict[str, Any]] = field(default_factory=list)  # rows of ``stream_points``
    moved: set[int] = field(default_factory=set)  # stream ids whose monitors were scored
    n_series: int | None = None  # the model's live series (counted on the first new one)


class _MonitorCache:
    """This process's monitors by stream id, with the revision they were saved at (LRU)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, _Cached] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, stream_id: int) -> _Cached | None:
        with self._guard:
            item = self._items.get(stream_id)
            if item is not None:
                self._items.move_to_end(stream_id)
            return item

    def put(self, stream_id: int, item: _Cached) -> None:
        with self._guard:
            self._items[stream_id] = item
            self._items.move_to_end(stream_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop(self, stream_id: int) -> None:
        with self._guard:
            self._items.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._items)


class StreamService:
    """Scores streamed points against per-series live state and records events and alerts.

    Parameters
    ----------
    db
        The metadata database (stream states, events, outbox).
    scoring
        Resolves a model's active version to a loaded detector.
    history
        The stored history the flusher appends streamed points to.
    max_points, max_series, dedup_points, cache_size, batch_max, batch_wait_ms, queue_max
        See :class:`service.settings.Settings` (``stream_*``).
    memory_events
        Events labelled normal one series remembers (``normal_memory_events``).
    on_alerts
        Called after a commit that queued alerts (wakes the dispatcher).
    """

    def __init__(
        self,
        db: Database,
        scoring: ScoringService,
        history: HistoryStore,
        *,
        max_points: int,
        max_series: int,
        dedup_points: int,
        cache_size: int,
        batch_max: int = 256,
        batch_wait_ms: float = 0.0,
        queue_max: int = 4096,
        memory_events: int = 16,
        public_url: str = "",
        on_alerts: Callable[[], None] | None = None,
        max_buffered: int = 2_000_000,
        retry_after_s: int = 5,
    ) -> None:
        self.public_url = public_url
        self.max_buffered = max_buffered
        self.retry_after_s = retry_after_s
        self.buffered = 0  # points waiting for the stored history, as the last flush left them
        self.db = db
        self.scoring = scoring
        self.history = history
        self.max_points = max_points
        self.max_series = max_series
        self.dedup_points = dedup_points
        self.cache = _MonitorCache(cache_size)
        self.memory_events = memory_events
        self.on_alerts = on_alerts or (lambda: None)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.batcher: Batcher[_Job, tuple[list[_Outcome], int]] = Batcher(
            self._apply_batch,
            max_batch=batch_max,
            max_wait_s=batch_wait_ms / 1000,
            max_queue=queue_max,
        )

    # ------------------------------------------------------------------ the endpoint
    async def ingest(self, name: str, body: bytes) -> bytes:
        """Apply a stream body to model ``name``; return the encoded JSON response.

        Raises
        ------
        BadRequestError, InvalidInputError, PayloadTooLargeError, NotFoundError, ConflictError
        UnavailableError
            While more points wait for the stored history than ``max_buffered`` (it is failing
            or slow): nothing of the request is applied, and it can be sent again.
        """
        if self.buffered > self.max_buffered:
            raise UnavailableError(
                f"{self.buffered} streamed points are waiting for the stored history, more than "
                f"the limit of {self.max_buffered} (stream_max_buffered_points): the history "
                "store is failing or slow (see the server log); nothing of this request was "
                "applied, send it again later",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if len(body) > 64 * 1024:
            request = await asyncio.to_thread(parse_stream_body, body, self.max_points)
        else:
            request = parse_stream_body(body, self.max_points)
        loaded = await self.scoring.resolve(name, None)
        values = [self._values(loaded, item) for item in request.items]
        job = _Job(loaded, request.items, values)
        outcomes, _ = await self.batcher.submit(job)
        self.scoring.note_scored(loaded.model_id)
        results = [self._encode(loaded, o, request.expected) for o in outcomes]
        payload: dict[str, Any] = (
            {"model": loaded.model_name, "version": loaded.version, "results": results}
            if request.batch
            else {"model": loaded.model_name, **results[0]}
        )
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

    @staticmethod
    def _values(loaded: LoadedVersion, item: StreamItem) -> np.ndarray:
        """An item's values (T, F) in the model's feature order (NaN: missing), checked."""
        features = loaded.features
        key = loaded.key_column
        if key and not item.series:
            raise InvalidInputError(
                f"this model serves several series (key column {key!r}): give 'series'"
            )
        if not key and item.series:
            raise InvalidInputError(
                "this model has no key column, so it has one series: leave 'series' out"
            )
        missing = [f for f in features if f not in item.values]
        extra = sorted(set(item.values) - set(features))
        if missing or extra:
            raise InvalidInputError(
                f"values must hold exactly the features {features}"
                + (f"; missing {missing} (send null for a missing value)" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        columns = []
        for name in features:
            column = numeric_array(item.values[name], f"values[{name!r}]", allow_null=True)
            if column.ndim != 1:
                raise InvalidInputError(f"values[{name!r}] must be a flat list of numbers")
            columns.append(column)
        return np.column_stack(columns) if len(columns) > 1 else columns[0][:, None]

    # ------------------------------------------------------------------ locking
    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) > 4 * self.cache.capacity:
                    # Drop locks nobody holds; a holder keeps its own reference.
                    self._locks = {k: v for k, v in self._locks.items() if v.locked()}
                lock = self._locks[key] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def _series_locks(self, model_id: str, series: list[str]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for name in sorted(series):  # one order everywhere: no deadlock
                stack.enter_context(self._lock((model_id, name)))
            yield

    # ------------------------------------------------------------------ the transaction
    def _apply_batch(self, jobs: list[_Job]) -> list[tuple[list[_Outcome], int] | BaseException]:
        """Apply queued requests: one transaction per model version among them, in arrival
        order (the batcher's ``run``). Each request runs in a savepoint, so one that fails
        (409, 422) fails alone; its answer is its exception."""
        answers: dict[int, tuple[list[_Outcome], int] | BaseException] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.loaded.model_id, job.loaded.version), []).append(i)
        for members in groups.values():
            try:
                got = self._apply_group([jobs[i] for i in members])
            except Exception as exc:  # the group's transaction did not commit
                got = [exc] * len(members)
            answers.update(zip(members, got, strict=True))
        queued = sum(a[1] for a in answers.values() if not isinstance(a, BaseException))
        if queued:
            self.on_alerts()
        return [answers[i] for i in range(len(jobs))]

    def _apply_group(self, jobs: list[_Job]) -> list[tuple[list[_Outcome], int] | BaseException]:
        """Requests of one model version in one transaction (see :meth:`_apply_batch`).

        The series' rows are read with one statement (and on PostgreSQL locked in one order:
        no deadlock between replicas), then the requests are applied in arrival order in
        memory, in waves of requests that share no series: every series of a wave is scored
        with one pass of the network (``LiveMonitor.update_many``). A request whose checks
        fail (409, 422) fails alone and changes nothing; the states, the points and the
        events of the others are written at the end, one statement per table (the state
        UPDATE checks each row's revision)."""
        loaded = jobs[0].loaded
        firsts: dict[str, StreamItem] = {}
        for job in jobs:
            for item in job.items:
                firsts.setdefault(item.series, item)
        answers: list[tuple[list[_Outcome], int] | BaseException | None] = [None] * len(jobs)
        local: dict[int, _Cached] = {}  # monitors moved on in this transaction, by stream id
        with self._series_locks(loaded.model_id, list(firsts)):
            prepared = self._prepare(loaded, list(firsts.values()))
            txn: _Txn | None = None
            try:
                with self.db.transaction() as session:
                    txn = self._open(session, loaded, list(firsts), prepared, local)
                    wave: list[tuple[int, list[_Step]]] = []
                    in_wave: set[str] = set()
                    for j, job in enumerate(jobs):
                        names = {item.series for item in job.items}
                        if names & in_wave:  # a later request of a series: after this wave
                            self._run_wave(txn, wave, answers)
                            wave, in_wave = [], set()
                        try:
                            wave.append((j, self._stage(txn, job)))
                            in_wave |= names
                        except Exception as exc:  # this request alone; nothing of it applied
                            answers[j] = exc
                    self._run_wave(txn, wave, answers)
                    self._write(txn)
            except BaseException:
                # the monitors of this transaction may have moved on: reload them next time
                for stream_id in [*local, *(() if txn is None else txn.moved)]:
                    self.cache.drop(stream_id)
                raise
            for stream_id, cached in local.items():
                self.cache.put(stream_id, cached)
        return [a if a is not None else RuntimeError("not applied") for a in answers]

    def _open(
        self,
        session: Session,
        loaded: LoadedVersion,
        series: list[str],
        prepared: dict[str, tuple[int | None, LiveMonitor]],
        local: dict[int, _Cached],
    ) -> _Txn:
        """The transaction's view of the series' rows and their open events (two statements;
        the rows locked on PostgreSQL, in one order for every replica)."""
        query = (
            select(*_ROW_COLUMNS)
            .where(Stream.model_id == loaded.model_id, Stream.series.in_(series))
            .order_by(Stream.series)
        )
        if self.db.is_postgresql:
            query = query.with_for_update()
        found = session.execute(query).all()
        recent = self._recent(session, found)
        rows = {r.series: _Row.of(r, recent[r.id]) for r in found}
        txn = _Txn(session, loaded, prepared, local, rows)
        if rows:
            ids = [r.id for r in rows.values()]
            for ev in session.execute(
                select(AnomalyEvent).where(
                    AnomalyEvent.stream_id.in_(ids), AnomalyEvent.status == "open"
                )
            ).scalars():
                txn.open_events.setdefault(ev.stream_id, {})[ev.seq] = ev
        return txn

    def _recent(self, session: Session, rows: Sequence[Any]) -> dict[int, list[Any]]:
        """The rows' duplicate-detection entries by stream id: this process's copy where the
        row's revision shows it is current, else read (one statement). Reading them for every
        series of every batch (up to ``stream_dedup_points`` entries of JSON each, used only
        for a resent point) was about a third of the stream worker's time per point."""
        out: dict[int, list[Any]] = {}
        for r in rows:
            cached = self.cache.get(r.id)
            if cached is not None and cached.revision == r.revision:
                out[r.id] = cached.recent
        missing = [r.id for r in rows if r.id not in out]
        if missing:
            query = select(Stream.id, Stream.recent).where(Stream.id.in_(missing))
            out.update((i, list(entries)) for i, entries in session.execute(query))
        return out

    def _stage(self, txn: _Txn, job: _Job) -> list[_Step]:
        """One request's series (sorted: one lock order), checked against the rows: options,
        the series limit, the timestamp policy; the monitors to score with. A series seen for
        the first time gets its row here (in a savepoint: undone if a later check of the same
        request fails)."""
        items = job.items
        order = sorted(range(len(items)), key=lambda i: items[i].series)
        if all(items[i].series in txn.rows for i in order):
            return [self._stage_item(txn, job, i) for i in order]
        created: list[_Row] = []
        try:
            with txn.session.begin_nested():
                steps = []
                for i in order:
                    if items[i].series not in txn.rows:
                        row = self._create(txn, items[i])
                        if row.stored_revision < 0:
                            created.append(row)
                    steps.append(self._stage_item(txn, job, i))
        except BaseException:
            for row in created:  # the savepoint undid their INSERT
                txn.rows.pop(row.series, None)
                txn.local.pop(row.id, None)
                if txn.n_series is not None:
                    txn.n_series -= 1
            raise
        return steps

    def _stage_item(self, txn: _Txn, job: _Job, i: int) -> _Step:
        item, loaded = job.items[i], txn.loaded
        row = txn.rows[item.series]
        if item.options is not None and check_options(item.options) != row.options:
            raise ConflictError(
                f"series {item.series!r} already runs with options {row.options}; options "
                "are fixed when a series starts (DELETE the stream to start it again)"
            )
        values = job.values[i]
        keep, entries = self._accept(row, item.index, values)
        monitor = None
        if keep.any():
            monitor = self._monitor(row, loaded, txn.prepared, txn.local, txn.session)
        return _Step(i, row, item, values, keep, entries, monitor)

    def _create(self, txn: _Txn, item: StreamItem) -> _Row:
        """A new series' row (with a fresh monitor), or the one another replica just made."""
        loaded, session = txn.loaded, txn.session
        if txn.n_series is None:
            txn.n_series = session.execute(
                select(func.count()).select_from(Stream).where(Stream.model_id == loaded.model_id)
            ).scalar_one()
        if txn.n_series >= self.max_series:
            raise ConflictError(
                f"model {loaded.model_name!r} already has {txn.n_series} live series, the limit "
                "(stream_max_series); delete streams that ended or raise the limit"
            )
        options = check_options(item.options or {})
        ready = txn.prepared.get(item.series)
        if ready is not None and ready[0] is None:
            monitor = ready[1]
        else:
            monitor = new_monitor(loaded.detector, options, loaded.label_refit)
        state = orjson.dumps(monitor.state()).decode()
        fresh = Stream.start(loaded.model_id, item.series, loaded.version, options, state)
        try:
            with session.begin_nested():
                session.add(fresh)
        except IntegrityError:
            # Another replica created it first: use (and lock) theirs.
            query = select(*_ROW_COLUMNS, Stream.recent).where(
                Stream.model_id == loaded.model_id, Stream.series == item.series
            )
            if self.db.is_postgresql:
                query = query.with_for_update()
            row = _Row.of(session.execute(query).one())
        else:
            session.expunge(fresh)  # written once, at the end, through the row below
            row = _Row.of(fresh)
            row.stored_revision = -1  # created in this transaction (its state: revision 0)
            txn.local[row.id] = _Cached(0, loaded.version, monitor, [])
            txn.n_series += 1
        txn.rows[item.series] = row
        return row

    def _run_wave(
        self,
        txn: _Txn,
        wave: list[tuple[int, list[_Step]]],
        answers: list[tuple[list[_Outcome], int] | BaseException | None],
    ) -> None:
        """Score the requests of a wave (no series twice) together, then record each."""
        if not wave:
            return
        todo = [s for _, steps in wave for s in steps if s.monitor is not None]
        txn.moved.update(s.row.id for s in todo)  # dropped from the cache if the commit fails
        try:
            scored = self._score(txn, todo)
        except InputError:  # a chunk a monitor refuses (none moved on): find its request
            scored = {}
            for j, steps in wave:
                try:
                    scored.update(self._score(txn, [s for s in steps if s.monitor is not None]))
                except Exception as exc:
                    answers[j] = exc
                    self._undo_created(txn, steps)
        for j, steps in wave:
            if answers[j] is None:
                answers[j] = self._record(txn, steps, scored)

    def _score(self, txn: _Txn, steps: list[_Step]) -> dict[int, Scores]:
        """The monitors' scores of the steps' new points, one forward pass; by ``id(step)``."""
        key = txn.loaded.key_column
        points = [
            Points(s.values, s.item.index, s.item.series if key else None)
            if s.keep.all()
            else Points(s.values[s.keep], s.item.index[s.keep], s.item.series if key else None)
            for s in steps
        ]
        monitors = [s.monitor for s in steps if s.monitor is not None]
        results = LiveMonitor.update_many(monitors, points)
        return {id(s): r for s, r in zip(steps, results, strict=True)}

    def _undo_created(self, txn: _Txn, steps: list[_Step]) -> None:
        """Remove the rows a failed request created (its savepoint was released already)."""
        ids = [s.row.id for s in steps if s.row.stored_revision < 0]
        if ids:
            txn.session.execute(delete(Stream).where(Stream.id.in_(ids)))
            for s in steps:
                if s.row.stored_revision < 0:
                    txn.rows.pop(s.row.series, None)
                    txn.local.pop(s.row.id, None)
                    if txn.n_series is not None:
                        txn.n_series -= 1

    def _record(
        self, txn: _Txn, steps: list[_Step], scored: dict[int, Scores]
    ) -> tuple[list[_Outcome], int]:
        """One scored request: its events (flushed, for their ids), its alerts, its points and
        the rows' new state in memory (written by :meth:`_write`)."""
        loaded, session = txn.loaded, txn.session
        now = utcnow()
        changed: list[tuple[AnomalyEvent, bool]] = []
        outcomes: dict[int, _Outcome] = {}
        pending: list[tuple[_Outcome, list[int | None], dict[int, AnomalyEvent]]] = []
        for step in steps:
            row, item = step.row, step.item
            index = item.index if step.keep.all() else item.index[step.keep]
            out = scored.get(id(step))
            outcome = _Outcome(item.series, loaded.version, index, out, [], int((~step.keep).sum()))
            outcomes[step.index] = outcome
            if out is None or step.monitor is None:
                continue
            monitor = step.monitor
            open_rows = txn.open_events.setdefault(row.id, {})
            event_seqs = [None if v < 0 else int(v) for v in out.event.tolist()]
            seqs = {v for v in event_seqs if v is not None} | set(open_rows)
            by_seq: dict[int, AnomalyEvent] = dict(open_rows)
            mine: list[AnomalyEvent] = []
            for seq, view in sorted(monitor.events(seqs).items()):
                ev = by_seq.get(seq)
                if ev is None:
                    ev = session.execute(
                        select(AnomalyEvent).where(
                            AnomalyEvent.stream_id == row.id, AnomalyEvent.seq == seq
                        )
                    ).scalar_one_or_none()
                was_open = ev is not None and ev.status == "open"
                if ev is None:
                    ev = AnomalyEvent(
                        model_id=row.model_id,
                        stream_id=row.id,
                        series=row.series,
                        seq=seq,
                        created_at=now,
                        acknowledged_at=None,
                        acknowledged_by=None,
                    )
                    session.add(ev)
                ev.version = loaded.version
                ev.status = view.status
                ev.start = view.start.to_pydatetime()
                ev.end = view.end.to_pydatetime()
                ev.peak = view.peak
                ev.mean = view.mean
                ev.severity = view.severity
                ev.n_points = view.n_points
                ev.top_features = [[n, v] for n, v in view.top_features]
                ev.updated_at = now
                by_seq[seq] = ev
                mine.append(ev)
                changed.append((ev, was_open and view.status == "closed"))
                if view.status == "open":
                    open_rows[seq] = ev
                else:
                    open_rows.pop(seq, None)
            outcome.events = mine
            # stored in the events table by this transaction (a failed one drops this copy of
            # the monitor from the cache, and the next request restores the stored state)
            monitor.forget_closed_events()
            pending.append((outcome, event_seqs, by_seq))
            features = loaded.features
            kept = step.values if step.keep.all() else step.values[step.keep]
            txn.points.extend(
                {
                    "model_id": row.model_id,
                    "series": row.series,
                    "ts": ts,
                    "values": {
                        k: (None if math.isnan(v) else v)
                        for k, v in zip(features, vals, strict=True)
                    },
                }
                for ts, vals in zip(index.to_pydatetime(), kept.tolist(), strict=True)
            )
            row.revision += 1
            row.version = loaded.version
            row.n_points += len(index)
            row.last_ts = index[-1].to_pydatetime()
            row.recent = (list(row.recent) + step.entries)[-self.dedup_points :]
            row.updated_at = now
            txn.dirty[row.id] = row
            txn.local[row.id] = _Cached(row.revision, loaded.version, monitor, row.recent)
        queued = 0
        if changed:
            session.flush()  # the events' ids, for the alerts and the answer
            queued = queue_alerts(
                session, loaded.model_id, loaded.model_name, changed, self.public_url
            )
        for outcome, event_seqs, by_seq in pending:
            outcome.event_ids = [
                None if v is None or v not in by_seq else by_seq[v].id for v in event_seqs
            ]
        return [outcomes[i] for i in range(len(outcomes))], queued

    def _write(self, txn: _Txn) -> None:
        """The rows' new states (one executemany UPDATE that checks each row's revision) and
        the points of every request applied (one INSERT)."""
        session = txn.session
        rows = list(txn.dirty.values())
        if rows:
            table = cast(Table, Stream.__table__)
            statement = (
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.revision == bindparam("b_was"))
                .values(
                    state=bindparam("b_state"),
                    revision=bindparam("b_revision"),
                    version=bindparam("b_version"),
                    n_points=bindparam("b_n_points"),
                    last_ts=bindparam("b_last_ts"),
                    recent=bindparam("b_recent"),
                    updated_at=bindparam("b_updated_at"),
                )
            )
            params = [
                {
                    "b_id": row.id,
                    "b_was": max(row.stored_revision, 0),
                    "b_state": orjson.dumps(txn.local[row.id].monitor.state()).decode(),
                    "b_revision": row.revision,
                    "b_version": row.version,
                    "b_n_points": row.n_points,
                    "b_last_ts": row.last_ts,
                    "b_recent": row.recent,
                    "b_updated_at": row.updated_at,
                }
                for row in rows
            ]
            result = session.execute(statement, params)
            if session.get_bind().dialect.supports_sane_multi_rowcount:
                written = int(getattr(result, "rowcount", -1))
            else:
                query = select(Stream.id, Stream.revision).where(
                    Stream.id.in_([r.id for r in rows])
                )
                stored = {r.id: r.revision for r in session.execute(query)}
                written = sum(stored.get(r.id) == r.revision for r in rows)
            if written != len(rows):
                raise ConflictError(
                    "a series' state was moved on by another writer during this request; "
                    "nothing of it was applied: send it again"
                )
        if txn.points:  # the history rows of every request applied: one Core statement
            # (the ORM's bulk insert path costs a third more per row and returns nothing here)
            session.execute(insert(cast(Table, StreamPoint.__table__)), txn.points)

    def _prepare(
        self,
        loaded: LoadedVersion,
        items: list[StreamItem],
    ) -> dict[str, tuple[int | None, LiveMonitor]]:
        """Build the monitors this process lacks before the write transaction starts.

        Creating or restoring a monitor fits its threshold on the model's held-out scores,
        which costs far more than the database work; done inside the transaction it would hold
        SQLite's write lock (every writer waits). Keyed by series: ``(revision, monitor)`` of a
        restored state (used only if the locked row still has that revision) or ``(None,
        monitor)`` for a series that does not exist yet.
        """
        with self.db.session() as session:
            rows = {
                r.series: (r.id, r.revision, r.version)
                for r in session.execute(
                    select(Stream.id, Stream.series, Stream.revision, Stream.version).where(
                        Stream.model_id == loaded.model_id,
                        Stream.series.in_([it.series for it in items]),
                    )
                )
            }
            stale = []  # the rows this process has no current monitor of
            for stream_id, revision, version in rows.values():
                cached = self.cache.get(stream_id)
                if cached is None or cached.revision != revision or cached.version != version:
                    stale.append(stream_id)
            states: dict[int, str] = {}
            if stale:
                query = select(Stream.id, Stream.state).where(Stream.id.in_(stale))
                states = {r.id: r.state for r in session.execute(query)}
        prepared: dict[str, tuple[int | None, LiveMonitor]] = {}
        for item in items:
            found = rows.get(item.series)
            try:
                if found is None:
                    options = check_options(item.options or {})
                    prepared[item.series] = (
                        None,
                        new_monitor(loaded.detector, options, loaded.label_refit),
                    )
                    continue
                stream_id, revision, version = found
                state = states.get(stream_id)
                if state is not None:
                    prepared[item.series] = (revision, self._restored(state, version, loaded))
            except Exception:  # raised again for its own request alone, in its savepoint
                continue
        return prepared

    def _monitor(
        self,
        row: Stream | _Row,
        loaded: LoadedVersion,
        prepared: dict[str, tuple[int | None, LiveMonitor]],
        local: dict[int, _Cached] | None = None,
        session: Session | None = None,
    ) -> LiveMonitor:
        """The series' monitor: this transaction's or this process's copy when the row's
        revision shows nobody moved it on, else restored from the row's state (read through
        ``session`` for a :class:`_Row`)."""
        cached = (local or {}).get(row.id) or self.cache.get(row.id)
        ready = prepared.get(row.series)
        if cached is not None and cached.revision == row.revision and cached.version == row.version:
            if row.version == loaded.version:
                return cached.monitor
            self._log_handover(loaded, row.version)
            return handover(cached.monitor, loaded.detector, loaded.label_refit)
        if ready is not None and ready[0] == row.revision:
            return ready[1]  # restored before the lock, and nobody moved the row on since
        if isinstance(row, Stream):
            state = row.state
        else:
            assert session is not None, "a _Row's state is read in its transaction"
            state = session.execute(select(Stream.state).where(Stream.id == row.id)).scalar_one()
        return self._restored(state, row.version, loaded)

    def _restored(self, state: str, version: int, loaded: LoadedVersion) -> LiveMonitor:
        """The monitor a row's state describes, at the loaded version: a state saved by
        another version is handed over from the state alone, so a series whose version was
        deleted since goes on (restoring it with its own version first would need that
        version, and every request of the series would be refused)."""
        if version == loaded.version:
            return restore(loaded.detector, orjson.loads(state))
        self._log_handover(loaded, version)
        return handover_state(orjson.loads(state), loaded.detector, loaded.label_refit)

    @staticmethod
    def _log_handover(loaded: LoadedVersion, version: int) -> None:
        logger.info(
            "stream handed to a new version",
            extra={"model": loaded.model_name, "from": version, "to": loaded.version},
        )

    def _accept(
        self, row: _Row, index: pd.DatetimeIndex, values: np.ndarray
    ) -> tuple[np.ndarray, list[list[Any]]]:
        """Mask of the points to score (duplicates left out) and the dedup entries of the
        points kept, for new points ``values`` (T, F) at ``index``.

        Raises
        ------
        service.errors.ConflictError
            For a point at or before the last accepted one that is not an exact duplicate.
        """
        stamps = index.asi8  # (T,) microseconds
        hashes = [
            _point_hash(int(t), [None if math.isnan(v) else v for v in row_values])
            for t, row_values in zip(stamps.tolist(), values.tolist(), strict=True)
        ]
        keep = np.ones(len(stamps), dtype=bool)
        if row.last_ts is not None:
            last = pd.Timestamp(row.last_ts).value // 1000  # ns -> us, as stamps
            recent: set[tuple[int, Any]] | None = None  # built only for a point not newer
            for j, t in enumerate(stamps.tolist()):
                if t > last:
                    break
                if recent is None:
                    recent = {(int(t), h) for t, h in row.recent}
                if (t, hashes[j]) not in recent:
                    raise ConflictError(
                        f"series {row.series!r}: the point at "
                        f"{pd.Timestamp(t, unit='us', tz='UTC').isoformat()} is at or "
                        f"before the last accepted point "
                        f"({pd.Timestamp(last, unit='us', tz='UTC').isoformat()}) and is not "
                        "an exact duplicate of an accepted one; send only newer points (late "
                        "data for training goes to /data); nothing of this request was applied"
                    )
                keep[j] = False
        entries = [[t, hashes[j]] for j, t in enumerate(stamps.tolist()) if keep[j]]
        return keep, entries

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _encode(loaded: LoadedVersion, outcome: _Outcome, expected: bool) -> dict[str, Any]:
        out = outcome.scores
        result: dict[str, Any] = {
            "series": outcome.series or None,
            "version": outcome.version,
            "n_points": 0 if out is None else len(out.score),
            "duplicates": outcome.duplicates,
            "timestamps": [ts.isoformat() for ts in outcome.index],
        }
        if out is None:
            result.update(score=[], normalized=[], threshold=[], anomalous=[], event=[])
        else:
            result.update(
                score=_floats(out.score),
                normalized=_floats(out.normalized),
                threshold=_floats(out.threshold),
                anomalous=out.anomalous.tolist(),
                event=outcome.event_ids,
            )
        if expected:
            result["expected"] = {
                f: _floats(out.expected[:, j])
                if out is not None and out.expected is not None
                else []
                for j, f in enumerate(loaded.features)
            }
        from service.live.events import event_public

        result["events"] = [event_public(ev) for ev in outcome.events]
        return result

    # ------------------------------------------------------------------ management
    def list_streams(self, name: str, offset: int, limit: int) -> tuple[list[Stream], int]:
        """A page of a model's live series, by name."""
        model_id = self.scoring.registry.get_model(name).id
        with self.db.session() as session:
            total = session.execute(
                select(func.count()).select_from(Stream).where(Stream.model_id == model_id)
            ).scalar_one()
            rows = session.execute(
                select(Stream)
                .where(Stream.model_id == model_id)
                .order_by(Stream.series)
                .offset(offset)
                .limit(limit)
            ).scalars()
            return list(rows), int(total)

    def delete_stream(self, name: str, series: str) -> None:
        """Forget a series' live state and its events (stored history stays).

        Raises
        ------
        service.errors.NotFoundError
        """
        model_id = self.scoring.registry.get_model(name).id
        with self.db.transaction() as session:
            row = session.execute(
                select(Stream)
                .where(Stream.model_id == model_id, Stream.series == series)
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise NotFoundError(f"no live series {series!r} for this model")
            session.delete(row)
            self.cache.drop(row.id)

    # ------------------------------------------------------------------ feedback
    async def refresh_memory(self, name: str, series: str) -> int:
        """Rebuild the normal memory of one series' monitor from its events whose newest label
        says "not an anomaly" (``service.feedback``): a window like one of them raises no flag
        from the next point on. Returns how many events it remembers (0: no live series).

        Raises
        ------
        NotFoundError, ConflictError
            For an unknown model, or one without an active version.
        """
        loaded = await self.scoring.resolve(name, None)
        return await asyncio.to_thread(self._refresh_memory, loaded, series)

    def _refresh_memory(self, loaded: LoadedVersion, series: str) -> int:
        with self._series_locks(loaded.model_id, [series]):
            with self.db.session() as session:
                stream_id = session.execute(
                    select(Stream.id).where(
                        Stream.model_id == loaded.model_id, Stream.series == series
                    )
                ).scalar_one_or_none()
            if stream_id is None:
                return 0
            # Built before the write transaction (it reads the stored history); the monitor
            # moves to the active version below if it is not on it yet.
            detector = loaded.detector
            memory = NormalMemory.for_detector(detector, self.memory_events)
            spans = normal_events(self.db, stream_id, memory.max_stretches)
            if spans:
                values = self._series_values(
                    loaded, series, min(s for s, _ in spans), max(e for _, e in spans), detector
                )
                for start, end in reversed(spans):  # oldest first: the newest stay longest
                    memory.remember(detector, values, pd.Timestamp(start), pd.Timestamp(end))
            with self.db.transaction() as session:
                row = session.execute(
                    select(Stream).where(Stream.id == stream_id).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    return 0
                try:
                    monitor = self._monitor(row, loaded, {})
                    monitor.remember(memory)
                    row.state = orjson.dumps(monitor.state()).decode()
                    row.revision += 1
                    row.version = loaded.version
                    row.updated_at = utcnow()
                    session.flush()
                except BaseException:
                    self.cache.drop(stream_id)  # its monitor may have moved on: reload
                    raise
                revision, recent = row.revision, list(row.recent)
            self.cache.put(stream_id, _Cached(revision, loaded.version, monitor, recent))
            return len(spans)

    def _series_values(
        self,
        loaded: LoadedVersion,
        series: str,
        start: datetime,
        end: datetime,
        detector: Detector,
    ) -> pd.DataFrame:
        """A series' points in ``[start - window, end]`` (:meth:`series_values`)."""
        margin = pd.Timedelta(int(detector.preprocessor_.step_) * (detector.window_ + 1), "ns")
        lo = (pd.Timestamp(start) - margin).to_pydatetime()
        hi = (pd.Timestamp(end) + pd.Timedelta(microseconds=1)).to_pydatetime()
        return self.series_values(
            loaded.model_id, loaded.key_column, list(loaded.features), series, lo, hi
        )

    def series_values(
        self,
        model_id: str,
        key_column: str | None,
        features: list[str],
        series: str,
        lo: datetime,
        hi: datetime,
    ) -> pd.DataFrame:
        """A series' points in ``[lo, hi)``: stored history, then the streamed points not yet
        flushed to it (which replace stored rows of the same time); float64 ``features``."""
        stored = self.history.read(model_id, lo, hi)
        if key_column and not stored.empty:
            stored = stored[stored[key_column].astype(str) == series]
        with self.db.session() as session:
            rows = session.execute(
                select(StreamPoint.ts, StreamPoint.values).where(
                    StreamPoint.model_id == model_id,
                    StreamPoint.series == series,
                    StreamPoint.ts >= lo,
                    StreamPoint.ts < hi,
                )
            ).all()
        parts = [stored[features]] if not stored.empty else []
        if rows:
            buffered = pd.DataFrame.from_records([r.values for r in rows], columns=features)
            buffered.index = pd.DatetimeIndex([pd.Timestamp(r.ts) for r in rows], name=TIMESTAMP)
            parts.append(buffered)
        if not parts:
            return pd.DataFrame(columns=features, index=pd.DatetimeIndex([], tz="UTC"))
        frame = pd.concat(parts)
        index = pd.DatetimeIndex(frame.index)
        frame.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        frame = frame[~frame.index.duplicated(keep="last")].sort_index()
        return frame.astype(np.float64)

    # ------------------------------------------------------------------ history
    def flush(self, limit: int = 200_000) -> int:
        """Append buffered stream points to the stored history; return how many moved.

        A crash between the append and the delete appends the same rows again next time, which
        the history store's replace-by-timestamp rule makes harmless. A model whose points
        cannot be appended keeps them buffered and the others go on; :attr:`buffered` then
        counts what is left (stream requests are refused beyond :attr:`max_buffered`).
        """
        with self.db.session() as session:
            models = list(session.execute(select(StreamPoint.model_id).distinct()).scalars())
        moved = 0
        behind = False  # a model's points stay buffered, or more than one read's worth
        for model_id in models:
            with self.db.named_lock(f"stream-flush:{model_id}"):
                with self.db.session() as session:
                    config = session.execute(
                        select(Model.config).where(Model.id == model_id)
                    ).scalar_one_or_none()
                    # the columns as the driver gives them (no ORM rows, no per-row JSON or
                    # datetime processing), converted below in one call each: this runs beside
                    # the stream's worker thread, whose batches wait while it holds the
                    # interpreter, and the per-row conversions were three quarters of it
                    table = cast(Table, StreamPoint.__table__)
                    query = (
                        select(
                            table.c.id,
                            table.c.series,
                            type_coerce(table.c.ts, String),
                            type_coerce(table.c["values"], Text),
                        )
                        .where(table.c.model_id == model_id)
                        .order_by(table.c.id)
                        .limit(limit)
                    )
                    rows = session.connection().execute(query).all()
                if not rows or config is None:
                    continue  # none, or the model was deleted meanwhile (its points with it)
                key = config.get("key_column")
                _, names, stamps, values = zip(*rows, strict=True)
                frame = pd.DataFrame.from_records(json_column_values(values))
                frame.index = utc_index(stamps, TIMESTAMP)
                if key:
                    frame[key] = list(names)
                behind |= len(rows) == limit
                try:
                    self.history.append(model_id, frame, key_column=key)
                except Exception as exc:  # a store error, a full disk: the others go on
                    logger.error(
                        "streamed points could not join the stored history; they stay buffered",
                        extra={"model_id": model_id, "error": str(exc)},
                    )
                    behind = True
                    continue
                last = rows[-1].id
                with self.db.transaction() as session:
                    session.execute(
                        delete(StreamPoint).where(
                            StreamPoint.model_id == model_id, StreamPoint.id <= last
                        )
                    )
                moved += len(rows)
        if behind:
            with self.db.session() as session:
                counted = session.scalar(select(func.count()).select_from(StreamPoint))
                self.buffered = int(counted or 0)
        else:
            self.buffered = 0  # what came in meanwhile is one interval's worth
        return moved

    def prune_events(self) -> int:
        """Delete the closed events that end before their model's stored history begins: the
        points they describe are no longer kept (the history's retention bounds the events
        with it, and retraining, which leaves events out, only reads what is kept). Their
        alerts go with them; labels keep their own spans. Returns how many went."""
        with self.db.session() as session:
            models = list(session.scalars(select(AnomalyEvent.model_id).distinct()))
        gone = 0
        for model_id in models:
            start = self.history.summary(model_id).start
            if start is None:
                continue
            with self.db.transaction() as session:
                result = session.execute(
                    delete(AnomalyEvent).where(
                        AnomalyEvent.model_id == model_id,
                        AnomalyEvent.status == "closed",
                        AnomalyEvent.end < start,
                    )
                )
            gone += int(getattr(result, "rowcount", 0) or 0)
        if gone:
            logger.info("events before the stored history deleted", extra={"events": gone})
        return gone


def _floats(column: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(column, dtype=np.float64).tolist()]


def _utc_iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
