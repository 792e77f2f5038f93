"""The univariate method behind the Azure-compatible ``timeseries/*/detect`` calls.

Each request is answered by a model fitted on the request's own series, in one pass and on
one CPU core, without a training loop (see the README for its speed on 8,640 points):

- **Expected values** come from a robust seasonal fit: the median at each phase of the period
  of the series minus its running mean over one period, plus a running median trend (one
  period long) of the deseasonalised series; without a period, a running median of 11 points
  (the period is the request's, else the dominant period of the series by
  :func:`detector.windows.dominant_period`, 0 when there is none).
- **The score** of a point is the discord distance of the 128-point windows that contain it:
  each window's Euclidean distance to its nearest non-overlapping window of the same series
  (on a 16-value piecewise average of the window), or further where that neighbour is as
  isolated as the window itself (an anomaly that occurs twice; :func:`discord_distances`),
  the point taking the mean over its windows, as :mod:`detector.windows` combines window
  errors. It catches shapes that occur once or twice (a changed waveform, a flat stretch at
  a new level).
- **The decision** is hysteresis on each of two scores, as in edge detection: an *event* is a
  run of points where the score stays above its continuation bar (the smooth shape score: its
  median; the point-wise residual: a third of its high bar) and that crosses the score's high
  bar somewhere; every point of an event is flagged, so an anomaly is flagged
  over its whole stretch while a series that never crosses a bar stays clean. The shape
  score's bar is in robust standard deviations of the window distances (median and MAD over
  all windows; the Gaussian quantile of :func:`risk_of`'s tail, 3.09 at the default
  sensitivity). The residual from the expected value (over its median absolute deviation) has
  the Peaks-Over-Threshold threshold (:func:`detector.thresholds.pot_threshold`) at four times
  that tail (4e-3 at the default, the previous default's residual risk; a smaller one puts the
  extrapolated bar above 18-sigma spikes of short series), so single spikes that a long window
  dilutes are caught too. A shape event reaches up to one window (128 points) beyond the
  anomaly itself: every window that holds the anomaly is unusual. At most ``maxAnomalyRatio``
  of the points are flagged (those with the highest normalised score).
- **Margins** are the distance from the expected value at which the residual score alone would
  cross its bar, so ``expected +/- margin`` is the band of ordinary values; a point inside it
  can still be flagged by its shape or as part of an event.
- **Severity** is ``u / (u + 1)`` on flagged points and 0 on the others, as the API defines it,
  for the normalised score ``u`` (the larger of each score over its bar, 0 at least): in
  ``[0.5, 1)`` where a point crosses a bar, lower on the rest of its event, growing with the
  score. ``score`` of :class:`UnivariateResult` is ``u`` on every point.
- **Last-point detection** fits the bars on an even sample of 512 windows and scores the
  trailing windows exactly, as far back as the last point's event reaches.
- **Change points** are where the median of the next ``stableTrendWindow`` points (default:
  one period of the differenced series) differs from that of the previous ones; the shift is
  measured against the spread of such shifts over the series, and the confidence is the
  chance that no block of noise and drift alone reaches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from detector.thresholds import pot_threshold
from detector.windows import coverage_counts, dominant_period, overlap_reduce

__all__ = [
    "DEFAULT_MAX_ANOMALY_RATIO",
    "DEFAULT_SENSITIVITY",
    "ChangePoints",
    "UnivariateResult",
    "detect_change_points",
    "detect_series",
    "seasonal_expected",
]

FloatArray = npt.NDArray[np.float64]

_MIN_WINDOW = 8
_WINDOW = 128
_PAA_DIMS = 16
_CHUNK = 2048
_MAD_SCALE = 1.4826
_LAST_SAMPLE = 512
_TAIL_LEVEL = 0.9
_TOP_SENSITIVITY = 99  # the top of Azure's scale
DEFAULT_SENSITIVITY = 99  # Azure's default (see the README, "Migrating from Azure ...")
DEFAULT_MAX_ANOMALY_RATIO = 0.25  # Azure's default maxAnomalyRatio
_RISK_AT_ZERO = -6.0  # log10 of the high bar's tail probability at sensitivity 0
_RISK_AT_TOP = -3.0  # ... and at 99
_RESIDUAL_RISK = 4.0  # the residual's POT risk over the shape bar's tail
_RESIDUAL_RATIO = 3.0  # the residual's high bar over its continuation bar
_CONTINUATION = 0.0  # robust standard deviations: a shape event ends at the median
_SHAPE_SPREAD_FLOOR = 0.02  # per point, in units of the series' robust scale


@dataclass
class UnivariateResult:
    """Per-point results of one series (arrays of the series' length)."""

    period: int
    expected: FloatArray
    upper_margins: FloatArray
    lower_margins: FloatArray
    is_anomaly: npt.NDArray[np.bool_]
    is_positive: npt.NDArray[np.bool_]
    is_negative: npt.NDArray[np.bool_]
    severity: FloatArray
    score: FloatArray
    window: int


@dataclass
class ChangePoints:
    """Change points of one series."""

    period: int
    is_change_point: npt.NDArray[np.bool_]
    confidence: FloatArray


def _running_median(x: FloatArray, length: int, whole: bool = False) -> FloatArray:
    """Centred running median of ``length`` points; at the ends, over the points there are,
    or with ``whole`` the median of the first or last full window (a window of one period
    holds every phase once, a shorter one would follow the seasonal cycle)."""
    length = max(1, int(length))
    s = pd.Series(x)
    out = s.rolling(length, center=True, min_periods=length if whole else 1).median()
    if whole:
        out = out.bfill().ffill()
    return out.to_numpy(dtype=np.float64)


def _robust_scale(x: FloatArray) -> float:
    """Median absolute deviation (times 1.4826), never zero: a flat series gets a tiny scale
    relative to its level so that any change stands out."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return 1.0
    mad = float(np.median(np.abs(finite - np.median(finite)))) * _MAD_SCALE
    if mad > 0:
        return mad
    std = float(np.std(finite))
    if std > 0:
        return std
    return max(1e-6, 1e-6 * float(np.max(np.abs(finite))))


def find_period(values: FloatArray, period: int | None) -> int:
    """The request's period, else the series' dominant period (0 for none)."""
    if period is not None:
        return int(period)
    found = dominant_period(values[:, None], max_lag=min(1024, len(values) // 3))
    return 0 if found is None else int(found)


def seasonal_expected(values: FloatArray, period: int) -> FloatArray:
    """Expected values: a per-phase median seasonal profile plus a running median trend.

    The profile is the median, at each phase, of the series minus its running mean over one
    period (which cancels the cycle exactly); the trend is the running median over one period
    of the series minus the profile. A running median of the raw series would sit where a
    strong cycle crosses its level, where few values lie, and jump with the noise.

    Parameters
    ----------
    values : ndarray, shape (T,), finite
    period : int
        0 (or 1) for no seasonality.

    Returns
    -------
    ndarray, shape (T,)
    """
    n = len(values)
    if period >= 2 and n >= 2 * period:
        level = pd.Series(values).rolling(period, center=True).mean().bfill().ffill()
        phase = np.arange(n) % period
        profile = (
            (pd.Series(values - level.to_numpy()).groupby(phase).median().reindex(range(period)))
            .fillna(0.0)
            .to_numpy()
        )
        trend = _running_median(values - profile[phase], period | 1, whole=True)
        return np.asarray(trend + profile[phase], dtype=np.float64)
    return _running_median(values, 11)


def discord_window(n: int) -> int:
    """Window of the discord score: 128 points (long windows carry the most context; on the
    benchmark's NAB series 128 beat 32 and 64 and tied 256), at most an eighth of the series
    and at least 8 points."""
    return int(max(_MIN_WINDOW, min(_WINDOW, n // 8)))


def _paa(windows: torch.Tensor) -> torch.Tensor:
    """Piecewise aggregate approximation of windows (B, W) to at most 16 values each: the
    distances keep the shape and cost W/16 times less."""
    w = windows.shape[1]
    dims = min(_PAA_DIMS, w)
    edges = torch.linspace(0, w, dims + 1).round().long()
    cols = [windows[:, edges[i] : edges[i + 1]].mean(dim=1) for i in range(dims)]
    scale = torch.sqrt((edges[1:] - edges[:-1]).double()).to(windows.dtype)
    return torch.stack(cols, dim=1) * scale  # (B, dims): same distances for piecewise-flat data


def _nearest_two(
    reference: torch.Tensor, starts: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the windows at ``starts``: the distance to the nearest window that does not overlap
    it, that window's start, and the distance to the second nearest (overlapping neither;
    the nearest one's distance where a short series has no such window)."""
    n_windows = reference.shape[0]
    band = torch.arange(-window + 1, window)  # offsets of the windows that overlap
    nearest = torch.empty(len(starts), dtype=reference.dtype)
    second = torch.empty(len(starts), dtype=reference.dtype)
    at = torch.empty(len(starts), dtype=torch.long)
    for lo in range(0, len(starts), _CHUNK):
        idx = starts[lo : lo + _CHUNK]
        dist = torch.cdist(reference[idx], reference)  # (C, N)
        dist.scatter_(1, (idx[:, None] + band[None, :]).clamp_(0, n_windows - 1), math.inf)
        first, where = dist.min(dim=1)
        dist.scatter_(1, (where[:, None] + band[None, :]).clamp_(0, n_windows - 1), math.inf)
        other = dist.min(dim=1).values
        nearest[lo : lo + len(idx)] = first
        second[lo : lo + len(idx)] = torch.where(torch.isfinite(other), other, first)
        at[lo : lo + len(idx)] = where
    return nearest, at, second


def discord_distances(
    scaled: FloatArray, window: int, queries: npt.NDArray[np.int64] | None = None
) -> FloatArray:
    """Discord distance of each window: how far it is from the rest of the series.

    That is the distance to its nearest window that does not overlap it, except where that
    neighbour is as isolated as the window: an anomaly that occurs twice (the same incident
    again) is the nearest neighbour of its twin, so its nearest distance is as small as that
    of a normal window ("twin freaks"). So the distance is the larger of the nearest one and
    the smaller of two second-nearest ones, the window's own and its nearest neighbour's
    (each skipping the nearest window and those overlapping it). A twin and its twin are
    both far from everything else, so both second distances are large. A normal window's
    nearest neighbour has near neighbours of its own, which keeps a window at the end of a
    trending series, whose levels never recur, at its nearest distance: the window's own
    second distance alone flagged 16-25% of such series without anomalies
    (``benchmarks/azure_neighbour_variants.py``).

    Parameters
    ----------
    scaled : ndarray, shape (T,)
        The standardised series.
    window : int
    queries : ndarray of int, optional
        Start positions to compute (default: every window).

    Returns
    -------
    ndarray, shape (len(queries),) or (T - window + 1,)
    """
    x = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))
    reference = _paa(x.unfold(0, window, 1))  # (N, D)
    starts = torch.arange(reference.shape[0]) if queries is None else torch.from_numpy(queries)
    nearest, at, second = _nearest_two(reference, starts, window)
    # the nearest neighbours' own second distances (computed for them where only some are)
    neighbours = second[at] if queries is None else _nearest_two(reference, at, window)[2]
    best = torch.maximum(nearest, torch.minimum(second, neighbours))
    return torch.where(torch.isfinite(best), best, 0.0).numpy().astype(np.float64)


