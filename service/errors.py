"""Service exceptions and the one place where every exception becomes an HTTP response.

Service code raises these (or lets the detector library's errors through); routers never build
error responses themselves.

Exception tree::

    ServiceError                 500 unless a subclass says otherwise
    ├── BadRequestError               400  malformed body (not JSON, not CSV/Parquet, nested
    │                                      too deeply: ``RecursionError`` maps here too)
    ├── UnauthorizedError             401  no key, unknown key, revoked key
    ├── ForbiddenError                403  the key's scope does not allow the route
    ├── NotFoundError                 404  unknown model, version, job, schedule
    ├── ConflictError                 409  name taken, state does not allow the action
    ├── PayloadTooLargeError          413  body or point count over the configured limit
    ├── InvalidInputError             422  well-formed request with values that cannot be used
    └── UnavailableError              503  database or artifact store unreachable

Errors of the layers below map in one table, :data:`MAPPED_ERRORS` (the first matching class
wins): the detector library's ``InputError`` and ``ConfigError`` -> 422, ``NotFittedError`` ->
409, ``PersistenceError`` -> 503, any other ``ReconADError`` -> 422; the stores'
``StoreError`` (an unreachable or failing artifact or history store) -> 503, and a database
that cannot be reached (SQLAlchemy's ``OperationalError``) -> 503. A 503 carries
``Retry-After``: these are conditions of the deployment, not of the request.

Any other exception is a 500, logged once with its traceback and request id by
:class:`service.observability.RequestContextMiddleware`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from detector import errors as det_errors
from service.storage.base import StoreError

__all__ = [
    "MAPPED_ERRORS",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServiceError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "format_validation_errors",
    "install_exception_handlers",
    "mapped_response",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of the service's own errors; ``status_code`` is the HTTP status."""

    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadRequestError(ServiceError):
    """The body could not be parsed at all."""

    status_code = 400


class UnauthorizedError(ServiceError):
    """No valid API key."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(ServiceError):
    """The key is valid but its scope is not enough."""

    status_code = 403


class NotFoundError(ServiceError):
    """A named resource does not exist."""

    status_code = 404


class ConflictError(ServiceError):
    """The resource's state does not allow the request."""

    status_code = 409


class PayloadTooLargeError(ServiceError):
    """The body or its point count exceeds a configured limit."""

    status_code = 413


class InvalidInputError(ServiceError):
    """The request parses but its values cannot be used."""

    status_code = 422


class TooManyRequestsError(ServiceError):
    """A bounded queue is full; the client should retry after ``retry_after_s`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(int(retry_after_s))})


class UnavailableError(ServiceError):
    """A backing store cannot be reached."""

    status_code = 503


MAPPED_ERRORS: Sequence[tuple[type[Exception], int, str]] = (
    # (class, status, what the response says before the error's own message)
    (det_errors.InputError, 422, ""),
    (det_errors.ConfigError, 422, ""),
    (det_errors.NotFittedError, 409, ""),
    (det_errors.PersistenceError, 503, "a stored model could not be read: "),
    (det_errors.ReconADError, 422, ""),
    (StoreError, 503, "storage is unavailable: "),
    (OperationalError, 503, "the database is unavailable"),
)
"""Errors of the library, the stores and the database: HTTP status and message prefix."""

RETRY_AFTER_S = 5


def mapped_response(exc: Exception) -> tuple[int, str, dict[str, str] | None]:
    """Status, message and headers for an error of :data:`MAPPED_ERRORS`.

    Parameters
    ----------
    exc
        An instance of one of the table's classes.

    Returns
    -------
    tuple[int, str, dict[str, str] | None]
        The HTTP status, the response's ``detail`` and its extra headers.
    """
    for cls, status, prefix in MAPPED_ERRORS:
        if isinstance(exc, cls):
            # A driver's text can hold the connection string: the database says only that.
            message = f"{prefix}; retry shortly" if cls is OperationalError else f"{prefix}{exc}"
            headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
            return status, message, headers
    raise TypeError(f"{type(exc).__name__} is not in MAPPED_ERRORS")


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def format_validation_errors(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Turn pydantic errors into one readable sentence plus a JSON-safe list.

    Parameters
    ----------
    errors
        ``exc.errors()`` of a pydantic or FastAPI validation error.

    Returns
    -------
    tuple[str, list[dict]]
        A summary such as ``"body.config.window: window must be ..."`` and the errors as
        ``{"loc", "msg", "type"}`` dicts.
    """
    items: list[dict[str, Any]] = []
    for err in errors:
        loc = [p if isinstance(p, int | str) else str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid value"))
        items.append({"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))})
    summary = "; ".join(f"{_loc(i['loc'])}: {i['msg']}" for i in items[:5])
    if len(items) > 5:
        summary += f"; and {len(items) - 5} more"
    return summary or "invalid request", items


def _json(
    status: int, detail: str, request: Request, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"detail": detail, **extra}
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def install_exception_handlers(app: FastAPI) -> None:
    """Register the mapping of every exception class to its HTTP response on ``app``.

    Parameters
    ----------
    app
        The application.
    """

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return _json(exc.status_code, exc.message, request, exc.headers)

    async def mapped_error(request: Request, exc: Exception) -> Response:
        status, message, headers = mapped_response(exc)
        if status >= 500:
            logger.error(
                "%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc
            )
        return _json(status, message, request, headers)

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
            reason = ctx.get("error", "invalid JSON")
            return _json(400, f"malformed JSON: {reason}", request)
        summary, items = format_validation_errors(errors)
        return _json(422, summary, request, errors=items)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _json(exc.status_code, str(exc.detail), request, getattr(exc, "headers", None))

    async def too_deep(request: Request, exc: Exception) -> Response:
        return _json(400, "the JSON body is nested too deeply; send flat arrays", request)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RecursionError, too_deep)
    for cls in dict.fromkeys(cls for cls, _status, _prefix in MAPPED_ERRORS):
        app.add_exception_handler(cls, mapped_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Any other exception: service.observability.RequestContextMiddleware logs it once, with the
    # request id, and answers 500.
