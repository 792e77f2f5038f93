"""Evaluation metrics for point-wise anomaly scores against 0/1 labels.

Conventions
-----------
- ``labels`` are 0 (normal) / 1 (anomalous) per point; ``scores`` are real numbers, higher means
  more anomalous; ``flags`` are booleans (or 0/1) per point.
- A point is flagged iff ``score > threshold`` (strictly), everywhere in this project.
- Threshold-free metrics (``auc_pr``, ``auc_roc``, ``vus_pr``, ``vus_roc``) and :func:`best_f1`
  return ``nan`` when the labels hold no positive or no negative point: the metric is undefined
  then, and a ``nan`` keeps aggregated tables honest instead of raising.

Volume Under the Surface (VUS)
------------------------------
``vus_pr`` and ``vus_roc`` follow Paparrizos et al., "Volume Under the Surface: A New Accuracy
Evaluation Measure for Time-Series Anomaly Detection", PVLDB 15(11), 2022, exactly as computed by
the TSB-AD benchmark (repository TheDatumOrg/TSB-AD, ``TSB_AD/evaluation/basic_metrics.py``:
``generate_curve`` -> ``RangeAUC_volume_opt`` with ``thre=250``; its
``TSB_AD/evaluation/metrics.py`` passes ``slidingWindow`` straight through as the maximum buffer
length). With ``n`` points, ``P`` anomalous points and ``W = sliding_window``:

1. Buffers. For every buffer length ``l = 0, 1, ..., W`` let ``h = l // 2``. Each anomalous
   segment ``[s, e]`` (maximal run of 1s) is widened by a soft margin: a normal point at distance
   ``d = 1..h`` before ``s`` or after ``e`` gets ``sqrt(1 - d / l)``; contributions of several
   segments add up and the result is capped at 1 (anomalous points stay 1). Call this ``y_l``.
   The widened segments ``[s - h, e + h]`` (clipped to the series), merged where they touch or
   overlap, are the *extended ranges* ``R_l``.
2. Thresholds. The scores sorted in decreasing order are sampled at the 250 positions
   ``floor(linspace(0, n - 1, 250))``; at each sampled value ``t`` the prediction is
   ``score >= t`` (the benchmark's convention for sweeping curves; our own flags use ``>``).
3. For one ``(l, t)``: ``TP_core`` = predicted anomalous points, ``B`` = sum of ``y_l`` over the
   predicted normal points, ``TP = TP_core + B``, ``P_l = P + B / 2``,
   ``recall = min(TP / P_l, 1)``, ``existence`` = fraction of extended ranges holding at least
   one predicted point, ``TPR = recall * existence``, ``FPR = (N_pred - TP) / (n - P_l)``,
   ``precision = TP / N_pred``.
4. Per buffer length: the ROC curve runs through ``(0, 0)``, the 250 ``(FPR, TPR)`` points and
   ``(1, 1)`` and is integrated with the trapezoidal rule; the range average precision is
   ``sum_k (TPR_k - TPR_{k-1}) * precision_k`` with ``TPR_0 = 0``.
5. ``vus_roc`` and ``vus_pr`` are the means of those areas over ``l = 0..W``.

``l = 0`` is the plain point-wise curve on the sampled thresholds. Earlier evaluation scripts
(the robustness analysis of the VUS repository, an early TSB-AD release) pass twice the period as
the maximum buffer length: call ``vus_pr(labels, scores, 2 * period)`` to reproduce those. The
original VUS release (TheDatumOrg/VUS, also vendored in TSB-UAD) differs in two details: ``P_l``
is ``(P + sum(y_l)) / 2`` whatever the prediction, and the range average precision uses the
trapezoidal rule; this module implements the TSB-AD variant only.

The implementation here is vectorised: every point's first predicted threshold index is found
once by binary search, the buffer weights of the normal points near a segment are accumulated by
threshold index with ``bincount`` (one pass per buffer length), and the existence counts come
from the minimum first-detection index of each extended range. It costs about
``O(n log n + W * m + W * S)`` for ``m`` normal points within ``W // 2`` of an anomaly and ``S``
segments.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError, LabelsError, NonFiniteError

__all__ = [
    "VUS_THRESHOLDS",
    "auc_pr",
    "auc_roc",
    "best_f1",
    "evaluate",
    "event_metrics",
    "legacy_point_adjusted_f1",
    "pointwise_prf",
    "score_vector",
    "vus_pr",
    "vus_roc",
]

VUS_THRESHOLDS: int = 250
"""Number of thresholds sampled from the sorted scores by :func:`vus_pr` / :func:`vus_roc`."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _as_labels(labels: npt.ArrayLike, n: int | None = None) -> BoolArray:
    """Validate 0/1 labels of shape ``(n,)`` and return them as booleans.

    Raises
    ------
    LabelsError
        If the labels are not one-dimensional, not all 0/1, or not of length ``n``.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise LabelsError(f"labels must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise LabelsError(
            f"labels have {arr.shape[0]} points but the scores have {n}: "
            "pass one label per scored point"
        )
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "biuf":
        raise LabelsError(f"labels must be numeric 0/1 values, got dtype {arr.dtype}")
    is_one = arr == 1
    if not np.all(is_one | (arr == 0)):
        raise LabelsError("labels must contain only 0 (normal) and 1 (anomalous)")
    return np.asarray(is_one, dtype=np.bool_)


def score_vector(scores: npt.ArrayLike) -> FloatArray:
    """Scores as a float64 array of shape ``(n,)``.

    Raises
    ------
    InputError
        If the scores are not numeric or not one-dimensional.
    """
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"scores must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise InputError(f"scores must be one-dimensional, got shape {arr.shape}")
    return arr


def _as_scores(scores: npt.ArrayLike) -> FloatArray:
    """Validate scores of shape ``(n,)``; NaN is replaced by the minimum finite score.

    A NaN score (for example a point no window could score) is treated as the least anomalous
    value present; an all-NaN input becomes all zeros.

    Raises
    ------
    InputError
        If the scores are empty, not numeric or not one-dimensional.
    NonFiniteError
        If a score is ``+inf`` or ``-inf``.
    """
    arr = score_vector(scores)
    if arr.shape[0] == 0:
        raise InputError("scores are empty")
    nan = np.isnan(arr)
    if np.isinf(arr).any():
        raise NonFiniteError("scores contain +inf or -inf; only finite values or NaN are allowed")
    if nan.any():
        fill = float(np.min(arr[~nan])) if not nan.all() else 0.0
        arr = np.where(nan, fill, arr)
    return arr


def _as_flags(flags: npt.ArrayLike, n: int) -> BoolArray:
    """Validate boolean (or 0/1) flags of shape ``(n,)``.

    Raises
    ------
    InputError
        If the flags are not one-dimensional 0/1 values of length ``n``.
    """
    arr = np.asarray(flags)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"flags must have shape ({n},), got {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "biuf" or not np.all((arr == 0) | (arr == 1)):
        raise InputError("flags must be booleans or 0/1 values")
    return np.asarray(arr == 1, dtype=np.bool_)


def _labels_and_scores(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[BoolArray, FloatArray]:
    s = _as_scores(scores)
    return _as_labels(labels, s.shape[0]), s


def _both_classes(y: BoolArray) -> bool:
    n_pos = int(np.count_nonzero(y))
    return bool(0 < n_pos < y.shape[0])


def _check_window(sliding_window: int) -> int:
    if isinstance(sliding_window, bool) or not isinstance(sliding_window, int | np.integer):
        raise ConfigError(f"sliding_window must be an integer, got {sliding_window!r}")
    if sliding_window < 0:
        raise ConfigError(f"sliding_window must be >= 0, got {sliding_window}")
    return int(sliding_window)


# ----------------------------------------------------------------------------------------------
# point-wise metrics
# ----------------------------------------------------------------------------------------------


def _pr_sweep(y: BoolArray, s: FloatArray) -> tuple[FloatArray, IntArray, IntArray]:
    """Cumulative counts at every distinct score, highest first.

    Returns
    -------
    thresholds : ndarray of shape (k,)
        Distinct scores in decreasing order.
    tps, fps : ndarray of shape (k,)
        True / false positives when every point with ``score >= thresholds[i]`` is predicted.
    """
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_run = np.flatnonzero(np.diff(s_sorted) != 0)
    ends = np.append(last_of_run, s_sorted.shape[0] - 1)
    tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fps = ends.astype(np.int64) + 1 - tps
    return s_sorted[ends], tps, fps


def auc_pr(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the precision-recall curve, as average precision.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct score values in decreasing order
    (no interpolation; the same value as ``sklearn.metrics.average_precision_score``).

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores; NaN counts as the minimum score.

    Returns
    -------
    float
        Average precision in ``[0, 1]``; ``nan`` if the labels lack positives or negatives.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    """
    y, s = _labels_and_scores(labels, scores)
    if not _both_classes(y):
        return math.nan
    _, tps, fps = _pr_sweep(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def auc_roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal rule over the distinct score values; ties count half).

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores; NaN counts as the minimum score.

    Returns
    -------
    float
        ROC AUC in ``[0, 1]``; ``nan`` if the labels lack positives or negatives.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    """
    y, s = _labels_and_scores(labels, scores)
    if not _both_classes(y):
        return math.nan
    _, tps, fps = _pr_sweep(y, s)
    tpr = np.concatenate(([0.0], tps / tps[-1]))
    fpr = np.concatenate(([0.0], fps / fps[-1]))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def pointwise_prf(labels: npt.ArrayLike, flags: npt.ArrayLike) -> tuple[float, float, float]:
    """Point-wise precision, recall and F1 of binary flags.

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    flags : array_like of shape (n,)
        Booleans (or 0/1): the points declared anomalous.

    Returns
    -------
    precision : float
        ``TP / (TP + FP)``; 0 when nothing is flagged.
    recall : float
        ``TP / P``; ``nan`` when the labels hold no positive.
    f1 : float
        Harmonic mean of the two; 0 when both are 0, ``nan`` when recall is ``nan``.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the flags'.
    InputError
        If the flags are not 1-D booleans.
    """
    f_arr = np.asarray(flags)
    if f_arr.ndim != 1:
        raise InputError(f"flags must be one-dimensional, got shape {f_arr.shape}")
    y = _as_labels(labels, f_arr.shape[0])
    f = _as_flags(f_arr, f_arr.shape[0])
    tp = int(np.count_nonzero(y & f))
    n_flag = int(np.count_nonzero(f))
    n_pos = int(np.count_nonzero(y))
    precision = tp / n_flag if n_flag else 0.0
    if n_pos == 0:
        return precision, math.nan, math.nan
    recall = tp / n_pos
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _strict_threshold_below(value: float, lower: float | None) -> float:
    """A threshold ``thr`` with ``value > thr`` and ``lower <= thr`` (``lower`` < ``value``).

    The midpoint of the gap when it is representable, else ``lower`` itself (``lower > lower``
    is false, so ``lower`` is still not flagged); below the minimum the next float down.
    """
    if lower is None:
        return float(np.nextafter(value, -np.inf))
    mid = value / 2.0 + lower / 2.0
    if lower <= mid < value:
        return float(mid)
    return float(lower)


def best_f1(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[float, float]:
    """ORACLE best point-wise F1: the F1 at the threshold chosen with the test labels.

    This is an upper bound on what any threshold fixed without the labels can reach, not an
    achievable figure; report it as such (``best_f1_upper_bound`` in :func:`evaluate`).
    Every distinct score is tried as a cut (sorted sweep, ``O(n log n)``).

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores; NaN counts as the minimum score.

    Returns
    -------
    f1 : float
        The largest F1 over all thresholds; ``nan`` if the labels lack positives or negatives.
    threshold : float
        A threshold reaching it under the strict rule ``score > threshold``: the midpoint
        between the lowest flagged score and the next lower score (just below the minimum when
        every point is flagged). Ties in F1 go to the highest threshold. ``nan`` with ``f1``.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    """
    y, s = _labels_and_scores(labels, scores)
    if not _both_classes(y):
        return math.nan, math.nan
    values, tps, fps = _pr_sweep(y, s)
    n_pos = tps[-1]
    f1 = 2.0 * tps / (tps + fps + n_pos)  # = 2PR / (P + R)
    i = int(np.argmax(f1))
    lower = float(values[i + 1]) if i + 1 < values.shape[0] else None
    return float(f1[i]), _strict_threshold_below(float(values[i]), lower)


def legacy_point_adjusted_f1(labels: npt.ArrayLike, flags: npt.ArrayLike) -> float:
    """LEGACY, INFLATED: point-adjusted F1, kept only to compare with older publications.

    Point adjustment marks a whole anomalous segment as detected as soon as one of its points
    is flagged, then computes the point-wise F1. A single lucky flag inside a long segment
    counts as detecting all of it, so random flags can score a high F1; never use this figure
    to rank detectors (prefer :func:`vus_pr`).

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    flags : array_like of shape (n,)
        Booleans (or 0/1): the points declared anomalous.

    Returns
    -------
    float
        The point-adjusted F1; ``nan`` when the labels hold no positive.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the flags'.
    InputError
        If the flags are not 1-D booleans.
    """
    f_arr = np.asarray(flags)
    if f_arr.ndim != 1:
        raise InputError(f"flags must be one-dimensional, got shape {f_arr.shape}")
    y = _as_labels(labels, f_arr.shape[0])
    f = _as_flags(f_arr, f_arr.shape[0]).copy()
    starts, ends = _segments(y)
    if starts.shape[0]:
        hit = _segment_any(f, starts, ends)  # (S,)
        seg_id = np.cumsum(np.diff(y.astype(np.int8), prepend=0) == 1) - 1  # (n,)
        f[y] = hit[seg_id[y]]
    return pointwise_prf(y, f)[2]


def _segment_any(f: BoolArray, starts: IntArray, ends: IntArray) -> BoolArray:
    """Whether each segment ``[starts[j], ends[j]]`` holds a ``True`` flag; shape (S,)."""
    csum = np.concatenate(([0], np.cumsum(f, dtype=np.int64)))
    return np.asarray(csum[ends + 1] - csum[starts] > 0, dtype=np.bool_)


def _segment_min(values: IntArray, starts: IntArray, ends: IntArray) -> IntArray:
    """Minimum of ``values`` over each disjoint, sorted segment ``[starts[j], ends[j]]``."""
    bounds = np.ravel(np.column_stack((starts, ends + 1)))
    if bounds[-1] == values.shape[0]:
        bounds = bounds[:-1]  # the last segment then runs to the end of the array
    return np.asarray(np.minimum.reduceat(values, bounds)[0::2], dtype=np.int64)


def event_metrics(labels: npt.ArrayLike, flags: npt.ArrayLike) -> dict[str, float]:
    """Range-level figures of binary flags, for live decisions.

    An anomaly range (a maximal run of label 1) is *found* if a flag falls inside it; a *false
    alarm event* is a maximal run of flags that touches no anomaly range.

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    flags : array_like of shape (n,)
        The points declared anomalous.

    Returns
    -------
    dict of str to float
        ``event_recall`` (found ranges / ranges), ``false_alarm_events_per_10k`` (per 10,000
        normal points), ``composite_f1`` (harmonic mean of point precision and event recall,
        Garg et al. 2021), ``median_delay`` (points from a found range's start to its first
        flag), ``normal_flag_rate`` (flagged share of the normal points) and ``n_ranges``.
        Figures that need a range (or a normal point) are ``nan`` without one.

    Raises
    ------
    LabelsError, InputError
        As :func:`pointwise_prf`.
    """
    y = _as_labels(labels)
    f = _as_flags(flags, y.shape[0])
    starts, ends = _segments(y)
    n_normal = int(np.count_nonzero(~y))
    out = {
        "event_recall": math.nan,
        "false_alarm_events_per_10k": math.nan,
        "composite_f1": math.nan,
        "median_delay": math.nan,
        "normal_flag_rate": float(np.mean(f[~y])) if n_normal else math.nan,
        "n_ranges": float(starts.shape[0]),
    }
    if n_normal:
        f_starts, f_ends = _segments(f)
        touches = _segment_any(y, f_starts, f_ends) if f_starts.size else np.zeros(0, bool)
        out["false_alarm_events_per_10k"] = float(np.count_nonzero(~touches)) * 1e4 / n_normal
    if starts.size:
        found = _segment_any(f, starts, ends)
        recall = float(np.mean(found))
        precision = pointwise_prf(y, f)[0]
        out["event_recall"] = recall
        out["composite_f1"] = (
            2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        )
        if found.any():
            position = np.where(f, np.arange(f.shape[0]), f.shape[0])
            first = _segment_min(position, starts[found], ends[found])
            out["median_delay"] = float(np.median(first - starts[found]))
    return out


# ----------------------------------------------------------------------------------------------
# VUS
# ----------------------------------------------------------------------------------------------


def _segments(y: BoolArray) -> tuple[IntArray, IntArray]:
    """Starts and ends (inclusive) of the maximal runs of ``True``, each of shape (S,)."""
    d = np.diff(y.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(d == 1).astype(np.int64)
    ends = np.flatnonzero(d == -1).astype(np.int64) - 1
    return starts, ends


def _vus_areas(y: BoolArray, s: FloatArray, max_buffer: int) -> tuple[FloatArray, FloatArray]:
    """Range ROC AUC and range AP for every buffer length ``0..max_buffer``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels with at least one positive and one negative.
    s : ndarray of shape (n,)
        Finite scores.
    max_buffer : int
        Largest buffer length ``W``.

    Returns
    -------
    roc, ap : ndarray of shape (W + 1,)
        The areas per buffer length (see the module docstring).
    """
    n = s.shape[0]
    n_thr = VUS_THRESHOLDS
    big_h = max_buffer // 2
    lengths = np.arange(max_buffer + 1)

    # thresholds: the decreasing scores at the sampled ranks (non-increasing sequence)
    s_asc = np.sort(s)
    idx = np.linspace(0, n - 1, n_thr).astype(np.int64)
    thr = s_asc[::-1][idx]  # (T,)
    n_pred = (n - np.searchsorted(s_asc, thr, side="left")).astype(np.float64)  # (T,)
    # first threshold index at which each point is predicted (score >= thr[k] for k >= first)
    first = (n_thr - np.searchsorted(thr[::-1], s, side="right")).astype(np.int64)  # (n,)

    n_pos = float(np.count_nonzero(y))
    tp_core = np.cumsum(np.bincount(first[y], minlength=n_thr)[:n_thr]).astype(np.float64)

    starts, ends = _segments(y)

    # normal points within big_h of a segment, with the distances to their nearest (d1) and
    # second nearest (d2) segment: y_l = 0 if h < d1, sqrt(1 - d1 / l) if d1 <= h < d2, else 1
    buffer_sum = np.zeros((max_buffer + 1, n_thr))
    if big_h > 0:
        near = np.zeros(n + 1, dtype=np.int64)
        np.add.at(near, np.maximum(starts - big_h, 0), 1)
        np.add.at(near, np.minimum(ends + big_h + 1, n), -1)
        pts = np.flatnonzero((np.cumsum(near[:n]) > 0) & ~y)
        if pts.shape[0]:
            inf = np.iinfo(np.int64).max // 4
            p = np.searchsorted(ends, pts, side="left")  # segments ending before the point
            q = np.searchsorted(starts, pts, side="right")  # first segment starting after it
            ends_pad = np.concatenate(([-inf, -inf], ends))
            starts_pad = np.concatenate((starts, [inf, inf]))
            dl1 = pts - ends_pad[p + 1]
            dl2 = pts - ends_pad[p]
            dr1 = starts_pad[q] - pts
            dr2 = starts_pad[q + 1] - pts
            d1 = np.minimum(dl1, dr1)
            d2 = np.where(dl1 <= dr1, np.minimum(dl2, dr1), np.minimum(dr2, dl1))
            order = np.argsort(d1, kind="stable")
            d1, d2, kp = d1[order], d2[order], first[pts][order]
            d1f = d1.astype(np.float64)
            for length in lengths[2:]:  # h = 0 for l = 0, 1: no buffer
                h = int(length) // 2
                m = int(np.searchsorted(d1, h, side="right"))
                w = np.where(d2[:m] <= h, 1.0, np.sqrt(1.0 - d1f[:m] / float(length)))
                buffer_sum[length] = np.cumsum(np.bincount(kp[:m], weights=w, minlength=n_thr))

    # existence: per h, the earliest threshold index at which each extended range holds a
    # predicted point; ranges of neighbouring segments merge when their gap is <= 2h
    gaps = starts[1:] - ends[:-1]  # (S - 1,)
    cur = _segment_min(first, starts, ends)  # (S,)
    exist_by_h = np.zeros((big_h + 1, n_thr))
    n_ranges_by_h = np.zeros(big_h + 1)
    for h in range(big_h + 1):
        if h > 0:
            left = starts - h
            ok = left >= 0
            cur[ok] = np.minimum(cur[ok], first[left[ok]])
            right = ends + h
            ok = right < n
            cur[ok] = np.minimum(cur[ok], first[right[ok]])
        new_range = np.concatenate(([True], gaps > 2 * h))
        group_start = np.flatnonzero(new_range)
        group_min = np.minimum.reduceat(cur, group_start)
        exist_by_h[h] = np.cumsum(np.bincount(group_min, minlength=n_thr)[:n_thr])
        n_ranges_by_h[h] = group_start.shape[0]

    halves = lengths // 2
    existence = exist_by_h[halves] / n_ranges_by_h[halves][:, None]  # (W + 1, T)

    tp = tp_core[None, :] + buffer_sum  # (W + 1, T)
    p_new = n_pos + buffer_sum / 2.0
    recall = np.minimum(tp / p_new, 1.0)
    tpr = recall * existence
    fpr = (n_pred[None, :] - tp) / (n - p_new)
    precision = tp / n_pred[None, :]

    ones = np.ones((max_buffer + 1, 1))
    zeros = np.zeros((max_buffer + 1, 1))
    tpr_c = np.hstack((zeros, tpr, ones))
    fpr_c = np.hstack((zeros, fpr, ones))
    roc = np.sum(np.diff(fpr_c, axis=1) * (tpr_c[:, 1:] + tpr_c[:, :-1]) / 2.0, axis=1)
    ap = np.sum(np.diff(np.hstack((zeros, tpr)), axis=1) * precision, axis=1)
    return roc, ap


def _vus(y: BoolArray, s: FloatArray, sliding_window: int) -> tuple[float, float]:
    """``(vus_roc, vus_pr)``, both ``nan`` when the labels lack positives or negatives."""
    if not _both_classes(y):
        return math.nan, math.nan
    roc, ap = _vus_areas(y, s, sliding_window)
    return float(np.mean(roc)), float(np.mean(ap))


def vus_pr(labels: npt.ArrayLike, scores: npt.ArrayLike, sliding_window: int) -> float:
    """Volume under the range precision-recall surface (VUS-PR).

    The mean, over buffer lengths ``0..sliding_window``, of the range-based average precision
    on 250 thresholds sampled from the sorted scores; see the module docstring for the exact
    definition (the TSB-AD implementation of the VLDB 2022 measure).

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores; NaN counts as the minimum score.
    sliding_window : int
        Largest buffer length ``W >= 0``; anomalies are widened by up to ``W // 2`` points on
        each side. Usually the period of the series (or the detector's window).

    Returns
    -------
    float
        VUS-PR in ``[0, 1]``; ``nan`` if the labels lack positives or negatives.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    ConfigError
        If ``sliding_window`` is not a non-negative integer.
    """
    w = _check_window(sliding_window)
    y, s = _labels_and_scores(labels, scores)
    return _vus(y, s, w)[1]


def vus_roc(labels: npt.ArrayLike, scores: npt.ArrayLike, sliding_window: int) -> float:
    """Volume under the range ROC surface (VUS-ROC).

    The mean, over buffer lengths ``0..sliding_window``, of the range-based ROC AUC on 250
    thresholds sampled from the sorted scores; see the module docstring for the definition.

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores; NaN counts as the minimum score.
    sliding_window : int
        Largest buffer length ``W >= 0`` (see :func:`vus_pr`).

    Returns
    -------
    float
        VUS-ROC in ``[0, 1]``; ``nan`` if the labels lack positives or negatives.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    ConfigError
        If ``sliding_window`` is not a non-negative integer.
    """
    w = _check_window(sliding_window)
    y, s = _labels_and_scores(labels, scores)
    return _vus(y, s, w)[0]


def evaluate(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float, sliding_window: int
) -> dict[str, float]:
    """Every headline metric of one scored series.

    NaN scores are treated as the minimum score of the series (a point that could not be
    scored is considered the least anomalous); an all-NaN series becomes constant. When the
    labels hold no positive or no negative point, every metric here is ``nan`` (the curves and
    rates are undefined); no exception is raised.

    Parameters
    ----------
    labels : array_like of shape (n,)
        0/1 ground truth.
    scores : array_like of shape (n,)
        Anomaly scores.
    threshold : float
        Calibrated threshold: a point is flagged iff ``score > threshold``.
    sliding_window : int
        Largest VUS buffer length (see :func:`vus_pr`).

    Returns
    -------
    dict of str to float
        ``vus_pr``, ``vus_roc``, ``auc_pr``, ``auc_roc``; ``precision``, ``recall``, ``f1`` of
        the flags at ``threshold``; ``best_f1_upper_bound`` and ``best_f1_threshold``, the
        ORACLE best F1 (chosen with the labels, an upper bound) and its threshold.

    Raises
    ------
    LabelsError
        If the labels are not 0/1 or their length differs from the scores'.
    InputError
        If the scores are empty, not 1-D, or hold ``+/-inf``.
    ConfigError
        If ``threshold`` is NaN or ``sliding_window`` is not a non-negative integer.
    """
    w = _check_window(sliding_window)
    thr = float(threshold)
    if math.isnan(thr):
        raise ConfigError("threshold is NaN; pass the calibrated threshold")
    y, s = _labels_and_scores(labels, scores)
    keys = (
        "vus_pr",
        "vus_roc",
        "auc_pr",
        "auc_roc",
        "precision",
        "recall",
        "f1",
        "best_f1_upper_bound",
        "best_f1_threshold",
    )
    if not _both_classes(y):
        return dict.fromkeys(keys, math.nan)
    v_roc, v_pr = _vus(y, s, w)
    from .decision import flags  # here: decision -> thresholds -> evaluation at import time

    precision, recall, f1 = pointwise_prf(y, flags(s, thr))
    oracle_f1, oracle_thr = best_f1(y, s)
    return {
        "vus_pr": v_pr,
        "vus_roc": v_roc,
        "auc_pr": auc_pr(y, s),
        "auc_roc": auc_roc(y, s),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "best_f1_upper_bound": oracle_f1,
        "best_f1_threshold": oracle_thr,
    }
