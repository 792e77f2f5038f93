"""Hardening: bounded resources (model size, job queues), inputs that used to give a 500 or be
stored wrongly, schedules that say why they did not run, keys over HTTP, the promotion log,
history export, offline docs and the newcomer's first start."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from svc_helpers import REPO, TINY_CONFIG, make_frame, register_trained_version, rows_of

from detector import DetectorConfig, create_detector
from service.app import create_app
from service.cli import main as cli_main
from service.context import BOOTSTRAP_KEY_FILE, AppContext
from service.registry import count_parameters
from service.settings import Settings
from service.tables import ApiKey

Client = tuple[TestClient, dict[str, str]]


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


def _model(client: TestClient, headers: dict[str, str], name: str = "m1", **extra: Any) -> None:
    body = {"name": name, "config": {**TINY_CONFIG, **extra}}
    r = client.post("/v1/models", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _admin(ctx: AppContext) -> dict[str, str]:
    return {"X-API-Key": ctx.auth.create("admin", "extra")[1]}


def _raw(client: TestClient, method: str, url: str, text: str, headers: dict[str, str]) -> Any:
    return client.request(
        method, url, content=text, headers={**headers, "content-type": "application/json"}
    )


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[Client]:
    """An app with small job-queue bounds."""
    settings = Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        scheduler_interval_s=3600,
        max_queued_jobs_per_model=2,
        max_queued_jobs=3,
        retry_after_s=17,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin", "tests")
        yield client, {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------- resources


def test_model_size_is_bounded_at_creation_update_and_job(app_client: Client) -> None:
    client, headers = app_client
    huge = {"name": "huge", "config": {"hidden_dims": [65536, 65536]}}
    r = client.post("/v1/models", json=huge, headers=headers)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "RECONAD_MAX_MODEL_PARAMETERS" in detail and "20,000,000" in detail
    assert client.get("/v1/models/huge", headers=headers).status_code == 404
    _model(client, headers)
    r = client.patch(
        "/v1/models/m1", json={"config": {"hidden_dims": [65536] * 3}}, headers=headers
    )
    assert r.status_code == 422 and "RECONAD_MAX_MODEL_PARAMETERS" in r.json()["detail"]
    assert client.get("/v1/models/m1", headers=headers).json()["config"]["hidden_dims"] == [16]
    job = {"config": {"hidden_dims": [65536, 65536]}, "data": {"rows": rows_of(make_frame(50))}}
    r = client.post("/v1/models/m1/jobs", json=job, headers=headers)
    assert r.status_code == 422 and "RECONAD_MAX_MODEL_PARAMETERS" in r.json()["detail"]
    assert client.get("/v1/jobs", headers=headers).json()["count"] == 0


@pytest.mark.parametrize("kind", ["ae", "vae", "aae"])
def test_parameter_count_matches_the_fitted_network(kind: str) -> None:
    """With the window and features given, the count from the config is the fitted network's."""
    config = DetectorConfig.model_validate(
        {**TINY_CONFIG, "kind": kind, "features": ["a", "b"], "training": {"max_epochs": 1}}
    )
    det = create_detector(config).fit(make_frame(300))
    fitted = sum(p.numel() for p in det.network_.parameters())
    assert count_parameters(config) == fitted
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    huge = DetectorConfig.model_validate({"hidden_dims": [65536, 65536, 65536]})
    assert count_parameters(huge) > 8e9
    assert (torch.cuda.memory_allocated() if torch.cuda.is_available() else 0) == before


