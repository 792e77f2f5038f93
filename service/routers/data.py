"""Stored history: append JSON rows or a CSV/Parquet file, summarise, export or drop a range."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.responses import Response

from service.data import frame_from_rows, frame_from_upload
from service.deps import AdminKey, DataDep, ScoreKey, WriteKey
from service.errors import InvalidInputError
from service.parsing import parse_json
from service.routers.params import API_PREFIX, ModelName
from service.schemas import DataAppend, DataAppended, DataDropped, DataSummary

router = APIRouter(prefix=API_PREFIX + "/models/{name}/data", tags=["data"])

_APPEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": DataAppend.model_json_schema()}},
    }
}


@router.post("", response_model=DataAppended, openapi_extra=_APPEND_BODY)
async def append_rows(
    name: ModelName, request: Request, data: DataDep, _key: WriteKey
) -> DataAppended:
    """Append JSON rows; rows with an already stored timestamp replace it."""
    body = await request.body()

    def work() -> DataAppended:
        payload = DataAppend.model_validate(parse_json(body))
        frame = frame_from_rows(payload.rows, data.key_column(name))
        count, summary = data.append(name, frame)
        return DataAppended(appended=count, summary=DataSummary.from_summary(summary))

    return await asyncio.to_thread(work)


@router.post("/upload", response_model=DataAppended)
async def upload(
    name: ModelName,
    data: DataDep,
    _key: WriteKey,
    file: Annotated[UploadFile, File(description="A CSV or Parquet file.")],
    timestamp_column: Annotated[str, Form(max_length=128)] = "timestamp",
) -> DataAppended:
    """Append a CSV or Parquet file with a timestamp column and one column per feature."""
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


_EXPORT_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


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
    data: DataDep,
    _key: ScoreKey,
    start: Annotated[datetime | None, Query(description="From (inclusive).")] = None,
    end: Annotated[datetime | None, Query(description="Until (exclusive).")] = None,
    format: Annotated[Literal["csv", "parquet"], Query(description="File format.")] = "csv",
) -> Response:
    """Download stored history in ``[start, end)`` as CSV or Parquet."""
    content = data.export(name, _utc(start), _utc(end), format)
    return Response(
        content,
        media_type=_EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}.{format}"'},
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
