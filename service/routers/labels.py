"""Feedback labels of a model: create, list, show, delete, import and export a CSV."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from starlette.responses import Response

from detector.feedback import Verdict
from service.deps import AdminKey, LabelsDep, ScoreKey, WriteKey
from service.errors import InvalidInputError
from service.labels import OVERLAP_RULE
from service.routers.params import API_PREFIX, Limit, ModelName, Offset
from service.schemas import LabelCreate, LabelPublic, LabelsImported, LabelsPublic

router = APIRouter(prefix=API_PREFIX + "/models/{name}/labels", tags=["labels"])

LabelId = Annotated[int, Path(ge=1, le=2**62, description="Label id.")]

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "A header row naming start and label (anomaly, normal, unsure, or 1/0) "
        "and optionally end, note and series; one row per label. Times are ISO-8601 or epoch "
        "seconds; an empty end makes a point label.",
    }
}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.post(
    "",
    response_model=LabelPublic,
    status_code=status.HTTP_201_CREATED,
    description="Label a point (give only start) or a range (start and end, inclusive) "
    f"anomaly, normal or unsure. {OVERLAP_RULE}",
)
def create_label(
    name: ModelName, body: LabelCreate, labels: LabelsDep, key: WriteKey
) -> LabelPublic:
    """Store a label."""
    assert body.end is not None  # LabelCreate fills it in
    row = labels.create(
        name, body.start, body.end, body.verdict, body.note, body.series, key.key_id
    )
    return LabelPublic.of(row, model=name)


@router.get("", response_model=LabelsPublic)
def list_labels(
    name: ModelName,
    labels: LabelsDep,
    _key: ScoreKey,
    verdict: Annotated[Verdict | None, Query()] = None,
    series: Annotated[str | None, Query(max_length=200, description="Series name.")] = None,
    start: Annotated[datetime | None, Query(description="Labels ending at or after.")] = None,
    end: Annotated[datetime | None, Query(description="Labels starting before.")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> LabelsPublic:
    """The model's labels, newest start first, by verdict, series and time range."""
    lo, hi = _utc(start), _utc(end)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidInputError("start must be before end")
    rows, total = labels.list_labels(name, verdict, series, lo, hi, offset, limit)
    return LabelsPublic(data=[LabelPublic.of(r, model=name) for r in rows], count=total)


@router.post(
    "/import",
    response_model=LabelsImported,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_CSV_BODY,
    description="Import known incidents from a CSV: every row is stored, or none (a 422 "
    f"names the first bad row). {OVERLAP_RULE}",
)
async def import_labels(
    name: ModelName, request: Request, labels: LabelsDep, key: WriteKey
) -> LabelsImported:
    """Store every row of a labels CSV, or none."""
    body = await request.body()
    imported, count = await asyncio.to_thread(labels.import_csv, name, body, key.key_id)
    return LabelsImported(imported=imported, count=count)


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"description": "The labels as CSV.", "content": {"text/csv": {}}}},
)
def export_labels(name: ModelName, labels: LabelsDep, _key: ScoreKey) -> Response:
    """Every label of the model as a CSV that the import reads back."""
    return Response(
        labels.export_csv(name),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}-labels.csv"'},
    )


@router.get("/{label_id}", response_model=LabelPublic)
def get_label(name: ModelName, label_id: LabelId, labels: LabelsDep, _key: ScoreKey) -> LabelPublic:
    """One label."""
    return LabelPublic.of(labels.get(name, label_id), model=name)


@router.delete("/{label_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_label(
    name: ModelName, label_id: LabelId, labels: LabelsDep, _key: AdminKey
) -> Response:
    """Delete a label."""
    await labels.delete(name, label_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
