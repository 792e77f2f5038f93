"""PostgreSQL as the metadata database: migrations, and no lost updates between replicas."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from detector import DetectorConfig
from service.context import AppContext
from service.db import upgrade_schema
from service.registry import NewVersion
from service.settings import Settings
from service.tables import Base, Schedule, Version, utcnow


def _settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
    )


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[list[AppContext]]:
    """Two app contexts (as two API replicas) on one PostgreSQL database and one data dir."""
    contexts = [AppContext.build(_settings(tmp_path, pg_url)) for _ in range(2)]
    threads = [threading.Thread(target=upgrade_schema, args=(c.db,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield contexts
    for ctx in contexts:
        ctx.scoring.close()
        ctx.db.dispose()


def _new_version(ctx: AppContext, model_id: str) -> NewVersion:
    key = f"{model_id}/a{threading.get_ident()}-{utcnow().timestamp()}".replace(".", "-")
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


def test_concurrent_versions_and_promotions_lose_nothing(replicas: list[AppContext]) -> None:
    model = replicas[0].registry.create_model("pg-m", DetectorConfig(window=16), "", "always")
    errors: list[BaseException] = []

    def register(ctx: AppContext) -> None:
        try:
            for _ in range(10):
                ctx.registry.register_version(model.id, _new_version(ctx, model.id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(c,)) for c in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    current, versions = replicas[1].registry.list_versions("pg-m")
    numbers = sorted(v.version for v in versions)
    assert numbers == list(range(1, 41))
    assert current.last_version == 40
    assert current.active_version in numbers
    # The active version is the last promoted one: every promotion was logged exactly once.
    with replicas[0].db.session() as session:
        assert session.query(Version).count() == 40


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
