"""Feedback labels: the one owner of what a person's verdicts change.

An operator labels a point or a time range of a series as ``"anomaly"``, ``"normal"`` or
``"unsure"`` (:class:`Label`). Everything that labels change is decided here; the service stores
labels and calls these functions, the replay benchmark simulates an operator and calls them too.

Overlap rule (:func:`label_masks`)
----------------------------------
For each point, the most recently created label that covers it (``start <= t <= end``, both
ends inclusive; a point label has ``start == end``) wins; between labels created at the same
instant, the later one in the list wins. An ``"unsure"`` label covers the point (it hides older
verdicts) but counts as neither anomaly nor normal. A label with a ``series`` applies to that
series only; one without applies to every series of the model.

What the labels change
----------------------
- **Thresholds** (:func:`refit_threshold`): the threshold is the one that maximises the POINT
  F1 on the labelled history, searched within ``[bounds[0] * current, bounds[1] * current]``
  so that one label cannot swing it wildly; ties go to the candidate nearest the current
  threshold (the current one included, so a refit never lowers the F1 there). The labelled
  history is the points labelled anomaly or normal, plus the ``quiet`` points (those that
  raised no alert) that carry no label, as normal: silence is taken for consent. Without
  them the labelled normals would be the false alarms only, every one above the threshold,
  so that a lower threshold would never cost a labelled false positive and the refit would
  always go down to its bound (the feedback replay showed exactly that on smd). The false
  alarms the normal memory holds are left out (``remembered``): the memory already stops
  windows like them, and counting them raised the threshold for alarms that no longer
  alert. The "enough labels" rule: at least ``min_anomaly_events`` labelled anomaly ranges
  (maximal runs of labelled-anomaly points) and ``min_normal_points`` normal points (labelled
  or quiet) with a finite score. Fed with the stream's normalised scores (``score /
  threshold``) and ``current_threshold=1``, the result's :attr:`ThresholdRefit.scale` is a
  factor on the live threshold: :meth:`Monitor.apply_feedback
  <detector.monitor.Monitor.apply_feedback>` applies it to the online threshold, which keeps
  adapting from there (:meth:`Threshold.rescale <detector.decision.Threshold.rescale>`).
- **Lasting events** (:class:`LastingRuns`): a labelled anomaly longer than the
  monitor's ``relearn_after`` (with no event as long labelled normal) makes that rule wait for
  the longest confirmed anomaly, so that the threshold no longer learns from a long anomaly's
  points, unless the labelled history says the longer wait costs more than it finds
  (:meth:`LastingRuns.refit`: its points decided again under it have a lower point F1 there,
  as when a drifting series' level changes flag longer; NAB's wide labelled windows did that).
- **Training data** (:func:`training_mask`): retraining leaves out labelled anomalies and the
  points the caller drops anyway (the service's open and closed events), but keeps every point
  labelled normal, even inside an event span.
- **Suppression** (:class:`NormalMemory`): the stretches of events labelled ``"normal"`` (a
  false alarm) are remembered in input units; a flagged point whose causal window lies within
  ``radius`` of a window of a remembered stretch on every feature (per feature, the mean
  squared difference in the model's scaled units over that feature's held-out error) raises no
  alert. The service uses BOTH ways the issue names: the monitor
  checks the memory before an alert (immediate, no retraining), and retraining keeps the
  labelled-normal stretches as training data (:func:`training_mask`), so the next version
  learns them as normal. The feedback replay benchmark measures them apart.
- **Promotion** (:func:`labelled_metrics`, :func:`compare_on_labels`): with labels, a new
  version is compared with the active one on the labelled history (VUS-PR and F1 there).
- **Training of label-aware kinds**: :meth:`LabelMasks.point_labels` gives the per-point array
  (1 anomaly, 0 normal, -1 unknown) that :meth:`Detector.fit <detector.detector.Detector.fit>`
  takes as ``labels``; the semi-supervised kind (``ssaae``) learns from it, the others ignore it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from .errors import ConfigError, InputError
from .evaluation import best_f1, pointwise_prf, vus_pr

if TYPE_CHECKING:
    from .detector import Detector

__all__ = [
    "VERDICTS",
    "Label",
    "LabelMasks",
    "LastingRuns",
    "NormalMemory",
    "ThresholdRefit",
    "Verdict",
    "compare_on_labels",
    "label_masks",
    "labelled_metrics",
    "refit_threshold",
    "training_mask",
    "window_labels",
]

Verdict = Literal["anomaly", "normal", "unsure"]
#: The verdicts a label can carry.
VERDICTS: tuple[str, ...] = get_args(Verdict)

_CODES = {"anomaly": 1, "normal": 0, "unsure": 2}
_UNLABELLED = -1


@dataclass(frozen=True)
class Label:
    """A person's verdict on a point or a time range of a series.

    Attributes
    ----------
    start, end
        Index labels of the first and the last point covered (inclusive): tz-aware UTC
        ``pd.Timestamp`` for timestamp-indexed models (naive ones are taken as UTC), ``int``
        for integer-indexed ones. A point label has ``start == end``.
    verdict : {"anomaly", "normal", "unsure"}
    created : datetime
        When it was given; the newest label covering a point wins (module docstring).
    series : str or None
        The series (key) it applies to; None: every series of the model.
    """

    start: Any
    end: Any
    verdict: Verdict
    created: datetime
    series: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise InputError(f"verdict must be one of {list(VERDICTS)}, got {self.verdict!r}")
        if _position(self.end) < _position(self.start):
            raise InputError(f"a label's end ({self.end}) is before its start ({self.start})")


@dataclass(frozen=True)
class LabelMasks:
    """Which points of an index carry which verdict after the overlap rule; each (T,) bool.

    ``unsure`` points are covered by a label but count as neither anomaly nor normal.
    """

    anomaly: npt.NDArray[np.bool_]
    normal: npt.NDArray[np.bool_]
    unsure: npt.NDArray[np.bool_]

    @property
    def labelled(self) -> npt.NDArray[np.bool_]:
        """Points covered by any label (unsure included)."""
        return self.anomaly | self.normal | self.unsure

    @property
    def n_anomaly_events(self) -> int:
        """Maximal runs of labelled-anomaly points (in index order)."""
        return _runs(self.anomaly)

    def point_labels(self) -> npt.NDArray[np.int8]:
        """Per point: 1 anomaly, 0 normal, -1 unknown (unsure or unlabelled), for ``fit``."""
        out = np.full(self.anomaly.shape, -1, dtype=np.int8)
        out[self.normal] = 0
        out[self.anomaly] = 1
        return out

    def subset(self, keep: npt.NDArray[np.bool_]) -> LabelMasks:
        """The masks of the points where ``keep`` is True."""
        return LabelMasks(self.anomaly[keep], self.normal[keep], self.unsure[keep])


def _position(value: Any) -> int:
    """An index label as a number: nanoseconds since the epoch (UTC) or the integer itself."""
    if isinstance(value, (pd.Timestamp, datetime, np.datetime64, str)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        return int(stamp.as_unit("ns").value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise InputError(f"a label's start and end must be timestamps or integers, got {value!r}")


def _index_positions(index: pd.Index) -> npt.NDArray[np.int64]:
    if isinstance(index, pd.DatetimeIndex):
        utc = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return np.asarray(utc.as_unit("ns").asi8, dtype=np.int64)
    if pd.api.types.is_integer_dtype(index):
        return np.asarray(index, dtype=np.int64)
    raise InputError("labels apply to a timestamp or integer index")


def _runs(mask: npt.NDArray[np.bool_]) -> int:
    m = np.asarray(mask, dtype=bool)
    return int(m[0]) + int((m[1:] & ~m[:-1]).sum()) if m.size else 0


def _longest_run(mask: npt.NDArray[np.bool_]) -> int:
    """The length of the longest run of True (0 without one)."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def label_masks(index: pd.Index, labels: Iterable[Label], series: str | None = None) -> LabelMasks:
    """The verdict of every point of ``index`` (a series' points) under the overlap rule.

    Parameters
    ----------
    index : DatetimeIndex or integer Index, shape (T,)
    labels : iterable of Label
        Labels of the model; those of another series are skipped.
    series : str, optional
        The series ``index`` belongs to (a key value), for labels that name one.
    """
    positions = _index_positions(index)
    code = np.full(positions.shape, _UNLABELLED, dtype=np.int8)
    chosen = [lab for lab in labels if lab.series is None or lab.series == series]
    order = sorted(range(len(chosen)), key=lambda i: (_created(chosen[i].created), i))
    for i in order:
        lab = chosen[i]
        covered = (positions >= _position(lab.start)) & (positions <= _position(lab.end))
        code[covered] = _CODES[lab.verdict]
    return LabelMasks(code == 1, code == 0, code == 2)