def _to_points(window_scores: FloatArray, n: int, window: int) -> FloatArray:
    """Spread window scores over their points: the mean over the windows that contain each."""
    acc = torch.zeros(n, 1, dtype=torch.float64)
    cells = torch.from_numpy(window_scores).double()[:, None, None].expand(-1, window, 1)
    overlap_reduce(cells, 0, acc, "mean")
    return np.asarray(acc[:, 0].numpy() / coverage_counts(n, window), dtype=np.float64)


def risk_of(sensitivity: int) -> float:
    """Tail probability of the high bar for an Azure ``sensitivity`` (0-99): log-linear from
    1e-6 at 0 to 1e-3 at 99 (the default, Azure's), so higher sensitivity flags more points and
    narrows the margins. The shape score's bar is the Gaussian quantile of this tail (3.09
    robust standard deviations at 99, 4.75 at 0); the residual's is the Peaks-Over-Threshold
    threshold at :data:`_RESIDUAL_RISK` times this risk."""
    share = min(max(sensitivity, 0), _TOP_SENSITIVITY) / _TOP_SENSITIVITY
    return float(10 ** (_RISK_AT_ZERO + share * (_RISK_AT_TOP - _RISK_AT_ZERO)))


def _threshold(scores: FloatArray, risk: float) -> float:
    """POT threshold at ``risk`` (the largest score when there are too few)."""
    finite = scores[np.isfinite(scores)]
    if finite.size < 16:
        return max(float(np.max(finite)) if finite.size else 1.0, 1e-9)
    if risk >= 1 - _TAIL_LEVEL:  # beyond the tail POT models: the empirical quantile
        z = float(np.quantile(finite, 1 - risk))
    else:
        z, _ = pot_threshold(finite, risk, _TAIL_LEVEL)
    return max(z, 1e-9)


