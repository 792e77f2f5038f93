"""Read and write tables of time series: CSV (optionally compressed) and Parquet.

The format follows the file name: ``.csv`` (also ``.csv.gz``, ``.csv.bz2``, ``.csv.xz``,
``.csv.zip``, ``.csv.zst``) or ``.parquet`` / ``.pq``. A table becomes a detector input by moving
its time column into the index with :func:`set_time_index`: integer columns stay integers, any
other column is parsed as timestamps. Without a time column the row number is the index.

Every problem with a file (missing, unreadable, unsupported name, missing column) raises
:class:`~detector.errors.InputError` or its subclass
:class:`~detector.errors.ColumnsError` with a message that says what to fix.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .errors import ColumnsError, InputError

__all__ = [
    "DEFAULT_TIME_COLUMN",
    "TableFormat",
    "read_frame",
    "read_table",
    "set_time_index",
    "table_format",
    "write_table",
]

logger = logging.getLogger(__name__)

#: Column used as the time index when present and no other column is named.
DEFAULT_TIME_COLUMN = "timestamp"
#: Name given to the index column on output when the index is the row number.
ROW_COLUMN = "row"

TableFormat = Literal["csv", "parquet"]

_CSV_COMPRESSIONS = ("", ".gz", ".bz2", ".xz", ".zip", ".zst")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | Path) -> TableFormat:
    """The table format implied by a file name.

    Parameters
    ----------
    path : str or Path
        A name ending in ``.csv`` (optionally followed by a compression suffix such as
        ``.gz``), ``.parquet`` or ``.pq``; case does not matter.

    Returns
    -------
    {"csv", "parquet"}

    Raises
    ------
    InputError
        The name has another extension.
    """
    name = Path(path).name.lower()
    if any(name.endswith(".csv" + comp) for comp in _CSV_COMPRESSIONS):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"cannot tell the format of {str(path)!r} from its name; use a file ending in .csv, "
        ".csv.gz or .parquet"
    )


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame with a default (row-number) index.

    An index stored in a Parquet file's pandas metadata is turned back into a column, so both
    formats yield the same frame.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    DataFrame, shape (T, columns)

    Raises
    ------
    InputError
        The file is missing, is not a regular file, has an unsupported name, or cannot be parsed.
    """
    source = Path(path)
    fmt = table_format(source)
    if not source.exists():
        raise InputError(f"no such file: {str(source)!r}")
    if not source.is_file():
        raise InputError(f"{str(source)!r} is not a file")
    try:
        frame = pd.read_csv(source) if fmt == "csv" else pd.read_parquet(source)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{str(source)!r} is empty; it needs a header row and data") from exc
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        # pyarrow's ArrowInvalid / ArrowIOError derive from ValueError / OSError.
        raise InputError(f"could not read {str(source)!r} as {fmt}: {exc}") from exc
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    frame.columns = pd.Index([str(c) for c in frame.columns])
    logger.debug("read %d rows x %d columns from %s", len(frame), frame.shape[1], source)
    return frame


def set_time_index(frame: pd.DataFrame, time_column: str | None = None) -> pd.DataFrame:
    """Move the time column into the index.

    Parameters
    ----------
    frame : DataFrame
    time_column : str, optional
        Column holding the time of each row. Default: ``"timestamp"`` when the frame has such a
        column, otherwise the row number (0, 1, ...) becomes the index. An integer column is
        kept as an integer index; any other column is parsed as timestamps (an all-integral
        float column counts as integer).

    Returns
    -------
    DataFrame
        ``frame`` without the time column, indexed by it (index named after the column).

    Raises
    ------
    ColumnsError
        ``time_column`` is not a column of ``frame``.
    InputError
        The time column has missing values or cannot be parsed as timestamps.
    """
    if time_column is None:
        if DEFAULT_TIME_COLUMN not in frame.columns:
            logger.info("no %r column: the row number is the time index", DEFAULT_TIME_COLUMN)
            return frame.reset_index(drop=True)
        time_column = DEFAULT_TIME_COLUMN
    if time_column not in frame.columns:
        raise ColumnsError(
            f"time column {time_column!r} not found; the columns are {_column_list(frame)}. "
            "Name the time column with --time-column"
        )
    column = frame[time_column]
    if column.isna().any():
        raise InputError(
            f"the time column {time_column!r} has {int(column.isna().sum())} missing value(s); "
            "every row needs a time"
        )
    index = _parse_time(column, time_column)
    out = frame.drop(columns=[time_column])
    out.index = index
    return out


def read_frame(path: str | Path, time_column: str | None = None) -> pd.DataFrame:
    """:func:`read_table` followed by :func:`set_time_index`.

    Raises
    ------
    InputError, ColumnsError
    """
    return set_time_index(read_table(path), time_column)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a frame, its index as the first column, as CSV or Parquet (by file name).

    A default row-number index is written as a column named ``"row"``; any other index keeps its
    name (``"index"`` when it has none). Parent directories are created.

    Parameters
    ----------
    frame : DataFrame
    path : str or Path

    Raises
    ------
    InputError
        The name has an unsupported extension.
    OSError
        The file could not be written.
    """
    target = Path(path)
    fmt = table_format(target)
    if frame.index.name is not None:
        name = str(frame.index.name)
    else:
        name = ROW_COLUMN if isinstance(frame.index, pd.RangeIndex) else "index"
    table = frame.rename_axis(index=name).reset_index()
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(target, index=False)
    else:
        table.to_parquet(target, index=False)
    logger.debug("wrote %d rows to %s", len(table), target)


def _parse_time(column: pd.Series, name: str) -> pd.Index:
    """An integer index or a DatetimeIndex from a time column without missing values."""
    if pd.api.types.is_bool_dtype(column):
        raise InputError(f"the time column {name!r} holds booleans; use integers or timestamps")
    if pd.api.types.is_integer_dtype(column):
        return _integer_index(column.to_numpy(dtype=np.int64), name)
    if pd.api.types.is_float_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        if np.isfinite(values).all() and (values == np.round(values)).all():
            return _integer_index(values.astype(np.int64), name)
        raise InputError(
            f"the time column {name!r} holds fractional numbers; use integer steps or timestamps"
        )
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.DatetimeIndex(column, name=name)
    # The format is inferred from the first value; ISO 8601 times of varying precision, and
    # then mixed UTC offsets (which parse only as UTC), are tried next.
    for options in ({}, {"format": "ISO8601"}, {"format": "ISO8601", "utc": True}):
        try:
            with warnings.catch_warnings():
                # "Could not infer format": slower element-wise parsing, same result.
                warnings.simplefilter("ignore", UserWarning)
                parsed = pd.to_datetime(column, **options)
        except (ValueError, TypeError, OverflowError):
            continue
        return pd.DatetimeIndex(parsed, name=name)
    raise InputError(
        f"could not parse the time column {name!r} as timestamps: {_first_unparsed(column)}; "
        "use ISO 8601 times such as 2024-01-31T12:00:00, or integer steps"
    )


def _first_unparsed(column: pd.Series) -> str:
    """Where parsing a time column fails, in words."""
    for position, value in enumerate(column.tolist()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            return f"row {position} holds {value!r}"
    return "the values mix formats or time zones"


def _integer_index(values: np.ndarray, name: str) -> pd.Index:
    index: pd.Index = pd.Index(values, dtype=np.int64, name=name)
    return index


def _column_list(frame: pd.DataFrame, limit: int = 20) -> str:
    names = [str(c) for c in frame.columns]
    shown = ", ".join(repr(c) for c in names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"
