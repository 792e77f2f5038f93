"""The decision layer: threshold objects that turn scores into flags and normalised scores.

Models reconstruct; thresholds decide. Everything in this project that turns scores into flags
calls :func:`flags` (the rule: a point is anomalous iff ``score > threshold``, strictly, and a NaN
score is never flagged) and :func:`normalize` (``score / threshold``: above 1 means flagged).

A :class:`Threshold` is fitted on held-out scores and may follow the scored stream online:

- :class:`StaticThreshold` wraps one of the static methods of :mod:`detector.thresholds`
  (quantile, MAD, POT, best-F1); it never moves.
- :class:`DSpot` is DSPOT (Siffer et al., "Anomaly Detection in Streams with Extreme Value
  Theory", KDD 2017, algorithm 4, written from the paper): the threshold is ``M_t + z``, with
  ``M_t`` the mean of the last ``depth`` normal scores (it follows drift of the level) and ``z``
  the POT quantile of the residuals ``score - M_t`` at probability ``risk``. A normal residual
  above the tail's start ``t`` is a new peak: the GPD tail is refitted and ``z`` recomputed
  (once the new peaks are 5% of all; every new one while there are fewer than 20). An alarm
  (a score above the threshold) changes nothing. With ``log=True`` it runs
  on ``log(score + offset)``: reconstruction errors drift multiplicatively (when the level of
  the errors doubles, so does their spread), which the log turns into the additive drift DSPOT
  follows; the threshold is ``exp(M_t + z) - offset`` in score units.
- :class:`Conformal` is adaptive conformal inference (Gibbs & Candes, "Adaptive Conformal
  Inference Under Distribution Shift", NeurIPS 2021, written from the paper): the threshold is
  the conformal ``1 - alpha_t`` quantile of a reference set (the held-out scores, then the
  latest normal scores of the stream, so it follows the level), and after every learnt point
  ``alpha_{t+1} = alpha_t + gamma (target - err_t)``, ``err_t`` its flag. Over any stream the
  share of flags among the learnt points stays within ``(max(alpha_1, 1 - alpha_1) + gamma) /
  (gamma T)`` of ``target`` (their proposition 4.1), whatever the shift of the scores.

Online thresholds learn only from the points the caller says are normal (:meth:`Threshold.update`
with ``learn=True``); the monitor never passes points inside an open anomaly event, so an anomaly
cannot raise its own bar. ``scale`` multiplies the part of the threshold that a sensitivity knob
should move (the whole threshold of a static method, the excess ``z`` of DSPOT) without refitting.

Every threshold has a plain JSON-able :meth:`~Threshold.state_dict`; :func:`threshold_from_state`
rebuilds it exactly (floats survive JSON), so a restored object makes the same decisions.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .config import CalibrationConfig
from .errors import ConfigError, InputError
from .thresholds import (
    Calibration,
    _check_open_unit,
    _clean_scores,
    _pot_quantile,
    _tail_fit,
    calibrate,
)

__all__ = [
    "Conformal",
    "DSpot",
    "StaticThreshold",
    "Threshold",
    "flags",
    "normalize",
    "threshold_from_state",
]

FloatArray = npt.NDArray[np.float64]

_MAX_LOG = 700.0  # exp() of more overflows a float: such a threshold is as good as infinite


def flags(scores: npt.ArrayLike, threshold: float | npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The one flag rule: ``score > threshold`` (strictly); NaN scores are never flagged.

    Parameters
    ----------
    scores : array_like of shape (n,)
    threshold : float or array_like of shape (n,)
        One threshold, or one per score (online thresholds).
    """
    with np.errstate(invalid="ignore"):
        return np.greater(np.asarray(scores, dtype=np.float64), threshold)