@dataclass
class _Shape:
    """The discord score of a series' points (see :func:`_scores`)."""

    score: FloatArray  # mean over the windows through each point (NaN where not computed)
    stats: tuple[float, float]  # median and robust spread of the window distances
    scaled: FloatArray | None  # the standardised series (None when too short for windows)


def _scores(
    values: FloatArray, period: int, last_only: bool
) -> tuple[FloatArray, FloatArray, float, _Shape, int]:
    n = len(values)
    expected = seasonal_expected(values, period)
    residual = values - expected
    res_scale = _robust_scale(residual)
    window = discord_window(n)
    scaled = (values - np.median(values)) / _robust_scale(values)
    n_windows = n - window + 1
    if n_windows < 2 * window + 1:  # too short for non-overlapping neighbours
        score = np.abs(residual) / res_scale
        return (
            expected,
            residual,
            res_scale,
            _Shape(score, _centre_spread(score, window), None),
            window,
        )
    if last_only:
        # The bars need the spread of the window distances: an even sample of windows gives
        # it (each standing for its points); detect_series adds the exact scores of the last
        # points (:func:`_trailing_shape`).
        count = min(n_windows, _LAST_SAMPLE)
        sample = np.unique(np.linspace(0, n_windows - 1, count).round().astype(np.int64))
        dist = discord_distances(scaled, window, sample)
        score = np.full(n, np.nan)
        score[sample] = dist
        shape = _Shape(score, _centre_spread(dist, window), scaled)
    else:
        dist = discord_distances(scaled, window)
        shape = _Shape(_to_points(dist, n, window), _centre_spread(dist, window), scaled)
    return expected, residual, res_scale, shape, window


