"""Stored history: append JSON rows, a table (Arrow IPC, Parquet) or a CSV/Parquet/Arrow file,
summarise, export (CSV, Parquet, Arrow) or drop a range."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.responses import Response

from service.columnar import ARROW_STREAM, PARQUET, accepted
from service.data import frame_from_body, frame_from_upload
from service.deps import AdminKey, DataDep, ScoreKey, WriteKey
from service.errors import InvalidInputError
from service.routers.params import API_PREFIX, ModelName
from service.schemas import DataAppend, DataAppended, DataDropped, DataSummary

router = APIRouter(prefix=API_PREFIX + "/models/{name}/data", tags=["data"])

_TABLE = {
    "schema": {"type": "string", "format": "binary"},
    "description": "A table: a 'timestamp' column and one column per feature.",
}
_APPEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DataAppend.model_json_schema()},
            ARROW_STREAM: _TABLE,
            PARQUET: _TABLE,
        },
    }
}


@router.post("", response_model=DataAppended, openapi_extra=_APPEND_BODY)
async def append_rows(
    name: ModelName, request: Request, data: DataDep, _key: WriteKey
) -> DataAppended:
    """Append JSON rows, or a table as an Arrow IPC stream or a Parquet file (the
    ``Content-Type`` says which); rows with an already stored timestamp replace it."""
    body = await request.body()
    content_type = request.headers.get("content-type")

    def work() -> DataAppended:
        frame = frame_from_body(body, content_type, data.key_column(name), data.max_bytes)
        count, summary = data.append(name, frame)
        return DataAppended(appended=count, summary=DataSummary.from_summary(summary))

    return await asyncio.to_thread(work)


@router.post("/upload", response_model=DataAppended)
async def upload(
    name: ModelName,
    data: DataDep,
    _key: WriteKey,
    file: Annotated[UploadFile, File(description="A CSV, Parquet or Arrow IPC file.")],
    timestamp_column: Annotated[str, Form(max_length=128)] = "timestamp",
) -> DataAppended:
    """Append a CSV, Parquet or Arrow IPC file with a timestamp column and one column per
    feature."""
    content = await file.read()

    def work() -> DataAppended:
        key_column = data.key_column(name)
        frame = frame_from_upload(
            content, file.filename, file.content_type, timestamp_column, key_column, data.max_bytes
        )
        count, summary = data.append(name, frame)
        return DataAppended(appended=count, summary=DataSummary.from_summary(summary))

    return await asyncio.to_thread(work)


@router.get("", response_model=DataSummary)
def summary(name: ModelName, data: DataDep, _key: ScoreKey) -> DataSummary:
    """How much history the model holds: points, time range, columns, bytes."""
    return DataSummary.from_summary(data.summary(name))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_EXPORT_TYPES = {"csv": "text/csv", "parquet": PARQUET, "arrow": ARROW_STREAM}
_SUFFIXES = {media: fmt for fmt, media in _EXPORT_TYPES.items()}


@router.get(
    "/export",
    response_class=Response,
    responses={
        200: {
            "description": "The rows, with a timestamp column first.",
            "content": {media: {} for media in _EXPORT_TYPES.values()},
        }
    },
)
def export(
    name: ModelName,
    request: Request,
    data: DataDep,
    _key: ScoreKey,
    start: Annotated[datetime | None, Query(description="From (inclusive).")] = None,
    end: Annotated[datetime | None, Query(description="Until (exclusive).")] = None,
    format: Annotated[
        Literal["csv", "parquet", "arrow"] | None,
        Query(description="File format (default: by the Accept header, else CSV)."),
    ] = None,
) -> Response:
    """Download stored history in ``[start, end)`` as CSV, Parquet or an Arrow IPC stream:
    ``format``, else the first of their media types in ``Accept``, else CSV."""
    media = (
        _EXPORT_TYPES[format]
        if format is not None
        else accepted(request.headers.get("accept"), tuple(_SUFFIXES), "text/csv")
    )
    content = data.export(name, _utc(start), _utc(end), media)
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}.{_SUFFIXES[media]}"'},
    )


@router.delete("", response_model=DataDropped)
def drop_range(
    name: ModelName,
    data: DataDep,
    _key: AdminKey,
    start: Annotated[datetime | None, Query(description="Drop from (inclusive).")] = None,
    end: Annotated[datetime | None, Query(description="Drop until (exclusive).")] = None,
    all: Annotated[bool, Query(description="Drop everything (needs no range).")] = False,
) -> DataDropped:
    """Drop stored rows with ``start <= timestamp < end``."""
    if start is None and end is None and not all:
        raise InvalidInputError("give 'start' and/or 'end', or all=true to drop everything")
    dropped, summary = data.drop(name, _utc(start), _utc(end))
    return DataDropped(dropped=dropped, summary=DataSummary.from_summary(summary))
