"""Input validation, the missing-value policy and scaling, fitted on training data.

Missing-value policy (``DetectorConfig.missing``):

- ``"interpolate"`` (default): gaps in the index (timestamps or integer steps missing relative to
  the step learned at fit time, the median spacing) are re-inserted as missing rows. Gaps longer
  than one window split the series into separate segments instead; windows never cross a
  segment boundary. Missing cells are filled by linear interpolation in time (the nearest
  observed value at the ends of a segment, the training mean when a feature is not observed at
  all in a segment) so that the network sees a continuous series, but filled cells are left out
  of the score: they never become anomalies and never become zeros. A point with no observed
  feature gets a NaN score and is never flagged.
- ``"error"``: any NaN raises :class:`~detector.errors.MissingValuesError`.

Scaling: each feature is standardised with the mean and standard deviation of the training data
(NaN ignored); a constant feature keeps its mean and a unit scale.

Conditions: a conditional kind's encoder (:meth:`ReconstructionModel.conditions
<detector.models.base.ReconstructionModel.conditions>`) is fitted here on the training data and
asked for the condition vectors of every segment; the encoding itself belongs to the kind.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config import DetectorConfig
from .errors import (
    ColumnsError,
    InputError,
    MissingValuesError,
    NonFiniteError,
    NonNumericError,
    TooShortError,
)
from .models import Conditions, model_class

__all__ = ["Preprocessor", "PreprocessorState", "Segment", "as_frame"]


@dataclass
class Segment:
    """A contiguous stretch of one series, ready for windowing.

    Attributes
    ----------
    values : ndarray, shape (T, F), float32
        Scaled values with missing cells filled.
    observed : ndarray, shape (T, F), bool
        True where the value was observed (not filled).
    rows : ndarray, shape (T,), int64
        Row position of each point in the caller's frame, -1 for a re-inserted gap.
    cond : ndarray, shape (T, C), float32, or None
        Condition vector per point (conditional kinds only).
    """

    values: np.ndarray
    observed: np.ndarray
    rows: np.ndarray
    cond: np.ndarray | None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def slice(self, start: int, stop: int) -> Segment:
        """The points ``[start, stop)`` of this segment."""
        cond = None if self.cond is None else self.cond[start:stop]
        return Segment(
            self.values[start:stop], self.observed[start:stop], self.rows[start:stop], cond
        )


def as_frame(data: pd.DataFrame | pd.Series) -> pd.DataFrame:
    """Accept a DataFrame or a Series; anything else raises :class:`InputError`."""
    if isinstance(data, pd.Series):
        return data.to_frame(name=str(data.name) if data.name is not None else "value")
    if isinstance(data, pd.DataFrame):
        return data
    raise InputError(
        f"expected a pandas DataFrame or Series, got {type(data).__name__}; "
        "build one with pandas.DataFrame(values, index=timestamps)"
    )


class Preprocessor:
    """Validates frames and turns them into scaled :class:`Segment` objects.

    Fitted state: ``feature_names_``, ``index_kind_``, ``step_``, ``center_``, ``scale_``,
    ``key_levels_``, and the fitted state of ``conditions`` (the kind's condition encoder, None
    for unconditional kinds).
    """

    def __init__(
        self, config: DetectorConfig, conditions_state: dict[str, Any] | None = None
    ) -> None:
        self.config = config
        self.conditions: Conditions | None = model_class(config.kind).conditions(
            config.network, conditions_state
        )

    # ------------------------------------------------------------------ fitting
    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        """Learn features, index step, scaling and key levels from training data."""
        frame = as_frame(frame)
        if len(frame) == 0:
            raise TooShortError("the training data is empty")
        self.feature_names_ = self._select_features(frame, fitting=True)
        values = self._numeric_values(frame, self.feature_names_)
        all_nan = [
            f
            for f, bad in zip(self.feature_names_, np.isnan(values).all(axis=0), strict=True)
            if bad
        ]
        if all_nan:
            raise MissingValuesError(
                f"feature(s) {all_nan} have no observed value in the training data; "
                "drop them or pass data where they are observed"
            )
        self.index_kind_: Literal["datetime", "integer"] = _index_kind(frame.index)
        groups = self._groups(frame)
        self.key_levels_ = list(groups) if self.config.key_column is not None else []
        diffs = [np.diff(_index_numbers(frame.index[rows])) for rows in groups.values()]
        all_diffs = np.concatenate(diffs) if diffs else np.empty(0)
        self.step_ = int(np.median(all_diffs)) if all_diffs.size else 1
        if self.step_ <= 0:
            self.step_ = 1
        with np.errstate(all="ignore"):
            self.center_ = np.nanmean(values, axis=0)
            scale = np.nanstd(values, axis=0)
        tiny = scale <= 1e-8 * np.maximum(1.0, np.abs(self.center_))
        self.scale_ = np.where(tiny | ~np.isfinite(scale), 1.0, scale)
        if self.conditions is not None:
            filled = np.where(np.isnan(values), self.center_, values)
            scaled = (filled - self.center_) / self.scale_
            self.conditions.fit(self.index_kind_, self.step_, self.key_levels_, scaled)
        return self

    @property
    def n_conditions(self) -> int:
        """Length of the condition vector (0 for unconditional kinds)."""
        return 0 if self.conditions is None else self.conditions.n_conditions

    # ------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame | pd.Series, max_fill: int) -> list[Segment]:
        """Validate a frame against the fitted state and cut it into segments.

        Parameters
        ----------
        frame : DataFrame or Series
            Same feature columns as at fit time.
        max_fill : int
            Longest index gap (in missing points) that is re-inserted and filled; longer gaps
            split the series.

        Raises
        ------
        ColumnsError, NonNumericError, NonFiniteError, MissingValuesError, InputError
        """
        frame = as_frame(frame)
        if len(frame) == 0:
            raise TooShortError("the data to score is empty")
        self._select_features(frame, fitting=False)
        values = self._numeric_values(frame, self.feature_names_)
        self.check_index_kind(frame.index)
        segments: list[Segment] = []
        for key, rows in self._groups(frame).items():
            positions = _index_numbers(frame.index[rows])
            segments.extend(self._segments(values[rows], positions, rows, key, max_fill, frame))
        return segments

    def check_index_kind(self, index: pd.Index) -> None:
        """Refuse (:class:`InputError`) an index of another kind than the training data's."""
        kind = _index_kind(index)
        if kind != self.index_kind_:
            raise InputError(
                f"the model was fitted on data indexed by {self.index_kind_} values but got "
                f"data indexed by {kind} values; index the data the same way as the training data"
            )

    def _segments(
        self,
        values: np.ndarray,
        positions: np.ndarray,
        rows: np.ndarray,
        key: str,
        max_fill: int,
        frame: pd.DataFrame,
    ) -> list[Segment]:
        steps = np.rint(np.diff(positions) / self.step_).astype(np.int64)
        steps = np.maximum(steps, 1)
        breaks = np.nonzero(steps - 1 > max_fill)[0]
        out: list[Segment] = []
        bounds = [0, *(breaks + 1).tolist(), len(rows)]
        for lo, hi in itertools.pairwise(bounds):
            offsets = np.concatenate([[0], np.cumsum(steps[lo : hi - 1])])  # (n,)
            length = int(offsets[-1]) + 1
            full = np.full((length, values.shape[1]), np.nan)
            full[offsets] = values[lo:hi]
            full_rows = np.full(length, -1, dtype=np.int64)
            full_rows[offsets] = rows[lo:hi]
            stamps = np.interp(np.arange(length), offsets, positions[lo:hi].astype(np.float64))
            observed = ~np.isnan(full)
            filled = self._fill_and_scale(full, observed)
            cond = None
            if self.conditions is not None:
                cond = self.conditions.encode(stamps, key, getattr(frame.index, "tz", None))
            out.append(Segment(filled, observed, full_rows, cond))
        return out

    def _fill_and_scale(self, full: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Linear interpolation per feature, then standard scaling; returns float32 (T, F)."""
        grid = np.arange(full.shape[0])
        for j in range(full.shape[1]):
            seen = observed[:, j]
            if seen.all():
                continue
            if seen.any():
                full[:, j] = np.interp(grid, grid[seen], full[seen, j])
            else:
                full[:, j] = self.center_[j]
        scaled: np.ndarray = ((full - self.center_) / self.scale_).astype(np.float32)
        return scaled

    # ------------------------------------------------------------------ validation helpers
    def _select_features(self, frame: pd.DataFrame, fitting: bool) -> list[str]:
        key = self.config.key_column
        columns = [str(c) for c in frame.columns]
        if len(set(columns)) != len(columns):
            raise ColumnsError("column names must be unique")
        if key is not None and key not in columns:
            raise ColumnsError(f"the key column {key!r} is missing; add it to the data")
        if self.config.features is not None:
            wanted = list(self.config.features)
        elif fitting:
            wanted = [c for c in columns if c != key]
        else:
            wanted = self.feature_names_
            extra = [c for c in columns if c != key and c not in wanted]
            if extra:
                raise ColumnsError(
                    f"unexpected column(s) {extra}: the model was fitted on {wanted}; drop the "
                    "extra columns or list the features in the config"
                )
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ColumnsError(f"missing feature column(s) {missing}; the model needs {wanted}")
        if not wanted:
            raise ColumnsError("the data has no feature column")
        return wanted

    def _numeric_values(self, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
        frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
        bad = [
            f
            for f in features
            if not (pd.api.types.is_numeric_dtype(frame[f]) or pd.api.types.is_bool_dtype(frame[f]))
            or pd.api.types.is_complex_dtype(frame[f])
        ]
        if bad:
            raise NonNumericError(
                f"feature column(s) {bad} are not numeric; convert them to numbers or leave them "
                "out of the features"
            )
        values = frame[features].to_numpy(dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            cols = [f for f, b in zip(features, infinite.any(axis=0), strict=True) if b]
            raise NonFiniteError(
                f"{int(infinite.sum())} infinite value(s) in column(s) {cols}; replace them with "
                "finite numbers or NaN (missing)"
            )
        if self.config.missing == "error" and np.isnan(values).any():
            cols = [f for f, b in zip(features, np.isnan(values).any(axis=0), strict=True) if b]
            raise MissingValuesError(
                f"missing values in column(s) {cols} and the policy is missing='error'; fill "
                "them or use missing='interpolate'"
            )
        return values

    def _groups(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Row positions of each series (one group without a key column), validated in order."""
        key = self.config.key_column
        if key is None:
            groups = {"": np.arange(len(frame))}
        else:
            column = frame[next(c for c in frame.columns if str(c) == key)]
            if column.isna().any():
                raise InputError(f"the key column {key!r} has missing values; fill them")
            labels = column.astype(str).to_numpy()
            uniques, first = np.unique(labels, return_index=True)
            order = uniques[np.argsort(first)]
            groups = {str(k): np.nonzero(labels == k)[0] for k in order}
        for name, rows in groups.items():
            numbers = _index_numbers(frame.index[rows])
            diffs = np.diff(numbers)
            if (diffs <= 0).any():
                where = f" for key {name!r}" if name else ""
                raise InputError(
                    f"the index{where} must be strictly increasing (sorted, no duplicates); "
                    "sort the data by time and drop duplicate timestamps"
                )
        return groups

    # ------------------------------------------------------------------ persistence
    def state(self) -> PreprocessorState:
        """The fitted state, for :mod:`detector.persistence`."""
        return PreprocessorState(
            feature_names=self.feature_names_,
            index_kind=self.index_kind_,
            step=self.step_,
            center=self.center_.tolist(),
            scale=self.scale_.tolist(),
            key_levels=self.key_levels_,
            conditions=None if self.conditions is None else self.conditions.state_dict(),
        )

    @classmethod
    def from_state(cls, config: DetectorConfig, state: PreprocessorState) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`state` output (``KeyError``, ``TypeError``
        or ``ValueError`` when the condition encoder's state is damaged)."""
        pre = cls(config, state.conditions)
        pre.feature_names_ = list(state.feature_names)
        pre.index_kind_ = state.index_kind
        pre.step_ = state.step
        pre.center_ = np.asarray(state.center, dtype=np.float64)
        pre.scale_ = np.asarray(state.scale, dtype=np.float64)
        pre.key_levels_ = list(state.key_levels)
        return pre


class PreprocessorState(BaseModel):
    """A fitted :class:`Preprocessor`, as saved in ``state.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_names: list[str] = Field(min_length=1)
    index_kind: Literal["datetime", "integer"]
    step: int = Field(ge=1)
    center: list[float]
    scale: list[float]
    key_levels: list[str]
    conditions: dict[str, Any] | None = Field(
        description="The condition encoder's state (conditional kinds), else None."
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> PreprocessorState:
        if not len(self.center) == len(self.scale) == len(self.feature_names):
            raise ValueError("center and scale need one value per feature")
        return self


def _index_kind(index: pd.Index) -> Literal["datetime", "integer"]:
    if isinstance(index, pd.DatetimeIndex):
        return "datetime"
    if pd.api.types.is_integer_dtype(index.dtype):
        return "integer"
    raise InputError(
        f"the index must hold timestamps (DatetimeIndex) or integers, got {index.dtype}; "
        "parse the time column with pandas.to_datetime and set it as the index"
    )


def _index_numbers(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    return np.asarray(index, dtype=np.int64)
