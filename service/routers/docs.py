"""The OpenAPI schema and its HTML docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``).

They need a key of any scope, unless ``RECONAD_PUBLIC_DOCS=true`` serves them to everyone. The
pages load their scripts and styles from ``/docs/assets/``: copies shipped inside the installed
``fastapi-offline`` package (MIT), so the docs work without internet.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Literal

import fastapi_offline
from fastapi import APIRouter, Depends, Path, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, JSONResponse

from service.deps import APIKeyAuth

__all__ = ["ASSETS", "build_router"]

#: The folder of the shipped Swagger UI and ReDoc files.
ASSETS = FilePath(fastapi_offline.__file__).parent / "static"
_ASSET_URL = "/docs/assets"
_MEDIA = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
AssetName = Annotated[
    Literal["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"],
    Path(description="A shipped asset."),
]


def build_router(public: bool) -> APIRouter:
    """The docs routes; with ``public`` false each needs a key (any scope)."""
    router = APIRouter(
        include_in_schema=False,
        dependencies=[] if public else [Depends(APIKeyAuth("score"))],
    )

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{root}{_ASSET_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSET_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_ASSET_URL}/favicon.png",
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{_ASSET_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_ASSET_URL}/favicon.png",
            with_google_fonts=False,
        )

    @router.get(_ASSET_URL + "/{asset}")
    async def asset(asset: AssetName) -> FileResponse:
        return FileResponse(
            ASSETS / asset,
            media_type=_MEDIA[asset],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router
