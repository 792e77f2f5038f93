"""Baselines that a user could set up in an afternoon, on the detectors' own windowing.

Every baseline validates, fills and scales data with the same
:class:`~detector.preprocessing.Preprocessor`,
takes the same windows (length from the same ``"auto"`` rule, capped like the detectors' by
what a validation split of ``validation_fraction`` could hold, unless given) and turns window
results into point scores with the same rule as the detectors (``reduction``: the mean, or the
max, over the windows that contain a point), so that a comparison measures the model and
nothing else.

- ``random``: uniform random scores (the floor any detector must clear).
- ``pca``: PCA on flattened training windows keeping 95% of the variance; a cell's score is its
  squared reconstruction error, combined like the detectors' errors.
- ``iforest``: an isolation forest (100 trees) on flattened windows; a window's score is
  spread over its points.
- ``knn``: the Euclidean distance of each window to its nearest training window (training
  windows evenly subsampled to at most 4,000).

The peer implementation, when PyOD is installed (the ``bench`` extra):

- ``pyod_ae``: PyOD's own ``TimeSeriesOD`` bridge around its ``AutoEncoder``, both with the
  library's defaults (10 epochs, batch 32, layers 64-32, standard scaling of the window
  matrix), window = the training data's dominant period
  (:func:`~detector.windows.period_window`) for one feature and 100 otherwise, step 1, mean
  aggregation. It sees the same ordered, gap-filled values as every method (not scaled twice:
  PyOD scales the windows itself) and returns one score per row like them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from .config import DetectorConfig
from .errors import TooShortError
from .preprocessing import Preprocessor, Segment, as_frame
from .windows import (
    coverage_counts,
    gather_windows,
    overlap_reduce,
    period_window,
    resolve_window,
    window_starts,
)

__all__ = ["BASELINES", "PEER_BASELINES", "Baseline", "PyODAutoEncoder", "create_baseline"]

BASELINES: tuple[str, ...] = ("random", "pca", "iforest", "knn")
#: Baselines that run another library's implementation; each needs that library installed.
PEER_BASELINES: tuple[str, ...] = ("pyod_ae",)
_PYOD_MULTIVARIATE_WINDOW = 100
_MAX_FIT_WINDOWS = 20_000
_MAX_KNN_WINDOWS = 4_000


class Baseline:
    """A windowed baseline: ``fit(train)`` then ``anomaly_score(test)`` (higher = more anomalous).

    Parameters
    ----------
    name : {"random", "pca", "iforest", "knn"}
    window : int or "auto"
    seed : int
    reduction : {"mean", "max"}
        How the results of the windows that contain a point combine (the detectors'
        ``score_reduction``).
    validation_fraction : float
        The detectors' ``training.validation_fraction``: an ``"auto"`` window is capped by it
        exactly as a detector's is, so that both see windows of the same length.
    """

    def __init__(
        self,
        name: Literal["random", "pca", "iforest", "knn"],
        window: int | Literal["auto"] = "auto",
        seed: int = 0,
        reduction: Literal["mean", "max"] = "mean",
        validation_fraction: float = 0.2,
    ) -> None:
        self.name = name
        self.window = window
        self.seed = seed
        self.reduction = reduction
        self.validation_fraction = validation_fraction

    def fit(self, data: pd.DataFrame | pd.Series) -> Baseline:
        frame = as_frame(data)
        self.pre_ = Preprocessor(DetectorConfig(kind="ae")).fit(frame)
        segments = self.pre_.transform(frame, max_fill=64)
        longest = max(segments, key=len)
        self.window_ = resolve_window(self.window, longest.values, self.validation_fraction)
        windows = self._flat_windows(segments, stride=1, limit=_MAX_FIT_WINDOWS)
        if len(windows) == 0:
            raise TooShortError(f"the training data is shorter than the window ({self.window_})")
        if self.name == "pca":
            self.model_: Any = PCA(n_components=0.95, svd_solver="full", random_state=self.seed)
            self.model_.fit(windows)
        elif self.name == "iforest":
            self.model_ = IsolationForest(n_estimators=100, random_state=self.seed).fit(windows)
        elif self.name == "knn":
            pick = np.linspace(0, len(windows) - 1, min(len(windows), _MAX_KNN_WINDOWS))
            self.model_ = torch.from_numpy(windows[pick.round().astype(int)])
        return self

    def _flat_windows(self, segments: list[Segment], stride: int, limit: int | None) -> np.ndarray:
        parts = []
        for seg in segments:
            starts = window_starts(len(seg), self.window_, stride)
            if starts.size:
                x = gather_windows(
                    torch.from_numpy(seg.values), torch.from_numpy(starts), self.window_
                )
                parts.append(x.reshape(len(starts), -1).numpy())  # (B, W*F)
        if not parts:
            return np.empty((0, 0), dtype=np.float32)
        flat = np.concatenate(parts)
        if limit is not None and len(flat) > limit:
            flat = flat[np.linspace(0, len(flat) - 1, limit).round().astype(int)]
        return flat

    def _window_cells(self, flat: np.ndarray, n_features: int) -> np.ndarray:
        """Per-cell scores of windows, shape (B, W, F)."""
        w = self.window_
        if self.name == "pca":
            recon = self.model_.inverse_transform(self.model_.transform(flat))
            cells: np.ndarray = ((recon - flat) ** 2).reshape(len(flat), w, n_features)
            return cells
        if self.name == "iforest":
            score = -self.model_.score_samples(flat)
        else:
            dist = torch.cdist(torch.from_numpy(flat), self.model_).min(dim=1).values
            score = dist.numpy()
        return np.broadcast_to(score[:, None, None], (len(flat), w, n_features))

    def anomaly_score(self, data: pd.DataFrame | pd.Series) -> pd.Series:
        frame = as_frame(data)
        segments = self.pre_.transform(frame, max_fill=self.window_)
        scores = np.full(len(frame), np.nan)
        rng = np.random.default_rng(self.seed)
        for seg in segments:
            if self.name == "random" or len(seg) < self.window_:
                point = rng.random(len(seg))
            else:
                acc = torch.zeros(len(seg), seg.values.shape[1], dtype=torch.float64)
                n_windows = len(seg) - self.window_ + 1
                for first in range(0, n_windows, 4096):
                    sub = seg.slice(first, min(first + 4096, n_windows) + self.window_ - 1)
                    flat = self._flat_windows([sub], stride=1, limit=None)
                    cells = torch.from_numpy(
                        np.ascontiguousarray(self._window_cells(flat, sub.values.shape[1]))
                    )
                    overlap_reduce(cells.double(), first, acc, self.reduction)
                if self.reduction == "mean":
                    counts = coverage_counts(len(seg), self.window_)
                    acc /= torch.from_numpy(counts).double()[:, None]
                point = acc.numpy().mean(axis=1)
            seg.place(scores, point)
        return pd.Series(scores, index=frame.index, name="score")


class PyODAutoEncoder:
    """PyOD's ``TimeSeriesOD(AutoEncoder())`` with library defaults, on the detectors' input
    policy (see the module docstring). ``fit(train)`` then ``anomaly_score(test)``.

    Parameters
    ----------
    seed : int
        PyOD's ``random_state`` (its default is 42; the bench passes the detectors' seed).

    Raises
    ------
    ConfigError
        When PyOD is not installed.
    """

    name = "pyod_ae"

    def __init__(self, seed: int = 0) -> None:
        try:
            from pyod.models.auto_encoder import AutoEncoder
            from pyod.models.ts_od import TimeSeriesOD
        except ImportError:
            from .errors import ConfigError

            raise ConfigError(
                "the pyod_ae baseline needs PyOD: pip install 'reconad[bench]'"
            ) from None
        self.seed = seed
        self._classes: tuple[Any, Any] = (TimeSeriesOD, AutoEncoder)

    def fit(self, data: pd.DataFrame | pd.Series) -> PyODAutoEncoder:
        frame = as_frame(data)
        self.pre_ = Preprocessor(DetectorConfig(kind="ae")).fit(frame)
        segments = self.pre_.transform(frame, max_fill=64)
        values = np.concatenate([self._raw(seg) for seg in segments])
        longest = max(segments, key=len)
        n_features = values.shape[1]
        self.window_ = (
            period_window(longest.values) if n_features == 1 else _PYOD_MULTIVARIATE_WINDOW
        )
        if len(values) < self.window_:
            raise TooShortError(f"the training data is shorter than the window ({self.window_})")
        bridge, inner = self._classes
        self.model_: Any = bridge(
            detector=inner(random_state=self.seed, verbose=0),
            window_size=self.window_,
            step=1,
            score_aggregation="mean",
        ).fit(values)
        return self

    def _raw(self, seg: Segment) -> np.ndarray:
        """A segment's values on their original scale (PyOD standardises the windows)."""
        raw: np.ndarray = seg.values * self.pre_.scale_ + self.pre_.center_
        return raw

    def anomaly_score(self, data: pd.DataFrame | pd.Series) -> pd.Series:
        frame = as_frame(data)
        scores = np.full(len(frame), np.nan)
        for seg in self.pre_.transform(frame, max_fill=self.window_):
            if len(seg) < self.window_:  # PyOD's own value for points no window covers
                point = np.full(len(seg), float(self.model_.threshold_))
            else:
                point = np.asarray(self.model_.decision_function(self._raw(seg)), dtype=float)
            seg.place(scores, point)
        return pd.Series(scores, index=frame.index, name="score")


def pyod_available() -> bool:
    """Whether PyOD (the ``pyod_ae`` baseline) can be imported."""
    import importlib.util

    return importlib.util.find_spec("pyod") is not None


def create_baseline(
    name: str,
    window: int | Literal["auto"] = "auto",
    seed: int = 0,
    reduction: Literal["mean", "max"] = "mean",
    validation_fraction: float = 0.2,
) -> Baseline | PyODAutoEncoder:
    """A baseline by name (one of :data:`BASELINES` or :data:`PEER_BASELINES`). The peer
    baselines keep their library's own window and aggregation rules and ignore ``window``,
    ``reduction`` and ``validation_fraction``."""
    if name == "pyod_ae":
        return PyODAutoEncoder(seed)
    if name not in BASELINES:
        from .errors import ConfigError

        raise ConfigError(
            f"unknown baseline {name!r}; choose one of {[*BASELINES, *PEER_BASELINES]}"
        )
    return Baseline(name, window, seed, reduction, validation_fraction)  # type: ignore[arg-type]
