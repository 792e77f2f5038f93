"""Liveness, readiness and Prometheus metrics (outside /v1)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from service.deps import AnyKey, ContextDep
from service.schemas import HealthPublic

router = APIRouter(tags=["operations"])

_LIVE = b'{"status":"ok"}'


@router.get("/livez", summary="Liveness (no key needed)")
async def livez() -> Response:
    """The process is up and serving requests."""
    return Response(_LIVE, media_type="application/json")


@router.get(
    "/readyz",
    response_model=HealthPublic,
    summary="Readiness: database and stores reachable",
    responses={503: {"model": HealthPublic}},
)
async def readyz(ctx: ContextDep, _key: AnyKey) -> Response:
    """200 when the database, the artifact store and the history store answer, else 503."""

    def check() -> dict[str, str]:
        checks: dict[str, str] = {}
        for name, probe in (
            ("database", ctx.db.ping),
            ("artifacts", ctx.artifacts.check),
            ("history", ctx.history.check),
        ):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
        return checks

    checks = await asyncio.to_thread(check)
    ok = all(v == "ok" for v in checks.values())
    body = HealthPublic(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(ctx: ContextDep, _key: AnyKey) -> Response:
    """Metrics in the Prometheus text format."""
    payload = await asyncio.to_thread(generate_latest, ctx.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
