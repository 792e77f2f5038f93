"""The OpenAPI document, made exact about errors.

FastAPI documents each route's success response and a 422 whose body it does not send (ours is
:class:`ErrorPublic`). :func:`exact_openapi` adds, to every operation, the error statuses it can
answer, each with the body every error has:

- 401 (and 503: the key is checked against the database) on every route that needs a key, 403
  on those needing more than ``score`` (both from :data:`service.scopes.ROUTE_SCOPES`);
- 404 where the path (or a query filter, :data:`FILTERS`) names a resource; 400 (malformed
  body) and 413 (body over ``max_body_bytes``) where there is a body; 422 where there is any
  parameter or body;
- 409 and 429 where the service raises them (:data:`CONFLICTS`, :data:`QUEUED`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.scopes import ROUTE_SCOPES

__all__ = ["CONFLICTS", "FILTERS", "QUEUED", "ErrorItem", "ErrorPublic", "exact_openapi"]


class ErrorItem(BaseModel):
    """One validation problem."""

    loc: list[str | int] = Field(description="Where: e.g. ['body', 'config', 'window'].")
    msg: str
    type: str


class ErrorPublic(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What is wrong and what to do about it.")
    request_id: str | None = Field(None, description="Finds the request in the server log.")
    errors: list[ErrorItem] | None = Field(
        None, description="422 from request validation: every problem found."
    )


#: Operations that answer 409 (the state of a resource does not allow the request).
CONFLICTS = {
    ("POST", "/v1/models"),
    ("POST", "/v1/models/{name}/channels"),
    ("POST", "/v1/models/{name}/schedules"),
    ("POST", "/v1/models/{name}/labels"),
    ("POST", "/v1/models/{name}/labels/import"),
    ("POST", "/v1/events/{event_id}/label"),
    ("POST", "/v1/models/{name}/score"),
    ("POST", "/v1/models/{name}/rollback"),
    ("POST", "/v1/models/{name}/versions/{version}/promote"),
    ("DELETE", "/v1/models/{name}/versions/{version}"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("POST", "/v1/jobs/{job_id}/retry"),
    ("POST", "/v1/schedules/{schedule_id}/run"),
}
#: Operations without a path parameter whose query names a resource that may not exist.
FILTERS = {("GET", "/v1/jobs")}
#: Operations that answer 429 (a bounded queue is full), with ``Retry-After``.
QUEUED = {
    ("POST", "/v1/models/{name}/jobs"),
    ("POST", "/v1/jobs/{job_id}/retry"),
    ("POST", "/v1/schedules/{schedule_id}/run"),
    ("POST", "/v1/models/{name}/stream"),
}

_DESCRIPTIONS = {
    "400": "Malformed body (not JSON, not a readable file).",
    "401": "Missing, invalid, expired or revoked API key.",
    "403": "The key's scope does not allow this route.",
    "404": "No such resource.",
    "409": "The resource's state does not allow this request.",
    "413": "Body or point count over the configured limit.",
    "422": "Values that cannot be used; the message says what to fix.",
    "429": "A queue is full; retry after the Retry-After seconds.",
    "503": "The database or a store cannot be reached.",
}
_REF = {"$ref": "#/components/schemas/ErrorPublic"}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    scope = ROUTE_SCOPES.get((method, path), "score")
    found: set[str] = set()
    if scope is not None:
        found |= {"401", "503"}
    if scope in ("write", "admin"):
        found.add("403")
    if "{" in path or (method, path) in FILTERS:
        found.add("404")
    has_body = "requestBody" in operation
    if has_body:
        found |= {"400", "413"}
    if has_body or operation.get("parameters"):
        found.add("422")
    if (method, path) in CONFLICTS:
        found.add("409")
    if (method, path) in QUEUED:
        found.add("429")
    return found


def exact_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses to a FastAPI OpenAPI document (in place) and return it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorPublic"] = error_schema
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in sorted(_statuses(method.upper(), path, operation)):
                entry: dict[str, Any] = {
                    "description": _DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": _REF}},
                }
                if status == "401":
                    entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
                if status == "429":
                    entry["headers"] = {
                        "Retry-After": {"schema": {"type": "integer"}, "required": True}
                    }
                old = responses.get(status, {})
                keep_content = status not in ("422",) and "content" in old
                responses[status] = {
                    **entry,
                    **({"content": old["content"]} if keep_content else {}),
                }
    return document
