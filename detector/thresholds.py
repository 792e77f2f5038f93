"""Threshold calibration: from held-out anomaly scores to one number.

Models only produce raw scores; a :class:`Calibration` turns them into flags with the rule used
everywhere in this project: a point is anomalous iff ``score > threshold`` (strictly).

Methods (selected by :class:`~detector.config.CalibrationConfig`):

- ``quantile``: the ``1 - fpr`` quantile of held-out normal scores (linear interpolation), so
  that about a fraction ``fpr`` of normal points is flagged.
- ``mad``: ``median + k * 1.4826 * MAD``; robust to a few anomalies in the held-out data.
- ``pot``: Peaks-Over-Threshold from extreme value theory, the initialisation step of SPOT
  (Siffer et al., "Anomaly Detection in Streams with Extreme Value Theory", KDD 2017). A
  generalised Pareto distribution (GPD) is fitted to the excesses over the ``init_level``
  quantile ``t`` and the threshold is the score exceeded with probability ``risk``.
- ``best_f1``: the threshold with the best F1 against labels the caller supplies.

GPD fit
-------
The excesses ``Y_1..Y_N`` over ``t`` are fitted by maximum likelihood with Grimshaw's
reduction, as in the SPOT paper: with ``x = gamma / sigma`` the likelihood maximised over
``(gamma, sigma)`` for a fixed ``x`` has ``gamma(x) = mean(log(1 + x * Y))`` and
``sigma = gamma(x) / x``, which leaves the one-dimensional profile log-likelihood
``-N * (log(gamma(x) / x) + gamma(x) + 1)``. Its stationary points are the roots Grimshaw's
procedure searches for; here the profile is maximised directly, on a grid over each of the
two admissible intervals ``x in (-1 / max(Y), 0)`` and ``x > 0`` refined by narrowing grids
around the best point (vectorised; a live DSPOT refits often, on few peaks), and compared
with the exponential tail ``gamma = 0, sigma = mean(Y)``; the candidate with the highest
likelihood wins. Shapes ``gamma <= -1`` (where the likelihood is unbounded)
are excluded. With fewer than :data:`MIN_PEAKS` excesses the exponential tail is used, and with
none the threshold is ``t`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import CalibrationConfig
from .errors import ConfigError, InputError, LabelsError, NonFiniteError, NotFittedError
from .evaluation import best_f1, score_vector

__all__ = [
    "MAD_SCALE",
    "MIN_PEAKS",
    "MIN_SCORES",
    "Calibration",
    "Spot",
    "best_f1_threshold",
    "calibrate",
    "mad_threshold",
    "pot_threshold",
    "quantile_threshold",
]

FloatArray = npt.NDArray[np.float64]

MIN_SCORES: int = 10
"""Fewest finite held-out scores a calibration accepts."""

MIN_PEAKS: int = 10
"""Fewest excesses over ``t`` for a full GPD fit; below this the exponential tail is used."""

MAD_SCALE: float = 1.4826
"""Makes the MAD a consistent estimator of the standard deviation for Gaussian data."""

_MEAN_AD_SCALE: float = math.sqrt(math.pi / 2.0)
"""Makes the mean absolute deviation a consistent estimator of the Gaussian standard deviation."""

_REL_EPS: float = math.sqrt(float(np.finfo(np.float64).eps))
"""Relative scale used by :func:`mad_threshold` when the held-out scores are constant."""


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and how it was obtained.

    Attributes
    ----------
    method : str
        ``"quantile"``, ``"mad"``, ``"pot"`` or ``"best_f1"``.
    params : dict of str to float
        The method's inputs and fitted values (for example ``t``, ``gamma``, ``sigma`` for POT).
    threshold : float
        Points with ``score > threshold`` are anomalous.
    """

    method: str
    params: dict[str, float]
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe representation: ``{"method", "params", "threshold"}``."""
        return {
            "method": str(self.method),
            "params": {str(k): float(v) for k, v in self.params.items()},
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Rebuild a calibration written by :meth:`to_dict`.

        Parameters
        ----------
        d : mapping
            With keys ``method`` (str), ``params`` (mapping of str to number) and
            ``threshold`` (finite number).

        Returns
        -------
        Calibration

        Raises
        ------
        ConfigError
            If a key is missing or unexpected, or a value has the wrong type or is not finite.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a calibration must be a mapping, got {type(d).__name__}")
        expected = {"method", "params", "threshold"}
        if set(d) != expected:
            raise ConfigError(
                f"a calibration needs exactly the keys {sorted(expected)}, got {sorted(d)}"
            )
        method, params, threshold = d["method"], d["params"], d["threshold"]
        if not isinstance(method, str):
            raise ConfigError(f"calibration method must be a string, got {method!r}")
        if not isinstance(params, Mapping):
            raise ConfigError("calibration params must be a mapping of names to numbers")
        clean: dict[str, float] = {}
        for k, v in params.items():
            if not isinstance(k, str) or not _is_finite_number(v):
                raise ConfigError(f"calibration param {k!r} must be a finite number, got {v!r}")
            clean[k] = float(v)
        if not _is_finite_number(threshold):
            raise ConfigError(f"calibration threshold must be a finite number, got {threshold!r}")
        return cls(method=method, params=clean, threshold=float(threshold))


def _is_finite_number(v: object) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _as_1d(scores: npt.ArrayLike) -> FloatArray:
    arr = score_vector(scores)
    if np.isinf(arr).any():
        raise NonFiniteError("scores contain +inf or -inf; calibration needs finite scores")
    return arr


def _check_count(n: int) -> None:
    if n < MIN_SCORES:
        raise InputError(
            f"calibration needs at least {MIN_SCORES} finite held-out scores, got {n}; "
            "more held-out data is needed"
        )


def _clean_scores(scores: npt.ArrayLike) -> FloatArray:
    """Held-out scores of shape (n,) with NaN dropped.

    Raises
    ------
    InputError
        If the scores are not a 1-D numeric array or fewer than :data:`MIN_SCORES` are finite.
    NonFiniteError
        If a score is ``+inf`` or ``-inf``.
    """
    arr = _as_1d(scores)
    arr = arr[~np.isnan(arr)]
    _check_count(arr.shape[0])
    return arr


def _check_open_unit(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ConfigError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return v


# ----------------------------------------------------------------------------------------------
# quantile and MAD
# ----------------------------------------------------------------------------------------------


def quantile_threshold(scores: npt.ArrayLike, fpr: float) -> float:
    """The ``1 - fpr`` quantile of held-out normal scores.

    Parameters
    ----------
    scores : array_like of shape (n,)
        Held-out scores of normal data; NaN values are dropped.
    fpr : float
        Target false-positive rate, in ``(0, 1)``.

    Returns
    -------
    float
        The threshold (linear interpolation between order statistics); about ``fpr * n``
        held-out scores lie strictly above it.

    Raises
    ------
    ConfigError
        If ``fpr`` is not in ``(0, 1)``.
    InputError
        If fewer than :data:`MIN_SCORES` finite scores remain, or a score is infinite.
    """
    q = _check_open_unit("fpr", fpr)
    x = _clean_scores(scores)
    return float(np.quantile(x, 1.0 - q))


def _mad_fit(x: FloatArray, k: float) -> dict[str, float]:
    median = float(np.median(x))
    dev = np.abs(x - median)
    mad = float(np.median(dev))
    if mad > 0.0:
        scale = MAD_SCALE * mad
    else:
        mean_ad = float(np.mean(dev))
        # more than half the scores equal the median: the mean absolute deviation, scaled to a
        # Gaussian standard deviation, still measures the spread of the rest; constant data
        # falls back to a relative epsilon of the median
        scale = _MEAN_AD_SCALE * mean_ad if mean_ad > 0.0 else _REL_EPS * max(abs(median), 1.0)
    threshold = median + k * scale
    if not threshold > median:  # k * scale below the float spacing at the median
        threshold = float(np.nextafter(median, np.inf))
    return {"k": k, "median": median, "mad": mad, "scale": scale, "threshold": threshold}


def mad_threshold(scores: npt.ArrayLike, k: float) -> float:
    """``median + k * 1.4826 * MAD`` of held-out normal scores.

    When the MAD is 0 (more than half of the scores are equal) the scale falls back to the mean
    absolute deviation from the median times ``sqrt(pi / 2)`` (the Gaussian-consistent factor),
    and for constant scores to ``sqrt(machine epsilon) * max(|median|, 1)``. The threshold is
    always strictly above the median.

    Parameters
    ----------
    scores : array_like of shape (n,)
        Held-out scores of normal data; NaN values are dropped.
    k : float
        Number of scaled MADs above the median; must be positive.

    Returns
    -------
    float
        The threshold.

    Raises
    ------
    ConfigError
        If ``k`` is not a positive finite number.
    InputError
        If fewer than :data:`MIN_SCORES` finite scores remain, or a score is infinite.
    """
    kk = float(k)
    if not (math.isfinite(kk) and kk > 0.0):
        raise ConfigError(f"k must be a positive number, got {k!r}")
    return _mad_fit(_clean_scores(scores), kk)["threshold"]


# ----------------------------------------------------------------------------------------------
# POT / SPOT
# ----------------------------------------------------------------------------------------------


def _profile_loglik(x: FloatArray, y: FloatArray) -> FloatArray:
    """GPD profile log-likelihood at ``x = gamma / sigma``; shapes (m,) and (N,) -> (m,).

    ``-inf`` where the fit is inadmissible (``gamma <= -1``, ``1 + x * Y <= 0``).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.log1p(np.multiply.outer(x, y)).mean(axis=-1)  # gamma(x)
        ll = -y.shape[0] * (np.log(g / x) + g + 1.0)
    return np.where(np.isfinite(ll) & (g > -1.0), ll, -np.inf)


