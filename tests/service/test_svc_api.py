"""The HTTP API in-process: auth, CRUD, scoring responses and every bad-input case (4xx with a
message that says what to fix; never a 500)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, make_frame, register_trained_version, rows_of, windows_of

from service.app import create_app
from service.context import AppContext
from service.settings import Settings

Client = tuple[TestClient, dict[str, str]]


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


@pytest.fixture
def trained(app_client: Client) -> Client:
    """A model 'm1' with one trained, active version (a fresh app)."""
    client, headers = app_client
    r = client.post("/v1/models", json={"name": "m1", "config": TINY_CONFIG}, headers=headers)
    assert r.status_code == 201, r.text
    register_trained_version(_ctx(client), "m1")
    return client, headers


@pytest.fixture(scope="module")
def shared_trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """Like ``trained`` but shared by the read-only tests of this module."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("shared") / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        ctx: AppContext = app.state.context
        _, key = ctx.auth.create("admin", "tests")
        headers = {"Authorization": f"Bearer {key}"}
        client.post("/v1/models", json={"name": "m1", "config": TINY_CONFIG}, headers=headers)
        register_trained_version(ctx, "m1")
        yield client, headers


# --------------------------------------------------------------------------- auth


def test_every_route_but_livez_needs_a_key(app_client: Client) -> None:
    client, headers = app_client
    assert client.get("/livez").status_code == 200
    for method, path in [
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("POST", "/v1/models/x/score"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/schedules"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 401, path
        assert "API key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
    bad = client.get("/v1/models", headers={"Authorization": "Bearer rad_00000000_" + "x" * 43})
    assert bad.status_code == 401
    assert client.get("/v1/models", headers=headers).status_code == 200
    key = headers["Authorization"].split()[1]
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200


def test_scopes_are_enforced(app_client: Client) -> None:
    client, headers = app_client
    _, score_key = _ctx(client).auth.create("score")
    _, write_key = _ctx(client).auth.create("write")
    score = {"X-API-Key": score_key}
    write = {"X-API-Key": write_key}
    r = client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=score)
    assert r.status_code == 403 and "scope 'write'" in r.json()["detail"]
    assert (
        client.post(
            "/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=write
        ).status_code
        == 201
    )
    assert client.get("/v1/models/m", headers=score).status_code == 200
    assert client.delete("/v1/models/m", headers=write).status_code == 403
    assert client.delete("/v1/models/m", headers=headers).status_code == 204


# --------------------------------------------------------------------------- operations


def test_health_metrics_and_request_ids(app_client: Client) -> None:
    client, headers = app_client
    r = client.get("/readyz", headers=headers)
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    r = client.get("/v1/models/nope", headers={**headers, "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.json()["request_id"] == "abc-123"
    generated = client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    text = client.get("/metrics", headers=headers).text
    assert 'route="/v1/models/{name}"' in text and "/v1/models/nope" not in text
    assert 'reconad_jobs{state="queued"}' in text
    assert "reconad_models_loaded" in text and "reconad_scored_points_total" in text
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers=headers).json()["info"]["title"] == "ReconAD"
    assert client.get("/docs").status_code == 401
    assert client.get("/docs", headers=headers).status_code == 200


# --------------------------------------------------------------------------- models, data, jobs


def test_model_lifecycle_and_validation(app_client: Client) -> None:
    client, headers = app_client
    r = client.post("/v1/models", json={"name": "../etc", "config": TINY_CONFIG}, headers=headers)
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = client.post(
        "/v1/models", json={"name": "m", "config": {**TINY_CONFIG, "window": 1}}, headers=headers
    )
    assert r.status_code == 422 and "window must be between 2 and 4096" in r.json()["detail"]
    r = client.post(
        "/v1/models", json={"name": "m", "config": {**TINY_CONFIG, "kind": "gan"}}, headers=headers
    )
    assert r.status_code == 422 and "config.kind" in r.json()["detail"]
    r = client.post(
        "/v1/models", json={"name": "m", "config": {**TINY_CONFIG, "beta": 5}}, headers=headers
    )
    assert r.status_code == 422  # an option of another kind is refused by name
    assert "config.beta: beta is not an option of kind ae" in r.json()["detail"]
    r = client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    assert r.status_code == 201
    assert client.post("/v1/models", json={"name": "m"}, headers=headers).status_code == 409
    r = client.patch("/v1/models/m", json={"promotion_policy": "manual"}, headers=headers)
    assert r.json()["promotion_policy"] == "manual"
    r = client.patch("/v1/models/m", json={"promotion_policy": "sometimes"}, headers=headers)
    assert r.status_code == 422
    listed = client.get("/v1/models?limit=1", headers=headers).json()
    assert listed["count"] == 1 and listed["data"][0]["name"] == "m"
    assert client.get("/v1/models?limit=0", headers=headers).status_code == 422
    assert client.get("/v1/models?offset=99999999999999999999", headers=headers).status_code == 422


def test_data_append_upload_summary_drop(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    frame = make_frame(300)
    r = client.post("/v1/models/m/data", json={"rows": rows_of(frame.iloc[:100])}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["points"] == 100
    csv = frame.iloc[100:200].reset_index().to_csv(index=False).encode()
    r = client.post(
        "/v1/models/m/data/upload", files={"file": ("d.csv", csv, "text/csv")}, headers=headers
    )
    assert r.status_code == 200, r.text
    buffer = io.BytesIO()
    frame.iloc[200:].rename_axis("ts").reset_index().to_parquet(buffer)
    r = client.post(
        "/v1/models/m/data/upload",
        files={"file": ("d.parquet", buffer.getvalue(), "application/octet-stream")},
        data={"timestamp_column": "ts"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    summary = client.get("/v1/models/m/data", headers=headers).json()
    assert summary["points"] == 300 and summary["columns"] == ["a", "b"]
    # exact copies of stored rows, in any order, are merged
    again = rows_of(frame.iloc[10:20])
    r = client.post("/v1/models/m/data", json={"rows": again[::-1] + again}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["points"] == 300
    start = frame.index[0].isoformat()
    end = frame.index[50].isoformat()
    r = client.delete("/v1/models/m/data", params={"start": start, "end": end}, headers=headers)
    assert r.json()["dropped"] == 50 and r.json()["summary"]["points"] == 250
    assert client.delete("/v1/models/m/data", headers=headers).status_code == 422


def test_stored_history_keeps_its_newest_rows_within_the_limit(settings: Settings) -> None:
    """``RECONAD_HISTORY_MAX_POINTS``: uploads past an eighth over it drop the oldest rows,
    and the summary says what is kept."""
    app = create_app(settings.model_copy(update={"history_max_points": 1000}))
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin", "tests")
        headers = {"Authorization": f"Bearer {key}"}
        client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
        frame = make_frame(1500)
        for lo in range(0, 1500, 300):
            rows = {"rows": rows_of(frame.iloc[lo : lo + 300])}
            assert client.post("/v1/models/m/data", json=rows, headers=headers).status_code == 200
        summary = client.get("/v1/models/m/data", headers=headers).json()
        assert 1000 <= summary["points"] <= 1125
        kept = frame.iloc[-summary["points"] :]
        assert pd.Timestamp(summary["start"]) == kept.index[0]
        assert pd.Timestamp(summary["end"]) == frame.index[-1]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"", 400, "empty"),
        (b'{"rows": []}', 422, "at least 1"),
        (b'{"rows": [{"a": 1}]}', 422, "no 'timestamp'"),
        (b'{"rows": [{"timestamp": "yesterday", "a": 1}]}', 422, "ISO-8601"),
        (b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": "x"}]}', 422, "not strings"),
        (b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": NaN}]}', 422, "NaN"),
        (b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": 1e999}]}', 422, "out of range"),
        (b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": 1e300}]}', 422, "too large"),
        (b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": [1]}]}', 422, "number or null"),
        (b"[1, 2]", 422, "valid dictionary"),
        (
            b'{"rows": [{"timestamp": "2024-01-01T00:00:00Z", "a": 1, "b": 2},'
            b' {"timestamp": "2024-01-01T00:00:00Z", "a": 1, "b": 3}]}',
            422,
            "different values",
        ),
    ],
)
def test_data_bad_inputs(app_client: Client, body: bytes, status: int, message: str) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    r = client.post(
        "/v1/models/m/data", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert message in r.text


def test_data_columns_must_stay_the_same(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    frame = make_frame(20)
    client.post("/v1/models/m/data", json={"rows": rows_of(frame)}, headers=headers)
    other = make_frame(5, end=frame.index[-1] + pd.Timedelta("1h")).rename(columns={"b": "c"})
    r = client.post("/v1/models/m/data", json={"rows": rows_of(other)}, headers=headers)
    assert r.status_code == 422 and "stored columns" in r.json()["detail"]
    r = client.post(
        "/v1/models/m/data/upload", files={"file": ("x.csv", b"a,b\n1,2\n")}, headers=headers
    )
    assert r.status_code == 422 and "timestamp" in r.json()["detail"]
    r = client.post(
        "/v1/models/m/data/upload", files={"file": ("x.parquet", b"PAR1garbage")}, headers=headers
    )
    assert r.status_code == 400 and "Parquet" in r.json()["detail"]


def test_jobs_queue_cancel_retry(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    r = client.post("/v1/models/m/jobs", json={}, headers=headers)
    assert r.status_code == 422 and "no stored history" in r.json()["detail"]
    frame = make_frame(200)
    client.post("/v1/models/m/data", json={"rows": rows_of(frame)}, headers=headers)
    r = client.post(
        "/v1/models/m/jobs",
        json={"start": "2000-01-01T00:00:00Z", "end": "2000-02-01T00:00:00Z"},
        headers=headers,
    )
    assert r.status_code == 422 and "holds no stored data" in r.json()["detail"]
    r = client.post("/v1/models/m/jobs", json={"last": "2x"}, headers=headers)
    assert r.status_code == 422 and "invalid duration" in r.json()["detail"]
    r = client.post("/v1/models/m/jobs", json={"last": "1d", "promote": False}, headers=headers)
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = r.json()
    assert job["status"] == "queued" and job["params"]["promote"] is False
    r = client.post("/v1/models/m/jobs", json={"data": {"rows": rows_of(frame)}}, headers=headers)
    assert r.status_code == 202 and r.json()["params"]["source"] == "inline"
    assert client.get("/v1/jobs?status=queued", headers=headers).json()["count"] == 2
    assert client.get("/v1/jobs?status=bogus", headers=headers).status_code == 422
    r = client.post(f"/v1/jobs/{job['id']}/retry", headers=headers)
    assert r.status_code == 409 and "only failed" in r.json()["detail"]
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers).status_code == 409
    r = client.post(f"/v1/jobs/{job['id']}/retry", headers=headers)
    assert r.status_code == 202 and r.json()["retry_of"] == job["id"]
    assert client.get("/v1/jobs/nope", headers=headers).status_code == 404


def test_schedules_api(app_client: Client) -> None:
    client, headers = app_client
    client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
    r = client.post(
        "/v1/models/m/schedules", json={"cron": "0 3 * * *", "window": "14d"}, headers=headers
    )
    assert r.status_code == 201 and r.json()["window_s"] == 14 * 86400
    sid = r.json()["id"]
    for body, fragment in [
        ({"cron": "not cron", "window": "1d"}, "invalid cron"),
        ({"window": "1d"}, "exactly one"),
        ({"interval": "1h", "cron": "0 * * * *", "window": "1d"}, "exactly one"),
        ({"interval": "0.5s", "window": "1d"}, "at least"),
        ({"interval": "1h", "window": "-3d"}, "window"),
    ]:
        r = client.post("/v1/models/m/schedules", json=body, headers=headers)
        assert r.status_code == 422 and fragment in r.json()["detail"], (body, r.text)
    assert client.post(f"/v1/schedules/{sid}/pause", headers=headers).json()["paused"] is True
    assert client.post(f"/v1/schedules/{sid}/resume", headers=headers).json()["paused"] is False
    assert client.get("/v1/models/m/schedules", headers=headers).json()["count"] == 1
    assert client.delete(f"/v1/schedules/{sid}", headers=headers).status_code == 204
    assert client.get(f"/v1/schedules/{sid}", headers=headers).status_code == 404


# --------------------------------------------------------------------------- scoring


def test_score_windows_response(shared_trained: Client) -> None:
    client, headers = shared_trained
    frame = make_frame(100, seed=3)
    r = client.post(
        "/v1/models/m1/score",
        json={"windows": windows_of(frame, 3), "reconstruct": True, "top_k": 1},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and body["window"] == 16 and body["features"] == ["a", "b"]
    scores = np.asarray(body["scores"])
    assert scores.shape == (3, 16)
    np.testing.assert_allclose(np.asarray(body["normalized"]), scores / body["threshold"])
    assert np.array_equal(np.asarray(body["anomalous"]), scores > body["threshold"])
    assert np.asarray(body["top_features"]).shape == (3, 16, 1)
    assert set(np.ravel(body["top_features"])) <= {"a", "b"}
    assert np.asarray(body["expected"]).shape == (3, 16, 2)
    assert body["n_points"] == 48


def test_score_series_and_anomaly_flags(shared_trained: Client) -> None:
    client, headers = shared_trained
    frame = make_frame(200, seed=4)
    frame.iloc[120:124, 0] = 25.0  # a spike in feature a
    values: dict[str, Any] = {c: frame[c].tolist() for c in frame.columns}
    values["b"][5] = None  # a missing value is fine in a series
    r = client.post(
        "/v1/models/m1/score",
        json={"values": values, "timestamps": [t.isoformat() for t in frame.index]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["scores"]) == 200
    assert all(body["anomalous"][120:124])
    assert body["n_anomalous"] < 40
    assert body["top_features"][121][0] == "a"
    # epoch-second timestamps and no timestamps both work too
    epoch = [t.timestamp() for t in frame.index]
    r = client.post(
        "/v1/models/m1/score", json={"values": values, "timestamps": epoch}, headers=headers
    )
    assert r.status_code == 200
    stamps = [t.isoformat() for t in frame.index]
    r = client.post(
        "/v1/models/m1/score",
        json={"values": values, "timestamps": stamps, "reconstruct": True},
        headers=headers,
    )
    assert set(r.json()["expected"]) == {"a", "b"}
    r = client.post("/v1/models/m1/score", json={"values": values}, headers=headers)
    assert r.status_code == 422 and "indexed by datetime" in r.json()["detail"]
    # the library's timestamp policy: reversed rows are scored in time order, returned in
    # the caller's order
    backwards = {c: v[::-1] for c, v in values.items()}
    r = client.post(
        "/v1/models/m1/score",
        json={"values": backwards, "timestamps": stamps[::-1]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["scores"], body["scores"][::-1], rtol=1e-5)


def test_pinned_versions_and_promotion(trained: Client) -> None:
    client, headers = trained
    ctx = _ctx(client)
    register_trained_version(ctx, "m1", make_frame(seed=9), promote=False)
    w = {"windows": windows_of(make_frame(40), 1)}
    assert client.post("/v1/models/m1/score", json=w, headers=headers).json()["version"] == 1
    assert (
        client.post("/v1/models/m1/score", json={**w, "version": 2}, headers=headers).json()[
            "version"
        ]
        == 2
    )
    r = client.post("/v1/models/m1/versions/2/promote", headers=headers)
    assert r.json()["active_version"] == 2
    assert client.post("/v1/models/m1/score", json=w, headers=headers).json()["version"] == 2
    assert client.post("/v1/models/m1/rollback", headers=headers).json()["active_version"] == 1
    assert client.post("/v1/models/m1/score", json=w, headers=headers).json()["version"] == 1
    versions = client.get("/v1/models/m1/versions", headers=headers).json()
    assert versions["count"] == 2 and versions["active_version"] == 1
    assert [v["active"] for v in versions["data"]] == [False, True]


def _nested(value: float, shape: tuple[int, ...]) -> Any:
    return np.full(shape, 0.5).tolist() if np.isfinite(value) else None


BAD_SCORES: list[tuple[str, Any, int, str]] = [
    ("malformed", b'{"windows": [[[1, 2]', 400, "malformed JSON"),
    ("not an object", b"[1, 2, 3]", 422, "JSON object"),
    ("neither", b"{}", 422, "exactly one of"),
    (
        "both",
        json.dumps({"windows": [[[1, 2]]], "values": {"a": [1]}}).encode(),
        422,
        "exactly one of",
    ),
    ("unknown field", b'{"windows": [[[1, 2]]], "colour": 1}', 422, "unknown field"),
    (
        "2-d windows",
        json.dumps({"windows": np.zeros((16, 2)).tolist()}).encode(),
        422,
        "3-dimensional",
    ),
    (
        "wrong window length",
        json.dumps({"windows": np.zeros((1, 10, 2)).tolist()}).encode(),
        422,
        "16 points per window",
    ),
    (
        "wrong feature count",
        json.dumps({"windows": np.zeros((1, 16, 3)).tolist()}).encode(),
        422,
        "features ['a', 'b']",
    ),
    (
        "ragged",
        json.dumps({"windows": [[[1, 2]] * 16, [[1, 2]] * 15]}).encode(),
        422,
        "same length",
    ),
    ("strings", json.dumps({"windows": [[["1", "x"]] * 16]}).encode(), 422, "not strings"),
    ("null in windows", json.dumps({"windows": [[[1, None]] * 16]}).encode(), 422, "null"),
    ("NaN token", b'{"windows": [[' + b",".join([b"[1, NaN]"] * 16) + b"]]}", 422, "NaN"),
    (
        "Infinity token",
        b'{"windows": [[' + b",".join([b"[1, -Infinity]"] * 16) + b"]]}",
        422,
        "Infinity",
    ),
    (
        "huge exponent",
        b'{"windows": [[' + b",".join([b"[1, 1e999]"] * 16) + b"]]}",
        422,
        "out of range",
    ),
    ("huge value", json.dumps({"windows": [[[1, 1e300]] * 16]}).encode(), 422, "too large"),
    (
        "huge integer",
        b'{"windows": [[' + b",".join([b"[1, " + b"9" * 400 + b"]"] * 16) + b"]]}",
        422,
        "range",
    ),
    (
        "bad version",
        json.dumps({"windows": [[[1, 2]] * 16], "version": "latest"}).encode(),
        422,
        "version",
    ),
    (
        "unknown version",
        json.dumps({"windows": [[[1, 2]] * 16], "version": 42}).encode(),
        404,
        "no version 42",
    ),
    ("bad top_k", json.dumps({"windows": [[[1, 2]] * 16], "top_k": -1}).encode(), 422, "top_k"),
    ("values not object", json.dumps({"values": [1, 2]}).encode(), 422, "values must be an object"),
    (
        "missing feature",
        json.dumps({"values": {"a": [1.0] * 20}}).encode(),
        422,
        "lacks the feature",
    ),
    (
        "unknown feature",
        json.dumps({"values": {"a": [1.0] * 20, "b": [1.0] * 20, "c": [1.0] * 20}}).encode(),
        422,
        "unknown column",
    ),
    (
        "uneven columns",
        json.dumps({"values": {"a": [1.0] * 20, "b": [1.0] * 19}}).encode(),
        422,
        "same length",
    ),
    (
        "too short",
        json.dumps(
            {"values": {"a": [1.0] * 5, "b": [1.0] * 5}, "timestamps": list(range(5))}
        ).encode(),
        422,
        "window is 16",
    ),
    (
        "timestamps length",
        json.dumps({"values": {"a": [1.0] * 20, "b": [1.0] * 20}, "timestamps": [1, 2]}).encode(),
        422,
        "one entry per point",
    ),
    (
        "timestamps mixed",
        json.dumps(
            {"values": {"a": [1.0] * 20, "b": [1.0] * 20}, "timestamps": [1] + ["2024-01-01"] * 19}
        ).encode(),
        422,
        "no mixing",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "message"), BAD_SCORES, ids=[c[0] for c in BAD_SCORES]
)
def test_score_bad_inputs(
    shared_trained: Client, case: str, body: bytes, status: int, message: str
) -> None:
    client, headers = shared_trained
    r = client.post(
        "/v1/models/m1/score", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert r.status_code == status, (case, r.text)
    assert message in r.json()["detail"], (case, r.text)


def test_score_unknown_model_and_untrained(app_client: Client) -> None:
    client, headers = app_client
    w = {"windows": np.zeros((1, 16, 2)).tolist()}
    r = client.post("/v1/models/ghost/score", json=w, headers=headers)
    assert r.status_code == 404 and "no model named 'ghost'" in r.json()["detail"]
    client.post("/v1/models", json={"name": "new", "config": TINY_CONFIG}, headers=headers)
    r = client.post("/v1/models/new/score", json=w, headers=headers)
    assert r.status_code == 409 and "no active version" in r.json()["detail"]


def test_limits_give_413(tmp_path: Any) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        max_points_per_request=100,
        max_body_bytes=20_000,
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin")
        headers = {"X-API-Key": key}
        client.post("/v1/models", json={"name": "m", "config": TINY_CONFIG}, headers=headers)
        r = client.post(
            "/v1/models/m/score", json={"windows": np.zeros((7, 16, 2)).tolist()}, headers=headers
        )
        assert r.status_code == 413 and "max_points_per_request" in r.json()["detail"]
        big = b'{"windows": ' + b"[" * 3 + b"0," * 20_000 + b"0]]]}"
        r = client.post(
            "/v1/models/m/score",
            content=big,
            headers={**headers, "content-type": "application/json"},
        )
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

        def chunks() -> Any:
            for _ in range(40):
                yield b" " * 1000

        r = client.post(
            "/v1/models/m/data",
            content=chunks(),
            headers={**headers, "content-type": "application/json"},
        )
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
