"""Scoring: windows or a series segment against the active or a pinned version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.columnar import COLUMNAR_TYPES, JSON, accepted
from service.deps import authorize, context_of
from service.parsing import MAX_VERSION
from service.routers.params import API_PREFIX, ModelName
from service.scoring import ScoreRequest, ScoreResponse
from service.scoring.response import POINT_FIELDS

router = APIRouter(prefix=API_PREFIX, tags=["scoring"])

_TABLE = {
    "schema": {"type": "string", "format": "binary"},
    "description": "A series segment as a table: an optional 'timestamp' column and one column "
    "per feature; the other request fields as query parameters.",
}


def _query(name: str, schema: dict[str, object], description: str) -> dict[str, object]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description + " (a table body's field; with a JSON body it takes the "
        "place of the body's field of that name).",
    }


_FIELD = "(" + "|".join(POINT_FIELDS) + ")"


_SCORE_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ScoreRequest.model_json_schema()},
            **{media: _TABLE for media in COLUMNAR_TYPES},
        },
    },
    "parameters": [
        _query(
            "version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, "Pin a version"
        ),
        _query("reconstruct", {"type": "boolean"}, "Also return the expected values"),
        _query(
            "top_k",
            {"type": "integer", "minimum": 0, "maximum": 1000},
            "Top contributing features per point",
        ),
        _query(
            "fields",
            {
                "type": "string",
                "pattern": f"^ *{_FIELD}( *, *{_FIELD}){{0,{len(POINT_FIELDS) - 1}}} *$",
            },
            f"Per-point fields, comma-separated (at most {len(POINT_FIELDS)})",
        ),
    ],
    "security": [{"APIKey": []}],
}


@router.post(
    "/models/{name}/score",
    response_model=ScoreResponse,
    openapi_extra=_SCORE_OPENAPI,
    responses={
        200: {
            "description": "Per-point results: JSON, or a table (one row per point) as an "
            "Arrow IPC stream or a Parquet file when Accept names its media type.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in COLUMNAR_TYPES
            },
        },
        413: {"description": "Body or point count over the configured limit."},
        422: {"description": "Values that cannot be scored; the message says what to fix."},
    },
)
async def score(name: ModelName, request: Request) -> Response:
    """Score windows (n, window, features) or a series segment (values + timestamps, or a
    table: ``Content-Type: application/vnd.apache.arrow.stream`` or
    ``application/vnd.apache.parquet``).

    Needs a key with scope ``score``. The hot path of the service, so it skips FastAPI's
    dependency injection (checked here in one call, documented above) and its body parsing:
    the service validates the raw bytes with :class:`~service.scoring.ScoreRequest` itself, so
    that a million-point series is parsed off the event loop, straight into numpy arrays.
    ``Accept: application/vnd.apache.arrow.stream`` (or ``application/vnd.apache.parquet``)
    returns the per-point results as a table.
    """
    await authorize(request, "score")
    body = await request.body()
    media = accepted(request.headers.get("accept"), COLUMNAR_TYPES, JSON)
    content = await context_of(request).scoring.score(
        name, body, media, request.headers.get("content-type"), request.query_params
    )
    return Response(content, media_type=media)
