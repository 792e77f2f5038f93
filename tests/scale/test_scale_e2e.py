"""Scale-out end to end: two API processes and Celery workers over real PostgreSQL, Redis and an
S3-compatible server on loopback. create -> upload -> train on a worker -> score on the other
API process -> a due schedule fires once across both replicas -> a worker SIGKILLed mid-training
-> its job is queued again and finished by a new worker, nothing lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from scale_infra import WorkerProcess, port_open, redis_reason, wait_for
from sqlalchemy import update
from svc_helpers import REPO, TINY_CONFIG, ServerProcess, make_frame, wait_job, windows_of

from service.auth import AuthService
from service.db import Database, upgrade_schema
from service.tables import Job, Schedule, utcnow

pytestmark = pytest.mark.slow

SLOW_CONFIG: dict[str, Any] = {
    **TINY_CONFIG,
    "training": {"max_epochs": 10_000, "max_seconds": 5, "patience": 10_000, "batch_size": 32},
}


@pytest.fixture
def stack(tmp_path: Path, pg_url: str, s3_endpoint: str) -> Iterator[dict[str, Any]]:
    """Settings shared by every process, the database, and the processes started (stopped at
    teardown)."""
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"s3://reconad/e2e-{uuid.uuid4().hex[:8]}"
    env = {
        "PYTHONPATH": str(REPO),
        "RECONAD_DATABASE_URL": pg_url,
        "RECONAD_ARTIFACT_URL": f"{prefix}/artifacts",
        "RECONAD_HISTORY_URL": f"{prefix}/history",
        "RECONAD_S3_ENDPOINT_URL": s3_endpoint,
        "RECONAD_JOB_BACKEND": "celery",
        "RECONAD_BROKER_URL": "redis://127.0.0.1:6379/13",
        "RECONAD_JOB_HEARTBEAT_S": "0.5",
        "RECONAD_JOB_STALE_AFTER_S": "3",
        "RECONAD_JOB_MAX_ATTEMPTS": "2",
        "RECONAD_MODEL_META_TTL_S": "0",
        "RECONAD_DEVICE": "cpu",
    }
    db = Database(pg_url)
    upgrade_schema(db)
    processes: list[Any] = []
    yield {"env": env, "db": db, "processes": processes, "tmp": tmp_path}
    for process in processes:
        process.stop()
    db.dispose()


def _api(stack: dict[str, Any], name: str) -> ServerProcess:
    tmp: Path = stack["tmp"]
    server = ServerProcess(tmp / name, tmp / f"{name}.log", **stack["env"])
    (tmp / name).mkdir()
    stack["processes"].append(server)
    return server.start()


def _worker(stack: dict[str, Any], name: str) -> WorkerProcess:
    tmp: Path = stack["tmp"]
    (tmp / name).mkdir()
    env = {**_api_env(stack), "RECONAD_DATA_DIR": str(tmp / name)}
    worker = WorkerProcess(env, tmp / f"{name}.log")
    stack["processes"].append(worker)
    return worker.start()


def _api_env(stack: dict[str, Any]) -> dict[str, str]:
    import os

    return {**os.environ, **stack["env"]}


def _job_row(db: Database, job_id: str) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _start_training(
    submit: httpx.Client, poll: httpx.Client, config: dict[str, Any], what: str
) -> str:
    """Submit a training job for model ``m`` on one replica; its id once the other reports an
    epoch done."""
    job_id: str = submit.post("/v1/models/m/jobs", json={"config": config}).json()["id"]
    wait_for(
        lambda: (poll.get(f"/v1/jobs/{job_id}").json().get("progress") or {}).get("epoch", 0) >= 1,
        60,
        what,
    )
    return job_id


def test_two_replicas_one_worker(stack: dict[str, Any]) -> None:
    db: Database = stack["db"]
    _, key = AuthService(db).create("admin", "tests")
    api_a, api_b = _api(stack, "api-a"), _api(stack, "api-b")
    worker = _worker(stack, "worker-1")
    a, b = api_a.client(key), api_b.client(key)

    # create -> upload (A) -> train on the worker -> score (B)
    r = a.post(
        "/v1/models", json={"name": "m", "config": TINY_CONFIG, "promotion_policy": "always"}
    )
    assert r.status_code == 201, r.text
    frame = make_frame(1500)
    csv = frame.reset_index().to_csv(index=False).encode()
    r = a.post("/v1/models/m/data/upload", files={"file": ("m.csv", csv, "text/csv")})
    assert r.status_code == 200 and r.json()["summary"]["points"] == 1500, r.text
    r = a.post("/v1/models/m/jobs", json={"last": "7d"})
    assert r.status_code == 202, r.text
    job = wait_job(b, r.json()["id"], timeout=90)
    assert job["status"] == "succeeded", (job, worker.log_path.read_text()[-3000:])
    assert job["version"] == 1 and job["progress"]["epoch"] >= 1
    assert _job_row(db, job["id"]).attempts == 1
    r = b.post("/v1/models/m/score", json={"windows": windows_of(frame, 4)})
    assert r.status_code == 200 and r.json()["version"] == 1, r.text

    # a due schedule fires once although both replicas run their scheduler every 0.5 s
    r = b.post("/v1/models/m/schedules", json={"interval": "3600s", "window": "2d"})
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    with db.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )

    def scheduled() -> list[dict[str, Any]]:
        jobs = a.get("/v1/jobs", params={"model": "m"}).json()["data"]
        return [j for j in jobs if j["trigger"] == "schedule"]

    wait_for(lambda: scheduled(), 30, "the schedule to fire")
    time.sleep(2.0)  # several more scheduler rounds on both replicas
    fired = scheduled()
    assert len(fired) == 1, fired
    assert wait_job(a, fired[0]["id"], timeout=90)["status"] == "succeeded"

    # SIGKILL the worker mid-training: the job is queued again and a new worker finishes it
    job_id = _start_training(b, a, SLOW_CONFIG, "the slow job to train")
    worker.kill()
    wait_for(
        lambda: a.get(f"/v1/jobs/{job_id}").json()["status"] == "queued",
        30,
        "the lost job to be queued again",
    )
    _worker(stack, "worker-2")
    done = wait_job(b, job_id, timeout=90)
    assert done["status"] == "succeeded", done
    assert _job_row(db, job_id).attempts == 2
    versions = a.get("/v1/models/m/versions").json()
    assert versions["count"] == 3 and done["version"] == 3
    r = a.post("/v1/models/m/score", json={"windows": windows_of(frame, 4)})
    assert r.status_code == 200 and r.json()["version"] == 3, r.text

    # cancelling a job that runs on a worker reaches it (checked by the job at every epoch)
    long_config = {**SLOW_CONFIG, "training": {**SLOW_CONFIG["training"], "max_seconds": 120}}
    job_id = _start_training(a, b, long_config, "the long job to train")
    r = b.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code in (200, 202), r.text
    cancelled = wait_job(a, job_id, timeout=30)
    assert cancelled["status"] == "cancelled", cancelled
    assert a.get("/v1/models/m/versions").json()["count"] == 3  # nothing was registered


def test_rabbitmq_broker_runs_a_job(stack: dict[str, Any]) -> None:
    """The same job path with RabbitMQ as the broker instead of Redis."""
    if not port_open("127.0.0.1", 5672):
        pytest.skip("no RabbitMQ server on 127.0.0.1:5672")
    stack["env"]["RECONAD_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    _, key = AuthService(stack["db"]).create("admin", "tests")
    api = _api(stack, "api").client(key)
    worker = _worker(stack, "worker")
    r = api.post("/v1/models", json={"name": "r", "config": TINY_CONFIG})
    assert r.status_code == 201, r.text
    csv = make_frame(1500).reset_index().to_csv(index=False).encode()
    r = api.post("/v1/models/r/data/upload", files={"file": ("r.csv", csv, "text/csv")})
    assert r.status_code == 200, r.text
    r = api.post("/v1/models/r/jobs", json={"last": "7d"})
    job = wait_job(api, r.json()["id"], timeout=90)
    assert job["status"] == "succeeded", (job, worker.log_path.read_text()[-3000:])
    assert job["version"] == 1


def test_job_timeout_fails_a_job_on_a_worker(stack: dict[str, Any]) -> None:
    """RECONAD_JOB_TIMEOUT_S ends a job that runs too long on a worker, and it stays failed."""
    stack["env"]["RECONAD_JOB_TIMEOUT_S"] = "4"
    _, key = AuthService(stack["db"]).create("admin", "tests")
    api = _api(stack, "api").client(key)
    _worker(stack, "worker")
    r = api.post("/v1/models", json={"name": "t", "config": TINY_CONFIG})
    assert r.status_code == 201, r.text
    csv = make_frame(1500).reset_index().to_csv(index=False).encode()
    assert api.post(
        "/v1/models/t/data/upload", files={"file": ("t.csv", csv, "text/csv")}
    ).is_success
    long_config = {**SLOW_CONFIG, "training": {**SLOW_CONFIG["training"], "max_seconds": 120}}
    r = api.post("/v1/models/t/jobs", json={"config": long_config})
    job = wait_job(api, r.json()["id"], timeout=60)
    assert job["status"] == "failed" and "timed out" in job["error"], job
    time.sleep(3.0)  # the redelivered message is refused: the job stays failed
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "failed"
    assert api.get("/v1/models/t/versions").json()["count"] == 0
