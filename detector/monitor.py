"""Live detection: causal scoring of a stream, an online threshold, and anomaly events.

>>> monitor = det.monitor(sensitivity=60, min_duration=2)  # doctest: +SKIP
>>> out = monitor.update(new_points)  # doctest: +SKIP
>>> monitor.events  # doctest: +SKIP

Causal scores
-------------
A :class:`Monitor` follows ONE series (one key of a keyed model) and keeps what the model needs
to score points as they arrive: the last ``window - 1`` points of context (in input units, with
their observed mask), the last observed value of every feature, and the index position of the
last point. The score of point ``t`` uses data up to ``t`` only: it is the error of ``t`` as the
last point of the window that ends at ``t`` (window weight, error normalisation, feature weights
and ``smoothing`` as in batch scoring, see :mod:`detector.detector`). Batch scores average the
windows on both sides of a point; the benchmark's replay mode measures what that costs.

Missing data follows the model's policy, causally: index gaps of up to ``window`` missing steps
are re-inserted as unobserved rows, longer gaps start a new segment (the context is dropped and
the first ``window - 1`` points after it get a NaN score, never a flag); a missing cell is filled
with the feature's last observed value (the training mean before any), and filled cells never
count in a score.

Timestamps follow the library's policy (:mod:`detector.preprocessing`) as far as a stream can:
every row given gets an output, in the caller's order; a repeated timestamp (a clock change, a
re-sent row) with the same values as a point already seen at that time is that point (it gets
the point's outputs again and moves nothing on), with other values it is the next point. A
timestamp before the one before it, in a chunk or across calls, raises
:class:`~detector.errors.InputError` (a stream cannot put a point into its past: sort each
chunk, and send late data to training instead). The points of the stream's last timestamp are
remembered for that (at most :data:`TAIL_POINTS`).

Nothing depends on how the stream is cut: one point at a time, chunks of 7 or everything at once
give the same scores, thresholds, flags and events (to float tolerance of the network's batched
arithmetic).

Decisions and events
--------------------
The threshold is a :mod:`detector.decision` object fitted on the model's held-out causal scores
(``holdout_scores_``, kept with the model): DSPOT by default, which follows drift of the score
level upwards, floored at the static threshold of the held-out scores (``floor``: following
the level down flagged most points of smooth, cyclic series); ``threshold="conformal"`` holds a
``target`` alert rate instead (adaptive conformal inference). Points inside an open event do
not update it, until the event has been open for ``relearn_after`` points (default 100): then
it is taken for a lasting change of the normal level and the threshold learns from it again
(without this, a level shift flags every later point). ``sensitivity`` (0-100, default 50)
scales the threshold without retraining: every 25 points above 50 halve the excess over the
level (the whole threshold for the static and conformal methods, and DSPOT's floor), every 25
below double it.

A flagged point opens an event once at least ``min_duration`` of the last ``persistence`` points
(default ``min_duration``) are flagged; the event starts at the first flagged point among them.
It stays open while flags keep coming; ``merge_gap`` unflagged points in a row still continue it,
one more closes it. ``anomalous`` is a point's flag inside a confirmed event (so persistence cuts
isolated flags); ``event`` is the id of the open event a point belongs to.

These decisions and events are a :class:`Decider`'s, which a :class:`Monitor` is: one that
scores the stream itself. :func:`fit_decider` makes a bare one for scores of another origin,
fitted on their own held-out scores (the replay benchmark puts the baselines under the
monitor's threshold with it).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import CalibrationConfig
from .decision import Conformal, DSpot, StaticThreshold, Threshold, normalize, threshold_from_state
from .errors import ConfigError, InputError, NonNumericError
from .feedback import NormalMemory
from .preprocessing import _index_numbers, as_frame
from .thresholds import MIN_SCORES, calibrate

if TYPE_CHECKING:
    from .detector import Detector

#: Points of the stream's last timestamp kept to recognise a re-sent copy of one of them.
TAIL_POINTS = 64

__all__ = [
    "STATE_VERSION",
    "Decider",
    "Event",
    "Monitor",
    "MonitorOptions",
    "Points",
    "Scores",
    "fit_decider",
    "fit_decision",
]

#: Version of :meth:`Monitor.state_dict`'s layout.
STATE_VERSION = 1


class MonitorOptions(BaseModel):
    """Options of a :class:`Monitor`, validated (unknown names are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensitivity: float = Field(
        50.0,
        ge=0,
        le=100,
        description="0-100: higher flags more. Every 25 points above 50 halve the threshold's "
        "excess over the score level (DSPOT) or the threshold (static); below 50 double it.",
    )
    threshold: Literal["dspot", "conformal", "static"] = Field(
        "dspot",
        description="'dspot': DSPOT on the held-out causal scores, following drift of the score "
        "level online; 'conformal': adaptive conformal quantile of the held-out, then the latest "
        "normal, scores, held at the `target` alert rate; 'static': the model's calibration "
        "method on the held-out causal scores.",
    )
    target: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="conformal: target rate of flags among the points outside events.",
    )
    risk: float | None = Field(
        None, gt=0, lt=1, description="dspot: tail probability; default the model's POT risk."
    )
    depth: int = Field(
        100,
        ge=1,
        le=100_000,
        description="dspot: number of recent normal scores whose mean is the score level "
        "(at most half the held-out scores are used).",
    )
    min_duration: int = Field(
        1, ge=1, le=10_000, description="Flagged points (of the last `persistence`) an event needs."
    )
    persistence: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="N-of-M persistence: the M of the last M points; default min_duration.",
    )
    merge_gap: int = Field(
        0, ge=0, le=100_000, description="Unflagged points in a row that still continue an event."
    )
    relearn_after: int | None = Field(
        100,
        ge=0,
        le=10_000_000,
        description="An event open this many points is taken for a lasting change: the "
        "threshold learns from its points again (None: never), so that a shift of the normal "
        "level does not keep an event open for ever.",
    )
    log: bool = Field(
        False, description="dspot: run on log scores (for multiplicative drift of the errors)."
    )
    floor: bool = Field(
        True,
        description="dspot: the threshold never falls below the static threshold of the "
        "held-out causal scores (times the sensitivity scale), so that following the level "
        "cannot flag what normal held-out scores reach.",
    )
    expected: bool = Field(False, description="Add expected.<feature> columns to update().")
    max_events: int = Field(
        1000, ge=1, le=1_000_000, description="Events kept in Monitor.events (latest)."
    )
    top_features: int = Field(3, ge=1, le=1000, description="Features listed per event.")

    @model_validator(mode="after")
    def _check_persistence(self) -> MonitorOptions:
        if self.persistence is not None and self.persistence < self.min_duration:
            raise ValueError(
                f"persistence ({self.persistence}) must be at least min_duration "
                f"({self.min_duration}): min_duration flags are counted among the last "
                "persistence points"
            )
        return self

    @property
    def scale(self) -> float:
        """The threshold scale of :attr:`sensitivity`."""
        return float(2.0 ** ((50.0 - self.sensitivity) / 25.0))

    @property
    def window_m(self) -> int:
        """The M of N-of-M persistence."""
        return self.persistence or self.min_duration