def _fit_gpd(y: FloatArray) -> tuple[float, float]:
    """Maximum-likelihood ``(gamma, sigma)`` of a GPD (location 0) for excesses ``y > 0``."""
    n_peaks = y.shape[0]
    mean = float(np.mean(y))
    best_gamma, best_sigma = 0.0, mean
    best_ll = -n_peaks * (math.log(mean) + 1.0)  # exponential tail
    y_max = float(np.max(y))
    # x in (-1 / y_max, 0): shapes gamma < 0 (bounded tail); denser close to the left end
    u = np.concatenate((np.linspace(1e-4, 0.99, 100), 1.0 - np.geomspace(5e-3, 1e-9, 30)))
    neg = np.sort(-u / y_max)
    # x > 0: shapes gamma > 0 (heavy tail), x * mean(Y) from 1e-6 to 1e6
    pos = np.geomspace(1e-6, 1e6, 150) / mean
    for grid in (neg, pos):
        ll = _profile_loglik(grid, y)
        i = int(np.argmax(ll))
        if not np.isfinite(ll[i]):
            continue
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.shape[0] - 1)]
        x_best, ll_best = float(grid[i]), float(ll[i])
        if lo < hi:
            x_refined, ll_refined = _refine(float(lo), float(hi), y)
            if ll_refined > ll_best:
                x_best, ll_best = x_refined, ll_refined
        if ll_best > best_ll:
            gamma = float(np.mean(np.log1p(x_best * y)))
            best_gamma, best_sigma, best_ll = gamma, gamma / x_best, ll_best
    return best_gamma, best_sigma


