"""The job state machine: allowed transitions, and the run-token guard on every write."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, true, update
from svc_helpers import make_frame

from detector import DetectorConfig
from service.context import AppContext
from service.db import Database, upgrade_schema
from service.jobs import states
from service.settings import Settings
from service.tables import Job, Model, Schedule, utcnow


def _job(db: Database, status: str = "queued") -> str:
    with db.transaction() as session:
        model = session.scalar(select(Model).where(Model.name == "m"))
        if model is None:
            model = Model(id=uuid.uuid4().hex, name="m", name_key="m", config={})
            session.add(model)
            session.flush()
        job_id = uuid.uuid4().hex
        session.add(Job(id=job_id, model_id=model.id, status=status, params={}, progress={}))
    return job_id


def _running(db: Database) -> tuple[str, str]:
    """A job claimed under a fresh token: its id and the token."""
    job_id = _job(db)
    with db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        token = states.hand_out(job)
        assert not states.claim(job, "someone-else", utcnow())
        assert states.claim(job, token, utcnow())
        assert job.status == "running" and job.started_at is not None
    return job_id, token


def _row(db: Database, job_id: str) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_the_transition_table() -> None:
    assert set(states.TRANSITIONS) == set(states.JOB_STATES)
    for final in states.FINAL_STATES:
        assert states.TRANSITIONS[final] == frozenset()  # retry makes a new job instead
    assert states.TRANSITIONS["queued"] == {"running", "cancelled"}
    assert "queued" in states.TRANSITIONS["running"]  # sent again after a lost worker


def test_claim_stamps_and_the_token_guards_every_later_write(db: Database) -> None:
    job_id, token = _running(db)
    with db.transaction() as session:
        assert not states.touch(session, job_id, "stale-token", progress={"epoch": 9})
        assert states.touch(session, job_id, token, progress={"epoch": 1})
        assert not states.finish(session, job_id, "stale-token", "failed", "lost")
    assert _row(db, job_id).progress == {"epoch": 1} and _row(db, job_id).status == "running"
    with db.transaction() as session:
        assert states.finish(session, job_id, token, "succeeded")
        assert not states.finish(session, job_id, token, "failed", "too late")
    row = _row(db, job_id)
    assert row.status == "succeeded" and row.finished_at is not None and row.error is None
    assert not states.holds(row, token)


def test_illegal_moves_are_refused(db: Database) -> None:
    job_id = _job(db, "succeeded")
    with db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        with pytest.raises(states.IllegalTransitionError, match="succeeded to running"):
            states.move(job, "running")
        with pytest.raises(states.IllegalTransitionError):
            states.hand_out(job)
    with db.transaction() as session, pytest.raises(states.IllegalTransitionError):
        states.touch(session, job_id, "t", status="queued")
    with db.transaction() as session, pytest.raises(states.IllegalTransitionError):
        states.move_all(session, true(), "queued", "succeeded")


def test_a_stale_running_job_is_claimed_again_only_by_its_token(db: Database) -> None:
    job_id, token = _running(db)
    later = utcnow() + timedelta(seconds=60)
    with db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        assert not states.claim(job, token, utcnow(), stale_after_s=30)  # alive: a duplicate
        assert not states.claim(job, token, later)  # the exclusive runner never re-claims
        assert not states.claim(job, "other", later, stale_after_s=30)
        assert states.claim(job, token, later, stale_after_s=30)  # its worker was lost
        states.move(job, "queued")  # or it is sent again
        assert job.run_token is None and job.status == "queued"


def test_bulk_moves_touch_only_the_old_state(db: Database) -> None:
    (running, _token), queued = _running(db), _job(db)
    with db.transaction() as session:
        assert states.move_all(session, true(), "running", "interrupted", error="restart") == 1
    assert _row(db, running).status == "interrupted" and _row(db, running).error == "restart"
    assert _row(db, queued).status == "queued"


def test_finished_jobs_beyond_the_limit_go_with_the_data_no_job_uses(settings: Settings) -> None:
    """``RECONAD_MAX_FINISHED_JOBS_PER_MODEL`` 10: queuing jobs one after another (each
    finished before the next) keeps the newest ten finished ones. A job named by a schedule
    stays; an uploaded input goes only once no remaining job (a retry shares it) uses it."""
    ctx = AppContext.build(settings.model_copy(update={"max_finished_jobs_per_model": 10}))
    upgrade_schema(ctx.db)
    try:
        ctx.registry.create_model("m", DetectorConfig(window=16), "", "manual")
        frame = make_frame(200)

        def finish(job_id: str, status: str = "failed") -> None:
            with ctx.db.transaction() as session:
                session.execute(update(Job).where(Job.id == job_id).values(status=status))

        first = ctx.jobs.create("m", inline=frame)
        key = first.params["input_key"]
        finish(first.id)
        retry = ctx.jobs.retry(first.id)  # the same uploaded data
        finish(retry.id)
        named = ctx.jobs.create("m", inline=frame)
        finish(named.id, "succeeded")
        with ctx.db.transaction() as session:
            session.add(
                Schedule(
                    id=uuid.uuid4().hex,
                    model_id=first.model_id,
                    interval_s=3600.0,
                    window_s=3600.0,
                    next_run_at=utcnow(),
                    last_job_id=named.id,
                )
            )
        later = []
        for i in range(12):
            job = ctx.jobs.create("m", inline=frame)
            later.append(job.id)
            if i < 11:
                finish(job.id, "succeeded")
            with ctx.db.session() as session:
                ids = set(session.scalars(select(Job.id)))
            if i == 9:  # eleven finished besides the named one: the first went, not its data
                assert first.id not in ids and retry.id in ids and ctx.artifacts.exists(key)
        assert retry.id not in ids and not ctx.artifacts.exists(key)  # its data with it
        assert named.id in ids and ids >= set(later[1:]) and later[0] not in ids
        assert len(ids) == 1 + 10 + 1  # the named, ten finished, the one still queued
    finally:
        ctx.scoring.close()
        ctx.db.dispose()