def normalize(scores: npt.ArrayLike, threshold: float | npt.ArrayLike) -> FloatArray:
    """Scores in units of the threshold, ``score / threshold``: above 1 iff flagged.

    A threshold that is not positive (only possible for degenerate held-out scores) maps
    positive scores to ``inf`` and the rest to 0, which keeps "above 1 iff flagged" for
    non-negative scores. NaN scores stay NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    if np.ndim(threshold) == 0:  # one threshold (the scoring hot path): no broadcast copies
        t = float(threshold)  # type: ignore[arg-type]
        with np.errstate(divide="ignore", invalid="ignore"):
            if t > 0:
                return s / t
            return np.where(s > 0, np.inf, np.where(np.isnan(s), np.nan, 0.0))
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), s.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(thr > 0, s / np.where(thr > 0, thr, 1.0), np.where(s > 0, np.inf, 0.0))
    return np.where(np.isnan(s), np.nan, out)


class Threshold(ABC):
    """A fitted threshold; online ones move with :meth:`update`."""

    method: ClassVar[str]
    online: ClassVar[bool] = False

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = _check_scale(scale)

    @property
    @abstractmethod
    def threshold(self) -> float:
        """The current threshold in score units (``scale`` applied)."""

    def update(self, score: float, learn: bool = True) -> None:  # noqa: B027 - static: no-op
        """Take one scored point into account (``learn=False``: the point is not normal)."""

    def flags(self, scores: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Flags at the current threshold (see :func:`flags`)."""
        return flags(scores, self.threshold)

    def normalize(self, scores: npt.ArrayLike) -> FloatArray:
        """Scores in units of the current threshold (see :func:`normalize`)."""
        return normalize(scores, self.threshold)

    def step(
        self, score: float, learn: bool = True, learn_alarms: bool = False
    ) -> tuple[float, bool]:
        """Decide one point, then update: the threshold it was judged against and its flag.

        ``learn`` is ANDed with "not flagged": an alarm never updates the threshold, except
        with ``learn_alarms`` (a lasting change that is to become the new normal), which moves
        only the level (:meth:`relevel`), never the tail of normal excesses.
        """
        thr = self.threshold
        flagged = bool(score > thr)  # NaN: False
        if math.isfinite(score):
            if flagged and learn and learn_alarms:
                self.relevel(score)
            else:
                self.update(score, learn and not flagged)
        return thr, flagged

    def rescale(self, factor: float) -> None:
        """Move the current threshold to ``factor`` times itself by changing ``scale`` (what
        labels re-fit, :mod:`detector.feedback`); an online threshold keeps adapting from
        there. The static threshold's whole value scales."""
        self.scale = _check_scale(self.scale * factor)

    def relevel(self, score: float) -> None:  # noqa: B027 - static: no level to move
        """Let the level (not the tail) follow a score that is to become the new normal."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; ``method`` names the class for :func:`threshold_from_state`."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: Mapping[str, Any]) -> Threshold: ...


def _check_scale(scale: float) -> float:
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"a threshold scale must be a positive number, got {scale!r}")
    return value


class StaticThreshold(Threshold):
    """A threshold fixed at calibration time (quantile, MAD, POT or best-F1).

    Parameters
    ----------
    calibration : Calibration
        The result of :func:`detector.thresholds.calibrate`.
    scale : float
        Multiplies the calibrated threshold.
    """

    method = "static"

    def __init__(self, calibration: Calibration, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.calibration = calibration

    @classmethod
    def fit(
        cls,
        scores: npt.ArrayLike,
        config: CalibrationConfig,
        labels: npt.ArrayLike | None = None,
        scale: float = 1.0,
    ) -> StaticThreshold:
        """Calibrate on held-out scores with ``config``'s method (see
        :func:`~detector.thresholds.calibrate`, which raises on unusable scores)."""
        return cls(calibrate(scores, config, labels), scale)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold * self.scale

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scale": self.scale,
            "calibration": self.calibration.to_dict(),
        }

    @classmethod
    def _from_state(cls, state: Mapping[str, Any]) -> StaticThreshold:
        return cls(Calibration.from_dict(state["calibration"]), float(state["scale"]))


class DSpot(Threshold):
    """DSPOT: SPOT on residuals from a moving average of the normal scores (see the module
    docstring).

    Parameters
    ----------
    risk : float
        Probability that a normal residual exceeds ``z``, in ``(0, 1)``.
    init_level : float
        Quantile of the initial residuals where the tail starts, in ``(0, 1)``.
    depth : int
        Number of recent normal scores whose mean is the local level ``M_t``.
    max_peaks : int
        The tail is fitted on at most the latest ``max_peaks`` peaks (a bounded state; older
        peaks leave in order, and the count ``n`` is scaled down with them).
    scale : float
        Multiplies ``z`` (the sensitivity knob).
    log : bool
        Run on ``log(score + offset)``, ``offset`` a millionth of the held-out median score
        (see the module docstring).
    floor : float, optional
        The threshold never falls below it (in score units; the monitor passes the static
        threshold of the held-out scores). Without a floor, a level that follows only the
        points below the threshold ratchets down on smooth, cyclic scores: the high phase of
        the cycle is flagged, so never learnt, and the level keeps following the low phase
        (on NAB's daily series this flagged most of the held-out scores themselves).
    """

    method = "dspot"
    online = True

    def __init__(
        self,
        risk: float = 1e-3,
        init_level: float = 0.98,
        depth: int = 100,
        max_peaks: int = 2000,
        scale: float = 1.0,
        log: bool = False,
        floor: float | None = None,
    ) -> None:
        super().__init__(scale)
        self.log = bool(log)
        self.floor = None if floor is None else float(floor)
        self._offset = 0.0
        self.risk = _check_open_unit("risk", risk)
        self.init_level = _check_open_unit("init_level", init_level)
        if depth < 1 or max_peaks < 10:
            raise ConfigError(f"depth must be >= 1 and max_peaks >= 10, got {depth}, {max_peaks}")
        self.depth, self.max_peaks = int(depth), int(max_peaks)
        self._window: deque[float] = deque(maxlen=self.depth)
        self._peaks: deque[float] = deque()
        self._t = self._z = math.nan
        self._gamma = self._sigma = 0.0
        self._n = 0
        self._fresh = 0  # peaks since the last tail fit

    def fit(self, scores: npt.ArrayLike) -> DSpot:
        """Initialise on held-out normal scores, in time order (NaN dropped).

        Raises
        ------
        InputError
            With fewer than ``depth + 10`` finite scores, or an infinite score.
        """
        x = _clean_scores(scores)
        if self.log:
            if (x < 0).any():
                raise InputError("DSPOT with log=True needs non-negative scores; use log=False")
            median = float(np.median(x))
            self._offset = 1e-6 * median if median > 0 else 1e-12
            x = np.log(x + self._offset)
        if x.shape[0] < self.depth + 10:
            raise InputError(
                f"DSPOT with depth {self.depth} needs at least {self.depth + 10} held-out scores, "
                f"got {x.shape[0]}; use a smaller depth or more held-out data"
            )
        csum = np.concatenate([[0.0], np.cumsum(x)])
        level = (csum[self.depth : -1] - csum[: -self.depth - 1]) / self.depth  # M_i, i >= depth
        residuals = x[self.depth :] - level
        self._t = float(np.quantile(residuals, self.init_level))
        peaks = residuals[residuals > self._t] - self._t
        self._peaks = deque(peaks[-self.max_peaks :].tolist())
        self._n = residuals.shape[0]
        self._window = deque(x[-self.depth :].tolist(), maxlen=self.depth)
        self._refit()
        return self

    def _refit(self) -> None:
        self._fresh = 0
        self._gamma, self._sigma = _tail_fit(np.asarray(self._peaks))
        self._z = _pot_quantile(
            self._t, self._gamma, self._sigma, self.risk, self._n, len(self._peaks)
        )

    @property
    def level(self) -> float:
        """``M_t``: the mean of the last ``depth`` normal (log) scores."""
        return math.fsum(self._window) / len(self._window)

    @property
    def threshold(self) -> float:
        thr = self.level + self._z * self.scale
        value = math.exp(min(thr, _MAX_LOG)) - self._offset if self.log else thr
        return value if self.floor is None else max(value, self.floor)

    def update(self, score: float, learn: bool = True) -> None:
        """A normal score moves the level; its residual above ``t`` is a new peak."""
        if not learn:
            return
        if self.log:
            score = math.log(max(score, 0.0) + self._offset)
        residual = score - self.level
        self._n += 1
        if residual > self._t:
            self._peaks.append(residual - self._t)
            if len(self._peaks) > self.max_peaks:
                self._peaks.popleft()
                self._n = max(self._n - round(self._n / self.max_peaks), len(self._peaks))
            self._fresh += 1
            # the tail is refitted once the new peaks are 5% of them (each new peak while there
            # are fewer than 20): a fit costs O(peaks), and 5% more peaks barely move it, so a
            # stream rich in peaks (a floor above the level) does not fit on every point
            if self._fresh >= max(1, len(self._peaks) // 20):
                self._refit()
        self._window.append(float(score))

    def rescale(self, factor: float) -> None:
        """The excess ``z * scale`` is set so that the current threshold becomes ``factor``
        times itself (in log units with ``log=True``); the level keeps following the stream,
        so later thresholds are the level plus the re-fitted excess. A threshold that cannot
        be reached with a positive excess (below the current level) keeps a tiny one. The
        floor moves by ``factor`` too. A factor of 1 changes nothing (also where the floor is
        the threshold: the excess under it stays, so the threshold follows the level as
        before)."""
        if _check_scale(factor) == 1.0:
            return
        target = factor * self.threshold
        if self.floor is not None:
            self.floor *= factor
        level = self.level
        goal = math.log(max(target + self._offset, 1e-300)) if self.log else target
        if not (self._z > 0 and math.isfinite(self._z)):
            return
        self.scale = _check_scale(max((goal - level) / self._z, 1e-6))

    def relevel(self, score: float) -> None:
        """The score joins the moving average only: no peak, no refit."""
        self._window.append(math.log(max(score, 0.0) + self._offset) if self.log else score)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scale": self.scale,
            "risk": self.risk,
            "init_level": self.init_level,
            "depth": self.depth,
            "max_peaks": self.max_peaks,
            "log": self.log,
            "floor": self.floor,
            "offset": self._offset,
            "window": list(self._window),
            "peaks": list(self._peaks),
            "t": self._t,
            "z": self._z,
            "gamma": self._gamma,
            "sigma": self._sigma,
            "n": self._n,
            "fresh": self._fresh,
        }

    @classmethod
    def _from_state(cls, state: Mapping[str, Any]) -> DSpot:
        obj = cls(
            float(state["risk"]),
            float(state["init_level"]),
            int(state["depth"]),
            int(state["max_peaks"]),
            float(state["scale"]),
            bool(state["log"]),
            None if state.get("floor") is None else float(state["floor"]),
        )
        obj._offset = float(state["offset"])
        obj._window = deque((float(v) for v in state["window"]), maxlen=obj.depth)
        obj._peaks = deque(float(v) for v in state["peaks"])
        obj._t, obj._z = float(state["t"]), float(state["z"])
        obj._gamma, obj._sigma = float(state["gamma"]), float(state["sigma"])
        obj._n = int(state["n"])
        obj._fresh = int(state.get("fresh", 0))
        return obj


class Conformal(Threshold):
    """Adaptive conformal thresholding with a target alert rate (see the module docstring).

    A point that is learnt (outside an open event) updates ``alpha`` with its flag, and its
    score joins the reference set when it is not flagged (so a flagged point never raises the
    bar); points the caller does not learn from (inside an event) change nothing. The target
    is thus the rate of flags that START or make up a decision outside events: with
    ``min_duration = 1`` the rate of new events per point outside events.

    Parameters
    ----------
    target : float
        Target alert rate among learnt points, in ``(0, 1)``.
    gamma : float, optional
        Step of ``alpha``, in ``(0, 1)``; default ``target / 20``, the paper's ratio (0.005 for
        a target of 0.1): a flag then takes 5% of the target off ``alpha``, so that one false
        alarm does not blind the threshold (with the paper's absolute 0.005 and a target of
        0.01, two flags in a row would set ``alpha`` below 0: no flag for hundreds of points).
        Larger follows shifts faster, smaller keeps the threshold steadier.
    size : int
        The reference set holds the latest ``size`` learnt normal scores (at first the last
        ``size`` held-out ones).
    scale : float
        Multiplies the threshold (the sensitivity knob; ``alpha`` then adapts from there).
    """

    method = "conformal"
    online = True

    def __init__(
        self,
        target: float = 0.01,
        gamma: float | None = None,
        size: int = 5000,
        scale: float = 1.0,
    ) -> None:
        super().__init__(scale)
        self.target = _check_open_unit("target", target)
        self.gamma = _check_open_unit("gamma", self.target / 20 if gamma is None else gamma)
        if size < 10:
            raise ConfigError(f"the conformal reference size must be >= 10, got {size}")
        self.size = int(size)
        self.alpha = self.target
        self._window: deque[float] = deque(maxlen=self.size)
        self._sorted: list[float] = []

    def fit(self, scores: npt.ArrayLike) -> Conformal:
        """The reference set: the last ``size`` held-out scores (NaN dropped), in time order.

        Raises
        ------
        InputError
            With too few finite scores, or an infinite score.
        """
        x = _clean_scores(scores)
        self._set_window(x[-self.size :].tolist())
        self.alpha = self.target
        return self

    def _set_window(self, values: list[float]) -> None:
        self._window = deque(values, maxlen=self.size)
        self._sorted = sorted(self._window)

    @property
    def threshold(self) -> float:
        """The conformal ``1 - alpha`` quantile of the reference, ``ceil((n + 1)(1 - alpha))``-th
        smallest: ``inf`` (no flag) when ``alpha`` is too small for ``n`` scores, below every
        score when ``alpha >= 1``."""
        n = len(self._sorted)
        if self.alpha >= 1:
            return -math.inf
        k = math.ceil((n + 1) * (1.0 - self.alpha))
        if k > n:
            return math.inf
        return self._sorted[max(k, 1) - 1] * self.scale

    def step(
        self, score: float, learn: bool = True, learn_alarms: bool = False
    ) -> tuple[float, bool]:
        """Decide one point; a learnt point moves ``alpha`` by its flag (an alarm included:
        that is the feedback that keeps the rate), a learnt normal one joins the reference.
        ``learn_alarms`` (a lasting change): a flagged score joins the reference, ``alpha``
        stays."""
        thr = self.threshold
        flagged = bool(score > thr)  # NaN: False
        if math.isfinite(score) and learn:
            if flagged and learn_alarms:
                self.relevel(score)
            else:
                self.alpha += self.gamma * (self.target - float(flagged))
                if not flagged:
                    self._add(score)
        return thr, flagged

    def update(self, score: float, learn: bool = True) -> None:
        """A normal score (learnt, judged at the current threshold) joins the reference and
        moves ``alpha``."""
        if learn and math.isfinite(score):
            self.step(score)

    def relevel(self, score: float) -> None:
        """The score joins the reference set only."""
        self._add(float(score))

    def _add(self, score: float) -> None:
        if len(self._window) == self.size:
            old = self._window[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._window.append(score)
        bisect.insort(self._sorted, score)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scale": self.scale,
            "target": self.target,
            "gamma": self.gamma,
            "size": self.size,
            "alpha": self.alpha,
            "window": list(self._window),
        }

    @classmethod
    def _from_state(cls, state: Mapping[str, Any]) -> Conformal:
        obj = cls(
            float(state["target"]), float(state["gamma"]), int(state["size"]), float(state["scale"])
        )
        obj.alpha = float(state["alpha"])
        obj._set_window([float(v) for v in state["window"]])
        return obj


_CLASSES: dict[str, type[Threshold]] = {c.method: c for c in (StaticThreshold, DSpot, Conformal)}


def threshold_from_state(state: Mapping[str, Any]) -> Threshold:
    """Rebuild a threshold from :meth:`Threshold.state_dict` output.

    Raises
    ------
    ConfigError
        If the state is not a mapping, names an unknown method or misses a field.
    """
    if not isinstance(state, Mapping) or state.get("method") not in _CLASSES:
        method = state.get("method") if isinstance(state, Mapping) else None
        raise ConfigError(
            f"unknown threshold state method {method!r}; expected one of {sorted(_CLASSES)}"
        )
    try:
        return _CLASSES[str(state["method"])]._from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"a threshold state is incomplete or malformed: {exc}") from exc