#: Points of each refining grid, and how many times the bracket is narrowed around the best.
_REFINE_POINTS, _REFINE_ROUNDS = 17, 8


def _refine(lo: float, hi: float, y: FloatArray) -> tuple[float, float]:
    """The profile log-likelihood's maximum over ``[lo, hi]`` and its value: an even grid,
    narrowed to the best point's two neighbours (8x narrower) :data:`_REFINE_ROUNDS` times.

    Every round is one vectorised evaluation, so a fit costs a few dozen array operations
    whatever its precision (8 rounds leave a bracket 1.7e7 times narrower than the first,
    finer than the likelihood's curvature can tell); a scalar search spent most of a DSPOT
    update's time in Python calls, one per evaluation.
    """
    x_best, ll_best = lo, -math.inf
    for _ in range(_REFINE_ROUNDS):
        grid = np.linspace(lo, hi, _REFINE_POINTS)
        ll = _profile_loglik(grid, y)
        i = int(np.argmax(ll))
        if ll[i] > ll_best:
            x_best, ll_best = float(grid[i]), float(ll[i])
        lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, _REFINE_POINTS - 1)])
    return x_best, ll_best


def _pot_quantile(t: float, gamma: float, sigma: float, risk: float, n: int, n_peaks: int) -> float:
    """SPOT threshold ``z`` from the tail fit, never below ``t``."""
    if n_peaks == 0 or sigma <= 0.0:
        return t
    log_r = math.log(risk * n / n_peaks)
    # (r ** -gamma - 1) / gamma, written with expm1 to stay accurate for gamma close to 0
    growth = -log_r if gamma == 0.0 else math.expm1(-gamma * log_r) / gamma
    return max(t + sigma * growth, t)