def _created(value: datetime) -> float:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.as_unit("ns").value)


# ---------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class ThresholdRefit:
    """A threshold re-fitted on labelled history.

    Attributes
    ----------
    threshold : float
        The new threshold (in the units of the scores given).
    scale : float
        ``threshold / current_threshold``: the factor to apply to the live threshold.
    f1, f1_current : float
        Point F1 on the labelled points at the new and at the current threshold.
    n_anomaly_events, n_normal_points : int
        What the "enough labels" rule counted (normal: labelled or quiet).
    """

    threshold: float
    scale: float
    f1: float
    f1_current: float
    n_anomaly_events: int
    n_normal_points: int


def refit_threshold(
    scores: npt.ArrayLike,
    masks: LabelMasks,
    current_threshold: float,
    quiet: npt.ArrayLike | None = None,
    remembered: npt.ArrayLike | None = None,
    *,
    min_anomaly_events: int = 2,
    min_normal_points: int = 20,
    bounds: tuple[float, float] = (0.5, 2.0),
) -> ThresholdRefit | None:
    """The threshold that maximises point F1 on the labelled history (module docstring).

    Parameters
    ----------
    scores : array_like, shape (T,)
        Scores of the points the masks describe (NaN: left out).
    masks : LabelMasks
    current_threshold : float
        Positive; 1 for normalised scores.
    quiet : array_like of bool, shape (T,), optional
        The points that raised no alert (``~anomalous`` of the monitor's output); those without
        a label count as normal. Default: the points scored at or below
        ``current_threshold`` (what would not have alerted). All False: the labelled points
        only (biased low, see above).
    remembered : array_like of bool, shape (T,), optional
        The points of the false alarms the normal memory holds (:class:`NormalMemory`: the
        events labelled normal), left out: the memory stops windows like them, so the
        threshold need not pay for them as well. Counted, they push the refit up for false
        alarms that no longer alert (asd omi-9 in the feedback replay: its 20 remembered false
        alarms raised the threshold 2x, and the second half's anomalies went unflagged).
    min_anomaly_events, min_normal_points : int
        The "enough labels" rule: at least this many labelled anomaly ranges (runs) and
        labelled normal points with a finite score.
    bounds : (float, float)
        The new threshold lies in ``[bounds[0], bounds[1]] * current_threshold``.

    Returns
    -------
    ThresholdRefit, or None when the rule is not met.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != masks.anomaly.shape:
        raise InputError(f"got {s.size} scores for {masks.anomaly.size} labelled points")
    low, high = bounds
    if not (current_threshold > 0 and 0 < low <= 1 <= high):
        raise ConfigError("need current_threshold > 0 and bounds with 0 < low <= 1 <= high")
    finite = np.isfinite(s)
    if remembered is not None:
        held = np.asarray(remembered, dtype=bool)
        if held.shape != s.shape:
            raise InputError(f"got {held.size} remembered flags for {s.size} scores")
        finite &= ~held | masks.anomaly
    anomaly, normal = _history_points(
        masks, s <= current_threshold if quiet is None else quiet, finite
    )
    n_events, n_normal = _runs(anomaly), int(normal.sum())
    if n_events < min_anomaly_events or n_normal < min_normal_points:
        return None
    use = anomaly | normal
    x, y = s[use], anomaly[use]
    lo, hi = low * current_threshold, high * current_threshold
    inside = x[(x >= lo) & (x <= hi)]
    candidates = np.unique(np.concatenate([[lo, hi, current_threshold], inside]))
    f1s = np.array([_f1(y, x > c) for c in candidates])
    best = f1s.max()
    ties = candidates[f1s >= best - 1e-12]
    pick = float(ties[np.argmin(np.abs(np.log(ties / current_threshold)))])
    return ThresholdRefit(
        threshold=pick,
        scale=pick / current_threshold,
        f1=float(best),
        f1_current=_f1(y, x > current_threshold),
        n_anomaly_events=n_events,
        n_normal_points=n_normal,
    )


def _history_points(
    masks: LabelMasks, quiet: npt.ArrayLike, finite: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The labelled history's anomaly and normal points, (T,) bool each: labelled anomaly;
    labelled normal or ``quiet`` without a label (silence is consent); both within ``finite``
    when given."""
    implicit = np.asarray(quiet, dtype=bool)
    if implicit.shape != masks.anomaly.shape:
        raise InputError(f"got {implicit.size} quiet flags for {masks.anomaly.size} points")
    anomaly = masks.anomaly.copy()
    normal = masks.normal | (implicit & ~masks.labelled)
    if finite is not None:
        anomaly &= finite
        normal &= finite
    return anomaly, normal