def test_job_queue_bounds_give_429_with_retry_after(bounded: Client) -> None:
    client, headers = bounded
    _model(client, headers, "m1")
    _model(client, headers, "m2")
    job = {"data": {"rows": rows_of(make_frame(40))}}
    for _ in range(2):
        assert client.post("/v1/models/m1/jobs", json=job, headers=headers).status_code == 202
    r = client.post("/v1/models/m1/jobs", json=job, headers=headers)
    assert r.status_code == 429 and r.headers["retry-after"] == "17"
    assert "RECONAD_MAX_QUEUED_JOBS_PER_MODEL" in r.json()["detail"]
    assert client.post("/v1/models/m2/jobs", json=job, headers=headers).status_code == 202
    r = client.post("/v1/models/m2/jobs", json=job, headers=headers)
    assert r.status_code == 429 and "RECONAD_MAX_QUEUED_JOBS)" in r.json()["detail"]
    assert client.get("/v1/jobs", headers=headers).json()["count"] == 3
    # a cancelled job frees its place
    first = client.get("/v1/models/m1/jobs", headers=headers).json()["data"][0]["id"]
    assert client.post(f"/v1/jobs/{first}/cancel", headers=headers).status_code == 202
    assert client.post("/v1/models/m1/jobs", json=job, headers=headers).status_code == 202
    # retries count against the same bounds
    r = client.post(f"/v1/jobs/{first}/retry", headers=headers)
    assert r.status_code == 429 and r.headers["retry-after"] == "17"


# --------------------------------------------------------------------------- 500s become 4xx


@pytest.mark.parametrize(
    "body",
    [
        {"end": "0001-01-02T00:00:00Z", "last": "1w"},
        {"start": "9999-12-30T00:00:00Z"},
        {"end": "2300-01-01T00:00:00Z", "last": "1d"},
    ],
)
def test_job_dates_out_of_range_are_422(app_client: Client, body: dict[str, Any]) -> None:
    client, headers = app_client
    _model(client, headers)
    r = client.post("/v1/models/m1/jobs", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert "from 1900-01-01 to before 2200-01-01" in r.json()["detail"]


@pytest.mark.parametrize(
    "cron", ["0 0 30 2 *", "0 0 31 2 *", "0 0 1 1 * 0 2000", "0 0 * * * * 2099"]
)
def test_cron_that_never_fires_is_422(app_client: Client, cron: str) -> None:
    client, headers = app_client
    _model(client, headers)
    r = client.post("/v1/models/m1/schedules", json={"cron": cron, "window": "1d"}, headers=headers)
    if cron.endswith("2099"):  # six fields: second-level cron with a year: fires in 2099
        assert r.status_code in (201, 422), r.text
        return
    assert r.status_code == 422, r.text
    assert "never fires" in r.json()["detail"]


def test_a_500_is_logged_once_with_its_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"log_level": "INFO"}))

    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        capsys.readouterr()
        r = client.get("/boom", headers={"X-Request-ID": "req-500"})
        assert r.status_code == 500
        assert r.json() == {
            "detail": "internal error; the request id identifies it in the server log",
            "request_id": "req-500",
        }
        assert r.headers["x-request-id"] == "req-500"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    tracebacks = [entry for entry in lines if "kaboom" in entry.get("exc_info", "")]
    assert len(tracebacks) == 1, lines
    assert tracebacks[0]["request_id"] == "req-500"
    access = [e for e in lines if e.get("logger") == "service.access" and e.get("status") == 500]
    assert len(access) == 1 and access[0]["request_id"] == "req-500"


# --------------------------------------------------------------------------- accepted but wrong


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ('"training": {"weight_decay": Infinity}', "training.weight_decay"),
        ('"calibration": {"method": "mad", "k": Infinity}', "calibration.k"),
        ('"training": {"noise_std": Infinity}', "training.noise_std"),
        ('"kind": "aae", "prior_std": Infinity', "prior_std"),
        ('"training": {"min_delta": NaN}', "training.min_delta"),
    ],
)
def test_non_finite_config_numbers_are_422(app_client: Client, field: str, name: str) -> None:
    client, headers = app_client
    text = '{"name": "inf", "config": {"window": 16, ' + field + "}}"
    r = _raw(client, "POST", "/v1/models", text, headers)
    assert r.status_code == 422, r.text
    assert name in r.json()["detail"]
    if "Infinity" in field:
        assert "must be finite" in r.json()["detail"]
    assert client.get("/v1/models/inf", headers=headers).status_code == 404
    _model(client, headers)
    r = _raw(client, "PATCH", "/v1/models/m1", '{"config": {' + field + "}}", headers)
    assert r.status_code == 422 and name in r.json()["detail"]