def _tail_fit(excess: FloatArray) -> tuple[float, float]:
    if excess.shape[0] == 0:
        return 0.0, 0.0
    if excess.shape[0] < MIN_PEAKS:
        return 0.0, float(np.mean(excess))
    return _fit_gpd(excess)


def pot_threshold(
    scores: npt.ArrayLike, risk: float, init_level: float
) -> tuple[float, dict[str, float]]:
    """Peaks-Over-Threshold threshold (the SPOT initialisation).

    ``t`` is the ``init_level`` quantile of the scores, the ``N_t`` excesses ``score - t`` of the
    scores above ``t`` are fitted with a GPD (see the module docstring) and the threshold is
    ``z = t + sigma / gamma * ((risk * n / N_t) ** -gamma - 1)``, or
    ``z = t - sigma * log(risk * n / N_t)`` for ``gamma = 0``. ``z`` is never below ``t``: when
    ``risk >= N_t / n`` the tail model does not reach that far down and ``z = t``.

    Parameters
    ----------
    scores : array_like of shape (n,)
        Held-out scores of normal data; NaN values are dropped.
    risk : float
        Probability that a normal score exceeds the threshold, in ``(0, 1)``.
    init_level : float
        Quantile where the tail starts, in ``(0, 1)`` (typically 0.98).

    Returns
    -------
    threshold : float
        ``z``.
    params : dict of str to float
        ``t``, ``gamma``, ``sigma``, ``n_peaks`` (``N_t``) and ``n``.

    Raises
    ------
    ConfigError
        If ``risk`` or ``init_level`` is not in ``(0, 1)``.
    InputError
        If fewer than :data:`MIN_SCORES` finite scores remain, or a score is infinite.
    """
    r = _check_open_unit("risk", risk)
    level = _check_open_unit("init_level", init_level)
    x = _clean_scores(scores)
    t = float(np.quantile(x, level))
    excess = x[x > t] - t
    gamma, sigma = _tail_fit(excess)
    n, n_peaks = x.shape[0], excess.shape[0]
    z = _pot_quantile(t, gamma, sigma, r, n, n_peaks)
    params = {"t": t, "gamma": gamma, "sigma": sigma, "n_peaks": float(n_peaks), "n": float(n)}
    return z, params