@dataclass
class Event:
    """A group of flagged points.

    Attributes
    ----------
    id : int
        1, 2, ... in order of start, per monitor.
    start, end
        Index labels of the first and the last flagged point.
    peak, mean : float
        Highest and mean normalised score of its flagged points.
    severity : float
        In [0, 1]: ``1 - 1 / peak`` (0 at the threshold, 0.5 at twice it).
    top_features : list of (str, float)
        The features with the largest share of its flagged points' scores, share in [0, 1].
    status : {"open", "closed"}
    n_points : int
        Number of flagged points.
    """

    id: int
    start: Any
    end: Any
    peak: float
    mean: float
    severity: float
    top_features: list[tuple[str, float]]
    status: Literal["open", "closed"]
    n_points: int


@dataclass
class _OpenEvent:
    """Accumulators of the event that is open (positions are index numbers)."""

    id: int
    start: int
    end: int
    peak: float
    total: float
    n_points: int
    contributions: list[float]
    quiet: int = 0
    age: int = 0  # points decided since it opened

    def state(self) -> dict[str, Any]:
        """As :func:`dataclasses.asdict` gives it, built directly (written for every point
        inside an event; the generic walk took about 0.2 ms each under a profiler)."""
        return {
            "id": self.id,
            "start": self.start,
            "end": self.end,
            "peak": self.peak,
            "total": self.total,
            "n_points": self.n_points,
            "contributions": list(self.contributions),
            "quiet": self.quiet,
            "age": self.age,
        }


@dataclass
class _Recent:
    """One of the last M decided points, for N-of-M persistence."""

    pos: int
    flagged: bool
    normalized: float
    contributions: list[float] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """As :func:`dataclasses.asdict` gives it, built directly (a state is written for
        every point of a stream; the generic walk was a tenth of it)."""
        return {
            "pos": self.pos,
            "flagged": self.flagged,
            "normalized": self.normalized,
            "contributions": list(self.contributions),
        }


@dataclass(frozen=True)
class Points:
    """New points of one series as arrays: a chunk for :meth:`Monitor.update_points`.

    Attributes
    ----------
    values : ndarray, shape (T, F)
        The model's features in ``feature_names_in_`` order; NaN is a missing value.
    index : Index, shape (T,)
        Indexed like the training data (a ``DatetimeIndex`` or integers), in time order (a
        repeated timestamp as in the module docstring).
    key : str, optional
        The series' key (required by a model with a key column).
    """

    values: np.ndarray
    index: pd.Index
    key: str | None = None


@dataclass(frozen=True)
class Scores:
    """:meth:`Monitor.update`'s columns as arrays of one chunk (T points).

    ``event`` holds the open event's id or -1 outside events; ``expected`` is (T, F) with
    ``expected=True``, else None.
    """

    score: np.ndarray
    normalized: np.ndarray
    threshold: np.ndarray
    anomalous: np.ndarray
    event: np.ndarray
    expected: np.ndarray | None = None

    def take(self, rows: np.ndarray | slice) -> Scores:
        """These rows, in this order (a slice: views)."""
        expected = None if self.expected is None else self.expected[rows]
        return Scores(
            self.score[rows],
            self.normalized[rows],
            self.threshold[rows],
            self.anomalous[rows],
            self.event[rows],
            expected,
        )

    def then(self, other: Scores) -> Scores:
        """These rows followed by ``other``'s."""
        expected = None
        if self.expected is not None and other.expected is not None:
            expected = np.concatenate([self.expected, other.expected])
        return Scores(
            np.concatenate([self.score, other.score]),
            np.concatenate([self.normalized, other.normalized]),
            np.concatenate([self.threshold, other.threshold]),
            np.concatenate([self.anomalous, other.anomalous]),
            np.concatenate([self.event, other.event]),
            expected,
        )

    def frame(self, index: pd.Index, names: Sequence[str] = ()) -> pd.DataFrame:
        """``score``, ``normalized``, ``threshold``, ``anomalous``, ``event`` (Int64) on
        ``index``, then ``expected.<name>`` for ``names`` when ``expected`` is held (built in
        one go: adding columns one by one costs more than the rest for a few points)."""
        columns: dict[str, Any] = {
            "score": self.score,
            "normalized": self.normalized,
            "threshold": self.threshold,
            "anomalous": self.anomalous,
            "event": pd.arrays.IntegerArray(self.event, self.event < 0),
        }
        if self.expected is not None:
            for j, name in enumerate(names):
                columns[f"expected.{name}"] = self.expected[:, j]
        return pd.DataFrame(columns, index=index)


@dataclass
class _Chunk:
    """A validated chunk: values (n, F) and index numbers (n,) of its new points, key and time
    zone; ``take``: for each of the caller's T rows, its new point (>= 0) or ``-1 - k`` for
    the stream's remembered point k it repeats (None: every row is a new point)."""

    values: np.ndarray
    positions: np.ndarray
    key: str
    tz: str | None
    zone: Any  # the index's time zone object (conditions encode with it)
    take: np.ndarray | None = None


@dataclass(frozen=True)
class _Tail:
    """The points of a stream's last timestamp and their outputs (at most
    :data:`TAIL_POINTS`), kept as the chunk that brought them, (n,) or (n, F) each, in time
    order, and cut out only when asked (a repeat is rare; a chunk is not): ``before``, the
    outputs and values of earlier points at the same time."""

    scores: Scores
    values: np.ndarray
    positions: np.ndarray
    before: tuple[Scores, np.ndarray] | None = None

    def rows(self) -> tuple[Scores, np.ndarray]:
        """The remembered points' outputs and values."""
        at = slice(int(np.searchsorted(self.positions, self.positions[-1])), None)
        scores, values = self.scores.take(at), self.values[at]
        if self.before is not None:
            scores = self.before[0].then(scores)
            values = np.concatenate([self.before[1], values])
        if len(values) <= TAIL_POINTS:
            return scores, values
        keep = slice(len(values) - TAIL_POINTS, None)
        return scores.take(keep), values[keep]

    def compact(self) -> _Tail:
        """The same points with nothing else held (copies, not views of the chunk)."""
        scores, values = self.rows()
        n = len(values)
        return _Tail(scores.take(np.arange(n)), values.copy(), np.full(n, self.positions[-1]))