def test_schedule_shows_why_it_queued_no_job(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)  # no stored data: a due run cannot queue a job
    r = client.post(
        "/v1/models/m1/schedules", json={"interval": "1h", "window": "1d"}, headers=headers
    )
    sid = r.json()["id"]
    assert r.json()["last_error"] is None and r.json()["failures"] == 0
    ctx = _ctx(client)
    assert ctx.schedules.fire_due(pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=2)) == []
    shown = client.get(f"/v1/schedules/{sid}", headers=headers).json()
    assert shown["failures"] == 1 and shown["last_job_id"] is None
    assert "has no stored history" in shown["last_error"]
    metrics = client.get("/metrics", headers=headers).text
    assert "reconad_schedule_failures_total 1.0" in metrics
    # once data is there, the next run queues a job and clears the error
    client.post("/v1/models/m1/data", json={"rows": rows_of(make_frame(100))}, headers=headers)
    assert len(ctx.schedules.fire_due(pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=4))) == 1
    shown = client.get(f"/v1/schedules/{sid}", headers=headers).json()
    assert shown["last_error"] is None and shown["last_job_id"] and shown["failures"] == 1


def test_booleans_are_not_numbers_in_rows(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    for value in (True, [True, 1.5]):
        values = value if isinstance(value, list) else [value, value]
        rows = [{"timestamp": 1700000000 + 60 * i, "a": v, "b": 1.0} for i, v in enumerate(values)]
        r = client.post("/v1/models/m1/data", json={"rows": rows}, headers=headers)
        assert r.status_code == 422 and "boolean" in r.json()["detail"], r.text
    csv = b"timestamp,a,b\n2024-01-01T00:00:00Z,True,1\n2024-01-01T00:01:00Z,False,2\n"
    r = client.post("/v1/models/m1/data/upload", files={"file": ("x.csv", csv)}, headers=headers)
    assert r.status_code == 422 and "booleans" in r.json()["detail"]
    assert client.get("/v1/models/m1/data", headers=headers).json()["points"] == 0


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (b",timestamp,a\n0,2024-01-01T00:00:00Z,1\n", "column 1 has no name"),
        (b"timestamp,a,a\n2024-01-01T00:00:00Z,1,2\n", "['a'] appear more than once"),
    ],
)
def test_csv_header_pandas_would_rename_is_refused(
    app_client: Client, csv: bytes, message: str
) -> None:
    client, headers = app_client
    _model(client, headers)
    r = client.post("/v1/models/m1/data/upload", files={"file": ("x.csv", csv)}, headers=headers)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert client.get("/v1/models/m1/data", headers=headers).json()["points"] == 0