class Spot:
    """Streaming SPOT detector (Siffer et al., KDD 2017), without drift correction.

    :meth:`fit` runs the POT initialisation on a batch of normal scores. Then every
    :meth:`step` either raises an alarm (``score > threshold``; the score is left out of the
    model) or counts the score as normal; a normal score above ``t`` is a new peak, the GPD is
    refitted and the threshold recomputed, as in the paper's algorithm.

    Parameters
    ----------
    risk : float
        Probability that a normal score exceeds the threshold, in ``(0, 1)``.
    init_level : float
        Quantile of the initial batch where the tail starts, in ``(0, 1)``.

    Raises
    ------
    ConfigError
        If ``risk`` or ``init_level`` is not in ``(0, 1)``.
    """

    def __init__(self, risk: float = 1e-3, init_level: float = 0.98) -> None:
        self.risk = _check_open_unit("risk", risk)
        self.init_level = _check_open_unit("init_level", init_level)
        self._t = math.nan
        self._peaks: list[float] = []
        self._n = 0
        self._gamma = 0.0
        self._sigma = 0.0
        self._z = math.nan
        self._fitted = False

    def fit(self, scores: npt.ArrayLike) -> Spot:
        """Initialise on normal scores.

        Parameters
        ----------
        scores : array_like of shape (n,)
            Initial batch of normal scores; NaN values are dropped.

        Returns
        -------
        Spot
            ``self``.

        Raises
        ------
        InputError
            If fewer than :data:`MIN_SCORES` finite scores remain, or a score is infinite.
        """
        z, params = pot_threshold(scores, self.risk, self.init_level)
        x = _clean_scores(scores)
        self._t = params["t"]
        self._peaks = (x[x > self._t] - self._t).tolist()
        self._n = x.shape[0]
        self._gamma, self._sigma, self._z = params["gamma"], params["sigma"], z
        self._fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError("call Spot.fit on initial normal scores before using it")

    @property
    def threshold(self) -> float:
        """The current threshold ``z``; a score above it raises an alarm.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        self._check_fitted()
        return self._z

    @property
    def params(self) -> dict[str, float]:
        """Current ``t``, ``gamma``, ``sigma``, ``n_peaks`` and ``n``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        self._check_fitted()
        return {
            "t": self._t,
            "gamma": self._gamma,
            "sigma": self._sigma,
            "n_peaks": float(len(self._peaks)),
            "n": float(self._n),
        }

    def step(self, score: float) -> bool:
        """Process one new score.

        Parameters
        ----------
        score : float
            The next score of the stream.

        Returns
        -------
        bool
            ``True`` (alarm) iff ``score > threshold``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        InputError
            If the score is NaN or infinite.
        """
        self._check_fitted()
        x = float(score)
        if not math.isfinite(x):
            raise InputError(f"Spot.step needs a finite score, got {score!r}")
        if x > self._z:
            return True
        self._n += 1
        if x > self._t:
            self._peaks.append(x - self._t)
            self._gamma, self._sigma = _tail_fit(np.asarray(self._peaks))
            self._z = _pot_quantile(
                self._t, self._gamma, self._sigma, self.risk, self._n, len(self._peaks)
            )
        return False


# ----------------------------------------------------------------------------------------------
# supervised
# ----------------------------------------------------------------------------------------------


