"""The detector: fit on normal data, score by reconstruction error, flag above a threshold.

Scores
------
Each window is reconstructed by the network; a cell's squared error is combined over the windows
that contain it (``score_reduction``, see :mod:`detector.windows`), divided by that feature's
mean error on the held-out validation split (``error_normalization``), and the point's score is
the weighted mean over its observed features (continuous features weigh 1, two-valued ones
``two_valued_weight``, see :func:`feature_weights`, except where such a feature holds a value
it never had in training: then ``new_value_weight``, see :meth:`Detector._cell_weights`).
``explain`` returns each feature's share, so a row of ``explain`` sums to the point's score.
The threshold is calibrated on the scores of the held-out validation split
(``validation_fraction`` of the training data: its last stretch, or with ``training.holdout =
"blocks"`` blocks spread over it, see :func:`holdout_runs`) with the configured
:mod:`detector.thresholds` method.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from .config import CalibrationConfig, DetectorConfig
from .decision import StaticThreshold, flags
from .errors import ConfigError, InputError, NonFiniteError, NotFittedError, TooShortError
from .models import ReconstructionModel, model_class
from .preprocessing import Preprocessor, Segment, as_frame
from .thresholds import Calibration, calibrate
from .training import ProgressCallback, WindowSet, fit_model, seed_everything, select_device
from .windows import coverage_counts, overlap_reduce, resolve_window, window_block

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = [
    "Detector",
    "Reconstruction",
    "ScoreDetails",
    "WindowScores",
    "create_detector",
    "holdout_cut",
    "holdout_runs",
    "split_holdout",
]

logger = logging.getLogger(__name__)

#: Width of the reconstruction band, in standard deviations of the validation residuals.
BAND_WIDTH = 3.0
#: Most held-out causal scores kept with a model for the monitor's threshold.
MAX_HOLDOUT_SCORES = 20_000
_CELLS_PER_BATCH = 1 << 21


@dataclass
class Reconstruction:
    """Expected values and a band, each a DataFrame with one column per feature."""

    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame


@dataclass
class ScoreDetails:
    """Everything one scoring pass yields for a series.

    Attributes
    ----------
    scores : Series
        Point scores on the input index (NaN where no feature was observed).
    contributions : DataFrame
        Each feature's share of the score; rows sum to ``scores``.
    threshold : float
        The detector's threshold; ``flags`` is ``scores > threshold``.
    expected, lower, upper : DataFrame or None
        Reconstruction and band in the input's units, when asked for.
    """

    scores: pd.Series
    contributions: pd.DataFrame
    threshold: float
    expected: pd.DataFrame | None = None
    lower: pd.DataFrame | None = None
    upper: pd.DataFrame | None = None

    @property
    def flags(self) -> pd.Series:
        """Anomaly flags, ``scores > threshold`` (NaN scores are not flagged), by the rule of
        :func:`detector.decision.flags`."""
        return pd.Series(
            flags(self.scores, self.threshold), index=self.scores.index, name="anomaly"
        )


@dataclass
class WindowScores:
    """Scores of stand-alone windows: ``scores`` (B, W); ``contributions`` and the
    reconstruction (B, W, F)."""

    scores: np.ndarray
    contributions: np.ndarray
    expected: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None


@dataclass
class _PointErrors:
    """Per-point results of one segment, before they are mapped back to the caller's rows."""

    errors: np.ndarray  # (T, F) combined squared errors, scaled units
    expected: np.ndarray | None  # (T, F) reconstruction, scaled units