def test_gzip_csv_upload(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    frame = make_frame(120)
    text = frame.reset_index().to_csv(index=False).encode()
    r = client.post(
        "/v1/models/m1/data/upload",
        files={"file": ("x.csv.gz", gzip.compress(text), "application/gzip")},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["appended"] == 120 and r.json()["summary"]["columns"] == ["a", "b"]


def test_gzip_bomb_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", max_body_bytes=100_000, bootstrap_admin_key=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin")
        headers = {"X-API-Key": key}
        _model(client, headers)
        bomb = gzip.compress(b"timestamp,a,b\n" + b"2024-01-01T00:00:00Z,1,2\n" * 20_000)
        assert len(bomb) < 100_000
        r = client.post(
            "/v1/models/m1/data/upload", files={"file": ("x.csv.gz", bomb)}, headers=headers
        )
        assert r.status_code == 413 and "decompresses" in r.json()["detail"]


def test_chunked_multipart_over_the_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", max_body_bytes=20_000, bootstrap_admin_key=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin")
        headers = {"X-API-Key": key}
        _model(client, headers)
        boundary = "b0undary"

        def body() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="x.csv"\r\nContent-Type: text/csv\r\n\r\ntimestamp,a,b\n'
            ).encode()
            for i in range(2000):
                yield f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z,1,2\n".encode()
            yield f"\r\n--{boundary}--\r\n".encode()

        r = client.post(
            "/v1/models/m1/data/upload",
            content=body(),
            headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 413, r.text
        assert "max_body_bytes" in r.json()["detail"]


def test_model_names_are_unique_regardless_of_case(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers, "latency")
    r = client.post("/v1/models", json={"name": "LATENCY"}, headers=headers)
    assert r.status_code == 409 and "case-insensitive" in r.json()["detail"]
    assert client.get("/v1/models", headers=headers).json()["count"] == 1


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:00Z", "0001-01-01T00:00:00Z", -1e10, "2262-04-12T00:00:00Z"]
)
def test_timestamps_out_of_range_are_refused_at_the_door(app_client: Client, stamp: Any) -> None:
    client, headers = app_client
    _model(client, headers)
    rows = [{"timestamp": stamp, "a": 1.0, "b": 2.0}]
    r = client.post("/v1/models/m1/data", json={"rows": rows}, headers=headers)
    assert r.status_code == 422, r.text
    assert "from 1900-01-01 to before 2200-01-01" in r.json()["detail"]
    csv = f"timestamp,a,b\n{stamp},1,2\n".encode()
    r = client.post("/v1/models/m1/data/upload", files={"file": ("x.csv", csv)}, headers=headers)
    assert r.status_code == 422, r.text
    assert "from 1900-01-01 to before 2200-01-01" in r.json()["detail"]
    assert client.get("/v1/models/m1/data", headers=headers).json()["points"] == 0


def test_parquet_timestamps_out_of_range_are_refused(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(["1850-01-01", "1850-01-02"], utc=True), "a": [1.0, 2.0]}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    r = client.post(
        "/v1/models/m1/data/upload",
        files={"file": ("x.parquet", buffer.getvalue())},
        headers=headers,
    )
    assert r.status_code == 422 and "1900-01-01" in r.json()["detail"], r.text


# --------------------------------------------------------------------------- keys, log, export


def test_keys_over_http(app_client: Client) -> None:
    client, headers = app_client
    r = client.post(
        "/v1/keys", json={"scope": "score", "name": "dash", "expires_in": "1d"}, headers=headers
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["scope"] == "score" and created["status"] == "active"
    assert created["expires_at"] is not None and created["key"].startswith("rad_")
    key = {"X-API-Key": created["key"]}
    assert client.get("/v1/models", headers=key).status_code == 200
    assert client.post("/v1/models", json={"name": "x"}, headers=key).status_code == 403
    assert client.get("/v1/keys", headers=key).status_code == 403
    listed = client.get("/v1/keys", headers=headers).json()
    ids = {k["id"]: k for k in listed["data"]}
    assert created["id"] in ids and "key" not in ids[created["id"]]
    r = client.delete(f"/v1/keys/{created['id']}", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert client.get("/v1/models", headers=key).status_code == 401
    assert client.delete("/v1/keys/0000abcd", headers=headers).status_code == 404
    r = client.post("/v1/keys", json={"scope": "root"}, headers=headers)
    assert r.status_code == 422


def test_expired_keys_are_refused(app_client: Client) -> None:
    client, _ = app_client
    ctx = _ctx(client)
    soon = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)
    row, plain = ctx.auth.create("admin", "short", soon.to_pydatetime())
    with pytest.raises(ValueError, match="in the future"):
        ctx.auth.create("admin", "past", (soon - pd.Timedelta(hours=2)).to_pydatetime())
    key = {"X-API-Key": plain}
    assert client.get("/v1/models", headers=key).status_code == 200
    with ctx.db.transaction() as session:  # an hour passes
        session.get(ApiKey, row.id).expires_at = (soon - pd.Timedelta(hours=2)).to_pydatetime()  # type: ignore[union-attr]
    ctx.auth._cache.clear()  # what the cache TTL does by itself
    r = client.get("/v1/models", headers=key)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=_admin(ctx)).json()["data"]}
    assert listed[row.id]["status"] == "expired"