def _f1(labels: npt.NDArray[np.bool_], flagged: npt.NDArray[np.bool_]) -> float:
    return float(pointwise_prf(labels.astype(np.int8), flagged)[2])


@dataclass(frozen=True)
class LastingRuns:
    """What labels say about the monitor's ``relearn_after`` rule (:meth:`relearn_after`).

    The rule takes an event open for ``relearn_after`` points for a lasting change of the
    normal level and lets the threshold learn from it. Labels can say how long anomalies of a
    series last: a labelled anomaly range longer than ``relearn_after`` points is a confirmed
    anomaly that the rule would have learnt as normal (it raises the threshold above the rest
    of it), and a run of event points labelled normal longer than ``relearn_after`` is a
    confirmed lasting change. Where the first is seen and the second is not, the rule waits
    for the longest confirmed anomaly instead: an event that lasts longer than any anomaly
    seen is still taken for a lasting change, so a later level shift opens one long event, not
    an event for ever (turning the rule off flagged two thirds of a drifting NAB series in the
    feedback replay).

    Attributes
    ----------
    anomaly : int
        The longest run of labelled-anomaly points.
    normal_event : int
        The longest run of points that belong to an event and are labelled normal.
    """

    anomaly: int
    normal_event: int

    @classmethod
    def of(cls, masks: LabelMasks, in_event: npt.ArrayLike) -> LastingRuns:
        """The runs of a labelled history (points in time order; rows of several series
        separated by an unlabelled point); ``in_event``, (T,) bool: the points that belong
        to an event of the monitor (its ``event`` column not missing)."""
        events = np.asarray(in_event, dtype=bool)
        if events.shape != masks.anomaly.shape:
            raise InputError(f"got {events.size} event flags for {masks.anomaly.size} points")
        return cls(_longest_run(masks.anomaly), _longest_run(masks.normal & events))

    def refit(
        self,
        relearn_after: int | None,
        masks: LabelMasks,
        quiet: npt.ArrayLike,
        decide: Callable[[int], npt.NDArray[np.bool_]],
    ) -> int | None:
        """:meth:`relearn_after`, checked on the labelled history: the longer wait is taken
        unless the history's points decided again under it have a lower point F1 than under
        ``relearn_after`` (a tie takes it: the labels confirmed an anomaly that outlasted the
        rule, and the history shows no cost). The F1 counts the points of
        :func:`refit_threshold`: labelled anomaly against labelled normal or ``quiet`` without
        a label.

        Parameters
        ----------
        relearn_after : int or None
            The monitor's option now.
        masks : LabelMasks
            The labelled history, (T,) each.
        quiet : array_like of bool, shape (T,)
            The points that raised no alert there.
        decide : callable
            For a ``relearn_after``, the history's flags, (T,) bool, when its scores are decided
            again from the same start under that option (:meth:`Decider.decide
            <detector.monitor.Decider.decide>` of a monitor in the state it started the
            history with).
        """
        longer = self.relearn_after(relearn_after)
        if longer is None or longer == relearn_after:
            return relearn_after
        anomaly, normal = _history_points(masks, quiet)
        use = anomaly | normal
        flags = [np.asarray(decide(r), dtype=bool) for r in (longer, cast(int, relearn_after))]
        if any(f.shape != anomaly.shape for f in flags):
            raise InputError(f"decide must give {anomaly.size} flags")
        after, before = (_f1(anomaly[use], f[use]) for f in flags)
        return longer if after >= before else relearn_after

    def relearn_after(self, relearn_after: int | None) -> int | None:
        """The monitor's ``relearn_after`` after these labels (:meth:`Monitor.apply_feedback
        <detector.monitor.Monitor.apply_feedback>`): the longest confirmed anomaly when it
        outlasted ``relearn_after`` and no confirmed lasting change did, else unchanged (None,
        the rule off, stays off)."""
        if relearn_after is None or self.normal_event > relearn_after:
            return relearn_after
        return max(relearn_after, self.anomaly)