class Detector:
    """A windowed reconstruction detector of any registered kind.

    Parameters
    ----------
    config : DetectorConfig

    Attributes
    ----------
    preprocessor_, network_, window_, feature_names_in_, n_features_in_, threshold_,
    calibration_, error_scale_, residual_std_, window_weight_, feature_weight_, known_values_,
    history_, validation_score_, holdout_scores_, device_
        Learned state, set by :meth:`fit` (or :func:`~detector.persistence.load_detector`).
        ``network_`` is left in eval mode by both, so scoring never switches modes.
        ``holdout_scores_`` are the causal scores of the validation points (what
        :meth:`monitor` fits its threshold on).
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    # ================================================================= fitting
    def fit(
        self,
        data: pd.DataFrame | pd.Series,
        progress: ProgressCallback | None = None,
        labels: npt.ArrayLike | None = None,
    ) -> Detector:
        """Fit on normal data and calibrate the threshold on its held-out part.

        Parameters
        ----------
        data : DataFrame or Series, shape (T, F)
            Timestamp- or integer-indexed, one numeric column per feature (plus the key column).
        progress : callable, optional
            Called with a :class:`~detector.training.TrainingProgress` after every epoch;
            returning ``False`` cancels.
        labels : array_like of int, shape (T,), optional
            Feedback labels per row of ``data`` (1 anomaly, 0 normal, -1 unknown; see
            :meth:`detector.feedback.LabelMasks.point_labels`). Points labelled anomaly (and
            the ``window - 1`` after each) never count in the held-out calibration, and
            windows holding one are left out of
            training, except for a kind that learns from labels (``ssaae``), which takes every
            window with its label (:func:`detector.feedback.window_labels`).

        Returns
        -------
        Detector
            ``self``.

        Raises
        ------
        InputError
            (and subclasses) for data that cannot be used; TrainingError, TrainingCancelled.
        """
        cfg = self.config
        if cfg.calibration.method == "best_f1":
            raise ConfigError(
                "calibration method 'best_f1' needs labels, which fit does not take: fit with "
                "another method, then call calibrate(labelled_data, labels)"
            )
        frame = as_frame(data)
        row_labels = _row_labels(labels, len(frame))
        pre = Preprocessor(cfg).fit(frame)
        first_fill = cfg.window if isinstance(cfg.window, int) else 64
        segments = pre.transform(frame, max_fill=first_fill)
        window = first_fill
        if cfg.window == "auto":
            longest = max(segments, key=len)
            window = resolve_window("auto", longest.values, cfg.training.validation_fraction)
            if window != first_fill:  # gap filling depends on the window: cut again
                segments = pre.transform(frame, max_fill=window)
        if row_labels is not None:
            segments = [_with_labels(seg, row_labels) for seg in segments]
        train_segs, val_segs = split_holdout(
            segments, window, cfg.training.validation_fraction, len(frame), cfg.training.holdout
        )
        val_segs = [_hide_anomalies(seg, window) for seg in val_segs]
        stream_segs = [
            _hide_anomalies(seg, window) for seg in self._stream_holdout(segments, window)
        ]

        device = select_device(cfg.training.device)
        seed_everything(cfg.training.seed)
        network = model_class(cfg.kind)(
            cfg.network, window, len(pre.feature_names_), pre.n_conditions
        )
        network.to(device)
        train_set = WindowSet.build(
            train_segs,
            window,
            cfg.stride,
            device,
            cfg.training.max_train_windows,
            drop_anomalous=not network.learns_from_labels,
        )
        val_set = WindowSet.build(val_segs, window, 1, device, drop_anomalous=True)
        logger.info(
            "fitting %s: window=%d features=%d train_windows=%d val_windows=%d device=%s",
            cfg.kind,
            window,
            len(pre.feature_names_),
            len(train_set),
            len(val_set),
            device,
        )
        history, best_val = fit_model(network, train_set, val_set, cfg.training, progress)

        self.preprocessor_ = pre
        self.network_ = network
        self.window_ = window
        self.device_ = str(device)
        self.history_ = history
        self.validation_score_ = best_val
        self.feature_names_in_ = list(pre.feature_names_)
        self.n_features_in_ = len(pre.feature_names_)
        continuous = continuous_features(frame[pre.feature_names_])
        self.window_weight_ = resolve_window_weight(cfg.window_weight, continuous)
        self.feature_weight_ = feature_weights(cfg.two_valued_weight, continuous)
        self.known_values_ = known_values(train_values(segments), continuous)
        self.error_scale_ = np.ones(self.n_features_in_)
        self.residual_std_ = np.ones(self.n_features_in_)
        self._calibrate(val_segs)
        self.holdout_scores_ = self._stream_scores(stream_segs)
        return self

    def _stream_holdout(self, segments: list[Segment], window: int) -> list[Segment]:
        """The held-out runs of each segment (:func:`holdout_runs`) with the ``window - 1``
        points before each as context: scored causally, every held-out point is the last point
        of one window."""
        training = self.config.training
        out = []
        for seg in segments:
            for lo, hi in holdout_runs(
                len(seg), window, training.validation_fraction, training.holdout
            ):
                if lo >= window and hi > lo:
                    out.append(seg.slice(lo - window + 1, hi))
        return out

    def _stream_scores(self, segments: list[Segment]) -> np.ndarray:
        """Causal scores (see :mod:`detector.monitor`) of the validation points, in time order,
        the latest :data:`MAX_HOLDOUT_SCORES`: what the monitor's threshold is fitted on."""
        parts = []
        for seg in segments:
            errors, _ = self._causal_errors(seg.values, seg.cond, reconstruct=False)
            tail = seg.slice(self.window_ - 1, len(seg))
            scores, _ = self._finish(errors, tail)
            parts.append(scores[tail.rows >= 0])
        scores = np.concatenate(parts) if parts else np.empty(0)
        return scores[np.isfinite(scores)][-MAX_HOLDOUT_SCORES:]

    def _causal_errors(
        self, values: np.ndarray, cond: np.ndarray | None, reconstruct: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Errors (and reconstructions) of the last point of every window of a block.

        Parameters
        ----------
        values : ndarray, shape (T, F), float32
            Scaled, gap-free values; ``T >= window``.
        cond : ndarray, shape (T, C), or None

        Returns
        -------
        errors : ndarray, shape (T - window + 1, F)
            Row ``i``: the squared error (window weight applied) of point ``i + window - 1``
            in the window that ends at it.
        expected : ndarray of the same shape, or None
        """
        device = next(self.network_.parameters()).device
        vals = torch.from_numpy(np.ascontiguousarray(values)).to(device)  # (T, F)
        cnd = None if cond is None else torch.from_numpy(np.ascontiguousarray(cond)).to(device)
        errs, recs = [], []
        with torch.inference_mode():
            for _, _, err, recon in self._window_batches(vals, cnd):
                errs.append(err[:, -1].cpu().numpy())  # (B, F)
                if reconstruct:
                    recs.append(recon[:, -1].cpu().numpy())
        n_feat = self.n_features_in_
        errors = np.concatenate(errs).astype(np.float64) if errs else np.empty((0, n_feat))
        expected = (
            (np.concatenate(recs) if recs else np.empty((0, n_feat))) if reconstruct else None
        )
        return errors, expected

    def _causal_errors_many(
        self, blocks: Sequence[tuple[np.ndarray, np.ndarray | None]], reconstruct: bool
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """:meth:`_causal_errors` of several blocks (e.g. the new points of many series) with
        the windows of all of them in shared batches: one pass of the network for many short
        blocks instead of one per block. The same numbers to float tolerance (a batch's
        arithmetic may differ by its size). A kind that samples while scoring
        (``samples_in_scoring``) draws per batch, so its blocks run one by one, as alone.
        """
        network = self.network_
        if len(blocks) <= 1 or network.samples_in_scoring:
            return [self._causal_errors(values, cond, reconstruct) for values, cond in blocks]
        window, n_feat = self.window_, self.n_features_in_
        device = next(network.parameters()).device
        batch = max(256, _CELLS_PER_BATCH // (window * n_feat))
        generator = torch.Generator(device=device).manual_seed(self.config.training.seed)
        counts = [len(values) - window + 1 for values, _ in blocks]
        errs: list[np.ndarray] = []
        recs: list[np.ndarray] = []
        pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        n_pending = 0

        def run() -> None:
            x = torch.cat([w for w, _ in pending]) if len(pending) > 1 else pending[0][0]
            conds = [c for _, c in pending if c is not None]
            c = None if not conds else torch.cat(conds) if len(conds) > 1 else conds[0]
            err, recon = self._window_errors(network, x, c, generator)
            errs.append(err[:, -1].cpu().numpy())  # (B, F)
            if reconstruct:
                recs.append(recon[:, -1].cpu().numpy())
            pending.clear()

        with torch.inference_mode():
            for (values, cond), count in zip(blocks, counts, strict=True):
                vals = torch.from_numpy(np.ascontiguousarray(values)).to(device)  # (T, F)
                cnd = None if cond is None else torch.from_numpy(np.ascontiguousarray(cond))
                first = 0
                while first < count:
                    take = min(count - first, batch - n_pending)
                    x = window_block(vals, first, take, window)  # (take, W, F)
                    end = first + window - 1  # the condition of a window's last point
                    last = None if cnd is None else cnd[end : end + take].to(device)
                    pending.append((x, last))
                    n_pending += take
                    first += take
                    if n_pending == batch:
                        run()
                        n_pending = 0
            if pending:
                run()
        errors = np.concatenate(errs).astype(np.float64) if errs else np.empty((0, n_feat))
        expected = np.concatenate(recs) if recs else np.empty((0, n_feat), dtype=np.float32)
        bounds = itertools.pairwise(np.cumsum([0, *counts]).tolist())
        return [(errors[lo:hi], expected[lo:hi] if reconstruct else None) for lo, hi in bounds]

    def _calibrate(self, val_segs: list[Segment]) -> None:
        """Per-feature error scale and residual spread, then the threshold, on validation data."""
        point_errors = [self._segment_errors(seg, reconstruct=True) for seg in val_segs]
        errors = np.concatenate(
            [p.errors[s.observed.any(axis=1)] for p, s in zip(point_errors, val_segs, strict=True)]
        )
        observed = np.concatenate([s.observed[s.observed.any(axis=1)] for s in val_segs])
        if self.config.error_normalization:
            with np.errstate(invalid="ignore"):
                mean_err = np.nanmean(np.where(observed, errors, np.nan), axis=0)
            floor = (
                max(float(np.nanmean(mean_err)) * self.config.error_floor, 1e-12)
                if np.isfinite(mean_err).any()
                else 1.0
            )
            self.error_scale_ = np.where(np.isfinite(mean_err), np.maximum(mean_err, floor), 1.0)
        residuals = np.concatenate(
            [
                np.where(s.observed, s.values - p.expected, np.nan)
                for p, s in zip(point_errors, val_segs, strict=True)
                if p.expected is not None
            ]
        )
        with np.errstate(invalid="ignore"):
            std = np.nanstd(residuals, axis=0)
        self.residual_std_ = np.where(np.isfinite(std), std, 1.0)
        scores = np.concatenate(
            [self._finish(p.errors, s)[0] for p, s in zip(point_errors, val_segs, strict=True)]
        )
        result = calibrate(scores, self.config.calibration)
        self.calibration_: dict[str, Any] = result.to_dict()
        self.threshold_ = float(result.threshold)

    def calibrate(
        self,
        data: pd.DataFrame | pd.Series,
        labels: pd.Series | np.ndarray | None = None,
        calibration: CalibrationConfig | None = None,
    ) -> Detector:
        """Recalibrate the threshold on other held-out data (or on labelled data for best-F1).

        Parameters
        ----------
        data : DataFrame or Series, shape (T, F)
            Held-out normal data (``quantile``, ``mad``, ``pot``) or labelled data
            (``best_f1``), with the features the model was fitted on.
        labels : Series or ndarray of 0/1, shape (T,), optional
            Required by ``best_f1``.
        calibration : CalibrationConfig, optional
            Method and parameters; default: the config's. Stored in ``calibration_``.

        Returns
        -------
        Detector
            ``self``, with ``threshold_`` and ``calibration_`` updated.

        Raises
        ------
        NotFittedError, InputError, LabelsError
        """
        scores = self.anomaly_score(data).to_numpy()
        label_array = None if labels is None else np.asarray(labels)
        result = calibrate(scores, calibration or self.config.calibration, label_array)
        self.calibration_ = result.to_dict()
        self.threshold_ = float(result.threshold)
        return self

    def holdout(self, data: pd.DataFrame | pd.Series) -> pd.DataFrame:
        """The rows of ``data`` that :meth:`fit` holds out for validation and calibration.

        ``data`` is cut into segments as fit cuts it (per series key, at gaps longer than a
        window) and each segment's held-out runs are kept (:func:`split_holdout`, by
        ``training.holdout``), so these are the rows fit calibrated on when ``data`` is the
        training data.

        Raises
        ------
        NotFittedError, InputError (and subclasses), TooShortError
        """
        frame, segments = self._segments(data)
        training = self.config.training
        _, held_out = split_holdout(
            segments, self.window_, training.validation_fraction, len(frame), training.holdout
        )
        rows = np.sort(np.concatenate([seg.rows[seg.rows >= 0] for seg in held_out]))
        return frame.iloc[rows]

    def holdout_error(self, data: pd.DataFrame | pd.Series) -> float:
        """Mean squared reconstruction error on ``data``, each feature in units of its variance
        in ``data``; comparable between models (versions) scored on the same data.

        Raises
        ------
        NotFittedError, InputError
        """
        frame = as_frame(data)
        expected = self.score_details(frame, reconstruct=True).expected
        assert expected is not None  # reconstruct=True always fills it
        actual = frame[self.feature_names_in_].to_numpy(dtype=np.float64)
        var = np.nanvar(actual, axis=0)
        var = np.where(var > 1e-12, var, 1.0)
        with np.errstate(invalid="ignore"):
            return float(np.nanmean((actual - expected.to_numpy()) ** 2 / var))

    # ================================================================= scoring core
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError("this detector is not fitted yet; call fit(train_data) first")

    def _segments(self, data: pd.DataFrame | pd.Series) -> tuple[pd.DataFrame, list[Segment]]:
        """The caller's data as a frame and cut into segments as the fitted model cuts it."""
        self._check_fitted()
        frame = as_frame(data)
        return frame, self.preprocessor_.transform(frame, max_fill=self.window_)

    def _segment_errors(self, seg: Segment, reconstruct: bool) -> _PointErrors:
        """Combined squared error per point and feature (scaled units) for one segment.

        When the segment has filled (missing) cells, a point's error is combined over the windows
        that hold no filled cell, where there are any, so that a filled stretch does not raise
        the scores of its observed neighbours.
        """
        window = self.window_
        device = next(self.network_.parameters()).device
        length, n_features = seg.values.shape
        values = torch.from_numpy(seg.values).to(device)  # (T, F)
        cond = None if seg.cond is None else torch.from_numpy(seg.cond).to(device)  # (T, C)
        reduction = self.config.score_reduction
        acc = torch.zeros(length, n_features, device=device)  # (T, F)
        rec_acc = torch.zeros(length, n_features, device=device) if reconstruct else None
        clean = None
        if not seg.observed.all():
            gaps = np.concatenate([[0], np.cumsum(~seg.observed.all(axis=1))])  # (T + 1,)
            clean_np = (gaps[window:] - gaps[:-window]) == 0  # (n_windows,)
            clean = torch.from_numpy(clean_np.astype(np.float32)).to(device)
            clean_acc = torch.zeros(length, n_features, device=device)
            clean_count = torch.zeros(length, 1, device=device)
        with torch.inference_mode():
            for first, starts, err, recon in self._window_batches(values, cond):
                overlap_reduce(err, first, acc, reduction)
                if rec_acc is not None:
                    overlap_reduce(recon, first, rec_acc, "mean")
                if clean is not None:
                    w = clean[starts][:, None, None]  # (B, 1, 1)
                    overlap_reduce(err * w, first, clean_acc, reduction)
                    overlap_reduce(w.expand(-1, window, 1), first, clean_count, "mean")
        counts = torch.from_numpy(coverage_counts(length, window)).to(device)[:, None]  # (T, 1)
        if reduction == "mean":
            acc /= counts
        if clean is not None:
            if reduction == "mean":
                clean_acc /= clean_count.clamp(min=1.0)
            acc = torch.where(clean_count > 0, clean_acc, acc)
        expected = None if rec_acc is None else (rec_acc / counts).cpu().numpy()
        return _PointErrors(acc.cpu().numpy().astype(np.float64), expected)

    def _window_batches(
        self, values: torch.Tensor, cond: torch.Tensor | None
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every window of a gap-free block, scored in batches (call under inference mode).

        Parameters
        ----------
        values : Tensor, shape (T, F)
            Scaled values on the network's device; ``T >= window``.
        cond : Tensor, shape (T, C), or None

        Yields
        ------
        first : int
            Index of the batch's first window (its start point).
        starts : Tensor, shape (B,)
            Start points of the batch's windows.
        errors, reconstructions : Tensor, shape (B, W, F)
        """
        window = self.window_
        n_windows = values.shape[0] - window + 1
        batch = max(256, _CELLS_PER_BATCH // (window * values.shape[1]))
        generator = torch.Generator(device=values.device).manual_seed(self.config.training.seed)
        for first in range(0, n_windows, batch):
            starts = torch.arange(first, min(first + batch, n_windows), device=values.device)
            x = window_block(values, first, len(starts), window)  # (B, W, F)
            c = None if cond is None else cond[starts + window - 1]  # (B, C)
            err, recon = self._window_errors(self.network_, x, c, generator)
            yield first, starts, err, recon

    def _window_errors(
        self,
        network: ReconstructionModel,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors and reconstructions of a batch, both (B, W, F) (under inference mode:
        the errors are blended in place, the same numbers as ``(1 - w) * err + w * mean``)."""
        err, recon = network.scoring_errors(x, cond, generator)  # (B, W, F) each
        weight = self.window_weight_
        if weight > 0:  # each cell shares its window's mean error (per feature)
            shared = err.mean(dim=1, keepdim=True).mul_(weight)
            err = err.mul_(1 - weight).add_(shared)
        return err, recon

    def _cell_weights(self, values: np.ndarray) -> np.ndarray:
        """Each cell's weight in the score, broadcastable to ``values`` (..., F), scaled units:
        the feature's weight, or ``new_value_weight`` where a two-valued or constant feature
        holds none of its training values. Without such features, the feature weights (F,)."""
        known = self.known_values_  # (F, 2), NaN where there is no value to compare
        weights = self.feature_weight_
        if not np.isfinite(known).any():
            return weights
        gap = np.abs(values[..., None] - np.where(np.isfinite(known), known, np.inf))
        novel = gap.min(axis=-1) > _NEW_VALUE_TOLERANCE  # (..., F)
        novel &= np.isfinite(known).any(axis=1)
        heavier = np.maximum(self.feature_weight_, self.config.new_value_weight)
        return np.where(novel, heavier, weights)

    def _contributions(
        self, errors: np.ndarray, observed: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        """Each feature's share of the point score (T, F) from combined errors (T, F) and the
        scaled values (T, F) the weights depend on: NaN rows where no feature was observed or
        weighs anything. No smoothing."""
        weights = np.where(observed, self._cell_weights(values), 0.0)  # (T, F)
        total = weights.sum(axis=1, keepdims=True)  # (T, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = weights / total  # (T, F)
            out: np.ndarray = np.where(total > 0, errors / self.error_scale_ * share, np.nan)
        return out

    def _finish(self, errors: np.ndarray, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """Point scores (T,) and contributions (T, F) from combined errors of a segment."""
        contributions = self._contributions(errors, seg.observed, seg.values)
        unweighted = np.isnan(contributions).all(axis=1)
        if self.config.smoothing > 1:
            contributions = (
                pd.DataFrame(contributions)
                .rolling(self.config.smoothing, min_periods=1)
                .mean()
                .to_numpy()
            )
        scores = contributions.sum(axis=1)
        scores[unweighted] = np.nan
        return scores, contributions

    def score_details(
        self, data: pd.DataFrame | pd.Series, reconstruct: bool = False
    ) -> ScoreDetails:
        """Scores, feature contributions and optionally the reconstruction of a series.

        Parameters
        ----------
        data : DataFrame or Series, shape (T, F)
            The feature columns the model was fitted on.
        reconstruct : bool
            Also return expected values and the band.

        Raises
        ------
        NotFittedError, InputError (and subclasses), TooShortError
        """
        frame, segments = self._segments(data)
        if not any(len(s) >= self.window_ for s in segments):
            raise TooShortError(
                f"got {len(frame)} points but the model's window is {self.window_}; send at "
                f"least {self.window_} consecutive points"
            )
        n_rows, n_feat = len(frame), self.n_features_in_
        scores = np.full(n_rows, np.nan)
        contributions = np.full((n_rows, n_feat), np.nan)
        expected = np.full((n_rows, n_feat), np.nan) if reconstruct else None
        for seg in segments:
            if len(seg) < self.window_:
                continue  # too short to score: NaN, documented
            point = self._segment_errors(seg, reconstruct)
            seg_scores, seg_contrib = self._finish(point.errors, seg)
            seg.place(scores, seg_scores)
            seg.place(contributions, seg_contrib)
            if expected is not None and point.expected is not None:
                seg.place(expected, point.expected)
        index, columns = frame.index, self.feature_names_in_
        details = ScoreDetails(
            pd.Series(scores, index=index, name="score"),
            pd.DataFrame(contributions, index=index, columns=columns),
            self.threshold_,
        )
        if expected is not None:
            pre = self.preprocessor_
            mean = expected * pre.scale_ + pre.center_
            half = BAND_WIDTH * self.residual_std_ * pre.scale_
            details.expected = pd.DataFrame(mean, index=index, columns=columns)
            details.lower = pd.DataFrame(mean - half, index=index, columns=columns)
            details.upper = pd.DataFrame(mean + half, index=index, columns=columns)
        return details

    def score_windows(self, x: np.ndarray, reconstruct: bool = False) -> WindowScores:
        """Score stand-alone windows, each on its own.

        Parameters
        ----------
        x : ndarray, shape (B, W, F)
            ``W`` must be the model's window and ``F`` its feature count, values finite.

        Raises
        ------
        NotFittedError, InputError, NonFiniteError
        """
        self._check_fitted()
        if self.network_.conditional:
            raise InputError(
                "this cvae model is conditioned on timestamps or a series key; score a series "
                "segment with timestamps instead of bare windows"
            )
        arr = np.asarray(x, dtype=np.float64)
        expected_shape = (self.window_, self.n_features_in_)
        if arr.ndim != 3 or arr.shape[1:] != expected_shape:
            raise InputError(
                f"windows must have shape (n, {self.window_}, {self.n_features_in_}) "
                f"(window length, features {self.feature_names_in_}); got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise NonFiniteError("windows contain NaN or infinite values; send finite numbers")
        pre = self.preprocessor_
        scaled = ((arr - pre.center_) / pre.scale_).astype(np.float32)
        device = torch.device(self.device_)  # kept by fit, to() and loading
        generator = torch.Generator(device=device).manual_seed(self.config.training.seed)
        batch = max(256, _CELLS_PER_BATCH // (self.window_ * self.n_features_in_))
        errs, recons = [], []
        with torch.inference_mode():
            for i in range(0, len(scaled), batch):
                xb = torch.from_numpy(scaled[i : i + batch]).to(device)  # (B, W, F)
                err, recon = self._window_errors(self.network_, xb, None, generator)
                errs.append(err.cpu().numpy())
                if reconstruct:
                    recons.append(recon.cpu().numpy())
        err_all = (errs[0] if len(errs) == 1 else np.concatenate(errs)).astype(np.float64)
        err_all /= self.error_scale_  # (B, W, F)
        weights = self._cell_weights(scaled)  # (B, W, F) or (F,)
        contributions = err_all * weights / weights.sum(axis=-1, keepdims=True)
        result = WindowScores(contributions.sum(axis=2), contributions)
        if reconstruct:
            mean = np.concatenate(recons) * pre.scale_ + pre.center_
            half = BAND_WIDTH * self.residual_std_ * pre.scale_
            result.expected, result.lower, result.upper = mean, mean - half, mean + half
        return result

    # ================================================================= public scoring API
    def anomaly_score(self, data: pd.DataFrame | pd.Series) -> pd.Series:
        """Point scores on ``data.index``; higher is more anomalous.

        Returns
        -------
        Series, shape (T,)
            NaN where no feature was observed (or the point lies in a segment shorter than
            a window).
        """
        return self.score_details(data).scores

    def predict(self, data: pd.DataFrame | pd.Series) -> pd.Series:
        """Anomaly flags: ``anomaly_score > threshold_`` (NaN scores are not flagged)."""
        return self.score_details(data).flags

    def explain(self, data: pd.DataFrame | pd.Series) -> pd.DataFrame:
        """Each feature's contribution to each point's score; rows sum to the score."""
        return self.score_details(data).contributions

    def reconstruct(self, data: pd.DataFrame | pd.Series) -> Reconstruction:
        """Expected values per point and feature with a band of ``BAND_WIDTH`` residual stds."""
        details = self.score_details(data, reconstruct=True)
        assert details.expected is not None and details.lower is not None
        assert details.upper is not None
        return Reconstruction(details.expected, details.lower, details.upper)

    # ================================================================= live detection
    def monitor(self, **options: Any) -> Monitor:
        """A :class:`~detector.monitor.Monitor`: causal scoring, an online threshold and events
        for one series; ``options`` are :class:`~detector.monitor.MonitorOptions` fields.

        Raises
        ------
        NotFittedError, ConfigError
        """
        from .monitor import Monitor

        return Monitor(self, **options)

    @property
    def decision_(self) -> StaticThreshold:
        """The batch threshold as a :mod:`detector.decision` object (``threshold_``)."""
        self._check_fitted()
        return StaticThreshold(Calibration.from_dict(self.calibration_))

    # ================================================================= device and persistence
    def to(self, device: str) -> Detector:
        """Move the network to ``device`` ("cpu", "cuda", "auto")."""
        self._check_fitted()
        target = select_device(device)
        self.network_.to(target)
        self.device_ = str(target)
        return self

    def save(self, path: str | Path) -> None:
        """Save atomically to a directory (see :mod:`detector.persistence`)."""
        from .persistence import save_detector

        save_detector(self, path)

    def __repr__(self) -> str:
        fitted = (
            f", window={self.window_}, threshold={self.threshold_:.4g}"
            if hasattr(self, "threshold_")
            else ""
        )
        return f"Detector(kind={self.config.kind!r}{fitted})"


_NEW_VALUE_TOLERANCE = 1e-3
"""Distance (scaled units) from every training value beyond which a cell holds a new value."""


def resolve_window_weight(weight: float | Literal["auto"], continuous: np.ndarray) -> float:
    """The weight of window errors against point errors; ``"auto"``: ``1 / n``, with ``n`` the
    number of continuous features (the mask of :func:`continuous_features`).

    A point's own error is one squared error per feature, averaged over the features: with one
    continuous signal it is as noisy as that signal, and the window's mean error is the stable
    measure; with many, the average over features is already stable and keeps short anomalies
    sharp, so the point's own error dominates.
    """
    if weight != "auto":
        return float(weight)
    return 1.0 / max(int(continuous.sum()), 1)


def continuous_features(train: pd.DataFrame) -> np.ndarray:
    """Boolean mask (F,): the features with more than two distinct values in ``train``."""
    return np.asarray(train.nunique() > 2)


def feature_weights(two_valued_weight: float, continuous: np.ndarray) -> np.ndarray:
    """Each feature's weight in the point score (F,): 1 for continuous features (the mask of
    :func:`continuous_features`), ``two_valued_weight`` for the others; all 1 when no feature
    is continuous."""
    if not continuous.any():
        return np.ones(len(continuous))
    return np.where(continuous, 1.0, two_valued_weight)


def train_values(segments: list[Segment]) -> np.ndarray:
    """The observed training cells of all segments, scaled, shape (T, F); NaN where filled."""
    return np.concatenate([np.where(s.observed, s.values, np.nan) for s in segments])


def known_values(values: np.ndarray, continuous: np.ndarray) -> np.ndarray:
    """The (scaled) values of each two-valued or constant feature in training, shape (F, 2),
    NaN where there is none (continuous features, a constant's second slot)."""
    out = np.full((values.shape[1], 2), np.nan)
    for j in np.flatnonzero(~continuous):
        seen = np.unique(values[:, j][np.isfinite(values[:, j])])[:2]
        out[j, : len(seen)] = seen
    return out


def _row_labels(labels: npt.ArrayLike | None, n_rows: int) -> np.ndarray | None:
    """Validated feedback labels per row (int8), or None."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.shape != (n_rows,):
        raise InputError(
            f"labels must have one entry per row of the data ({n_rows}), got {arr.shape}"
        )
    if not np.isin(arr, (-1, 0, 1)).all():
        raise InputError("labels must be 1 (anomaly), 0 (normal) or -1 (unknown)")
    return arr.astype(np.int8)


def _with_labels(seg: Segment, row_labels: np.ndarray) -> Segment:
    """The segment with the label of each point (-1 for re-inserted gap points)."""
    seg.labels = np.where(seg.rows >= 0, row_labels[np.maximum(seg.rows, 0)], -1).astype(np.int8)
    return seg


def _hide_anomalies(seg: Segment, window: int) -> Segment:
    """The segment with its labelled-anomaly points, and the ``window - 1`` points after each
    (their windows hold it), unobserved: none counts in a held-out score (the network still
    sees their values)."""
    if seg.labels is None or not (seg.labels == 1).any():
        return seg
    hit = np.concatenate([[0], np.cumsum(seg.labels == 1)])  # (T + 1,)
    lo = np.maximum(np.arange(len(seg)) - window + 1, 0)
    touched = hit[np.arange(len(seg)) + 1] - hit[lo] > 0  # (T,)
    observed = seg.observed & ~touched[:, None]
    return Segment(
        seg.values, observed, seg.rows, seg.cond, seg.copy_rows, seg.copy_points, seg.labels
    )


def create_detector(config: DetectorConfig | dict[str, Any] | None = None) -> Detector:
    """An unfitted :class:`Detector` for ``config`` (a DetectorConfig or its dict form)."""
    if config is None:
        config = DetectorConfig()
    elif isinstance(config, dict):
        config = DetectorConfig.model_validate(config)
    return Detector(config)


def holdout_cut(length: int, fraction: float) -> int:
    """Where a segment of ``length`` points is cut: its last ``round(length * fraction)``
    points are held out (``training.validation_fraction``, the ``"tail"`` layout)."""
    return length - round(length * fraction)


#: Smallest held-out block of the ``"blocks"`` layout, in windows.
HOLDOUT_BLOCK_WINDOWS = 10


def holdout_runs(
    length: int, window: int, fraction: float, layout: str = "tail"
) -> list[tuple[int, int]]:
    """The held-out runs ``[lo, hi)`` of a segment of ``length`` points, in order.

    ``"tail"``: the last ``round(length * fraction)`` points. ``"blocks"``
    (``training.holdout``): as many points, in ``n`` blocks of at least
    :data:`HOLDOUT_BLOCK_WINDOWS` windows each (``n = 1`` when the held-out part is shorter:
    the tail), block ``k`` ending at ``round(length * (k + 1) / n)``; so the last block ends
    the segment and the blocks sample its whole span evenly.
    """
    held = length - holdout_cut(length, fraction)
    if layout == "tail" or held <= 0:
        return [(length - held, length)]
    n = max(1, held // (HOLDOUT_BLOCK_WINDOWS * window))
    runs = []
    for k in range(n):
        size = round(held * (k + 1) / n) - round(held * k / n)
        end = round(length * (k + 1) / n)
        runs.append((end - size, end))
    return runs


def split_holdout(
    segments: list[Segment], window: int, fraction: float, n_rows: int, layout: str = "tail"
) -> tuple[list[Segment], list[Segment]]:
    """Cut every segment into the pieces to train on and the held-out runs
    (:func:`holdout_runs`: its tail, or blocks spread over it).

    A piece or run shorter than ``window`` is dropped. This is the split :meth:`Detector.fit`
    makes (validation, early stopping and calibration use the held-out runs);
    :meth:`Detector.holdout` gives their rows.

    Parameters
    ----------
    segments : list of Segment
        The preprocessor's segments of the training data.
    window : int
    fraction : float
        ``training.validation_fraction``.
    n_rows : int
        Rows of the caller's data, for the error message.
    layout : {"tail", "blocks"}
        ``training.holdout``.

    Raises
    ------
    TooShortError
        No segment yields both a piece to train on and a held-out run of a window.
    """
    train, val = [], []
    for seg in segments:
        start = 0
        for lo, hi in holdout_runs(len(seg), window, fraction, layout):
            if lo - start >= window:
                train.append(seg.slice(start, lo))
            if hi - lo >= window:
                val.append(seg.slice(lo, hi))
            start = hi
        if len(seg) - start >= window:
            train.append(seg.slice(start, len(seg)))
    if not train or not val:
        need = math.ceil(window / min(fraction, 1 - fraction)) + 1
        raise TooShortError(
            f"got {n_rows} points: with window {window} and validation_fraction {fraction} "
            f"at least {need} consecutive points are needed; pass more data or a smaller window"
        )
    return train, val