def test_promotion_log_route(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    ctx = _ctx(client)
    register_trained_version(ctx, "m1")
    register_trained_version(ctx, "m1", promote=True)
    client.post("/v1/models/m1/rollback", headers=headers)
    r = client.get("/v1/models/m1/promotions", headers=headers)
    assert r.status_code == 200, r.text
    log = r.json()
    assert log["count"] == 3
    assert [(p["from_version"], p["to_version"]) for p in log["data"]] == [
        (2, 1),
        (1, 2),
        (None, 1),
    ]
    assert log["data"][0]["reason"] == "rollback"


def test_export_history_by_range(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    frame = make_frame(100, end=pd.Timestamp("2024-01-01T01:39:00Z"))
    client.post("/v1/models/m1/data", json={"rows": rows_of(frame)}, headers=headers)
    r = client.get(
        "/v1/models/m1/data/export",
        params={"start": "2024-01-01T00:10:00Z", "end": "2024-01-01T00:20:00Z"},
        headers=headers,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    back = pd.read_csv(io.StringIO(r.text), parse_dates=["timestamp"])
    assert len(back) == 10 and list(back.columns) == ["timestamp", "a", "b"]
    assert back["timestamp"].iloc[0] == pd.Timestamp("2024-01-01T00:10:00Z")
    expected = frame.loc["2024-01-01T00:10:00Z":"2024-01-01T00:19:00Z", "a"].to_numpy()
    assert back["a"].to_numpy() == pytest.approx(expected)
    r = client.get("/v1/models/m1/data/export", params={"format": "parquet"}, headers=headers)
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    whole = pd.read_parquet(io.BytesIO(r.content))
    assert len(whole) == 100
    r = client.get(
        "/v1/models/m1/data/export",
        params={"start": "2024-01-02T00:00:00Z", "end": "2024-01-01T00:00:00Z"},
        headers=headers,
    )
    assert r.status_code == 422


# --------------------------------------------------------------------------- docs


def test_docs_for_any_key_from_local_assets(app_client: Client) -> None:
    client, _ = app_client
    _, score_key = _ctx(client).auth.create("score")
    score = {"X-API-Key": score_key}
    for page in ("/docs", "/redoc"):
        assert client.get(page).status_code == 401
        r = client.get(page, headers=score)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
        urls += re.findall(r"""(?:url|spec-url): *["']([^"']+)["']""", r.text)
        assert any(u.endswith(".js") for u in urls), r.text
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from outside the service"
            got = client.get(url, headers=score)
            assert got.status_code == 200, url
        assert "cdn" not in r.text.lower()
    assert client.get("/openapi.json", headers=score).status_code == 200


def test_public_docs_need_no_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", public_docs=True, bootstrap_admin_key=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "ReconAD"


# --------------------------------------------------------------------------- newcomer's path


def test_first_start_banner_and_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "d", bootstrap_admin_key=True, log_json=True)
    with TestClient(create_app(settings)) as client:
        path = tmp_path / "d" / BOOTSTRAP_KEY_FILE
        key = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert client.get("/v1/keys", headers={"X-API-Key": key}).status_code == 200
    err = capsys.readouterr().err
    assert f"    {key}\n" in err and str(path) in err and "=" * 78 in err
    with TestClient(create_app(settings)):  # a second start creates nothing
        pass
    assert path.read_text().strip() == key


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECONAD_")}
    environ.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_keys_use_the_servers_database_or_say_so(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "reconad-data"
    settings = Settings(data_dir=data, bootstrap_admin_key=False)
    with TestClient(create_app(settings)):  # the server made its database
        pass
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = _cli("keys", "create", "--scope", "score", cwd=elsewhere)
    assert lost.returncode == 2
    assert "no ReconAD database" in lost.stderr and "--data-dir" in lost.stderr
    assert not (elsewhere / "reconad-data" / "reconad.db").exists()
    made = _cli("keys", "--data-dir", str(data), "create", "--scope", "score", cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert f"data dir {data}" in made.stderr
    same = _cli("keys", "list", cwd=elsewhere, env={"RECONAD_DATA_DIR": str(data)})
    assert same.returncode == 0 and made.stdout.strip().split("_")[1] in same.stdout


def test_last_without_anchor_on_old_data_says_anchor_latest(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    old = make_frame(200, end=pd.Timestamp("2020-01-01T00:00:00Z"))
    client.post("/v1/models/m1/data", json={"rows": rows_of(old)}, headers=headers)
    r = client.post("/v1/models/m1/jobs", json={"last": "14d"}, headers=headers)
    assert r.status_code == 422 and '"anchor": "latest"' in r.json()["detail"]
    r = client.post("/v1/models/m1/jobs", json={"last": "14d", "anchor": "latest"}, headers=headers)
    assert r.status_code == 202, r.text


def test_train_help_states_the_real_max_seconds_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    assert "else 300)" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- scoring inputs


@pytest.fixture
def scorer(app_client: Client) -> Client:
    client, headers = app_client
    _model(client, headers)
    register_trained_version(_ctx(client), "m1")
    return client, headers


@pytest.mark.parametrize(
    "stamps",
    [
        ["9999-12-31T23:59:00Z"] * 20,
        ["0001-01-01T00:00:00Z"] * 20,
        [-1e10 + 60 * i for i in range(20)],
    ],
)
def test_score_timestamps_out_of_range_are_422(scorer: Client, stamps: list[Any]) -> None:
    client, headers = scorer
    body = {"timestamps": stamps, "values": {"a": [0.0] * 20, "b": [0.0] * 20}}
    r = client.post("/v1/models/m1/score", json=body, headers=headers)
    assert r.status_code == 422 and "1900-01-01" in r.json()["detail"], r.text


def test_score_points_years_apart_is_a_4xx(scorer: Client) -> None:
    client, headers = scorer
    start = pd.Timestamp("1900-06-01", tz="UTC")
    stamps = [(start + pd.DateOffset(years=7 * i)).isoformat() for i in range(40)]
    body = {"timestamps": stamps, "values": {"a": [0.1] * 40, "b": [0.2] * 40}}
    r = client.post("/v1/models/m1/score", json=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text


def test_score_version_overflow_is_422(scorer: Client) -> None:
    client, headers = scorer
    text = '{"version": 9223372036854775808, "windows": [[[0, 0]]]}'
    r = _raw(client, "POST", "/v1/models/m1/score", text, headers)
    assert r.status_code == 422
    assert "version" in r.json()["detail"] and "2000000000" in r.json()["detail"]


@pytest.mark.parametrize(
    ("url", "field"),
    [("/v1/models/m1/score", "windows"), ("/v1/models/m1/data", "rows"), ("/v1/models", "name")],
)
def test_bodies_nested_100000_deep_are_400(scorer: Client, url: str, field: str) -> None:
    client, headers = scorer
    text = '{"' + field + '": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = _raw(client, "POST", url, text, headers)
    assert r.status_code == 400, r.text


def test_booleans_are_not_numbers_in_windows(scorer: Client) -> None:
    client, headers = scorer
    window = [[True, False]] * 16
    r = client.post("/v1/models/m1/score", json={"windows": [window]}, headers=headers)
    assert r.status_code == 422 and "booleans" in r.json()["detail"], r.text


_PEAK_SCRIPT = r"""
import gc, json, sys
from service.errors import PayloadTooLargeError
from service.scoring.request import ScoreRequest

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

window = b"[" + b",".join([b"[0.123456]"] * 16) + b"]"
body = b'{"windows": [' + b",".join([window] * int(sys.argv[1])) + b"]}"
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak to the current size
before = hwm_kb()
try:
    ScoreRequest.from_body(body, 2_000_000)
    status = 200
except PayloadTooLargeError as exc:
    status = 413
    message = exc.message
print(json.dumps({"mb": len(body) / 1e6, "peak_mb": (hwm_kb() - before) / 1024,
                  "status": status, "message": message}))
"""


def _peak(tmp_path: Path, text: str, *args: str) -> dict[str, Any]:
    """Run a peak-memory script in a fresh interpreter; its one line of JSON."""
    script = tmp_path / "peak.py"
    script.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_huge_windows_body_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """400,000 windows of 16 points (6.4M points, 73 MB of JSON): refused with 413 before it is
    parsed; the peak memory of the refusal stays under 32 MB above the body itself (parsing it
    first took gigabytes)."""
    result = _peak(tmp_path, _PEAK_SCRIPT, "400000")
    assert result["mb"] > 70 and result["status"] == 413
    assert "max_points_per_request" in result["message"]
    assert result["peak_mb"] < 32, result


_SCORE_PEAK_SCRIPT = r"""
import asyncio, gc, json, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
sys.path.insert(0, sys.argv[2])
from svc_helpers import TINY_CONFIG, make_frame
from detector import DetectorConfig, create_detector
from service.observability import Metrics
from service.scoring import LoadedVersion, MicroBatcher, ScoreRequest

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

n = int(sys.argv[1])
det = create_detector(DetectorConfig.model_validate(TINY_CONFIG)).fit(make_frame(600))
loaded = LoadedVersion.of("m", "m1", 1, det)
batcher = MicroBatcher(ThreadPoolExecutor(1), 4096, 0.0, Metrics())
rng = np.random.default_rng(0)
t = np.arange(n)
values = {"a": np.round(np.sin(t / 50) + 0.1 * rng.standard_normal(n), 6).tolist(),
          "b": np.round(np.cos(t / 70) + 0.1 * rng.standard_normal(n), 6).tolist()}
body = json.dumps({"timestamps": (1_700_000_000 + 60 * t).tolist(), "values": values}).encode()
del values, t
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = hwm_kb()

async def score() -> bytes:
    request = ScoreRequest.from_body(body, 2_000_000)
    frame = request.frame_for(loaded.features, None)
    return await batcher.submit(loaded, request, frame)

out = asyncio.run(score())
print(json.dumps({"points": n, "body_mb": len(body) / 1e6, "answer_mb": len(out) / 1e6,
                  "peak_mb": (hwm_kb() - before) / 1024}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_large_series_is_scored_in_bounded_memory(tmp_path: Path) -> None:
    """A 200,000-point series (6.6 MB of JSON, a 19 MB answer with the top features): parsed,
    scored and encoded with a peak under 160 MB above the body, 0.8 KB a point (measured: 114
    MB; the parsed JSON lists, the per-point arrays and the answer's bytes are most of it)."""
    result = _peak(tmp_path, _SCORE_PEAK_SCRIPT, "200000", str(Path(__file__).parent))
    assert result["points"] == 200_000 and result["answer_mb"] > 15
    assert result["peak_mb"] < 160, result


def test_client_chooses_the_per_point_fields(scorer: Client) -> None:
    client, headers = scorer
    frame = make_frame(200)
    frame.iloc[100:104, 0] = 25.0  # an obvious anomaly
    body = {
        "timestamps": [t.isoformat() for t in frame.index],
        "values": {c: frame[c].tolist() for c in frame.columns},
    }
    whole = client.post("/v1/models/m1/score", json=body, headers=headers)
    full = whole.json()
    lean = client.post(
        "/v1/models/m1/score",
        json={**body, "top_k": 0, "fields": ["anomalous_indices"]},
        headers=headers,
    )
    assert lean.status_code == 200, lean.text
    got = lean.json()
    assert "scores" not in got and "anomalous" not in got and "top_features" not in got
    expected = [i for i, flag in enumerate(full["anomalous"]) if flag]
    assert got["anomalous_indices"] == expected and 100 in expected
    assert got["n_anomalous"] == full["n_anomalous"] == len(expected)
    assert len(lean.content) < len(whole.content) / 10
    r = client.post("/v1/models/m1/score", json={**body, "fields": ["nope"]}, headers=headers)
    assert r.status_code == 422
