"""The console's view of a model on its stored history: scores, expected band, flagged stretches.

:class:`SeriesService` reads the stored history for a chart at once and scores it with a model
version in the background (through the scoring service's cache of loaded versions): the first
view of a long series shows the stored values straight away, and the page asks again until the
scores, the expected band and the flags are there (scoring a million points takes a minute on a
CPU core; reading and downsampling them, a fraction of a second). Both results are kept for
zooming, so every later chart request is a slice and a per-pixel downsample of arrays in memory.
The caches are keyed by the version and the history's size and end, so new data or a new version
reads and scores again.

The sensitivity slider previews, without retraining, how flags change when the version's
threshold is scaled: :func:`preview_threshold` applies the library's sensitivity rule
(:class:`detector.MonitorOptions`: every 25 points above 50 halve a static threshold, every 25
below double it, so 0 is 4x and 100 a quarter of the calibrated threshold), and flags come from
the one flag rule, :func:`detector.decision.flags`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from detector import MonitorOptions
from detector.decision import flags
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.live.events import EventService
from service.registry import ModelRegistry
from service.scoring import ScoringService
from service.storage import HistoryStore
from service.ui.downsample import break_gaps, minmax, runs

__all__ = ["ScoredSeries", "SeriesService", "StoredSeries", "preview_threshold"]

#: Most flagged stretches one chart response lists (the strongest first); the count is exact.
MAX_STRETCHES = 200

#: Most series names of a model with a key column that a chart response lists.
MAX_KEYS = 1000

#: Stored steps (the median spacing) between two points that make a gap in a chart's lines.
GAP_STEPS = 5


def preview_threshold(threshold: float, sensitivity: float) -> float:
    """The threshold a sensitivity (0-100, 50 = as calibrated) previews."""
    return float(threshold * MonitorOptions(sensitivity=sensitivity).scale)


@dataclass
class StoredSeries:
    """The stored values a version's chart shows, before (or without) its scores.

    float32 halves the memory held; per-feature arrays are feature-major (one contiguous row per
    feature), which makes the per-pixel reductions of a million points about 50x faster.
    """

    model: str
    version: int
    threshold: float
    features: list[str]
    x: np.ndarray  # (T,) float64 seconds since the epoch
    values: np.ndarray  # (F, T)
    stored_points: int  # points in the history (more than T when it was cut to the latest)
    key: str | None = None  # the series shown, for a model with a key column
    keys: list[str] = field(default_factory=list)  # its series (at most MAX_KEYS)
    state: str = ""  # the version and the stored history's state it was read at
    step: float = 0.0  # the median seconds between stored points (gaps are many of them)
    held: dict[str, Any] = field(default_factory=dict)  # the history's size and end (_held)


@dataclass(kw_only=True)
class ScoredSeries(StoredSeries):
    """One version's scores over the stored history, with the values they were computed on."""

    expected: np.ndarray  # (F, T)
    lower: np.ndarray  # (F, T)
    upper: np.ndarray  # (F, T)
    scores: np.ndarray  # (T,)
    contributions: np.ndarray  # (F, T)


def _feature_major(table: pd.DataFrame | None, features: list[str]) -> np.ndarray:
    assert table is not None
    rows: np.ndarray = np.ascontiguousarray(table[features].to_numpy(dtype=np.float32).T)
    return rows  # (F, T)


