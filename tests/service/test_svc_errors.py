"""Errors of the layers below the API (library, stores, database) map to HTTP codes in one
table; a failing store is a 503 that says so, never a 500."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from svc_helpers import TINY_CONFIG, register_trained_version

from detector import errors as det_errors
from service.context import AppContext
from service.errors import MAPPED_ERRORS, mapped_response
from service.storage import StoreError

Client = tuple[TestClient, dict[str, str]]


@pytest.mark.parametrize(
    ("exc", "status", "text"),
    [
        (det_errors.InputError("bad frame"), 422, "bad frame"),
        (det_errors.ConfigError("bad config"), 422, "bad config"),
        (det_errors.NotFittedError("not fitted"), 409, "not fitted"),
        (det_errors.PersistenceError("damaged state"), 503, "could not be read: damaged state"),
        (det_errors.TooShortError("too short"), 422, "too short"),
        (StoreError("bucket unreachable"), 503, "storage is unavailable: bucket unreachable"),
        (OperationalError("SELECT 1", {}, Exception("postgres://u:secret@db")), 503, "database"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_the_table_maps_each_error(exc: Exception, status: int, text: str) -> None:
    got, message, headers = mapped_response(exc)
    assert got == status and text in message
    assert "secret" not in message  # a driver's text (connection string) never reaches clients
    assert (headers is not None and headers["Retry-After"].isdigit()) == (status == 503)


def test_every_class_of_the_table_is_reachable() -> None:
    # An entry shadowed by an earlier superclass would never apply.
    classes = [cls for cls, _status, _prefix in MAPPED_ERRORS]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls


def _ctx(client: TestClient) -> AppContext:
    context: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def test_a_missing_artifact_is_a_503_not_a_500(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    ctx = _ctx(client)
    register_trained_version(ctx, "m")
    _, row = ctx.registry.get_version("m", 1)
    artifact = ctx.artifacts.fetch(row.artifact_key)
    shutil.rmtree(artifact)  # the store lost the version (a wiped disk, a deleted bucket)
    r = client.post(
        "/v1/models/m/score", json={"windows": np.zeros((1, 16, 2)).tolist()}, headers=headers
    )
    assert r.status_code == 503, r.text
    assert "storage is unavailable" in r.json()["detail"] and "missing" in r.json()["detail"]
    assert r.headers["Retry-After"].isdigit()
    assert r.json()["request_id"]


def test_an_unreachable_database_is_a_503(
    app_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers = app_client

    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(_ctx(client).registry, "list_models", down)
    r = client.get("/v1/models", headers=headers)
    assert r.status_code == 503 and "database is unavailable" in r.json()["detail"]


def test_a_failing_history_store_is_a_503(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    ctx = _ctx(client)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreError("history store at s3://bucket is not usable: timeout")

    ctx.history.summary = broken  # type: ignore[method-assign]
    r = client.get("/v1/models/m/data", headers=headers)
    assert r.status_code == 503 and "not usable" in r.json()["detail"]