def _centre_spread(distances: FloatArray, window: int) -> tuple[float, float]:
    """Median and robust spread of the finite window distances. The spread is never below
    that of windows differing by 2% of the series' scale at each point
    (:data:`_SHAPE_SPREAD_FLOOR` times the square root of the window), so the near-exact
    repeats of a noiseless series do not make a tiny difference look like a discord."""
    finite = distances[np.isfinite(distances)]
    floor = _SHAPE_SPREAD_FLOOR * math.sqrt(window)
    if finite.size == 0:
        return 0.0, floor
    centre = float(np.median(finite))
    spread = float(np.median(np.abs(finite - centre))) * _MAD_SCALE
    return centre, max(spread, floor)


def _events(high: npt.NDArray[np.bool_], above: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Hysteresis: the points of every run of ``above`` that holds a ``high`` point."""
    inside = high | above
    edges = np.flatnonzero(np.diff(np.concatenate(([0], inside.astype(np.int8), [0]))))
    count = np.concatenate(([0], np.cumsum(high)))
    out = np.zeros(len(inside), dtype=bool)
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if count[end] > count[start]:
            out[start:end] = True
    return out


def _flags(
    shape_z: FloatArray, res_score: FloatArray, shape_bar: float, res_bar: float
) -> npt.NDArray[np.bool_]:
    """Hysteresis on each score: an event is a run of points above the score's continuation
    bar that crosses its high bar somewhere. The shape's bars: :data:`_CONTINUATION` (the
    median: the smooth window score's excursion) and ``shape_bar`` robust standard
    deviations; the residual's: a third of ``res_bar`` (the point-wise residual crosses its
    median every other point; 3:1 is the top of the ratio used in edge detection) and
    ``res_bar``."""
    shape = np.nan_to_num(shape_z, nan=-np.inf)
    by_shape = _events(shape > shape_bar, shape > _CONTINUATION)
    by_level = _events(res_score > res_bar, res_score > res_bar / _RESIDUAL_RATIO)
    return by_shape | by_level


def _trailing_shape(scaled: FloatArray, window: int, stats: tuple[float, float]) -> FloatArray:
    """Exact shape z-scores of the series' last points, enough of them to hold the whole run
    above the continuation bar that the last point belongs to (the last-point path samples
    the rest)."""
    n = len(scaled)
    n_windows = n - window + 1
    length = 4 * window
    while True:
        first = max(0, n_windows - length)
        dist = discord_distances(scaled, window, np.arange(first, n_windows, dtype=np.int64))
        keep = slice(window - 1 if first > 0 else 0, None)  # points whose windows are all here
        z = (_to_points(dist, n - first, window)[keep] - stats[0]) / stats[1]
        if first == 0 or (z <= _CONTINUATION).any():
            return np.asarray(z, dtype=np.float64)
        length *= 2


def detect_series(
    values: npt.ArrayLike,
    period: int | None = None,
    sensitivity: int = DEFAULT_SENSITIVITY,
    max_anomaly_ratio: float = DEFAULT_MAX_ANOMALY_RATIO,
    last_only: bool = False,
) -> UnivariateResult:
    """Fit the method on ``values`` and return every point's result.

    Parameters
    ----------
    values : array_like of shape (T,)
        Finite values in time order (missing values already imputed).
    period : int, optional
        The series' period; None finds it.
    sensitivity : int
        0-99; higher flags more points (99, Azure's default).
    max_anomaly_ratio : float
        Most points flagged, as a share of the series, in (0, 0.5] (Azure's default 0.25).
    last_only : bool
        Only the last point's result is needed (fast path of last-point detection): the bars
        come from a sample of windows, the last point's run from the trailing windows.

    Returns
    -------
    UnivariateResult
    """
    x = np.asarray(values, dtype=np.float64)
    p = find_period(x, period)
    expected, residual, res_scale, shape, window = _scores(x, p, last_only)
    risk = risk_of(sensitivity)
    shape_bar = float(NormalDist().inv_cdf(1.0 - risk))
    res_score = np.abs(residual) / res_scale
    res_bar = _threshold(res_score, min(_RESIDUAL_RISK * risk, 1 - _TAIL_LEVEL))
    centre, spread = shape.stats
    shape_z = (shape.score - centre) / spread
    known = np.flatnonzero(np.isfinite(shape_z))  # every point, or an even sample of them
    if last_only and shape.scaled is not None:
        tail = _trailing_shape(shape.scaled, window, shape.stats)
        shape_z[len(x) - len(tail) :] = tail
    normalized = np.fmax(np.nan_to_num(shape_z / shape_bar, nan=0.0), res_score / res_bar)
    normalized = np.maximum(normalized, 0.0)
    flagged = _flags(shape_z, res_score, shape_bar, res_bar)
    # maxAnomalyRatio: when more of the points are flagged, only those above the (limit + 1)-th
    # largest normalised score stay flagged. The last-point path counts and ranks an even
    # sample of the points, taken as one series.
    counted = flagged
    if len(known) < len(x):
        counted = _flags(shape_z[known], res_score[known], shape_bar, res_bar)
    limit = int(max_anomaly_ratio * len(known))
    if counted.sum() > limit:
        ranked = np.sort(normalized[known])
        flagged &= normalized > ranked[len(ranked) - limit - 1]
    severity = np.where(flagged, normalized / (normalized + 1.0), 0.0)
    margin = np.full(len(x), res_bar * res_scale)
    return UnivariateResult(
        period=p,
        expected=expected,
        upper_margins=margin,
        lower_margins=margin.copy(),
        is_anomaly=flagged,
        is_positive=flagged & (residual >= 0),
        is_negative=flagged & (residual < 0),
        severity=severity,
        score=normalized,
        window=window,
    )


def detect_change_points(
    values: npt.ArrayLike,
    period: int | None = None,
    stable_trend_window: int | None = None,
    threshold: float = 0.99,
) -> ChangePoints:
    """Points where the level of the series shifts and stays.

    Parameters
    ----------
    values : array_like of shape (T,)
    period : int, optional
    stable_trend_window : int, optional
        Points on each side compared (default: one period clipped to [5, 50], 10 without one).
    threshold : float
        In (0, 1): the confidence a change point needs; higher finds fewer.

    Returns
    -------
    ChangePoints
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    # The period of the differences: a level shift does not move it (the series' own would).
    p = find_period(np.diff(x), period) if n > 3 else 0
    # Medians over whole periods cancel the seasonal cycle, so k is one period when there is
    # one (10 points otherwise), and at most a tenth of the series.
    k = stable_trend_window or (p if p >= 5 else 10)
    k = max(2, min(k, max(2, n // 10)))
    s = pd.Series(x)
    before = s.rolling(k, min_periods=k).median().shift(1).to_numpy()  # x[i-k : i]
    after = s[::-1].rolling(k, min_periods=k).median()[::-1].to_numpy()  # x[i : i+k]
    shift = after - before
    valid = np.isfinite(shift)
    # z: the shift over the spread of shifts across the series (noise and slow drift; change
    # points are its outliers); confidence: the chance that no block of pure noise and drift
    # reaches that z, over the n / k independent blocks.
    spread = _robust_scale(shift[valid]) if valid.any() else 1.0
    z = np.where(valid, np.abs(np.nan_to_num(shift)) / spread, 0.0)
    tail = np.array([math.erfc(v / math.sqrt(2.0)) for v in z])
    confidence = np.clip(1.0 - tail * max(1.0, n / k), 0.0, 1.0)
    peak = np.zeros(n, dtype=bool)
    for i in np.argsort(-z, kind="stable"):
        if confidence[i] < threshold:
            break
        lo, hi = max(0, i - k), min(n, i + k + 1)
        if not peak[lo:hi].any():
            peak[i] = True
    return ChangePoints(period=p, is_change_point=peak, confidence=confidence)