class SeriesService:
    """Reads and scores stored history for the console's charts, with small LRUs of results.

    Parameters
    ----------
    registry, history, scoring, events
        The app's services (the live anomaly events are shaded on the charts).
    cache_size
        Series kept, read and scored each (``ui_series_cache``).
    max_points
        Latest stored points charted and scored at most (``ui_max_points``).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        history: HistoryStore,
        scoring: ScoringService,
        events: EventService,
        cache_size: int,
        max_points: int,
    ) -> None:
        self.registry = registry
        self.history = history
        self.scoring = scoring
        self.events = events
        self.cache_size = cache_size
        self.max_points = max_points
        self._stored: OrderedDict[tuple[Any, ...], tuple[StoredSeries, pd.DataFrame]] = (
            OrderedDict()
        )
        self._scored: OrderedDict[tuple[Any, ...], ScoredSeries] = OrderedDict()
        self._reading: dict[tuple[Any, ...], asyncio.Lock] = {}
        self._scoring: dict[tuple[Any, ...], asyncio.Task[ScoredSeries]] = {}

    async def chart(
        self,
        name: str,
        version: int | None,
        key: str | None,
        features: list[str],
        lo: float | None,
        hi: float | None,
        width: int,
        sensitivity: float,
        if_none_match: str | None = None,
    ) -> tuple[dict[str, Any] | None, str]:
        """One chart request's body (:func:`chart`) with the live anomaly events in its range,
        and its entity tag.

        The tag names everything the body depends on: the stored history's state, whether it
        is scored, the request and the events in view. When ``if_none_match`` (an
        ``If-None-Match`` header) holds it, the body is ``None`` and nothing is downsampled: the
        page's poll of an unchanged view costs a 304.
        """
        shown = await self.view(name, version, key)
        first, last = float(shown.x[0]), float(shown.x[-1])
        events = await asyncio.to_thread(
            self._events, name, shown.key, first if lo is None else lo, last if hi is None else hi
        )
        request = (shown.key, features, lo, hi, width, sensitivity)
        tag = _tag(shown.state, isinstance(shown, ScoredSeries), request, events)
        if if_none_match is not None and tag in _tags(if_none_match):
            return None, tag
        body = await asyncio.to_thread(chart, shown, features, lo, hi, width, sensitivity)
        body["events"] = events
        return body, tag

    async def live(
        self,
        name: str,
        version: int | None,
        key: str | None,
        lo: float | None,
        hi: float | None,
        if_none_match: str | None = None,
    ) -> tuple[dict[str, Any] | None, str]:
        """What the model page polls once its chart is scored: the live anomaly events in view
        and the stored history's size and end (the page offers to show new data), and its tag.

        Reads no series and starts no scoring (a stream appending data all the time would
        otherwise have every open page rescore the whole history at each flush): the page
        asks for the chart again only when the operator says so. ``None`` for a matching
        ``If-None-Match``, as :meth:`chart`.
        """
        loaded = await self.scoring.resolve(name, version)
        summary = await asyncio.to_thread(self.history.summary, loaded.model_id)
        series = key if loaded.key_column else None
        held = _held(summary.points, summary.end)
        first = summary.start.timestamp() if summary.start is not None else 0.0
        last = summary.end.timestamp() if summary.end is not None else first
        events = await asyncio.to_thread(
            self._events, name, series, first if lo is None else lo, last if hi is None else hi
        )
        tag = _tag("live", loaded.version, series, lo, hi, held, events)
        if if_none_match is not None and tag in _tags(if_none_match):
            return None, tag
        return {"events": events, "history": held}, tag

    def _events(self, name: str, key: str | None, lo: float, hi: float) -> list[dict[str, Any]]:
        """The series' anomaly events overlapping ``[lo, hi]`` (seconds), newest first."""
        rows, _ = self.events.list_events(
            name, key, None, _utc(lo), _utc(hi + 1e-6), 0, MAX_STRETCHES
        )
        return [
            {
                "id": ev.id,
                "series": ev.series or None,
                "start": ev.start.timestamp(),
                "end": ev.end.timestamp(),
                "status": ev.status,
                "severity": ev.severity,
                "acknowledged": ev.acknowledged_at is not None,
            }
            for ev, _model in rows
        ]

    async def view(
        self, name: str, version: int | None = None, key: str | None = None
    ) -> StoredSeries:
        """What a chart can show now: the scored series, or the stored values while it scores.

        For a model with a key column, ``key`` names the series (default: the first in sorted
        order); other models ignore it. The first call for a version, a series and a state of
        the history starts scoring it in the background; later calls return the
        :class:`ScoredSeries` once it is done (or raise the error that scoring met, once).

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model, version or series.
        service.errors.ConflictError
            When the model has no active version and none is asked for, or holds no data.
        service.errors.InvalidInputError
            When the stored data lacks a feature (or the key column) of the version.
        """
        shown, task, cache_key = await self._lookup(name, version, key)
        if task is not None and task.done():
            self._scoring.pop(cache_key, None)
            task.result()  # raises what scoring met; a success was cached by _start's callback
            return self._scored.get(cache_key, shown)
        return shown

    async def scored(
        self, name: str, version: int | None = None, key: str | None = None
    ) -> ScoredSeries:
        """The scores of ``version`` (default: the active one) over the stored history.

        Waits for the background scoring when it is under way (or starts it). Raises as
        :meth:`view` does.
        """
        shown, task, cache_key = await self._lookup(name, version, key)
        if task is None:
            assert isinstance(shown, ScoredSeries)
            return shown
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._scoring.pop(cache_key, None)

    async def _lookup(
        self, name: str, version: int | None, key: str | None
    ) -> tuple[StoredSeries, asyncio.Task[ScoredSeries] | None, tuple[Any, ...]]:
        """The scored series when it is cached (and no task); else the stored values and the
        task scoring them, started now when none is under way; and the cache key."""
        loaded, cache_key = await self._resolve(name, version, key)
        hit = self._scored.get(cache_key)
        if hit is not None:
            self._scored.move_to_end(cache_key)
            return hit, None, cache_key
        stored, frame = await self._read(name, loaded, cache_key)
        task = self._scoring.get(cache_key) or self._start(cache_key, stored, loaded, frame)
        return stored, task, cache_key

    async def _resolve(
        self, name: str, version: int | None, key: str | None
    ) -> tuple[Any, tuple[Any, ...]]:
        """The loaded version and the cache key of its chart of ``key``'s series."""
        loaded = await self.scoring.resolve(name, version)
        summary = await asyncio.to_thread(self.history.summary, loaded.model_id)
        if summary.points == 0:
            raise ConflictError(
                f"model {name!r} holds no data: upload some on its Data page to see it scored"
            )
        return loaded, (
            loaded.model_id,
            loaded.version,
            key if loaded.key_column else None,
            summary.points,
            summary.end,
            summary.bytes,
        )

    async def _read(
        self, name: str, loaded: Any, cache_key: tuple[Any, ...]
    ) -> tuple[StoredSeries, pd.DataFrame]:
        hit = self._stored.get(cache_key)
        if hit is None:
            lock = self._reading.setdefault(cache_key, asyncio.Lock())
            async with lock:
                hit = self._stored.get(cache_key)
                if hit is None:
                    hit = await asyncio.to_thread(self._read_frame, name, loaded, cache_key)
                    _remember(self._stored, cache_key, hit, self.cache_size)
            self._reading.pop(cache_key, None)
        self._stored.move_to_end(cache_key)
        return hit

    def _read_frame(
        self, name: str, loaded: Any, cache_key: tuple[Any, ...]
    ) -> tuple[StoredSeries, pd.DataFrame]:
        """The stored values of the series; and the frame its version scores."""
        key: str | None = cache_key[2]
        frame = self.history.read(loaded.model_id)
        column: str | None = loaded.key_column
        keys: list[str] = []
        if column:
            if column not in frame.columns:
                raise InvalidInputError(
                    f"the stored data lacks the key column {column!r} of version {loaded.version}"
                )
            names = frame[column].astype(str)
            keys = sorted(names.unique())
            key = keys[0] if key is None else key
            if key not in keys:
                raise NotFoundError(f"model {name!r} holds no series {key!r} ({column!r})")
            frame = frame[(names == key).to_numpy()]
        held = len(frame)
        frame = frame.iloc[-self.max_points :]
        features = list(loaded.features)
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise InvalidInputError(
                f"the stored data lacks the feature(s) {missing} of version {loaded.version}"
            )
        index = pd.DatetimeIndex(frame.index)
        x = index.asi8.astype(np.float64) / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[index.unit]
        stored = StoredSeries(
            model=name,
            version=loaded.version,
            threshold=float(loaded.threshold),
            features=features,
            x=x,
            values=_feature_major(frame, features),
            stored_points=held,
            key=key if column else None,
            keys=keys[:MAX_KEYS],
            state=repr(cache_key),
            step=float(np.median(np.diff(x))) if len(x) > 1 else 0.0,
            held=_held(cache_key[3], cache_key[4]),
        )
        return stored, frame[features + ([column] if column else [])]

    def _start(
        self, key: tuple[Any, ...], stored: StoredSeries, loaded: Any, frame: pd.DataFrame
    ) -> asyncio.Task[ScoredSeries]:
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._score, stored, loaded, frame)
        )
        self._scoring[key] = task

        def finish(done: asyncio.Task[ScoredSeries]) -> None:
            if not done.cancelled() and done.exception() is None:
                _remember(self._scored, key, done.result(), self.cache_size)
                self._stored.pop(key, None)  # the scored series holds the values, not the frame
                if self._scoring.get(key) is done:
                    del self._scoring[key]

        task.add_done_callback(finish)
        return task

    @staticmethod
    def _score(stored: StoredSeries, loaded: Any, frame: pd.DataFrame) -> ScoredSeries:
        details = loaded.detector.score_details(frame, reconstruct=True)
        features = stored.features
        return ScoredSeries(
            **{f.name: getattr(stored, f.name) for f in fields(StoredSeries)},
            expected=_feature_major(details.expected, features),
            lower=_feature_major(details.lower, features),
            upper=_feature_major(details.upper, features),
            scores=details.scores.to_numpy(dtype=np.float32),
            contributions=_feature_major(details.contributions, features),
        )


