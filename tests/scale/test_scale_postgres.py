"""PostgreSQL as the metadata database: migrations, no lost updates between replicas, and the
orphan artifact sweep of scale-out replicas on an S3-compatible server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from scale_infra import redis_reason, wait_for
from sqlalchemy import update

from detector import DetectorConfig
from service.context import AppContext
from service.db import upgrade_schema
from service.registry import NewVersion, job_artifact_key
from service.settings import Settings
from service.tables import Base, Job, Schedule, Version, utcnow


def _settings(tmp_path: Path, pg_url: str, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        **extra,
    )


@contextmanager
def _two_replicas(settings: Settings) -> Iterator[list[AppContext]]:
    """Two app contexts (as two API replicas) on one PostgreSQL database and one data dir."""
    contexts = [AppContext.build(settings) for _ in range(2)]
    threads = [threading.Thread(target=upgrade_schema, args=(c.db,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield contexts
    for ctx in contexts:
        ctx.runner.stop()
        ctx.scoring.close()
        ctx.db.dispose()


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[list[AppContext]]:
    """Two embedded-mode replicas (no job runs)."""
    with _two_replicas(_settings(tmp_path, pg_url)) as contexts:
        yield contexts


@pytest.fixture
def scale_out_replicas(tmp_path: Path, pg_url: str, s3_endpoint: str) -> Iterator[list[AppContext]]:
    """Two replicas with Celery jobs and S3 stores (their runners are not started)."""
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    settings = _settings(
        tmp_path,
        pg_url,
        artifact_url="s3://reconad/orphans/artifacts",
        history_url="s3://reconad/orphans/history",
        s3_endpoint_url=s3_endpoint,
        job_backend="celery",
        broker_url="redis://127.0.0.1:6379/13",
        job_stale_after_s=30,
        job_max_attempts=1,
        orphan_sweep_s=0.5,
    )
    with _two_replicas(settings) as contexts:
        for ctx in contexts:
            ctx.prepare()
        yield contexts


def _new_version(ctx: AppContext, model_id: str, key: str = "") -> NewVersion:
    key = key or f"{model_id}/a{threading.get_ident()}-{utcnow().timestamp()}".replace(".", "-")
    return NewVersion(
        artifact_key=key,
        config=DetectorConfig(window=16).model_dump(mode="json"),
        threshold=1.0,
        validation_score=0.5,
        calibration={},
        metrics={},
        history=[],
        features=["value"],
        window=16,
        data_start=None,
        data_end=None,
        n_points=10,
    )


def test_migrations_on_postgres_match_the_tables(replicas: list[AppContext]) -> None:
    with replicas[0].db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def _register_at_once(
    replicas: list[AppContext], model_id: str, per_thread: int
) -> list[BaseException]:
    """Two threads per replica each register ``per_thread`` versions at once; the errors."""
    errors: list[BaseException] = []

    def register(ctx: AppContext) -> None:
        try:
            for _ in range(per_thread):
                ctx.registry.register_version(model_id, _new_version(ctx, model_id))
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(c,)) for c in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_versions_and_promotions_lose_nothing(replicas: list[AppContext]) -> None:
    model = replicas[0].registry.create_model("pg-m", DetectorConfig(window=16), "", "always")
    assert _register_at_once(replicas, model.id, 10) == []
    current, versions = replicas[1].registry.list_versions("pg-m")
    numbers = sorted(v.version for v in versions)
    assert numbers == list(range(1, 41))
    assert current.last_version == 40
    assert current.active_version in numbers
    # The active version is the last promoted one: every promotion was logged exactly once.
    with replicas[0].db.session() as session:
        assert session.query(Version).count() == 40


def test_replicas_scoring_at_once_write_the_last_scoring_time_once(
    replicas: list[AppContext],
) -> None:
    model = replicas[0].registry.create_model("pg-s", DetectorConfig(window=16), "", "always")
    at = utcnow()
    barrier = threading.Barrier(8)
    wrote: list[bool] = []

    def mark(ctx: AppContext, k: int) -> None:
        barrier.wait()
        wrote.append(ctx.registry.mark_scored(model.id, at + timedelta(milliseconds=k), 60))

    threads = [threading.Thread(target=mark, args=(replicas[k % 2], k)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wrote) == [False] * 7 + [True]  # one conditional UPDATE won, none raced
    stored = replicas[1].registry.get_model("pg-s").last_scored_at
    assert stored is not None and at <= stored <= at + timedelta(milliseconds=7)


def test_a_due_schedule_fires_once_across_replicas(replicas: list[AppContext]) -> None:
    import pandas as pd

    ctx = replicas[0]
    ctx.registry.create_model("pg-s", DetectorConfig(window=16), "", "always")
    model = ctx.registry.get_model("pg-s")
    index = pd.date_range("2024-01-01", periods=64, freq="min", tz="UTC")
    ctx.history.append(model.id, pd.DataFrame({"value": range(64)}, index=index, dtype=float))
    schedule, _ = ctx.schedules.create("pg-s", None, 60.0, 3600.0, anchor="latest")
    with ctx.db.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id)
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )
    fired: list[list[str]] = []
    barrier = threading.Barrier(4)

    def fire(replica: AppContext) -> None:
        barrier.wait()
        fired.append(replica.schedules.fire_due())

    threads = [threading.Thread(target=fire, args=(r,)) for r in replicas * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(f) for f in fired) == 1
    jobs, total = ctx.jobs.list_jobs("pg-s")
    assert total == 1 and jobs[0][0].trigger == "schedule"


def _publish(ctx: AppContext, key: str) -> str:
    with ctx.artifacts.staging() as tmp:
        (tmp / "m").mkdir()
        (tmp / "m" / "weights.bin").write_bytes(b"w" * 100)
        ctx.artifacts.publish(tmp / "m", key)
    return key


def test_orphans_of_ended_jobs_are_swept(scale_out_replicas: list[AppContext]) -> None:
    """The runners of two replicas reap and sweep at once: the artifact that a lost job uploaded
    goes, a registered one and that of a job still running elsewhere stay."""
    ctx, other = scale_out_replicas
    model = ctx.registry.create_model("orph", DetectorConfig(window=16), "", "always")
    now, lost_at = utcnow(), utcnow() - timedelta(hours=1)
    with ctx.db.transaction() as session:
        # "killed": its worker died after the upload, before the registration (stale heartbeat,
        # no attempt left: the reaper fails it); "live" is still training elsewhere.
        for job_id, status, seen in (
            ("killed", "running", lost_at),
            ("live", "running", now),
            ("done", "succeeded", now),
        ):
            session.add(
                Job(
                    id=job_id,
                    model_id=model.id,
                    status=status,
                    params={},
                    run_token=f"t-{job_id}",
                    attempts=1,
                    started_at=seen,
                    heartbeat_at=seen,
                )
            )
    registered = _publish(ctx, job_artifact_key(model.id, "done"))
    ctx.registry.register_version(model.id, _new_version(ctx, model.id, registered))
    orphan = _publish(ctx, job_artifact_key(model.id, "killed"))
    in_flight = _publish(other, job_artifact_key(model.id, "live"))

    for replica in scale_out_replicas:
        replica.runner.start()
    wait_for(lambda: not ctx.artifacts.exists(orphan), 30, "the orphan to be swept")
    with ctx.db.session() as session:
        killed = session.get(Job, "killed")
        assert killed is not None and killed.status == "failed"
    for replica in scale_out_replicas:
        assert replica.artifacts.list(model.id) == sorted([registered, in_flight])
    assert (other.artifacts.fetch(registered) / "weights.bin").read_bytes() == b"w" * 100


def test_labels_round_trip_and_their_bound_holds_across_replicas(
    tmp_path: Path, pg_url: str
) -> None:
    import pandas as pd

    from service.errors import ConflictError
    from service.tables import Label

    with _two_replicas(_settings(tmp_path, pg_url, max_labels_per_model=30)) as replicas:
        model = replicas[0].registry.create_model("pg-l", DetectorConfig(window=16), "", "always")
        t0 = pd.Timestamp("2026-11-01", tz="UTC").to_pydatetime()
        refused: list[int] = []
        errors: list[BaseException] = []

        def give(ctx: AppContext, worker: int) -> None:
            for i in range(10):
                try:
                    at = t0 + timedelta(minutes=worker * 100 + i)
                    ctx.labels.create("pg-l", at, at, "anomaly", f"w{worker}", None, "k")
                except ConflictError:
                    refused.append(worker)
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=give, args=(replicas[w % 2], w)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        rows, total = replicas[1].labels.list_labels("pg-l", None, None, None, None, 0, 100)
        assert total == 30 and len(refused) == 10  # the bound, exactly, under concurrency
        assert all(r.start.tzinfo is not None and r.start == r.end for r in rows)
        exported = replicas[0].labels.export_csv("pg-l")
        assert exported.decode().count("\n") == 31
        with replicas[0].db.transaction() as session:
            session.query(Label).delete()
        assert replicas[1].labels.import_csv("pg-l", exported, "k") == (30, 30)
        again = replicas[0].labels.export_csv("pg-l")
        assert sorted(again.splitlines()) == sorted(exported.splitlines())
        replicas[0].registry.delete_model("pg-l")
        with replicas[1].db.session() as session:
            assert session.query(Label).filter_by(model_id=model.id).count() == 0


def test_json_columns_round_trip_what_the_standard_module_writes_and_more(pg_url: str) -> None:
    """JSON columns are written with orjson (service.db): integers past 64 bits fall back to
    the standard module, integer keys become strings as the standard module makes them, and a
    NaN, which PostgreSQL's json type refuses, is written as null."""
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

    from service.db import Database

    db = Database(pg_url)
    table = Table("json_round_trip", MetaData(), Column("id", Integer, primary_key=True))
    table.append_column(Column("doc", JSON))
    table.drop(db.engine, checkfirst=True)
    table.create(db.engine)
    try:
        docs = [
            {"recent": [[1.8e9, 2**63 - 1]], "nested": {"a": [1, 2.5, None, True]}},
            {"big": 2**70},
            {1: "one"},
            {"nan": float("nan")},
        ]
        with db.transaction() as session:
            session.execute(insert(table), [{"id": i, "doc": d} for i, d in enumerate(docs)])
        with db.transaction() as session:
            back = {i: d for i, d in session.execute(select(table.c.id, table.c.doc))}
        assert back[0] == docs[0]
        assert back[1] == {"big": 2**70}
        assert back[2] == {"1": "one"}
        assert back[3] == {"nan": None}
    finally:
        table.drop(db.engine)
        db.dispose()