# ---------------------------------------------------------------------------- training data
def training_mask(
    masks: LabelMasks, drop: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.bool_]:
    """The points to train on, (T,) bool: not labelled anomaly, and not in ``drop`` (the
    caller's own leave-outs, e.g. event spans) unless labelled normal."""
    keep = ~masks.anomaly
    if drop is not None:
        keep &= ~np.asarray(drop, dtype=bool) | masks.normal
    return keep


# ---------------------------------------------------------------------------- suppression
#: Distances computed at once by :meth:`NormalMemory.matches` (features x windows x shifts).
_MATCH_CELLS = 1 << 22


class NormalMemory:
    """Stretches confirmed normal (events labelled "not an anomaly"), checked before an alert.

    A remembered stretch is an event's points with the ``window - 1`` points before them, in
    input units (so a retrained model with another scaling still reads them), at most
    ``max_points`` long; at most ``max_stretches`` are kept (the oldest leave first). A window
    matches when some window of a remembered stretch (every shift) lies within ``radius`` of
    it on EVERY compared feature: per feature, the mean over the window's steps of the squared
    difference in the model's scaled units (each feature divided by its training std), divided
    by that feature's ``noise``.

    :meth:`for_detector` takes ``noise`` from the model: each feature's mean squared error on
    held-out normal data (``Detector.error_scale_``, the error normalisation's scale), which
    estimates the noise a good fit leaves. Two windows of one shape with independent noise then
    differ by about 2 on each feature, so the default radius 4 leaves room for the largest of
    many features. Whatever the noise, a feature's bound is at most ``max_distance`` (0.5 per
    step, in scaled units where every feature has unit variance: a quarter of the 2 by which
    two unrelated windows of a feature differ), so that a model that reconstructs a feature
    poorly does not make every window of it match (on a NAB series whose retrained model's
    error was 0.45, radius times noise was 1.8 and the memory hid every flag of the rest of
    the stream). Features that carry no weight in the score (``Detector.feature_weight_``
    0) are not compared. Per feature, not over all cells: a change on one feature of many (a
    flag that flips, a channel that leaves its level) is not diluted by the features that did
    not move. The mean over all cells, against twice the model's mean validation error, was
    the rule before: on a 25-channel SMAP entity (one continuous channel, 24 command flags) a
    real anomaly on the one channel stayed within it of a remembered false alarm, and the
    memory hid it.

    Parameters
    ----------
    noise : array_like, shape (F,)
        Positive, finite: each feature's noise level in squared scaled units.
    radius : float
        Positive: the bound per feature in units of its noise.
    max_distance : float
        Positive: the largest bound per feature, in squared scaled units per step.
    compared : array_like of bool, shape (F,), optional
        The features compared (default all; at least one).
    max_stretches, max_points : int
        Bounds on what is kept.
    """

    def __init__(
        self,
        noise: npt.ArrayLike,
        radius: float = 4.0,
        max_stretches: int = 32,
        max_points: int = 512,
        compared: npt.ArrayLike | None = None,
        max_distance: float = 0.5,
    ) -> None:
        level = np.asarray(noise, dtype=np.float64).reshape(-1)
        use = np.ones(level.shape, dtype=bool) if compared is None else np.asarray(compared)
        if (
            not (math.isfinite(radius) and radius > 0)
            or not (math.isfinite(max_distance) and max_distance > 0)
            or max_stretches < 1
            or max_points < 2
            or level.size == 0
            or not (np.isfinite(level).all() and (level > 0).all())
            or use.shape != level.shape
            or not use.any()
        ):
            raise ConfigError(
                "a NormalMemory needs a positive finite noise level per feature, radius > 0, "
                "max_distance > 0, max_stretches >= 1, max_points >= 2 and at least one "
                "compared feature"
            )
        self.noise = level
        self.compared = use.astype(bool)
        self.radius = float(radius)
        self.max_distance = float(max_distance)
        self.max_stretches = int(max_stretches)
        self.max_points = int(max_points)
        self._stretches: deque[npt.NDArray[np.float64]] = deque(maxlen=self.max_stretches)

    @classmethod
    def for_detector(cls, detector: Detector, max_stretches: int = 32) -> NormalMemory:
        """An empty memory with the noise levels of ``detector`` (see the class docstring)."""
        noise = np.maximum(np.asarray(detector.error_scale_, dtype=np.float64), 1e-12)
        weights = np.asarray(detector.feature_weight_, dtype=np.float64)
        compared = weights > 0 if (weights > 0).any() else None
        return cls(noise, max_stretches=max_stretches, compared=compared)

    def __len__(self) -> int:
        return len(self._stretches)

    def add(self, stretch: npt.ArrayLike) -> None:
        """Remember one stretch, shape (T, F), input units, finite (the first ``max_points``
        rows are kept)."""
        arr = np.asarray(stretch, dtype=np.float64)
        if arr.ndim != 2 or not np.isfinite(arr).all():
            raise InputError("a remembered stretch must be a finite (T, F) array")
        self._stretches.append(arr[: self.max_points].copy())

    def remember(self, detector: Detector, history: pd.DataFrame, start: Any, end: Any) -> int:
        """Remember the points of ``history`` in ``[start, end]`` (an event labelled normal)
        with the ``window - 1`` points before them; returns the stretch's length (0: nothing
        in range).

        ``history`` holds the series in time order with the model's feature columns; missing
        cells are carried forward (the training mean before any), as the monitor fills them.
        """
        values = history[detector.feature_names_in_].ffill()
        values = values.fillna(pd.Series(detector.preprocessor_.center_, index=values.columns))
        arr = values.to_numpy(dtype=np.float64)
        positions = _index_positions(history.index)
        inside = np.flatnonzero((positions >= _position(start)) & (positions <= _position(end)))
        if inside.size == 0:
            return 0
        lo = max(int(inside[0]) - detector.window_ + 1, 0)
        stretch = arr[lo : int(inside[-1]) + 1]
        self.add(stretch)
        return min(len(stretch), self.max_points)

    def matches(self, windows: npt.ArrayLike, scale: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Which windows (N, W, F), input units, match a remembered stretch; ``scale`` (F,) is
        the model's per-feature scale (``preprocessor_.scale_``)."""
        x = np.asarray(windows, dtype=np.float64)
        n, w, f = x.shape
        out = np.zeros(n, dtype=bool)
        if not self._stretches or n == 0:
            return out
        if f != self.noise.size:
            raise InputError(f"the memory compares {self.noise.size} features, got {f}")
        sc = np.asarray(scale, dtype=np.float64)
        a = x / sc  # (N, W, F)
        bound = w * np.minimum(self.radius * self.noise, self.max_distance)  # (F,)
        use = np.flatnonzero(self.compared)
        a_t = np.ascontiguousarray(a[:, :, use].transpose(2, 0, 1))  # (C, N, W)
        a_sq = (a_t**2).sum(axis=2)  # (C, N)
        limit = bound[use][:, None, None]  # (C, 1, 1)
        for mem in self._stretches:
            if mem.shape[1] != f or mem.shape[0] < w:
                continue
            subs = np.lib.stride_tricks.sliding_window_view(mem / sc, (w, f))[:, 0]  # (S, W, F)
            b_t = np.ascontiguousarray(subs[:, :, use].transpose(2, 0, 1))  # (C, S, W)
            b_sq = (b_t**2).sum(axis=2)  # (C, S)
            # the windows in blocks, so that the (C, block, S) distances stay small
            block = max(1, _MATCH_CELLS // max(len(use) * b_t.shape[1], 1))
            for lo in range(0, n, block):
                hi = min(lo + block, n)
                cross = a_t[:, lo:hi] @ b_t.transpose(0, 2, 1)  # (C, block, S)
                dist = a_sq[:, lo:hi, None] + b_sq[:, None, :] - 2.0 * cross
                worst = (dist / limit).max(axis=0)  # (block, S): the largest feature distance
                out[lo:hi] |= worst.min(axis=1) <= 1.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "radius": self.radius,
            "noise": self.noise.tolist(),
            "max_distance": self.max_distance,
            "compared": self.compared.astype(int).tolist(),
            "max_stretches": self.max_stretches,
            "max_points": self.max_points,
            "stretches": [w.tolist() for w in self._stretches],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> NormalMemory:
        """Rebuild from :meth:`state_dict` output.

        Raises
        ------
        ConfigError
            If the state is malformed.
        """
        try:
            radius = float(state["radius"])
            stretches = [np.asarray(w, dtype=np.float64) for w in state["stretches"]]
            if "noise" in state:
                noise: Any = state["noise"]
                compared: Any = np.asarray(state["compared"], dtype=bool)
            else:  # written before noise levels: the old radius per cell on every feature
                n_feat = stretches[0].shape[1] if stretches and stretches[0].ndim == 2 else 1
                noise, compared, radius = np.full(n_feat, radius), None, 1.0
            memory = cls(
                noise,
                radius,
                int(state["max_stretches"]),
                int(state["max_points"]),
                compared,
                float(state.get("max_distance", 0.5)),
            )
            for stretch in stretches:
                memory.add(stretch)
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise ConfigError(f"a normal-memory state is incomplete or malformed: {exc}") from exc
        return memory


# ---------------------------------------------------------------------------- promotion
def labelled_metrics(
    scores: npt.ArrayLike, masks: LabelMasks, window: int = 10, threshold: float | None = None
) -> dict[str, float] | None:
    """VUS-PR and F1 of ``scores`` on the labelled points only (anomaly against normal, in
    index order); ``f1`` at ``threshold`` when given, else the best F1 over thresholds on
    these labels. None without both a labelled anomaly and a labelled normal point.
    """
    s = np.asarray(scores, dtype=np.float64)
    use = masks.anomaly | masks.normal
    y = masks.anomaly[use].astype(np.int8)
    if not y.any() or y.all():
        return None
    x = s[use]
    x = np.where(np.isfinite(x), x, np.nanmin(x) if np.isfinite(x).any() else 0.0)
    f1 = best_f1(y, x)[0] if threshold is None else pointwise_prf(y, x > threshold)[2]
    return {"vus_pr": float(vus_pr(y, x, window)), "f1": float(f1)}


def compare_on_labels(new: Mapping[str, float], old: Mapping[str, float]) -> bool:
    """The promotion rule with labels: the new version wins when its VUS-PR on the labelled
    history is at least the active one's and its F1 there is not lower either."""
    return new["vus_pr"] >= old["vus_pr"] and new["f1"] >= old["f1"]


def window_labels(point_labels: npt.ArrayLike, window: int) -> npt.NDArray[np.int8]:
    """Labels of the windows of a gap-free block, from per-point labels (1/0/-1), one per
    window ``[i, i + window)``: 1 when it holds a point labelled anomaly, 0 when its last point
    is labelled normal (and none anomaly), -1 otherwise. The causal score of a point is that
    of the window ending at it; a window holding an anomaly is never trained as normal."""
    lab = np.asarray(point_labels, dtype=np.int8)
    n = lab.shape[0] - window + 1
    if n <= 0:
        return np.empty(0, dtype=np.int8)
    anomalous = np.concatenate([[0], np.cumsum(lab == 1)])
    any_anomaly = (anomalous[window:] - anomalous[:-window]) > 0
    last = lab[window - 1 :]
    out = np.full(n, -1, dtype=np.int8)
    out[(last == 0) & ~any_anomaly] = 0
    out[any_anomaly] = 1
    return out
