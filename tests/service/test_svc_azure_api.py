"""The Azure-compatible API in process: what the SDK flows cannot reach (unexpected errors)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from service.azure.service import AzureService

Client = tuple[TestClient, dict[str, str]]

_SERIES = {"series": [{"value": float(i % 7)} for i in range(48)]}


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("an unexpected failure inside the service")


@pytest.mark.parametrize(
    ("method", "path", "body", "target"),
    [
        ("POST", "/timeseries/entire/detect", _SERIES, "detect_entire"),
        ("GET", "/multivariate/models", None, "list_models"),
    ],
)
def test_unexpected_error_is_a_500_in_the_azure_shape(
    app_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: dict[str, object] | None,
    target: str,
) -> None:
    client, headers = app_client
    monkeypatch.setattr(AzureService, target, _boom)
    with caplog.at_level(logging.ERROR):
        answer = client.request(method, f"/anomalydetector/v1.1{path}", json=body, headers=headers)
    assert answer.status_code == 500
    payload = answer.json()
    assert set(payload) == {"code", "message"} and payload["code"] == "InternalServerError"
    assert answer.headers["x-ms-error-code"] == "InternalServerError"
    request_id = answer.headers["x-request-id"]
    assert request_id in payload["message"]
    assert "unexpected failure" not in payload["message"]  # no internals in the answer
    # Logged once, with the traceback and the request id.
    logged = [r for r in caplog.records if r.exc_info and "unhandled error" in r.getMessage()]
    assert len(logged) == 1
    assert getattr(logged[0], "request_id", None) == request_id