def test_versions_and_jobs_stay_bounded_across_replicas(tmp_path: Path, pg_url: str) -> None:
    """Two replicas register versions at once and queue jobs in turn, with
    ``max_versions_per_model`` 5 and ``max_finished_jobs_per_model`` 10: the registrations
    serialise on the model's row, so the newest five versions and the active one remain and
    every number was given once; each job queued leaves ten finished ones before it."""
    settings = _settings(tmp_path, pg_url, max_versions_per_model=5, max_finished_jobs_per_model=10)
    with _two_replicas(settings) as replicas:
        model = replicas[0].registry.create_model("pg-b", DetectorConfig(window=16), "", "manual")
        assert _register_at_once(replicas, model.id, 5) == []
        current, versions = replicas[1].registry.list_versions("pg-b")
        assert current.last_version == 20 and current.active_version == 1
        assert sorted(v.version for v in versions) == [1, 16, 17, 18, 19, 20]
        frame = pd.DataFrame(
            {"value": range(100)},
            index=pd.date_range("2026-01-01", periods=100, freq="min", tz="UTC"),
            dtype=float,
        )
        for i in range(14):
            job = replicas[i % 2].jobs.create("pg-b", inline=frame)
            with replicas[0].db.transaction() as session:
                session.execute(update(Job).where(Job.id == job.id).values(status="failed"))
        with replicas[0].db.session() as session:  # ten kept when the last was queued, and it
            assert session.query(Job).count() == 11
