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

Timestamp policy (``DetectorConfig.timestamp_order``), the same for fitting and scoring, the
library, the CLI and the service:

- Every row of the caller's frame gets a score, on the caller's index and in the caller's row
  order, whatever the order of the timestamps.
- Rows are processed in time order. ``"sort"`` (default): a timestamp smaller than the one
  before it is put in its place by a stable sort; ``"error"``: it raises
  :class:`~detector.errors.InputError` naming the first such row.
- A repeated timestamp (a clock change, a re-sent row): rows with the same timestamp (and
  series key) and the same values are one point, scored once, and every copy gets its score;
  rows with the same timestamp and different values are consecutive points in their arrival
  order, each scored on its own.
- The index step learned at fit time is the median of the positive steps, so that repeats do
  not change it.

Scaling: each feature is standardised with the mean and standard deviation of the training data
(NaN ignored); a constant feature keeps its mean and a unit scale.

Conditions: a conditional kind's encoder (:meth:`ReconstructionModel.conditions
<detector.models.base.ReconstructionModel.conditions>`) is fitted here on the training data and
asked for the condition vectors of every segment; the encoding itself belongs to the kind.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
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
    copy_rows : ndarray, shape (D,), int64
        Rows of the caller's frame merged into a point as exact duplicates of another row.
    copy_points : ndarray, shape (D,), int64
        The point (position in this segment) each of ``copy_rows`` was merged into.
    labels : ndarray, shape (T,), int8, or None
        Feedback label per point (1 anomaly, 0 normal, -1 unknown) when fitting with labels.
    """

    values: np.ndarray
    observed: np.ndarray
    rows: np.ndarray
    cond: np.ndarray | None
    copy_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    copy_points: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def slice(self, start: int, stop: int) -> Segment:
        """The points ``[start, stop)`` of this segment."""
        cond = None if self.cond is None else self.cond[start:stop]
        inside = (self.copy_points >= start) & (self.copy_points < stop)
        return Segment(
            self.values[start:stop],
            self.observed[start:stop],
            self.rows[start:stop],
            cond,
            self.copy_rows[inside],
            self.copy_points[inside] - start,
            None if self.labels is None else self.labels[start:stop],
        )

    def place(self, out: np.ndarray, point_values: np.ndarray) -> None:
        """Write per-point results into the caller's rows.

        Parameters
        ----------
        out : ndarray, shape (R, ...)
            One entry per row of the frame this segment was cut from; written in place.
        point_values : ndarray, shape (T, ...)
            One entry per point of this segment. Re-inserted gap points are skipped; every
            merged duplicate row gets the value of its point.
        """
        real = self.rows >= 0
        out[self.rows[real]] = point_values[real]
        if self.copy_rows.size:
            out[self.copy_rows] = point_values[self.copy_points]


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
        groups = self._groups(frame, values)
        self.key_levels_ = list(groups) if self.config.key_column is not None else []
        diffs = [np.diff(_index_numbers(frame.index[g.rows])) for g in groups.values()]
        all_diffs = np.concatenate(diffs) if diffs else np.empty(0)
        positive = all_diffs[all_diffs > 0]  # repeated timestamps do not shrink the step
        self.step_ = int(np.median(positive)) if positive.size else 1
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
        for key, group in self._groups(frame, values).items():
            segments.extend(self._segments(values, group, key, max_fill, frame))
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
        all_values: np.ndarray,
        group: _Group,
        key: str,
        max_fill: int,
        frame: pd.DataFrame,
    ) -> list[Segment]:
        rows = group.rows
        values = all_values[rows]
        positions = _index_numbers(frame.index[rows])
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
            mine = (group.copy_of >= lo) & (group.copy_of < hi)
            copy_points = offsets[group.copy_of[mine] - lo].astype(np.int64)
            out.append(
                Segment(filled, observed, full_rows, cond, group.copy_rows[mine], copy_points)
            )
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

    def _groups(self, frame: pd.DataFrame, values: np.ndarray) -> dict[str, _Group]:
        """The rows of each series (one group without a key column) in processing order, after
        the timestamp policy of the module docstring."""
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
        return {name: self._order(frame, values, rows, name) for name, rows in groups.items()}

    def _order(
        self, frame: pd.DataFrame, values: np.ndarray, rows: np.ndarray, name: str
    ) -> _Group:
        """Sort one series' rows by time (or refuse a decrease) and merge exact duplicates."""
        numbers = _index_numbers(frame.index[rows])
        down = np.flatnonzero(np.diff(numbers) < 0)
        if down.size:
            if self.config.timestamp_order == "error":
                where = f" for key {name!r}" if name else ""
                at = int(rows[down[0] + 1])
                raise InputError(
                    f"the index{where} must be increasing: row {at} ({frame.index[at]}) comes "
                    f"after {frame.index[int(rows[down[0]])]}; sort the data by time or set "
                    "timestamp_order='sort'"
                )
            order = np.argsort(numbers, kind="stable")
            rows, numbers = rows[order], numbers[order]
        empty = np.empty(0, dtype=np.int64)
        if not (np.diff(numbers) == 0).any():
            return _Group(rows, empty, empty)
        table = pd.DataFrame(values[rows])
        table["__time"] = numbers
        ids = table.groupby(list(table.columns), sort=False, dropna=False).ngroup().to_numpy()
        _, first = np.unique(ids, return_index=True)  # the first row of each id is kept
        keep = first[ids] == np.arange(len(ids))
        new_position = np.cumsum(keep) - 1  # position among the kept rows
        copies = np.flatnonzero(~keep)
        return _Group(rows[keep], rows[copies].astype(np.int64), new_position[first[ids[copies]]])

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


@dataclass
class _Group:
    """One series' rows in processing order: ``rows`` (kept rows, time order), ``copy_rows``
    (rows merged as exact duplicates) and ``copy_of`` (the position in ``rows`` each merges
    into)."""

    rows: np.ndarray
    copy_rows: np.ndarray
    copy_of: np.ndarray


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
