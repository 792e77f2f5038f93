"""Columnar bulk formats: Apache Arrow IPC and Parquet bodies, in and out.

The content type says which format a body is in; the ``Accept`` header chooses the format of
an answer:

- ``application/vnd.apache.arrow.stream``: Arrow's IPC streaming format (what
  ``pyarrow.ipc.new_stream`` writes); IPC *files* (``ARROW1``, ``pyarrow.ipc.new_file``) are
  read too, by their magic bytes;
- ``application/vnd.apache.parquet``: a Parquet file.

A table is one row per time point: a ``timestamp`` column and one column per feature, as in
CSV. :func:`read_table` turns such a body into a pandas frame (the caller checks columns and
timestamps, as for CSV); :func:`write_table` encodes a pyarrow table.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from service.errors import BadRequestError, InvalidInputError

__all__ = [
    "ARROW_STREAM",
    "COLUMNAR_TYPES",
    "JSON",
    "PARQUET",
    "accepted",
    "columnar_type",
    "is_arrow",
    "is_parquet",
    "read_table",
    "write_table",
]

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
COLUMNAR_TYPES = (ARROW_STREAM, PARQUET)

_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"  # the continuation marker of the first message
_PARQUET_MAGIC = b"PAR1"


def _media(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def columnar_type(content_type: str | None) -> str | None:
    """The columnar format a ``Content-Type`` header names (None: not a columnar one)."""
    media = _media(content_type or "")
    return media if media in COLUMNAR_TYPES else None


def accepted(accept: str | None, offered: tuple[str, ...], default: str) -> str:
    """The answer's media type: the first of ``offered`` that ``Accept`` lists (in the order
    the client lists them), else ``default``. Quality values are not weighed: a client that
    wants Arrow names it."""
    for part in (accept or "").split(","):
        media = _media(part)
        if media in offered:
            return media
    return default


def is_arrow(content: bytes, content_type: str | None = None) -> bool:
    """Whether a body is Arrow IPC (stream or file), by its content type or magic bytes."""
    if columnar_type(content_type) == ARROW_STREAM:
        return True
    return content[:6] == _ARROW_FILE_MAGIC or content[:4] == _ARROW_STREAM_MAGIC


def is_parquet(content: bytes, content_type: str | None = None) -> bool:
    """Whether a body is a Parquet file, by its content type or magic bytes."""
    return columnar_type(content_type) == PARQUET or content[:4] == _PARQUET_MAGIC


def read_table(content: bytes, media_type: str) -> pd.DataFrame:
    """Read an Arrow IPC (stream or file) or Parquet body into a frame.

    Raises
    ------
    service.errors.BadRequestError
        For a body that is not a readable table of that format.
    service.errors.InvalidInputError
        For repeated column names or nested (list, struct, map) columns.
    """
    kind = "Arrow IPC" if media_type == ARROW_STREAM else "Parquet"
    try:
        if media_type == ARROW_STREAM:
            source = pa.BufferReader(content)
            if content[:6] == _ARROW_FILE_MAGIC:
                table = ipc.open_file(source).read_all()
            else:
                table = ipc.open_stream(source).read_all()
        else:
            table = pq.ParquetFile(pa.BufferReader(content)).read()
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise BadRequestError(
            f"could not read the body as {kind} (content type {media_type}): {exc}"
        ) from None
    _check_schema(table.schema)
    try:
        frame: pd.DataFrame = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"the table's columns cannot be read as numbers: {exc}") from None
    return frame


def _check_schema(schema: pa.Schema) -> None:
    """Refuse what a table of one value per row and column cannot be: repeated column names
    (a frame would keep one of them silently) and nested columns (lists, structs, maps)."""
    names = [field.name for field in schema]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(
            f"table columns {repeated} appear more than once; give every column its own name"
        )
    for field in schema:
        if pa.types.is_nested(field.type):
            raise InvalidInputError(
                f"table column {field.name!r} has the nested type {field.type}; send one "
                "number (or null) per row and column"
            )


def write_table(table: pa.Table, media_type: str) -> bytes:
    """Encode a table as an Arrow IPC stream or a Parquet file."""
    sink = io.BytesIO()
    if media_type == ARROW_STREAM:
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, sink)
    return sink.getvalue()