@dataclass
class _Piece:
    """One gap-free run of a chunk between :meth:`Monitor._plan` and :meth:`Monitor._finish`:
    its rows after the context and, once the network ran, its errors."""

    monitor: Monitor
    fresh: bool
    offset: int  # its first point in the chunk
    real: np.ndarray  # row of all_* -> point of the run (-1: a re-inserted gap row)
    n_ctx: int
    all_values: np.ndarray
    all_observed: np.ndarray
    scaled: np.ndarray | None = None  # float32, when a window ends in the run
    cond: np.ndarray | None = None
    errors: np.ndarray | None = None
    recon: np.ndarray | None = None


class Decider:
    """Decisions and events over scores given in time order: the threshold and the event logic
    of a :class:`Monitor` (see the module docstring) without a model that scores the points.

    :class:`Monitor` is the one that scores a stream itself; build a bare one with
    :func:`fit_decider` to decide scores of another origin (a baseline's, in the replay
    benchmark) under exactly the monitor's rules. Every point is decided on its own, in order,
    so how the scores are cut into calls to :meth:`decide` changes nothing.

    Parameters
    ----------
    decision : Threshold
        The fitted threshold (:func:`fit_decision`).
    options : MonitorOptions
    feature_names : sequence of str
        The names an event's ``top_features`` use.
    """

    def __init__(
        self, decision: Threshold, options: MonitorOptions, feature_names: Sequence[str]
    ) -> None:
        self.options = options
        self.decision = decision
        self._feature_names = list(feature_names)
        self._recent: deque[_Recent] = deque(maxlen=options.window_m)
        self._open: _OpenEvent | None = None
        self._events: deque[Event] = deque(maxlen=options.max_events)
        # their JSON-able states, built once at close: every state written carries them
        self._event_states: deque[dict[str, Any]] = deque(maxlen=options.max_events)
        self._next_id = 1
        self._decided = 0  # points decided by decide(): its next index number

    def _keep(self, event: Event) -> None:
        """Keep a closed event (the latest ``max_events``) and its state."""
        self._events.append(event)
        self._event_states.append(_event_state(event))

    def forget_closed_events(self) -> None:
        """Forget the closed events kept so far (:attr:`events` keeps an open one; ids go on):
        for a caller that stores them elsewhere, so that neither the state nor the memory of
        a series that raises many events grows with them."""
        self._events.clear()
        self._event_states.clear()

    @property
    def events(self) -> list[Event]:
        """The events so far (the latest ``max_events``), in order of start; an open one last."""
        out = list(self._events)
        if self._open is not None:
            out.append(self._event(self._open, "open"))
        return out

    @property
    def threshold(self) -> float:
        """The threshold the next point will be judged against."""
        return self.decision.threshold

    def decide(self, scores: npt.ArrayLike) -> pd.DataFrame:
        """Decide points scored before, in order, through the threshold and the event logic of
        :meth:`Monitor.update` without scoring them again (a monitor's own causal scores, e.g.
        kept from a replay, to compare decision rules on the same scores; or a bare
        :class:`Decider`'s scores). Their index (and the events' labels) numbers the points
        decided by this object's calls to ``decide``: 0, 1, ... on a new one, continued by the
        next call; the events carry no feature shares.

        Returns
        -------
        DataFrame
            ``score``, ``normalized``, ``threshold``, ``anomalous``, ``event``.
        """
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        contributions = np.zeros((len(values), len(self._feature_names)))
        first = self._decided
        positions = np.arange(first, first + len(values), dtype=np.int64)
        self._decided += len(values)
        index = pd.RangeIndex(first, first + len(values))
        return self._decide_all(values, contributions, positions).frame(index)

    def _decide_all(
        self,
        scores: np.ndarray,
        contributions: np.ndarray,
        positions: np.ndarray,
        near: Callable[[int], bool] | None = None,
        expected: np.ndarray | None = None,
    ) -> Scores:
        """Decide scored points in order (see :meth:`_decide`); ``near``: whether a row's
        window matches the normal memory, asked only for flagged rows (None: no memory)."""
        n_rows = len(scores)
        thresholds = np.empty(n_rows)
        anomalous = np.zeros(n_rows, dtype=bool)
        ids = np.zeros(n_rows, dtype=np.int64)
        for i in range(n_rows):
            thresholds[i], anomalous[i], ev = self._decide(
                float(scores[i]),
                contributions[i],
                int(positions[i]),
                None if near is None else partial(near, i),
            )
            ids[i] = -1 if ev is None else ev
        return Scores(scores, normalize(scores, thresholds), thresholds, anomalous, ids, expected)

    # ------------------------------------------------------------------ decisions
    def _decide(
        self,
        score: float,
        contrib: np.ndarray,
        pos: int,
        near: Callable[[], bool] | None = None,
    ) -> tuple[float, bool, int | None]:
        """The threshold, the final flag and the event id of one point; updates the state.
        ``near``: whether its window matches the normal memory (a flag is then suppressed),
        asked only when the point is flagged."""
        opts = self.options
        op = self._open
        lasting = op is not None and opts.relearn_after is not None and op.age >= opts.relearn_after
        thr, flagged = self.decision.step(score, learn=op is None or lasting, learn_alarms=lasting)
        flagged = flagged and not (near is not None and near())
        norm = float(normalize(np.array([score]), thr)[0]) if flagged else 0.0
        shares = np.nan_to_num(contrib).tolist() if flagged else []
        self._recent.append(_Recent(pos, flagged, norm, shares))
        if op is not None:
            op.age += 1
            if flagged:
                self._extend(op, pos, norm, shares)
                op.quiet = 0
                return thr, True, op.id
            op.quiet += 1
            if op.quiet > opts.merge_gap:
                self._keep(self._event(op, "closed"))
                self._open = None
                return thr, False, None
            return thr, False, op.id
        if flagged and sum(r.flagged for r in self._recent) >= opts.min_duration:
            members = [r for r in self._recent if r.flagged]
            first = members[0]
            op = _OpenEvent(
                self._next_id,
                first.pos,
                first.pos,
                first.normalized,
                first.normalized,
                1,
                list(first.contributions),
            )
            for r in members[1:]:
                self._extend(op, r.pos, r.normalized, r.contributions)
            self._next_id += 1
            self._open = op
            return thr, True, op.id
        return thr, False, None

    @staticmethod
    def _extend(op: _OpenEvent, pos: int, norm: float, contrib: list[float]) -> None:
        op.end = pos
        op.peak = max(op.peak, norm)
        op.total += norm
        op.n_points += 1
        op.contributions = [a + b for a, b in zip(op.contributions, contrib, strict=True)]

    def _event(self, op: _OpenEvent, status: Literal["open", "closed"]) -> Event:
        names = self._feature_names
        contrib = np.nan_to_num(np.asarray(op.contributions, dtype=np.float64))
        total = float(contrib.sum())
        order = np.argsort(-contrib, kind="stable")[: self.options.top_features]
        top = [(names[i], float(contrib[i] / total) if total > 0 else 0.0) for i in order]
        peak = float(op.peak)
        return Event(
            id=op.id,
            start=self._label(op.start),
            end=self._label(op.end),
            peak=peak,
            mean=float(op.total / op.n_points),
            severity=float(min(max(1.0 - 1.0 / peak, 0.0), 1.0)) if peak > 0 else 0.0,
            top_features=top,
            status=status,
            n_points=op.n_points,
        )

    def _label(self, pos: int) -> Any:
        """The index label of an index number (a bare decider's: the number itself)."""
        return int(pos)


