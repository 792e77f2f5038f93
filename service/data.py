"""Stored history of a model: turning JSON rows, CSV/Parquet/Arrow uploads or columnar bodies
into validated frames.

Every row carries a timestamp (ISO-8601 string or epoch seconds) and one number (or null for a
missing value) per feature; a model's column set is fixed by its config's ``features`` or, when
the config leaves them open, by its first upload. Rows whose timestamp (and series key) is
already stored replace the stored row. Within one request, exact duplicate rows are merged
(the detector's timestamp policy, see :mod:`detector.preprocessing`); rows that repeat a
timestamp (and key) with different values are refused with a message naming the first one,
since stored history holds one row per timestamp and keeping either would lose the other
silently. Rows may come in any order: history is kept in time order.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from service.columnar import (
    ARROW_STREAM,
    COLUMNAR_TYPES,
    PARQUET,
    columnar_type,
    is_arrow,
    is_parquet,
    read_table,
    write_table,
)
from service.errors import (
    BadRequestError,
    InvalidInputError,
    PayloadTooLargeError,
    ServiceError,
)
from service.parsing import numeric_array, parse_json, parse_timestamps, timestamps_of_column
from service.registry import ModelRegistry
from service.schemas import DataAppend
from service.storage import TIMESTAMP, HistoryStore, HistorySummary, StoreError
from service.tables import Model

__all__ = ["DataService", "frame_from_body", "frame_from_rows", "frame_from_upload"]

logger = logging.getLogger(__name__)

_MAX_COLUMN_NAME = 128


def _finish_frame(
    frame: pd.DataFrame, timestamps: pd.DatetimeIndex, key_column: str | None, where: str
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name in frame.columns:
        label = str(name)
        if not label or len(label) > _MAX_COLUMN_NAME:
            raise InvalidInputError(f"column names must have 1-{_MAX_COLUMN_NAME} characters")
        if label == key_column:
            columns[label] = frame[name].astype(str).to_numpy()
            continue
        series = frame[name]
        what = f"{where} column {label!r}"
        if series.dtype.kind == "b":
            raise InvalidInputError(f"{what} holds booleans; send numbers (0 or 1)")
        if series.dtype.kind in "iuf":
            values = series.to_numpy(dtype=np.float64)
            if np.isinf(values).any():
                raise InvalidInputError(f"{what} holds infinite values; send finite numbers")
            columns[label] = numeric_array(values, what, allow_null=True)
        else:
            raw = [None if (isinstance(v, float) and np.isnan(v)) else v for v in series.tolist()]
            columns[label] = numeric_array(raw, what, allow_null=True)
    if not columns:
        raise InvalidInputError(f"{where} has no value columns besides the timestamp")
    out = pd.DataFrame(columns, index=timestamps)
    out.index.name = TIMESTAMP
    return out


def frame_from_rows(rows: list[dict[str, Any]], key_column: str | None = None) -> pd.DataFrame:
    """Build a frame from JSON rows ``{"timestamp": ..., "<feature>": number | null, ...}``.

    Raises
    ------
    service.errors.InvalidInputError
        For rows without a timestamp, unparseable timestamps, non-numeric values or NaN/inf.
    """
    if not rows:
        raise InvalidInputError("rows must hold at least one row")
    for i, row in enumerate(rows):
        if TIMESTAMP not in row:
            raise InvalidInputError(f"rows[{i}] has no 'timestamp'")
        for name, value in row.items():
            if isinstance(value, float) and not np.isfinite(value):
                raise InvalidInputError(
                    f"rows[{i}].{name} is not finite; send null for a missing value"
                )
            if isinstance(value, dict | list):
                raise InvalidInputError(f"rows[{i}].{name} must be a number or null")
            if isinstance(value, bool):
                raise InvalidInputError(
                    f"rows[{i}].{name} is a boolean; send a number (0 or 1) or null"
                )
    frame = pd.DataFrame.from_records(rows)
    stamps = parse_timestamps(frame[TIMESTAMP].tolist(), "rows[].timestamp")
    return _finish_frame(frame.drop(columns=[TIMESTAMP]), stamps, key_column, "rows")


def _gunzip(content: bytes, max_bytes: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as stream:
            data = stream.read(max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise BadRequestError(f"could not decompress the gzip upload: {exc}") from None
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"the upload decompresses to more than {max_bytes} bytes (max_body_bytes); "
            "send a smaller file"
        )
    return data


def _csv_header(content: bytes) -> None:
    """Refuse header names that pandas would silently invent or rename: an empty name (the
    ``Unnamed: 0`` index column of ``to_csv()``) and repeated names (``value``, ``value.1``)."""
    first = content.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    try:
        names = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return  # pandas reports what is wrong with the file
    blank = [i for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise InvalidInputError(
            f"CSV column {blank[0] + 1} has no name (an index column written by pandas' "
            "to_csv()?): name every column in the header, or write the file with index=False"
        )
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise InvalidInputError(
            f"CSV columns {repeated} appear more than once in the header; give every column "
            "its own name"
        )


def frame_from_upload(
    content: bytes,
    filename: str | None,
    content_type: str | None,
    timestamp_column: str = TIMESTAMP,
    key_column: str | None = None,
    max_bytes: int = 256 * 1024 * 1024,
) -> pd.DataFrame:
    """Build a frame from an uploaded CSV (plain or gzip-compressed), Parquet or Arrow IPC file.

    The format comes from the content type (:mod:`service.columnar`), the file's magic bytes
    (Parquet starts with ``PAR1``, an Arrow IPC file with ``ARROW1``, an Arrow IPC stream with
    ``ff ff ff ff``, gzip with ``1f 8b``) or its name, else CSV. A gzip file may decompress to
    at most ``max_bytes``.

    Raises
    ------
    service.errors.BadRequestError
        For a file that is neither readable CSV nor Parquet.
    service.errors.InvalidInputError
        For a missing timestamp column or bad values.
    """
    if not content:
        raise InvalidInputError("the uploaded file is empty")
    if content[:2] == b"\x1f\x8b":
        content = _gunzip(content, max_bytes)
        if not content:
            raise InvalidInputError("the uploaded file is empty")
    name = (filename or "").lower()
    if is_arrow(content, content_type) or name.endswith((".arrow", ".arrows", ".feather")):
        frame = read_table(content, ARROW_STREAM)
    elif is_parquet(content, content_type) or name.endswith((".parquet", ".pq")):
        frame = read_table(content, PARQUET)
    else:
        try:
            _csv_header(content)
            frame = pd.read_csv(io.BytesIO(content))
        except ServiceError:
            raise
        except Exception as exc:
            raise BadRequestError(f"could not read the upload as CSV: {exc}") from None
    if isinstance(frame.index, pd.DatetimeIndex) and timestamp_column not in frame.columns:
        frame = frame.reset_index(names=timestamp_column)
    if timestamp_column not in frame.columns:
        raise InvalidInputError(
            f"the file has no {timestamp_column!r} column (columns: "
            f"{[str(c) for c in frame.columns][:20]}); name the time column with the "
            "timestamp_column form field"
        )
    if frame.empty:
        raise InvalidInputError("the uploaded file has no rows")
    stamps = timestamps_of_column(frame[timestamp_column], f"column {timestamp_column!r}")
    return _finish_frame(frame.drop(columns=[timestamp_column]), stamps, key_column, "the file")


def frame_from_body(
    body: bytes, content_type: str | None, key_column: str | None, max_bytes: int
) -> pd.DataFrame:
    """Build a frame from a data append body: an Arrow IPC stream or a Parquet file when the
    content type says so (a ``timestamp`` column and one column per feature, checked as an
    upload is), else JSON rows (:class:`service.schemas.DataAppend`).

    Raises
    ------
    service.errors.BadRequestError, service.errors.InvalidInputError, pydantic.ValidationError
    """
    columnar = columnar_type(content_type)
    if columnar is not None:
        return frame_from_upload(body, None, columnar, TIMESTAMP, key_column, max_bytes)
    payload = DataAppend.model_validate(parse_json(body))
    return frame_from_rows(payload.rows, key_column)


def _refuse_conflicts(frame: pd.DataFrame, key_column: str | None) -> None:
    """Raise when two rows share a timestamp (and key) but differ in a value."""
    slots = pd.DataFrame({"t": frame.index})
    if key_column:
        slots["k"] = frame[key_column].astype(str).to_numpy()
    if not slots.duplicated().any():
        return
    rows = frame.reset_index(drop=True).assign(**{f"__{c}": slots[c] for c in slots})
    distinct = rows.drop_duplicates()  # exact copies are merged, not refused
    clash = distinct.duplicated(subset=[f"__{c}" for c in slots], keep=False)
    if clash.any():
        first = distinct[clash].index[0]
        where = f" and key {slots.at[first, 'k']!r}" if key_column else ""
        raise InvalidInputError(
            f"rows share timestamp {frame.index[first]}{where} with different values (first at "
            f"row {first}); history keeps one row per timestamp: send one of them"
        )


class DataService:
    """Appends, summarises and drops stored history, checking columns against the model.

    Parameters
    ----------
    registry
        Model lookup.
    history
        The history store.
    max_points
        Most rows one append may carry.
    max_bytes
        Most bytes an upload may hold once decompressed.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        history: HistoryStore,
        max_points: int,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.registry = registry
        self.history = history
        self.max_points = max_points
        self.max_bytes = max_bytes

    def key_column(self, name: str) -> str | None:
        """The model's series-key column (None for a single series)."""
        key = self.registry.get_model(name).config.get("key_column")
        return None if key is None else str(key)

    def check(self, name: str, frame: pd.DataFrame) -> tuple[Model, str | None]:
        """Check that ``frame`` may be appended to a model's history (nothing is stored).

        Returns
        -------
        tuple
            The model row and its series-key column (None for a single series).

        Raises
        ------
        service.errors.InvalidInputError
            When the columns do not match the model's features or stored columns.
        service.errors.PayloadTooLargeError
            Above ``max_points`` rows.
        """
        if len(frame) > self.max_points:
            raise PayloadTooLargeError(
                f"{len(frame)} rows exceed the limit of {self.max_points} "
                "(max_points_per_request); send them in several requests"
            )
        model = self.registry.get_model(name)
        config = model.config
        key_column = config.get("key_column")
        features = config.get("features")
        columns = [str(c) for c in frame.columns]
        if features:
            expected = set(features) | ({key_column} if key_column else set())
            missing = sorted(expected - set(columns))
            extra = sorted(set(columns) - expected)
            if missing or extra:
                raise InvalidInputError(
                    f"columns do not match the model's features {features}"
                    + (f"; missing {missing} (send null for missing values)" if missing else "")
                    + (f"; unknown {extra}" if extra else "")
                )
        if key_column and key_column not in columns:
            raise InvalidInputError(f"this model's rows need the series key column {key_column!r}")
        _refuse_conflicts(frame, key_column)
        stored = self.history.summary(model.id)
        if stored.columns and sorted(stored.columns) != sorted(columns):
            raise InvalidInputError(
                f"columns {sorted(columns)} differ from the stored columns "
                f"{sorted(stored.columns)}; send the same columns every time "
                "(null for a missing value)"
            )
        return model, key_column

    def append(self, name: str, frame: pd.DataFrame) -> tuple[int, HistorySummary]:
        """Append a validated frame to a model's history.

        Raises
        ------
        service.errors.InvalidInputError
            When the columns do not match the model's features or stored columns.
        service.errors.PayloadTooLargeError
            Above ``max_points`` rows.
        """
        model, key_column = self.check(name, frame)
        try:
            count = self.history.append(model.id, frame, key_column=key_column)
        except StoreError as exc:
            raise InvalidInputError(str(exc)) from None
        logger.info("history appended", extra={"model": name, "rows": count})
        return count, self.history.summary(model.id)

    def summary(self, name: str) -> HistorySummary:
        """How much history the model holds."""
        return self.history.summary(self.registry.get_model(name).id)

    def export(self, name: str, start: datetime | None, end: datetime | None, fmt: str) -> bytes:
        """Stored rows with ``start <= timestamp < end`` as CSV (``fmt`` ``text/csv``), an
        Arrow IPC stream or Parquet (their media types, :mod:`service.columnar`): a
        ``timestamp`` column first, ISO-8601 UTC in CSV, a UTC timestamp column otherwise.

        Raises
        ------
        service.errors.InvalidInputError
            For an inverted range.
        service.errors.PayloadTooLargeError
            When the range holds more than ``max_points`` rows.
        """
        if start is not None and end is not None and start >= end:
            raise InvalidInputError("start must be before end")
        model = self.registry.get_model(name)
        frame = self.history.read(model.id, start, end)
        if len(frame) > self.max_points:
            raise PayloadTooLargeError(
                f"the range holds {len(frame)} rows, more than {self.max_points} "
                "(max_points_per_request) per export: export it in several ranges (start, end)"
            )
        frame = frame.reset_index()
        if fmt in COLUMNAR_TYPES:
            return write_table(pa.Table.from_pandas(frame, preserve_index=False), fmt)
        stamps = pd.DatetimeIndex(frame[TIMESTAMP])
        frame[TIMESTAMP] = stamps.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return frame.to_csv(index=False).encode()

    def drop(
        self, name: str, start: datetime | None, end: datetime | None
    ) -> tuple[int, HistorySummary]:
        """Drop rows with ``start <= timestamp < end``.

        Raises
        ------
        service.errors.InvalidInputError
            For an inverted range.
        """
        if start is not None and end is not None and start >= end:
            raise InvalidInputError("start must be before end")
        model = self.registry.get_model(name)
        dropped = self.history.drop_range(model.id, start, end)
        return dropped, self.history.summary(model.id)
