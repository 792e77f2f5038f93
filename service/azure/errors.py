"""Errors of the Azure-compatible API: ``{"code", "message"}`` bodies with Azure's codes.

Routes under ``/anomalydetector/v1.1`` answer every error in this shape (with the code also in
the ``x-ms-error-code`` header); the rest of the service keeps its ``{"detail"}`` bodies. The
service's own exceptions keep their status and get a code from it. Any other exception is a 500
``InternalServerError`` whose message holds the request id (also in ``x-request-id``); the main
app's request middleware logs it once, with its traceback and that id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from detector import errors as det_errors
from service.errors import ServiceError

__all__ = ["AzureError", "install_azure_handlers", "validation_code"]

logger = logging.getLogger(__name__)

#: Codes of the univariate API by the request field that failed validation.
_FIELD_CODES = {
    "series": "InvalidSeries",
    "granularity": "InvalidGranularity",
    "customInterval": "InvalidCustomInterval",
    "period": "InvalidPeriod",
    "maxAnomalyRatio": "InvalidModelArgument",
    "sensitivity": "InvalidModelArgument",
    "stableTrendWindow": "InvalidModelArgument",
    "threshold": "InvalidModelArgument",
    "imputeMode": "InvalidImputeMode",
    "imputeFixedValue": "InvalidImputeFixedValue",
}
_REQUIRED_CODES = {"series": "RequiredSeries", "granularity": "RequiredGranularity"}
_STATUS_CODES = {
    400: "BadArgument",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    422: "BadArgument",
    503: "ServiceUnavailable",
}


class AzureError(ServiceError):
    """An error with an Azure error code.

    Parameters
    ----------
    status
        HTTP status.
    code
        Azure error code (``InvalidSeries``, ``ModelNotExist``, ...).
    message
        What went wrong and what to change.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code


def validation_code(errors: list[Any]) -> str:
    """The Azure code for pydantic errors: from the first failing field's name."""
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if not loc:
            continue
        field = loc[0]
        if err.get("type") == "missing" and len(loc) == 1 and field in _REQUIRED_CODES:
            return _REQUIRED_CODES[field]
        if field in _FIELD_CODES:
            return _FIELD_CODES[field]
    return "BadArgument"


def _message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid value')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts) or "invalid request"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"code": code, "message": message},
        status_code=status,
        headers={**(headers or {}), "x-ms-error-code": code},
    )


def install_azure_handlers(app: FastAPI) -> None:
    """Register the Azure-shaped error responses on the API's sub-application."""

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "BadArgument")
        status = 400 if exc.status_code == 422 else exc.status_code
        return _error(status, code, exc.message, exc.headers)

    async def library_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, det_errors.PersistenceError):
            logger.error("detector storage error: %s", exc)
            return _error(503, "ServiceUnavailable", str(exc))
        return _error(400, "BadArgument", str(exc))

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "InvalidJsonFormat", "the body is not valid JSON")
        return _error(400, validation_code(errors), _message(errors))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "BadArgument")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette raises the exception again after this answer is sent; the main app's
        # RequestContextMiddleware logs it there, once, with its traceback and request id.
        request_id = getattr(request.state, "request_id", None) or "-"
        return _error(
            500,
            "InternalServerError",
            f"internal error; request id {request_id} identifies it in the server log",
        )

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(det_errors.ReconADError, library_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
