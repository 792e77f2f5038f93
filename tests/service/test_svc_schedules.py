"""Schedules: next-run arithmetic, firing, claiming, pausing, skipping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from svc_helpers import make_frame

from detector import DetectorConfig
from service.context import AppContext
from service.errors import ConflictError, InvalidInputError
from service.schedules import next_run
from service.tables import Job, Schedule


def test_next_run() -> None:
    t = datetime(2024, 1, 1, 10, 30, tzinfo=UTC)
    assert next_run("0 3 * * *", None, t) == datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
    assert next_run(None, 90.0, t) == t + timedelta(seconds=90)


def _setup(ctx: AppContext) -> None:
    ctx.registry.create_model("m1", DetectorConfig(window=16), "", "always")
    model = ctx.registry.get_model("m1")
    ctx.history.append(model.id, make_frame(200))


def test_create_validates(context: AppContext) -> None:
    _setup(context)
    svc = context.schedules
    with pytest.raises(InvalidInputError, match="invalid cron"):
        svc.create("m1", "61 * * * *", None, 3600)
    with pytest.raises(InvalidInputError, match="exactly one"):
        svc.create("m1", "0 * * * *", 60.0, 3600)
    with pytest.raises(InvalidInputError, match="at least"):
        svc.create("m1", None, 0.1, 3600)
    row, name = svc.create("m1", "*/5 * * * *", None, 86400)
    assert name == "m1" and row.next_run_at > datetime.now(UTC)


def test_fire_due_queues_once_and_moves_next_run(context: AppContext) -> None:
    _setup(context)
    svc = context.schedules
    row, _ = svc.create("m1", None, 60.0, 14 * 86400)
    assert svc.fire_due() == []  # not due yet
    later = datetime.now(UTC) + timedelta(seconds=61)
    fired = svc.fire_due(later)
    assert len(fired) == 1
    job, _ = context.jobs.get(fired[0])
    assert job.trigger == "schedule" and job.schedule_id == row.id and job.status == "queued"
    assert job.params["start"] is not None and job.params["source"] == "history"
    again, _ = svc.get(row.id)
    assert again.next_run_at > later and again.last_job_id == fired[0]
    assert svc.fire_due(later) == []  # claimed: not fired twice
    # due again while the first job is still queued: skipped, but the clock moves on
    assert svc.fire_due(later + timedelta(seconds=120)) == []
    with pytest.raises(ConflictError, match="still queued"):
        svc.run_now(row.id)
    with context.db.transaction() as session:
        session.execute(update(Job).values(status="succeeded"))
    assert svc.run_now(row.id)


def test_paused_schedules_do_not_fire(context: AppContext) -> None:
    _setup(context)
    svc = context.schedules
    row, _ = svc.create("m1", None, 1.0, 3600)
    svc.set_paused(row.id, True)
    assert svc.fire_due(datetime.now(UTC) + timedelta(hours=1)) == []
    resumed, _ = svc.set_paused(row.id, False)
    assert not resumed.paused and resumed.next_run_at > datetime.now(UTC)
    svc.delete(row.id)
    with context.db.session() as session:
        assert session.scalars(select(Schedule)).first() is None


def test_schedule_without_history_logs_and_skips(context: AppContext) -> None:
    context.registry.create_model("empty", DetectorConfig(window=16), "", "always")
    svc = context.schedules
    svc.create("empty", None, 1.0, 3600)
    assert svc.fire_due(datetime.now(UTC) + timedelta(seconds=5)) == []


def test_a_model_s_schedules_are_bounded(context: AppContext) -> None:
    """``RECONAD_MAX_SCHEDULES_PER_MODEL`` (20 by default): the 21st schedule of a model is a
    409 that names the setting; another model is not affected, and a deletion makes room."""
    _setup(context)
    context.registry.create_model("m2", DetectorConfig(window=16), "", "always")
    svc = context.schedules
    rows = [svc.create("m1", None, 3600.0 + i, 86400)[0] for i in range(20)]
    with pytest.raises(ConflictError, match=r"20 schedules, the limit \(max_schedules_per_model"):
        svc.create("m1", None, 60.0, 86400)
    assert svc.create("m2", None, 60.0, 86400)[1] == "m2"
    svc.delete(rows[0].id)
    assert svc.create("m1", None, 60.0, 86400)[1] == "m1"
