"""End to end against real server processes (uvicorn on a free loopback port, jobs in child
processes): the whole cycle, crashes (SIGKILL) during training and promotion, and scoring while a
new version is trained and promoted."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from svc_helpers import (
    TINY_CONFIG,
    create_key,
    make_frame,
    pid_alive,
    register_trained_version,
    rows_of,
    wait_job,
    windows_of,
)

from service.context import AppContext
from service.db import upgrade_schema
from service.settings import Settings

pytestmark = pytest.mark.slow

SLOW_CONFIG: dict[str, Any] = {
    **TINY_CONFIG,
    "training": {"max_epochs": 10_000, "max_seconds": 4, "patience": 10_000, "batch_size": 32},
}


def _seed_model(data_dir: Path, name: str, versions: int, policy: str = "always") -> None:
    """Create a model with history and ``versions`` trained versions, without a server."""
    ctx = AppContext.build(Settings(data_dir=data_dir))
    upgrade_schema(ctx.db)
    from detector import DetectorConfig

    ctx.registry.create_model(name, DetectorConfig.model_validate(TINY_CONFIG), "", policy)
    frame = make_frame(1200)
    ctx.history.append(ctx.registry.get_model(name).id, frame)
    for i in range(versions):
        register_trained_version(ctx, name, make_frame(1200, seed=i), promote=(i == 0))
    ctx.scoring.close()
    ctx.db.dispose()


def test_full_cycle(tmp_path: Path, server_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir)
    server = server_factory()
    c = server.client(key)

    # create -> upload -> train -> poll
    r = c.post(
        "/v1/models",
        json={"name": "cpu", "config": TINY_CONFIG, "promotion_policy": "manual"},
    )
    assert r.status_code == 201, r.text
    frame = make_frame(1500)
    csv = frame.reset_index().to_csv(index=False).encode()
    r = c.post("/v1/models/cpu/data/upload", files={"file": ("cpu.csv", csv, "text/csv")})
    assert r.status_code == 200 and r.json()["summary"]["points"] == 1500, r.text
    r = c.post("/v1/models/cpu/jobs", json={"last": "7d"})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["version"] == 1 and job["promoted"] is True
    assert job["progress"]["epoch"] >= 1 and "train" in job["progress"]["losses"]
    assert job["duration_s"] > 0
    version = c.get("/v1/models/cpu/versions/1").json()
    assert version["active"] and version["n_points"] == 1500 and version["window"] == 16
    assert len(version["history"]) == job["progress"]["epoch"]

    # score
    r = c.post("/v1/models/cpu/score", json={"windows": windows_of(frame, 4)})
    assert r.status_code == 200 and r.json()["version"] == 1

    # schedule -> retrain (manual policy: not promoted)
    more = make_frame(60, seed=5, end=frame.index[-1] + np.timedelta64(60, "m"))
    assert c.post("/v1/models/cpu/data", json={"rows": rows_of(more)}).status_code == 200
    r = c.post("/v1/models/cpu/schedules", json={"interval": "2s", "window": "2d"})
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = c.get("/v1/jobs", params={"model": "cpu"}).json()["data"]
        scheduled = [j for j in jobs if j["trigger"] == "schedule"]
        if scheduled:
            break
        time.sleep(0.2)
    assert scheduled, "the schedule never fired"
    assert c.post(f"/v1/schedules/{schedule_id}/pause").json()["paused"] is True
    retrained = wait_job(c, scheduled[-1]["id"])
    assert retrained["status"] == "succeeded", retrained
    assert retrained["promoted"] is False and retrained["version"] == 2
    assert c.get("/v1/models/cpu").json()["active_version"] == 1

    # promote -> roll back
    assert c.post("/v1/models/cpu/versions/2/promote").json()["active_version"] == 2
    assert (
        c.post("/v1/models/cpu/score", json={"windows": windows_of(frame)}).json()["version"] == 2
    )
    assert c.post("/v1/models/cpu/rollback").json()["active_version"] == 1
    assert (
        c.post("/v1/models/cpu/score", json={"windows": windows_of(frame)}).json()["version"] == 1
    )

    # cancel a running job: it ends as cancelled and its process is gone
    r = c.post("/v1/models/cpu/jobs", json={"config": SLOW_CONFIG})
    job_id = r.json()["id"]
    deadline = time.monotonic() + 30
    while c.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled = wait_job(c, job_id, timeout=30)
    assert cancelled["status"] == "cancelled", cancelled
    assert c.get("/v1/models/cpu/versions").json()["count"] == 2

    metrics = c.get("/metrics").text
    assert 'reconad_jobs{state="succeeded"} 2.0' in metrics
    assert 'reconad_jobs{state="cancelled"} 1.0' in metrics
    assert "reconad_scored_points_total" in metrics
    assert c.delete("/v1/models/cpu").status_code == 204
    assert c.get("/v1/models/cpu").status_code == 404


def test_sigkill_during_training_then_restart(tmp_path: Path, server_factory: Any) -> None:
    data_dir = tmp_path / "data"
    _seed_model(data_dir, "m", versions=1)
    key = create_key(data_dir)
    server = server_factory()
    c = server.client(key)
    r = c.post("/v1/models/m/schedules", json={"interval": "3600s", "window": "1d"})
    schedule = r.json()
    r = c.post("/v1/models/m/jobs", json={"config": SLOW_CONFIG})
    job_id = r.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"].get("epoch", 0) >= 1:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    worker_pid = _job_pid(data_dir, job_id)
    assert worker_pid and pid_alive(worker_pid)

    server.kill()
    deadline = time.monotonic() + 10
    while pid_alive(worker_pid):  # the job process dies with its server
        assert time.monotonic() < deadline, "job process outlived the killed server"
        time.sleep(0.1)

    server = server_factory()
    c = server.client(key)
    job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "interrupted" and "retry" in job["error"]
    versions = c.get("/v1/models/m/versions").json()
    assert versions["count"] == 1 and versions["active_version"] == 1
    artifacts = list((data_dir / "artifacts").glob(f"{c.get('/v1/models/m').json()['id']}/*"))
    assert len(artifacts) == 1  # nothing half-written, nothing unregistered
    assert (
        c.post("/v1/models/m/score", json={"windows": windows_of(make_frame(40))}).status_code
        == 200
    )

    # the schedule survived with its next run, and fires once due
    again = c.get(f"/v1/schedules/{schedule['id']}").json()
    assert again["next_run_at"] == schedule["next_run_at"] and not again["paused"]

    r = c.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 202, r.text
    retried = wait_job(c, r.json()["id"], timeout=60)
    assert retried["status"] == "succeeded" and retried["retry_of"] == job_id
    assert retried["version"] == 2


def _job_pid(data_dir: Path, job_id: str) -> int:
    from service.db import Database
    from service.tables import Job

    database = Database(Settings(data_dir=data_dir).database_url)
    with database.session() as session:
        job = session.get(Job, job_id)
        pid = job.pid if job is not None else None
    database.dispose()
    return int(pid or 0)


def test_schedules_resume_after_a_kill(tmp_path: Path, server_factory: Any) -> None:
    data_dir = tmp_path / "data"
    _seed_model(data_dir, "m", versions=1, policy="manual")
    key = create_key(data_dir)
    server = server_factory(RECONAD_MAX_CONCURRENT_JOBS="0")
    c = server.client(key)
    r = c.post("/v1/models/m/schedules", json={"interval": "2s", "window": "1d"})
    schedule_id = r.json()["id"]
    server.kill()  # before it was due (the restart below takes longer than the interval)
    server = server_factory(RECONAD_MAX_CONCURRENT_JOBS="0")
    c = server.client(key)
    deadline = time.monotonic() + 10
    while not (fired := c.get(f"/v1/schedules/{schedule_id}").json())["last_job_id"]:
        assert time.monotonic() < deadline, "the schedule did not fire after the restart"
        time.sleep(0.2)
    jobs = c.get("/v1/jobs", params={"model": "m"}).json()
    assert jobs["count"] == 1 and jobs["data"][0]["trigger"] == "schedule"
    assert fired["next_run_at"] > fired["last_run_at"]


def test_sigkill_during_promotion_keeps_one_active_version(
    tmp_path: Path, server_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    _seed_model(data_dir, "m", versions=2)
    # no key yet: the first start prints a bootstrap admin key, the restart must not
    server = server_factory(RECONAD_TEST_PROMOTION_PAUSE_S="60", RECONAD_BOOTSTRAP_ADMIN_KEY="true")
    keys = _printed_keys(server)
    assert len(keys) == 1, server.log()[-2000:]
    key = keys[0]
    c = server.client(key)
    assert c.get("/v1/models/m").json()["active_version"] == 1

    def promote() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            server.client(key, timeout=90).post("/v1/models/m/versions/2/promote")

    thread = threading.Thread(target=promote)
    thread.start()
    deadline = time.monotonic() + 20
    while "pausing" not in server.log():  # inside the promotion transaction
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.kill()
    thread.join(10)

    server = server_factory(RECONAD_BOOTSTRAP_ADMIN_KEY="true")
    assert _printed_keys(server) == [key]
    c = server.client(key)
    versions = c.get("/v1/models/m/versions").json()
    assert versions["active_version"] == 1
    assert [v["version"] for v in versions["data"] if v["active"]] == [1]
    w = {"windows": windows_of(make_frame(40))}
    assert c.post("/v1/models/m/score", json=w).json()["version"] == 1
    assert c.post("/v1/models/m/versions/2/promote").json()["active_version"] == 2
    assert c.post("/v1/models/m/score", json=w).json()["version"] == 2
    assert c.post("/v1/models/m/rollback").json()["active_version"] == 1


def test_scoring_continues_while_training_and_promoting(
    tmp_path: Path, server_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    _seed_model(data_dir, "m", versions=1, policy="always")
    key = create_key(data_dir)
    server = server_factory()
    c = server.client(key)
    frame = make_frame(200, seed=7)
    window_body = {"windows": windows_of(frame, 2)}
    series_body = {
        "values": {col: frame[col].tolist() for col in frame.columns},
        "timestamps": [t.isoformat() for t in frame.index],
    }
    stop = threading.Event()
    results: list[tuple[int, int | None]] = []

    def hammer(body: dict[str, Any]) -> None:
        with server.client(key) as client:
            while not stop.is_set():
                r = client.post("/v1/models/m/score", json=body)
                results.append((r.status_code, r.json().get("version")))

    threads = [threading.Thread(target=hammer, args=(b,)) for b in (window_body, series_body)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        r = c.post("/v1/models/m/jobs", json={"last": "7d"})
        job = wait_job(c, r.json()["id"], timeout=90)
        assert job["status"] == "succeeded" and job["promoted"] is True, job
        deadline = time.monotonic() + 10
        while not any(v == 2 for _, v in results[-20:]):
            assert time.monotonic() < deadline, "scoring never moved to the new version"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    statuses = {s for s, _ in results}
    assert statuses == {200}, statuses
    assert {v for _, v in results} == {1, 2}
    assert len(results) > 20


def _printed_keys(server: Any) -> list[str]:
    return re.findall(r"rad_[0-9a-f]{8}_[A-Za-z0-9_-]+", server.log())


def test_real_http_limits_and_bad_json(tmp_path: Path, server_factory: Any) -> None:
    data_dir = tmp_path / "data"
    _seed_model(data_dir, "m", versions=1)
    key = create_key(data_dir)
    server = server_factory(RECONAD_MAX_BODY_BYTES="100000", RECONAD_JOB_TIMEOUT_S="3")
    c = server.client(key)
    r = c.post("/v1/models/m/score", content=b"{" + b" " * 200_000 + b"}")
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    r = c.post(
        "/v1/models/m/score",
        content=b'{"windows": [[[1,',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    r = c.post("/v1/models", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    assert c.get("/v1/models/..%2F..%2Fetc").status_code in (404, 422)
    # a job over job_timeout_s is stopped and failed with a message saying why
    job = c.post("/v1/models/m/jobs", json={"config": SLOW_CONFIG}).json()
    timed_out = wait_job(c, job["id"], timeout=30)
    assert timed_out["status"] == "failed" and "job_timeout_s" in timed_out["error"]
    assert "Traceback" not in server.log()