def _held(points: int, end: datetime | None) -> dict[str, Any]:
    """The stored history's state as the page compares it: points held and the newest time."""
    return {"points": points, "end": None if end is None else end.timestamp()}


def _tag(*parts: Any) -> str:
    """A strong entity tag of JSON-able parts."""
    digest = hashlib.blake2b(orjson.dumps(parts), digest_size=12).hexdigest()
    return f'"{digest}"'


def _tags(header: str) -> set[str]:
    """The tags an ``If-None-Match`` header lists (weak ones compare as strong ones)."""
    return {t.strip().removeprefix("W/") for t in header.split(",")}


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def chart(
    series: StoredSeries,
    features: list[str],
    lo: float | None,
    hi: float | None,
    width: int,
    sensitivity: float,
) -> dict[str, Any]:
    """The JSON body of one chart request: downsampled columns and the flagged stretches.

    For a series still being scored (a :class:`StoredSeries`), ``scored`` is false and the
    expected band, the score and the flags are ``null``.

    Raises
    ------
    service.errors.InvalidInputError
        For a feature the version does not have.
    """
    unknown = [f for f in features if f not in series.features]
    if unknown:
        raise InvalidInputError(f"unknown feature(s) {unknown}; this version has {series.features}")
    chosen = features or series.features[:1]
    x = series.x
    lo = float(x[0]) if lo is None or not math.isfinite(lo) else lo
    hi = float(x[-1]) if hi is None or not math.isfinite(hi) else hi
    if hi < lo:
        raise InvalidInputError("the range's end is before its start")
    threshold = preview_threshold(series.threshold, sensitivity)
    done = series if isinstance(series, ScoredSeries) else None
    columns: list[np.ndarray] = []
    for name in chosen:
        j = series.features.index(name)
        columns.append(series.values[j])
        if done is not None:
            columns += [done.expected[j], done.lower[j], done.upper[j]]
    flagged = None if done is None else flags(done.scores, threshold)
    if done is not None and flagged is not None:
        columns += [done.scores, flagged.astype(np.float32)]
    # A line may not cross a stretch without data: more than GAP_STEPS stored steps and more
    # than two pixel columns between neighbouring points breaks it.
    gap = max(GAP_STEPS * series.step, 2 * (hi - lo) / width)
    down = break_gaps(minmax(x, columns, lo, hi, width), gap)
    i0 = int(np.searchsorted(x, lo, side="left"))
    i1 = int(np.searchsorted(x, hi, side="right"))
    parts = ("value", "expected", "lower", "upper") if done is not None else ("value",)
    per_feature: dict[str, dict[str, np.ndarray | None]] = {
        name: {"value": None, "expected": None, "lower": None, "upper": None}
        | {key: down.ys[len(parts) * k + m] for m, key in enumerate(parts)}
        for k, name in enumerate(chosen)
    }
    found: list[dict[str, Any]] = []
    n_stretches = n_flagged = None
    score = flag = None
    if done is not None and flagged is not None:
        found, n_stretches = _stretches(done, flagged, i0, i1, threshold)
        n_flagged = int(flagged[i0:i1].sum())
        score, flag = down.ys[-2], down.ys[-1]
    return {
        "model": series.model,
        "version": series.version,
        "key": series.key,
        "keys": series.keys,
        "scored": done is not None,
        "features": series.features,
        "chosen": chosen,
        "threshold": series.threshold,
        "preview_threshold": threshold,
        "sensitivity": sensitivity,
        "x": down.x,
        "series": per_feature,
        "score": score,
        "flag": flag,
        "raw": down.raw,
        "n_points": down.n_points,
        "scored_points": len(x),
        "stored_points": series.stored_points,
        "range": [float(x[0]), float(x[-1])],
        "history": series.held,
        "n_flagged": n_flagged,
        "n_stretches": n_stretches,
        "stretches": found,
    }


