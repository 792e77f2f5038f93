"""Streams: post new points of a series and get decisions back; list and reset live series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from starlette.responses import Response

from service.deps import AdminKey, LiveDep, ScoreKey, authorize, context_of
from service.live.schemas import StreamPoints, StreamPublic, StreamsPublic
from service.routers.params import API_PREFIX, Limit, ModelName, Offset

router = APIRouter(prefix=API_PREFIX + "/models/{name}", tags=["streams"])

SeriesName = Annotated[str, Path(min_length=1, max_length=200, description="Series name.")]

_STREAM_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": StreamPoints.model_json_schema()}},
    },
    "security": [{"APIKey": []}],
}


@router.post(
    "/stream",
    openapi_extra=_STREAM_OPENAPI,
    responses={
        200: {
            "description": "Per point: score, normalized, threshold, anomalous, event (id or "
            "null), expected values; plus the events these points opened, updated or closed."
        },
        409: {"description": "A point at or before the last accepted one (not a duplicate)."},
        413: {"description": "More points than stream_max_points_per_request."},
        422: {"description": "Values that cannot be used; the message says what to fix."},
    },
)
async def post_points(name: ModelName, request: Request) -> Response:
    """Score new points of a series against its live state (needs scope ``write``: the points
    also join the stored history). The service parses the body itself, as on the scoring
    route, so that a batch of many series costs one pass."""
    await authorize(request, "write")
    body = await request.body()
    content = await context_of(request).live.streams.ingest(name, body)
    return Response(content, media_type="application/json")


@router.get("/streams", response_model=StreamsPublic)
def list_streams(
    name: ModelName, live: LiveDep, _key: ScoreKey, offset: Offset = 0, limit: Limit = 100
) -> StreamsPublic:
    """The model's live series."""
    rows, total = live.streams.list_streams(name, offset, limit)
    return StreamsPublic(data=[StreamPublic.of(r) for r in rows], count=total)


@router.delete("/streams/{series}", status_code=status.HTTP_204_NO_CONTENT)
def delete_stream(name: ModelName, series: SeriesName, live: LiveDep, _key: AdminKey) -> Response:
    """Forget a series' live state and its events; its next point starts it afresh."""
    live.streams.delete_stream(name, series)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/stream", status_code=status.HTTP_204_NO_CONTENT)
def delete_single_stream(name: ModelName, live: LiveDep, _key: AdminKey) -> Response:
    """Forget the live state of a model without a key column."""
    live.streams.delete_stream(name, "")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
