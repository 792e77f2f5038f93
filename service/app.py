"""The application factory: ``create_app(settings)`` builds a FastAPI app with its own services.

Routes live under ``/v1`` except ``/livez``, ``/readyz`` and ``/metrics``. On start the app
applies the database migrations, marks jobs left running by a previous process as
``interrupted``, removes unregistered artifacts, creates the first admin key if there is no key
at all, and starts the job runner and the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.azure.router import AZURE_PREFIX, create_azure_app
from service.context import AppContext
from service.errors import PayloadTooLargeError, install_exception_handlers
from service.observability import RequestContextMiddleware, configure_logging
from service.openapi import exact_openapi
from service.routers import ROUTERS, docs
from service.settings import Settings
from service.ui import router as console

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

API_VERSION = "0.1.0"


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: at once from ``Content-Length``, else while
    the body streams in (pure ASGI, so it adds no per-request task)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send, declared)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked:
            # The server reads exactly Content-Length bytes, within the limit: nothing to watch.
            await self.app(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes
        over = False
        answered = False

        async def limited() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise PayloadTooLargeError(
                        f"the request body exceeds {limit} bytes (max_body_bytes); "
                        "send less data per request"
                    )
            return message

        async def guarded(message: Message) -> None:
            # Whatever the route made of the interrupted body (form parsing answers 400), a body
            # over the limit is answered 413.
            nonlocal answered
            if over:
                if not answered:
                    answered = True
                    await self._refuse(send, received)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except PayloadTooLargeError:
            if not answered:
                answered = True
                await self._refuse(send, received)

    async def _refuse(self, send: Send, size: int) -> None:
        body = (
            f'{{"detail":"the request body is {size} bytes or more; the limit is '
            f'{self.max_bytes} bytes (max_body_bytes): send less data per request"}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    settings
        Service settings; ``None`` reads them from ``RECONAD_*`` environment variables.

    Returns
    -------
    FastAPI
        The application; its lifespan starts and stops the background services.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    context = AppContext.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context.prepare()
        await context.start()
        logger.info("ReconAD service ready", extra={"data_dir": str(settings.data_dir)})
        try:
            yield
        finally:
            await context.stop()
            logger.info("ReconAD service stopped")

    app = FastAPI(
        title="ReconAD",
        version=API_VERSION,
        summary="Time-series anomaly detection: models, training jobs, schedules and scoring.",
        lifespan=lifespan,
        openapi_url=None,  # served by service.routers.docs, with or without a key
        docs_url=None,
        redoc_url=None,
    )
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = exact_openapi(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.context = context
    install_exception_handlers(app)
    for router in ROUTERS:  # matched in this order: the hot scoring route near the front
        app.include_router(router)
    app.include_router(docs.build_router(settings.public_docs))
    app.include_router(console.router)
    app.mount("/ui/static", StaticFiles(directory=console.HERE / "static"), name="ui-static")
    # The Azure Anomaly Detector v1.1 API: a sub-app, for its own {"code", "message"} errors.
    app.mount(AZURE_PREFIX, create_azure_app(context))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=context.metrics)
    return app
