"""The console's view of a model on its stored history: scores, expected band, flagged stretches.

:class:`SeriesService` scores a model version on the model's stored history once (through the
scoring service's cache of loaded versions) and keeps the result for zooming: every later chart
request is a slice and a per-pixel downsample of arrays in memory. The cache is keyed by the
version and the history's size and end, so new data or a new version scores again.

The sensitivity slider previews, without retraining, how flags change when the version's
threshold is scaled: :func:`preview_threshold` applies the library's sensitivity rule
(:class:`detector.MonitorOptions`: every 25 points above 50 halve a static threshold, every 25
below double it, so 0 is 4x and 100 a quarter of the calibrated threshold), and flags come from
the one flag rule, :func:`detector.decision.flags`.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from detector import MonitorOptions
from detector.decision import flags
from service.errors import ConflictError, InvalidInputError
from service.registry import ModelRegistry
from service.scoring import ScoringService
from service.storage import HistoryStore
from service.ui.downsample import minmax, runs

__all__ = ["ScoredSeries", "SeriesService", "preview_threshold"]

#: Most flagged stretches one chart response lists (the strongest first); the count is exact.
MAX_STRETCHES = 200


def preview_threshold(threshold: float, sensitivity: float) -> float:
    """The threshold a sensitivity (0-100, 50 = as calibrated) previews."""
    return float(threshold * MonitorOptions(sensitivity=sensitivity).scale)


@dataclass
class ScoredSeries:
    """One version's scores over the stored history.

    float32 halves the memory held; per-feature arrays are feature-major (one contiguous row per
    feature), which makes the per-pixel reductions of a million points about 50x faster.
    """

    model: str
    version: int
    threshold: float
    features: list[str]
    x: np.ndarray  # (T,) float64 seconds since the epoch
    values: np.ndarray  # (F, T)
    expected: np.ndarray  # (F, T)
    lower: np.ndarray  # (F, T)
    upper: np.ndarray  # (F, T)
    scores: np.ndarray  # (T,)
    contributions: np.ndarray  # (F, T)
    stored_points: int  # points in the history (more than T when it was cut to the latest)


class SeriesService:
    """Scores stored history for the console's charts, with a small LRU of results.

    Parameters
    ----------
    registry, history, scoring
        The app's services.
    cache_size
        Scored series kept (``ui_series_cache``).
    max_points
        Latest stored points scored at most (``ui_max_points``).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        history: HistoryStore,
        scoring: ScoringService,
        cache_size: int,
        max_points: int,
    ) -> None:
        self.registry = registry
        self.history = history
        self.scoring = scoring
        self.cache_size = cache_size
        self.max_points = max_points
        self._cache: OrderedDict[tuple[Any, ...], ScoredSeries] = OrderedDict()
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def scored(self, name: str, version: int | None = None) -> ScoredSeries:
        """The scores of ``version`` (default: the active one) over the stored history.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        service.errors.ConflictError
            When the model has no active version and none is asked for, or holds no data.
        """
        loaded = await self.scoring.resolve(name, version)
        summary = await asyncio.to_thread(self.history.summary, loaded.model_id)
        if summary.points == 0:
            raise ConflictError(
                f"model {name!r} holds no data: upload some on its Data page to see it scored"
            )
        key = (loaded.model_id, loaded.version, summary.points, summary.end, summary.bytes)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit is None:
                hit = await asyncio.to_thread(
                    self._score, name, loaded, summary.start, summary.points
                )
                self._cache[key] = hit
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        self._locks.pop(key, None)
        return hit

    def _score(self, name: str, loaded: Any, start: datetime | None, points: int) -> ScoredSeries:
        frame = self.history.read(loaded.model_id, start, None)
        if loaded.key_column and loaded.key_column in frame.columns:
            raise ConflictError(
                f"model {name!r} holds several series (key column {loaded.key_column!r}); "
                "the console charts single-series models only"
            )
        frame = frame.iloc[-self.max_points :]
        features = loaded.features
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise InvalidInputError(
                f"the stored data lacks the feature(s) {missing} of version {loaded.version}"
            )
        details = loaded.detector.score_details(frame[features], reconstruct=True)
        index = pd.DatetimeIndex(frame.index)
        x = index.asi8.astype(np.float64) / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[index.unit]

        def f32(table: pd.DataFrame | None) -> np.ndarray:
            assert table is not None
            rows: np.ndarray = np.ascontiguousarray(table[features].to_numpy(dtype=np.float32).T)
            return rows  # (F, T)

        return ScoredSeries(
            model=name,
            version=loaded.version,
            threshold=float(loaded.threshold),
            features=list(features),
            x=x,
            values=f32(frame),
            expected=f32(details.expected),
            lower=f32(details.lower),
            upper=f32(details.upper),
            scores=details.scores.to_numpy(dtype=np.float32),
            contributions=f32(details.contributions),
            stored_points=points,
        )


def chart(
    series: ScoredSeries,
    features: list[str],
    lo: float | None,
    hi: float | None,
    width: int,
    sensitivity: float,
) -> dict[str, Any]:
    """The JSON body of one chart request: downsampled columns and the flagged stretches.

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
    flagged = flags(series.scores, threshold)
    columns: list[np.ndarray] = []
    for name in chosen:
        j = series.features.index(name)
        columns += [series.values[j], series.expected[j], series.lower[j], series.upper[j]]
    columns += [series.scores, flagged.astype(np.float32)]
    down = minmax(x, columns, lo, hi, width)
    i0 = int(np.searchsorted(x, lo, side="left"))
    i1 = int(np.searchsorted(x, hi, side="right"))
    stretches = _stretches(series, flagged, i0, i1, threshold)
    per_feature = {
        name: {
            key: down.ys[4 * k + m] for m, key in enumerate(("value", "expected", "lower", "upper"))
        }
        for k, name in enumerate(chosen)
    }
    return {
        "model": series.model,
        "version": series.version,
        "features": series.features,
        "chosen": chosen,
        "threshold": series.threshold,
        "preview_threshold": threshold,
        "sensitivity": sensitivity,
        "x": down.x,
        "series": per_feature,
        "score": down.ys[-2],
        "flag": down.ys[-1],
        "raw": down.raw,
        "n_points": down.n_points,
        "scored_points": len(x),
        "stored_points": series.stored_points,
        "range": [float(x[0]), float(x[-1])],
        "n_flagged": int(flagged[i0:i1].sum()),
        "n_stretches": stretches[1],
        "stretches": stretches[0],
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