def _stretches(
    series: ScoredSeries, flagged: np.ndarray, i0: int, i1: int, threshold: float
) -> tuple[list[dict[str, Any]], int]:
    """Flagged runs in ``[i0, i1)``: the strongest ``MAX_STRETCHES`` and the total count."""
    found = runs(flagged[i0:i1]) + i0  # (R, 2)
    if len(found) == 0:
        return [], 0
    bounds = np.stack([found[:, 0], found[:, 1] + 1], axis=1).ravel()
    # A sentinel after the last point keeps every run's end index inside the array.
    scores = np.append(np.where(np.isnan(series.scores), -np.inf, series.scores), -np.inf)
    peaks = np.maximum.reduceat(scores, bounds)[0::2]
    order = np.argsort(-peaks, kind="stable")[:MAX_STRETCHES]
    out: list[dict[str, Any]] = []
    for r in order:
        first, last = int(found[r, 0]), int(found[r, 1])
        part = series.contributions[:, first : last + 1].astype(np.float64)  # (F, n)
        share = np.nan_to_num(part).mean(axis=1)
        top = np.argsort(-share, kind="stable")[:3]
        out.append(
            {
                "start": float(series.x[first]),
                "end": float(series.x[last]),
                "n_points": last - first + 1,
                "peak": float(peaks[r] / threshold) if threshold > 0 else None,
                "top_features": [[series.features[j], float(share[j])] for j in top],
            }
        )
    out.sort(key=lambda item: item["start"])
    return out, len(found)


def explain_point(series: ScoredSeries, at: float) -> dict[str, Any]:
    """The point nearest ``at`` (seconds): its score and every feature's contribution."""
    x = series.x
    i = int(np.clip(np.searchsorted(x, at), 0, len(x) - 1))
    if i > 0 and abs(x[i - 1] - at) <= abs(x[i] - at):
        i -= 1
    contributions = series.contributions[:, i].astype(np.float64)
    order = np.argsort(-np.nan_to_num(contributions, nan=-np.inf), kind="stable")
    score = float(series.scores[i])
    return {
        "t": float(x[i]),
        "score": None if math.isnan(score) else score,
        "threshold": series.threshold,
        "values": {name: _finite(series.values[j, i]) for j, name in enumerate(series.features)},
        "expected": {
            name: _finite(series.expected[j, i]) for j, name in enumerate(series.features)
        },
        "contributions": [[series.features[j], _finite(contributions[j])] for j in order],
    }


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