class Monitor(Decider):
    """Causal scoring, an online threshold and events for one series of a fitted detector.

    Build it with :meth:`Detector.monitor <detector.detector.Detector.monitor>`; see the module
    docstring for the rules.

    Parameters
    ----------
    detector : Detector
        Fitted (and, for the held-out scores, fitted or loaded by this version of ReconAD).
    **options
        :class:`MonitorOptions` fields.

    Raises
    ------
    ConfigError
        For invalid options.
    NotFittedError
        If the detector is not fitted.
    """

    def __init__(
        self, detector: Detector, *, _decision: Threshold | None = None, **options: Any
    ) -> None:
        detector._check_fitted()
        opts = _options(options)
        self.detector = detector
        # ``_decision``: a restored threshold (``from_state``), so no refit on the held-out scores
        decision = _fit_decision(detector, opts) if _decision is None else _decision
        super().__init__(decision, opts, detector.feature_names_in_)
        self._reset_stream()
        self._key: str | None = None
        self._tz: str | None = None
        self._last_pos: int | None = None
        self._tail: _Tail | None = None  # the points at _last_pos, for a re-sent copy
        self._factor = 1.0
        self.memory: NormalMemory | None = None

    def _reset_stream(self) -> None:
        """Forget the context: the start of the stream or a gap longer than a window."""
        n_feat = self.detector.n_features_in_
        self._ctx_values = np.empty((0, n_feat))  # (k, F) input units, filled
        self._ctx_observed = np.empty((0, n_feat), dtype=bool)  # (k, F)
        self._ctx_stamps = np.empty(0)  # (k,) index numbers (interpolated for gap rows)
        self._last_seen = np.full(n_feat, np.nan)  # last observed value per feature
        self._smooth = np.empty((0, n_feat))  # last smoothing - 1 contribution rows

    # ------------------------------------------------------------------ public API
    def update(self, frame: pd.DataFrame | pd.Series) -> pd.DataFrame:
        """Score and decide new points of the series.

        Parameters
        ----------
        frame : DataFrame or Series, shape (T, F)
            The model's feature columns (and its key column, one value for the whole stream),
            indexed like the training data, in time order from the last point seen on (a
            repeated timestamp follows the module docstring's policy).

        Returns
        -------
        DataFrame on ``frame.index``
            ``score``, ``normalized``, ``threshold``, ``anomalous`` (bool), ``event`` (Int64 id
            or missing), and ``expected.<feature>`` with ``expected=True``.

        Raises
        ------
        InputError
            (and subclasses) for columns, values, index kind or order the stream cannot take;
            the monitor's state is unchanged then.
        """
        return Monitor.update_many([self], [frame])[0]

    @staticmethod
    def update_many(
        monitors: Sequence[Monitor], frames: Sequence[pd.DataFrame | pd.Series]
    ) -> list[pd.DataFrame]:
        """:meth:`update` of several monitors (e.g. one per series of a keyed model), each with
        its own chunk: the same outputs and states as calling each monitor's ``update`` in turn
        (to float tolerance), with the windows of all of them scored in one pass of the
        network for each model among them.

        Raises
        ------
        InputError
            If a monitor is listed twice, the lengths differ, or a chunk is invalid (as
            :meth:`update`); every monitor's state is unchanged then.
        """
        checked = [as_frame(frame) for frame in frames]
        chunks = Monitor._checked(
            monitors, checked, lambda m, f: m._validate(f) if len(f) else None
        )
        scored = Monitor._advance_many(monitors, chunks)
        return [
            m._output(out, frame.index)
            for m, out, frame in zip(monitors, scored, checked, strict=True)
        ]

    @staticmethod
    def update_points(monitors: Sequence[Monitor], points: Sequence[Points]) -> list[Scores]:
        """:meth:`update_many` without frames: chunks as arrays (:class:`Points`) in, arrays
        (:class:`Scores`) out. The same numbers, without the frame work that dominates the
        cost of a chunk of a few points (a caller that holds arrays already, such as a service
        applying the points of many series at once, saves building and reading frames).

        Raises
        ------
        InputError
            As :meth:`update_many`; every monitor's state is unchanged then.
        """
        chunks = Monitor._checked(
            monitors, points, lambda m, p: m._validate_points(p) if len(p.index) else None
        )
        return Monitor._advance_many(monitors, chunks)

    @staticmethod
    def _checked(
        monitors: Sequence[Monitor],
        inputs: Sequence[Any],
        validate: Callable[[Monitor, Any], _Chunk | None],
    ) -> list[_Chunk | None]:
        """The validated chunks of every monitor, before any state changes."""
        if len(monitors) != len(inputs):
            raise InputError(f"{len(monitors)} monitors but {len(inputs)} chunks; give one each")
        if len({id(m) for m in monitors}) != len(monitors):
            raise InputError("a monitor is listed twice; join its points into one chunk")
        return [validate(m, x) for m, x in zip(monitors, inputs, strict=True)]

    @staticmethod
    def _advance_many(monitors: Sequence[Monitor], chunks: Sequence[_Chunk | None]) -> list[Scores]:
        """Score and decide validated chunks (None: an empty one), moving the monitors on."""
        plans: list[list[_Piece]] = []
        for monitor, chunk in zip(monitors, chunks, strict=True):
            plans.append([] if chunk is None else monitor._plan(chunk))
        by_model: dict[int, list[_Piece]] = {}
        for pieces in plans:
            for piece in pieces:
                if piece.scaled is not None:
                    by_model.setdefault(id(piece.monitor.detector), []).append(piece)
        for pieces in by_model.values():
            det = pieces[0].monitor.detector
            blocks = [(p.scaled, p.cond) for p in pieces if p.scaled is not None]
            reconstruct = any(p.monitor.options.expected for p in pieces)
            results = det._causal_errors_many(blocks, reconstruct)
            for piece, (errors, recon) in zip(pieces, results, strict=True):
                piece.errors, piece.recon = errors, recon
        out: list[Scores] = []
        for monitor, chunk, pieces in zip(monitors, chunks, plans, strict=True):
            if chunk is None:
                out.append(monitor._empty_scores())
                continue
            new = monitor._finish(chunk, pieces) if pieces else monitor._empty_scores()
            out.append(monitor._settle(chunk, new))
        return out

    def _settle(self, chunk: _Chunk, new: Scores) -> Scores:
        """The outputs of the caller's rows from those of the chunk's new points (a repeat
        gets its point's), and the points of the stream's last timestamp remembered."""
        out = new
        if chunk.take is not None:
            seen, _ = self._tail_rows()
            take = chunk.take
            out = seen.then(new).take(np.where(take < 0, -1 - take, len(seen.score) + take))
        if len(chunk.positions):
            # every new point at the old tail's time: they join it; else the tail starts anew
            joins = self._tail is not None and chunk.positions[-1] == self._tail.positions[-1]
            before = self._tail_rows() if joins else None
            tail = _Tail(new, chunk.values, chunk.positions, before)
            self._tail = tail if len(chunk.positions) <= TAIL_POINTS else tail.compact()
        return out

    def _tail_rows(self) -> tuple[Scores, np.ndarray]:
        """The outputs and values of the remembered points (none: empty)."""
        if self._tail is None:
            return self._empty_scores(), np.empty((0, self.detector.n_features_in_))
        return self._tail.rows()

    def _empty_scores(self) -> Scores:
        n_feat = self.detector.n_features_in_
        empty = np.empty(0)
        return Scores(
            empty,
            empty,
            empty,
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype=np.int64),
            np.empty((0, n_feat)) if self.options.expected else None,
        )

    def _output(self, scored: Scores, index: pd.Index) -> pd.DataFrame:
        """:meth:`update`'s frame of arrays."""
        names = self.detector.feature_names_in_
        if len(index) == 0:
            columns = ["score", "normalized", "threshold", "anomalous", "event"]
            if self.options.expected:
                columns += [f"expected.{f}" for f in names]
            empty = pd.DataFrame(index=index, columns=columns)
            return empty.astype({"anomalous": bool, "event": "Int64"})
        return scored.frame(index, names)

    @property
    def feedback_factor(self) -> float:
        """The product of the threshold factors :meth:`apply_feedback` applied (1: none; a
        new model version starts at 1)."""
        return self._factor

    def apply_feedback(
        self,
        scale: float | None = None,
        memory: NormalMemory | None = None,
        relearn_after: int | None = None,
    ) -> None:
        """Take what labels taught (:mod:`detector.feedback`) into the live decisions.

        Parameters
        ----------
        scale : float, optional
            A re-fitted threshold factor (:attr:`ThresholdRefit.scale
            <detector.feedback.ThresholdRefit.scale>`): the current threshold becomes
            ``scale`` times itself and the online threshold adapts from there; factors
            compose. A factor belongs to the model it was re-fitted on: a new model version
            (:meth:`with_detector`) starts from its own calibration (re-fit it on the new
            version's scores when labels allow).
        memory : NormalMemory, optional
            Confirmed-normal windows: a flagged point whose causal window matches one raises
            no flag and opens no event (it still does not update the threshold). Replaces the
            memory held; it is kept in :meth:`state_dict`.
        relearn_after : int, optional
            The option's value after labels (:meth:`LastingRuns.relearn_after
            <detector.feedback.LastingRuns.relearn_after>`: longer than the longest confirmed
            anomaly); None leaves it. Kept in the options (so in :meth:`state_dict`, and
            across :meth:`with_detector`: it is the series' property, not the model's).
        """
        if relearn_after is not None:
            self.options = self.options.model_copy(update={"relearn_after": int(relearn_after)})
        if scale is not None:
            self.decision.rescale(scale)
            self._factor *= float(scale)
        if memory is not None:
            self.memory = memory

    def with_detector(self, detector: Detector) -> Monitor:
        """The same stream handed to a new model (version) of the same features.

        The context, the open event (same id, so no second alert), the past events, the
        persistence buffer, the sensitivity and the normal memory (windows in input units)
        carry over; the threshold is the new model's, fitted on its own held-out scores
        (scores of two models are not on one scale), without the old one's feedback factor. With a
        longer window than the old model's, the first points after the switch lack context
        and get NaN scores until it fills.

        Raises
        ------
        InputError
            If the new model has other features.
        """
        if detector.feature_names_in_ != self.detector.feature_names_in_:
            raise InputError(
                f"the new model has features {detector.feature_names_in_}, the stream "
                f"{self.detector.feature_names_in_}; a stream keeps its features across versions"
            )
        return Monitor.handed_over(detector, self.state_dict())

    @classmethod
    def handed_over(cls, detector: Detector, state: dict[str, Any]) -> Monitor:
        """:meth:`with_detector` from a saved state: the stream that ``state`` (from
        :meth:`state_dict` of a monitor of another model, or version, of the same features)
        describes, handed to ``detector`` without the model that wrote it, which may be gone
        (a deleted version, say). ``state`` itself is not changed.

        Raises
        ------
        ConfigError
            If the state is not one this version writes, or holds another number of features.
        """
        if not isinstance(state, dict) or not isinstance(state.get("stream"), dict):
            return Monitor.from_state(detector, state)  # raises, saying what it got
        window = detector.window_
        stream = {**state["stream"], "smooth": []}
        for name in ("values", "observed", "stamps"):
            stream[name] = stream[name][-(window - 1) :] if window > 1 else []
        feedback = {**(state.get("feedback") or {}), "factor": 1.0}
        moved = {**state, "decision": None, "feedback": feedback, "stream": stream}
        return Monitor.from_state(detector, moved)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream, as plain JSON-able data."""
        return {
            "version": STATE_VERSION,
            "options": self.options.model_dump(mode="json"),
            "decision": self.decision.state_dict(),
            "key": self._key,
            "tz": self._tz,
            "last_pos": self._last_pos,
            "stream": {
                "values": _rows(self._ctx_values),
                "observed": self._ctx_observed.astype(int).tolist(),
                "stamps": [float(v) for v in self._ctx_stamps],
                "last_seen": _rows(self._last_seen[None, :])[0],
                "smooth": _rows(self._smooth),
                "tail": self._tail_state(),
            },
            "recent": [r.state() for r in self._recent],
            "open": None if self._open is None else self._open.state(),
            "events": [dict(e) for e in self._event_states],
            "next_id": self._next_id,
            "feedback": {
                "factor": self._factor,
                "memory": None if self.memory is None else self.memory.state_dict(),
            },
        }

    @classmethod
    def from_state(cls, detector: Detector, state: dict[str, Any]) -> Monitor:
        """Restore a monitor written by :meth:`state_dict`; it decides exactly as the one that
        wrote the state would have.

        Raises
        ------
        ConfigError
            If the state is not one this version writes.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(
                f"monitor state version {got!r} is not readable; this version of ReconAD "
                f"reads version {STATE_VERSION}"
            )
        try:
            saved = state["decision"]
            decision = None if saved is None else threshold_from_state(saved)
            monitor = cls(detector, _decision=decision, **state["options"])
            n_feat = detector.n_features_in_
            stream = state["stream"]
            monitor._ctx_values = _array(stream["values"], n_feat)
            monitor._ctx_observed = _array(stream["observed"], n_feat).astype(bool)
            monitor._ctx_stamps = np.asarray(stream["stamps"], dtype=np.float64)
            monitor._last_seen = _array([stream["last_seen"]], n_feat)[0]
            monitor._smooth = _array(stream["smooth"], n_feat)
            monitor._key, monitor._tz = state["key"], state["tz"]
            last = state["last_pos"]
            monitor._last_pos = None if last is None else int(last)
            monitor._restore_tail(stream.get("tail"))  # absent in states of earlier versions
            monitor._recent.extend(_Recent(**r) for r in state["recent"])
            monitor._open = None if state["open"] is None else _OpenEvent(**state["open"])
            for e in state["events"]:
                monitor._keep(monitor._event_from_state(e))
            monitor._next_id = int(state["next_id"])
            feedback = state.get("feedback") or {}  # absent in states of earlier versions
            monitor._factor = float(feedback.get("factor", 1.0))
            if feedback.get("memory") is not None:
                monitor.memory = NormalMemory.from_state(feedback["memory"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the monitor state is incomplete or malformed: {exc}") from exc
        return monitor

    def _tail_state(self) -> dict[str, Any] | None:
        """The points of the stream's last timestamp and their outputs, for a repeat."""
        if self._tail is None:
            return None
        t, values = self._tail.rows()
        return {
            "values": _rows(values),
            "scores": _rows(np.column_stack([t.score, t.normalized, t.threshold])),
            "anomalous": t.anomalous.astype(bool).tolist(),
            "event": t.event.astype(int).tolist(),
            "expected": None if t.expected is None else _rows(t.expected),
        }

    def _restore_tail(self, tail: dict[str, Any] | None) -> None:
        if tail is None:
            return
        n_feat = self.detector.n_features_in_
        scores = _array(tail["scores"], 3)
        expected = tail["expected"]
        values = _array(tail["values"], n_feat)
        outputs = Scores(
            scores[:, 0],
            scores[:, 1],
            scores[:, 2],
            np.asarray(tail["anomalous"], dtype=bool),
            np.asarray(tail["event"], dtype=np.int64),
            None if expected is None else _array(expected, n_feat),
        )
        self._tail = _Tail(outputs, values, np.full(len(values), self._last_pos))

    # ------------------------------------------------------------------ input
    def _validate(self, frame: pd.DataFrame) -> _Chunk:
        """The checked values, index numbers, key and time zone of a new chunk."""
        det = self.detector
        pre = det.preprocessor_
        values = self._fast_values(frame)
        if values is None:  # the full checks, for their messages
            pre._select_features(frame, fitting=False)
            values = pre._numeric_values(frame, det.feature_names_in_)
        pre.check_index_kind(frame.index)
        key = ""
        if pre.config.key_column is not None:
            column = frame[pre.config.key_column]
            if column.isna().any():
                raise InputError(f"the key column {pre.config.key_column!r} has missing values")
            keys = list(dict.fromkeys(str(v) for v in column.to_numpy(dtype=object)))
            if len(keys) > 1:
                raise InputError(
                    f"a monitor follows one series but got keys {list(keys)[:5]}; use one "
                    "monitor per key"
                )
            key = str(keys[0])
        return self._check_chunk(values, frame.index, key)

    def _validate_points(self, points: Points) -> _Chunk:
        """:meth:`_validate` of a chunk given as arrays."""
        det = self.detector
        pre = det.preprocessor_
        names = det.feature_names_in_
        values = np.asarray(points.values)
        if values.ndim != 2 or values.shape != (len(points.index), len(names)):
            raise InputError(
                f"values must have shape (points, features) = ({len(points.index)}, "
                f"{len(names)}) in the order {names}, got {values.shape}"
            )
        if values.dtype.kind not in "biuf":
            raise NonNumericError(f"values must be numbers, got dtype {values.dtype}")
        values = values.astype(np.float64, copy=False)
        if np.isinf(values).any() or (det.config.missing == "error" and np.isnan(values).any()):
            pre._numeric_values(pd.DataFrame(values, columns=names), names)  # raises, explained
        key_column = pre.config.key_column
        if key_column is None and points.key:
            raise InputError("this model has no key column, so it has one series: give no key")
        if key_column is not None and points.key is None:
            raise InputError(
                f"this model serves several series (key column {key_column!r}): give the key"
            )
        return self._check_chunk(values, points.index, points.key or "")

    def _check_chunk(self, values: np.ndarray, index: pd.Index, key: str) -> _Chunk:
        """The checks of a chunk's index and key against the model and the stream so far."""
        pre = self.detector.preprocessor_
        pre.check_index_kind(index)
        positions = _index_numbers(index)
        down = np.flatnonzero(np.diff(positions) < 0)
        if down.size:
            raise InputError(
                f"the index must be increasing: point {index[down[0] + 1]} comes after "
                f"{index[down[0]]}; a stream cannot put a point into its past, so sort each "
                "chunk by time"
            )
        if self._key is not None and key != self._key:
            raise InputError(f"this monitor follows key {self._key!r}, got key {key!r}")
        zone = getattr(index, "tz", None)
        if pre.conditions is not None:  # refuse what the kind cannot encode (an unseen key)
            pre.conditions.encode(positions[:1], key, zone)
        tz = None if zone is None else str(zone)
        if self._last_pos is not None and self._tz != tz:
            raise InputError(
                f"the stream's timestamps are in time zone {self._tz}, got {tz}; send the same"
            )
        if self._last_pos is not None and positions[0] < self._last_pos:
            raise InputError(
                f"point {index[0]} is before the last point of the stream "
                f"({self._label(self._last_pos)}); a stream takes points in time order (late "
                "data belongs in training data)"
            )
        repeats = self._repeats(values, positions)
        if repeats is None:
            return _Chunk(values, positions, key, tz, zone)
        take, new = repeats
        return _Chunk(values[new], positions[new], key, tz, zone, take)

    def _repeats(
        self, values: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:attr:`_Chunk.take` of a chunk in time order and the rows of its new points (None
        without a repeated timestamp): a row with the timestamp and the values (NaN equal to
        NaN) of a point before it at that time is that point, else a new one."""
        before = positions[0] - 1 if self._last_pos is None else self._last_pos
        repeated = positions == np.append(before, positions[:-1])
        if not repeated.any():
            return None
        take = np.empty(len(positions), dtype=np.int64)
        new: list[int] = []
        same_time: list[tuple[int, np.ndarray]] = []  # (take value, values) at positions[i]
        if positions[0] == self._last_pos:  # the tail (if any) is at the last position
            same_time = [(-1 - k, row) for k, row in enumerate(self._tail_rows()[1])]
        for i, row in enumerate(values):
            if not repeated[i]:
                same_time = []
            match = next(
                (ref for ref, seen in same_time if np.array_equal(seen, row, equal_nan=True)),
                None,
            )
            if match is None:
                match = len(new)
                new.append(i)
                same_time.append((match, row))
            take[i] = match
        return take, np.asarray(new, dtype=np.int64)

    def _fast_values(self, frame: pd.DataFrame) -> np.ndarray | None:
        """The feature values (T, F) when the chunk is plainly valid, else None (the caller then
        runs the preprocessor's checks, which explain what is wrong)."""
        det = self.detector
        names = det.feature_names_in_
        key = det.config.key_column
        expected = len(names) + (key is not None)
        if len(frame.columns) != expected or not all(isinstance(c, str) for c in frame.columns):
            return None
        if list(frame.columns) == names:
            raw = frame.to_numpy()
            if raw.dtype.kind not in "biuf":
                return None
            values = raw.astype(np.float64, copy=False)
        else:
            if frame.columns.has_duplicates or not set(names) <= set(frame.columns):
                return None
            columns = [frame[name] for name in names]  # by column: no frame copy
            if not all(c.dtype.kind in "biuf" for c in columns):
                return None
            values = np.column_stack([c.to_numpy(dtype=np.float64) for c in columns])
        if np.isinf(values).any():
            return None
        if det.config.missing == "error" and np.isnan(values).any():
            return None
        return values

    def _pieces(self, positions: np.ndarray) -> list[tuple[int, int, bool]]:
        """Runs ``[lo, hi)`` of the chunk without a gap longer than a window; ``fresh``: the
        run starts a new segment."""
        step = self.detector.preprocessor_.step_
        prev = np.concatenate(
            [[positions[0] if self._last_pos is None else self._last_pos], positions[:-1]]
        )
        gaps = np.maximum(np.rint((positions - prev) / step).astype(np.int64), 1) - 1
        breaks = np.nonzero(gaps > self.detector.window_)[0].tolist()
        starts = sorted({0, *breaks})
        bounds = [*starts, len(positions)]
        out = []
        for lo, hi in itertools.pairwise(bounds):
            fresh = (lo == 0 and self._last_pos is None) or lo in breaks
            out.append((lo, hi, fresh))
        return out

    # ------------------------------------------------------------------ scoring
    def _plan(self, chunk: _Chunk) -> list[_Piece]:
        """The gap-free runs of a validated chunk, ready for the network; moves the context,
        the last observed values, the key and the last position on (what does not depend on
        the network's output; :meth:`_finish` does the rest)."""
        if not len(chunk.positions):
            return []  # only repeats of points seen: nothing moves on
        smooth = self._smooth  # carried through the runs by _finish
        pieces = []
        for lo, hi, fresh in self._pieces(chunk.positions):
            if fresh:
                self._reset_stream()
            pieces.append(self._plan_piece(chunk, lo, hi, fresh))
        self._smooth = smooth
        self._key, self._tz = chunk.key, chunk.tz
        self._last_pos = int(chunk.positions[-1])
        return pieces

    def _plan_piece(self, chunk: _Chunk, lo: int, hi: int, fresh: bool) -> _Piece:
        """One gap-free run ``[lo, hi)`` of the chunk: its rows after the context (gap rows
        re-inserted, cells filled), scaled for the network when a window ends in it."""
        det = self.detector
        pre, window = det.preprocessor_, det.window_
        step = pre.step_
        values, positions = chunk.values[lo:hi], chunk.positions[lo:hi]
        last = self._ctx_stamps[-1] if len(self._ctx_stamps) else None
        prev = np.concatenate([[positions[0] - step if last is None else last], positions[:-1]])
        steps = np.maximum(np.rint((positions - prev) / step).astype(np.int64), 1)
        offsets = np.cumsum(steps) - steps[0] + (steps[0] - 1 if last is not None else 0)
        length = int(offsets[-1]) + 1
        raw = np.full((length, values.shape[1]), np.nan)
        raw[offsets] = values
        real = np.full(length, -1, dtype=np.int64)
        real[offsets] = np.arange(len(positions))
        base = positions[0] - offsets[0] * step
        stamps = base + step * np.arange(length, dtype=np.float64)
        stamps[offsets] = positions
        observed = ~np.isnan(raw)
        carried = _ffill(np.vstack([self._last_seen[None, :], raw]))
        self._last_seen = carried[-1].copy()  # NaN: never observed in this segment
        filled = np.where(np.isnan(carried[1:]), pre.center_, carried[1:])
        all_values = np.vstack([self._ctx_values, filled])
        all_observed = np.vstack([self._ctx_observed, observed])
        all_stamps = np.concatenate([self._ctx_stamps, stamps])
        piece = _Piece(self, fresh, lo, real, len(self._ctx_values), all_values, all_observed)
        if len(all_values) >= window:
            piece.scaled = ((all_values - pre.center_) / pre.scale_).astype(np.float32)
            if pre.conditions is not None:
                piece.cond = pre.conditions.encode(all_stamps, chunk.key, chunk.zone)
        keep_n = window - 1
        self._ctx_values = all_values[-keep_n:] if keep_n else all_values[:0]
        self._ctx_observed = all_observed[-keep_n:] if keep_n else all_observed[:0]
        self._ctx_stamps = all_stamps[-keep_n:] if keep_n else all_stamps[:0]
        return piece

    def _finish(self, chunk: _Chunk, pieces: list[_Piece]) -> Scores:
        """Scores of a planned chunk from its runs' network errors, then the decisions."""
        det = self.detector
        pre, window = det.preprocessor_, det.window_
        n_rows, n_feat = len(chunk.positions), det.n_features_in_
        scores = np.full(n_rows, np.nan)
        contributions = np.full((n_rows, n_feat), np.nan)
        expected = np.full((n_rows, n_feat), np.nan) if self.options.expected else None
        near = _MemoryCheck(self.memory, pre.scale_, n_rows)
        buffer = self._smooth
        for piece in pieces:
            if piece.fresh:
                buffer = np.empty((0, n_feat))
            if piece.scaled is None or piece.errors is None:
                continue
            first = window - 1  # row of all_* that the first window ends at
            rows_obs = piece.all_observed[first:]
            contrib = det._contributions(piece.errors, rows_obs, piece.scaled[first:])
            contrib, buffer = _smooth(contrib, buffer, det.config.smoothing)
            row_scores = contrib.sum(axis=1)
            row_scores[~rows_obs.any(axis=1)] = np.nan
            # map the scored rows back to the chunk's points
            target = np.arange(first, len(piece.all_values)) - piece.n_ctx  # position in piece
            keep = target >= 0
            idx = piece.real[target[keep]]
            point = idx >= 0
            out_rows = piece.offset + idx[point]
            scores[out_rows] = row_scores[keep][point]
            contributions[out_rows] = contrib[keep][point]
            if expected is not None and piece.recon is not None:
                expected[out_rows] = piece.recon[keep][point] * pre.scale_ + pre.center_
            if near.active:
                windows = np.lib.stride_tricks.sliding_window_view(
                    piece.all_values, (window, n_feat)
                )[:, 0]  # (n_scored, W, F)
                near.add(windows, out_rows, np.flatnonzero(keep)[point])
        self._smooth = buffer
        check = near if near.active else None
        return self._decide_all(scores, contributions, chunk.positions, check, expected)

    def _label(self, pos: int) -> Any:
        """The index label of an index number (a timestamp for a datetime-indexed model)."""
        if self.detector.preprocessor_.index_kind_ == "datetime":
            return pd.Timestamp(pos, tz=self._tz)
        return int(pos)

    def _event_from_state(self, e: dict[str, Any]) -> Event:
        return Event(
            id=int(e["id"]),
            start=self._label(int(e["start"])),
            end=self._label(int(e["end"])),
            peak=float(e["peak"]),
            mean=float(e["mean"]),
            severity=float(e["severity"]),
            top_features=[(str(n), float(v)) for n, v in e["top_features"]],
            status=e["status"],
            n_points=int(e["n_points"]),
        )


class _MemoryCheck:
    """Whether a chunk's row's causal window matches the normal memory, asked only for the
    flagged rows (a few in a hundred), so that a memory costs a stream almost nothing."""

    def __init__(self, memory: NormalMemory | None, scale: np.ndarray, n_rows: int) -> None:
        self.memory = memory
        self.active = memory is not None and len(memory) > 0
        self._scale = scale
        self._windows: list[np.ndarray] = []
        self._piece = np.full(n_rows, -1, dtype=np.int64)
        self._at = np.zeros(n_rows, dtype=np.int64)

    def add(self, windows: np.ndarray, rows: np.ndarray, at: np.ndarray) -> None:
        """``windows`` (n, W, F) of one piece; chunk ``rows`` have the windows ``at``."""
        self._piece[rows] = len(self._windows)
        self._at[rows] = at
        self._windows.append(windows)

    def __call__(self, row: int) -> bool:
        piece = int(self._piece[row])
        if self.memory is None or piece < 0:
            return False
        window = self._windows[piece][int(self._at[row])]
        return bool(self.memory.matches(window[None], self._scale)[0])


def fit_decider(
    holdout_scores: npt.ArrayLike,
    calibration: CalibrationConfig | None = None,
    feature_names: Sequence[str] = ("score",),
    **options: Any,
) -> Decider:
    """A bare :class:`Decider`: a monitor's decision and events for scores of another origin.

    Parameters
    ----------
    holdout_scores : array_like
        Scores of held-out normal data on the scale of the scores to decide; the threshold is
        fitted on them as a monitor's is on its detector's held-out causal scores.
    calibration : CalibrationConfig, optional
        What a detector's config would give (the static method of DSPOT's floor and of
        ``threshold="static"``, DSPOT's default risk and initial level); default
        ``CalibrationConfig()``, a default detector's.
    feature_names : sequence of str
        The names of the events' ``top_features``.
    **options
        :class:`MonitorOptions` fields (the monitor's defaults when none).

    Raises
    ------
    ConfigError
        For invalid options.
    InputError
        With fewer than :data:`~detector.thresholds.MIN_SCORES` finite held-out scores.
    """
    opts = _options(options)
    decision = fit_decision(holdout_scores, calibration or CalibrationConfig(), opts)
    return Decider(decision, opts, feature_names)


def fit_decision(
    holdout_scores: npt.ArrayLike, calibration: CalibrationConfig, options: MonitorOptions
) -> Threshold:
    """The threshold of ``options`` fitted on held-out scores (see the module docstring);
    ``calibration`` as in :func:`fit_decider`.

    Raises
    ------
    InputError
        With fewer than :data:`~detector.thresholds.MIN_SCORES` finite scores.
    """
    scores = np.asarray(holdout_scores, dtype=np.float64).reshape(-1)
    n_finite = int(np.isfinite(scores).sum())
    if n_finite < MIN_SCORES:
        raise InputError(
            f"{n_finite} finite held-out scores are too few to fit a threshold (at least "
            f"{MIN_SCORES})"
        )
    if options.threshold == "conformal":
        return Conformal(options.target, scale=options.scale).fit(scores)
    cal = calibration
    config = cal if cal.method != "best_f1" else cal.model_copy(update={"method": "pot"})
    static = StaticThreshold(calibrate(scores, config), options.scale)
    if options.threshold == "static":
        return static
    depth = max(1, min(options.depth, len(scores) // 2))
    risk = options.risk if options.risk is not None else cal.risk
    floor = static.threshold if options.floor else None
    return DSpot(
        risk, cal.init_level, depth, scale=options.scale, log=options.log, floor=floor
    ).fit(scores)


def _fit_decision(detector: Detector, options: MonitorOptions) -> Threshold:
    """The monitor's threshold, fitted on the detector's held-out causal scores."""
    scores = getattr(detector, "holdout_scores_", None)
    if scores is None or np.isfinite(scores).sum() < MIN_SCORES:
        raise InputError(
            "this model has too few held-out causal scores for a monitor (fitted by an older "
            "version, or with a very short validation split); refit it"
        )
    return fit_decision(scores, detector.config.calibration, options)


def _options(options: dict[str, Any]) -> MonitorOptions:
    """Validated monitor options."""
    try:
        return MonitorOptions(**options)
    except ValidationError as exc:
        raise ConfigError(f"invalid monitor options: {_describe(exc)}") from None


def _ffill(arr: np.ndarray) -> np.ndarray:
    """Forward fill of NaN along axis 0 (each column carries its last non-NaN value)."""
    if not np.isnan(arr).any():
        return arr
    rows = np.where(~np.isnan(arr), np.arange(arr.shape[0])[:, None], 0)  # (T, F)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return np.take_along_axis(arr, rows, axis=0)


def _smooth(
    contrib: np.ndarray, buffer: np.ndarray, smoothing: int
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean over ``smoothing`` rows (NaN rows skipped, as in batch scoring), carried
    across calls by the last ``smoothing - 1`` rows."""
    if smoothing <= 1:
        return contrib, buffer
    stacked = np.vstack([buffer, contrib])
    out = pd.DataFrame(stacked).rolling(smoothing, min_periods=1).mean().to_numpy()
    return out[len(buffer) :], stacked[-(smoothing - 1) :]


def _rows(arr: np.ndarray) -> list[list[float | None]]:
    """Rows of floats for JSON (NaN as None)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in arr.tolist()]


def _array(rows: list[list[Any]], n_feat: int) -> np.ndarray:
    arr = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64
    )
    return arr.reshape(len(rows), n_feat)


def _event_state(e: Event) -> dict[str, Any]:
    out = asdict(e)
    for name in ("start", "end"):
        label = out[name]
        out[name] = int(label.value) if isinstance(label, pd.Timestamp) else int(label)
    out["top_features"] = [[n, v] for n, v in e.top_features]
    return out


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}" for err in exc.errors()
    )