def _aligned_labels(arr: FloatArray, labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != arr.shape[0]:
        raise LabelsError(
            f"labels have shape {lab.shape} but there are {arr.shape[0]} scores: "
            "pass one 0/1 label per score"
        )
    if lab.dtype != np.bool_ and (
        lab.dtype.kind not in "biuf" or not np.all((lab == 0) | (lab == 1))
    ):
        raise LabelsError("labels must contain only 0 (normal) and 1 (anomalous)")
    return np.asarray(lab == 1, dtype=np.bool_)


def _best_f1_fit(x: FloatArray, y: npt.NDArray[np.bool_]) -> tuple[float, float]:
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.shape[0]:
        raise LabelsError(
            "best-F1 calibration needs both normal (0) and anomalous (1) labels, "
            f"got {n_pos} anomalous of {y.shape[0]}"
        )
    f1, threshold = best_f1(y, x)
    return threshold, f1


def best_f1_threshold(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """The threshold maximising point-wise F1 against labels (sorted sweep, ``O(n log n)``).

    Parameters
    ----------
    scores : array_like of shape (n,)
        Scores; NaN scores are dropped together with their labels.
    labels : array_like of shape (n,)
        0/1 labels aligned with ``scores``.

    Returns
    -------
    threshold : float
        Flagging ``score > threshold`` gives the best F1: the midpoint between the lowest
        flagged score and the next lower one. Ties in F1 go to the highest threshold.
    f1 : float
        That F1 on these scores (optimistic for new data: the labels chose the threshold).

    Raises
    ------
    LabelsError
        If the labels are not 0/1, do not match the scores in length, or are all one class.
    InputError
        If fewer than :data:`MIN_SCORES` finite scores remain, or a score is infinite.
    """
    arr = _as_1d(scores)
    y = _aligned_labels(arr, labels)
    keep = ~np.isnan(arr)
    _check_count(int(np.count_nonzero(keep)))
    return _best_f1_fit(arr[keep], y[keep])


# ----------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------


def calibrate(
    scores: npt.ArrayLike, config: CalibrationConfig, labels: npt.ArrayLike | None = None
) -> Calibration:
    """Calibrate a threshold on held-out scores with the method of ``config``.

    NaN scores are dropped first (with their labels); the rest must be finite and at least
    :data:`MIN_SCORES` of them must remain.

    Parameters
    ----------
    scores : array_like of shape (n,)
        Held-out scores (normal data for ``quantile``, ``mad`` and ``pot``).
    config : CalibrationConfig
        ``method`` and its parameters: ``fpr`` (quantile), ``k`` (mad), ``risk`` and
        ``init_level`` (pot); ``best_f1`` needs ``labels``.
    labels : array_like of shape (n,), optional
        0/1 labels aligned with ``scores``; required by ``best_f1``, checked and otherwise
        unused by the other methods.

    Returns
    -------
    Calibration
        Method, parameters (inputs and fitted values) and threshold.

    Raises
    ------
    InputError
        If fewer than :data:`MIN_SCORES` finite scores remain (more held-out data is needed),
        or the scores are not a 1-D numeric array.
    NonFiniteError
        If a score is ``+inf`` or ``-inf``.
    LabelsError
        If ``best_f1`` is asked for without labels, or the labels do not match the scores.
    ConfigError
        If the method is unknown.
    """
    arr = _as_1d(scores)
    y = _aligned_labels(arr, labels) if labels is not None else None
    keep = ~np.isnan(arr)
    x = arr[keep]
    _check_count(x.shape[0])
    method = config.method
    n = float(x.shape[0])
    if method == "quantile":
        thr = quantile_threshold(x, config.fpr)
        return Calibration("quantile", {"fpr": config.fpr, "n": n}, thr)
    if method == "mad":
        fit = _mad_fit(x, float(config.k))
        thr = fit.pop("threshold")
        return Calibration("mad", {**fit, "n": n}, thr)
    if method == "pot":
        thr, params = pot_threshold(x, config.risk, config.init_level)
        return Calibration(
            "pot", {"risk": config.risk, "init_level": config.init_level, **params}, thr
        )
    if method == "best_f1":
        if y is None:
            raise LabelsError(
                "calibration method 'best_f1' needs labels: pass labels= (one 0/1 label per "
                "held-out score), or pick 'quantile', 'mad' or 'pot'"
            )
        thr, f1 = _best_f1_fit(x, y[keep])
        return Calibration(
            "best_f1", {"f1": f1, "n": n, "n_positive": float(np.count_nonzero(y[keep]))}, thr
        )
    raise ConfigError(
        f"unknown calibration method {method!r}; use 'quantile', 'mad', 'pot' or 'best_f1'"
    )
