"""Model registry: models, versions, promotion policies, roll-back, orphan sweep, migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from detector import DetectorConfig
from service.context import AppContext
from service.db import Database, upgrade_schema
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.registry import NewVersion, decide_promotion
from service.settings import Settings
from service.tables import Base, Promotion


def _new(key: str, score: float | None = 1.0) -> NewVersion:
    return NewVersion(
        artifact_key=key,
        config={},
        threshold=2.0,
        validation_score=score,
        calibration={},
        metrics={},
        history=[],
        features=["a"],
        window=16,
        data_start=None,
        data_end=None,
        n_points=100,
    )


def _publish(ctx: AppContext, model_id: str, name: str) -> str:
    key = f"{model_id}/{name}"
    with ctx.artifacts.staging() as tmp:
        (tmp / "m").mkdir()
        ctx.artifacts.publish(tmp / "m", key)
    return key


def _model(ctx: AppContext, name: str = "m1", policy: str = "always") -> Any:
    return ctx.registry.create_model(name, DetectorConfig(window=16), "", policy)


def test_versions_beyond_the_limit_go_oldest_first_never_the_active_one(
    settings: Settings,
) -> None:
    """``RECONAD_MAX_VERSIONS_PER_MODEL`` 3 under the manual policy (version 1 stays
    active): six versions leave the newest three and the active one, and the deleted ones'
    artifacts are gone."""
    ctx = AppContext.build(settings.model_copy(update={"max_versions_per_model": 3}))
    upgrade_schema(ctx.db)
    try:
        model = _model(ctx, "m1", policy="manual")
        keys = {}
        for n in range(1, 7):
            keys[n] = _publish(ctx, model.id, f"v{n}")
            version, promoted, _ = ctx.registry.register_version(model.id, _new(keys[n]))
            assert version.version == n and promoted == (n == 1)
            kept = {v.version for v in ctx.registry.list_versions("m1")[1]}
            assert kept == ({1} | set(range(max(2, n - 2), n + 1)))
        assert ctx.registry.get_model("m1").active_version == 1
        assert [ctx.artifacts.exists(keys[n]) for n in range(1, 7)] == [
            True,
            False,
            False,
            True,
            True,
            True,
        ]
        with pytest.raises(NotFoundError, match="no version 2"):
            ctx.registry.get_version("m1", 2)
    finally:
        ctx.scoring.close()
        ctx.db.dispose()


def test_migrations_match_the_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_model_crud_and_names(context: AppContext) -> None:
    reg = context.registry
    _model(context, "cpu-1")
    with pytest.raises(ConflictError, match="already exists"):
        _model(context, "cpu-1")
    for bad in ("../x", "a/b", "", "-x", "a" * 65, "a.b"):
        with pytest.raises(InvalidInputError, match="invalid model name"):
            _model(context, bad)
    rows, count = reg.list_models(0, 10)
    assert count == 1 and rows[0].name == "cpu-1"
    updated = reg.update_model("cpu-1", None, "hello", "manual")
    assert updated.description == "hello" and updated.promotion_policy == "manual"
    reg.delete_model("cpu-1")
    with pytest.raises(NotFoundError, match="no model named"):
        reg.get_model("cpu-1")


def test_mark_scored_writes_once_per_resolution_and_never_backwards(context: AppContext) -> None:
    reg = context.registry
    model = _model(context)
    assert reg.get_model("m1").last_scored_at is None
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert reg.mark_scored(model.id, at, 60) is True
    assert reg.get_model("m1").last_scored_at == at
    # Within the resolution, or earlier than the stored time: no write.
    assert reg.mark_scored(model.id, at + timedelta(seconds=59), 60) is False
    assert reg.mark_scored(model.id, at - timedelta(hours=1), 60) is False
    assert reg.get_model("m1").last_scored_at == at
    later = at + timedelta(seconds=61)
    assert reg.mark_scored(model.id, later, 60) is True
    assert reg.get_model("m1").last_scored_at == later
    assert reg.mark_scored("no-such-model", later, 0) is False


@pytest.mark.parametrize(
    ("policy", "cand", "active", "has", "expected"),
    [
        ("manual", 1.0, None, False, (True, "first_version")),
        ("always", 5.0, 1.0, True, (True, "policy_always")),
        ("manual", 0.1, 1.0, True, (False, "policy_manual")),
        ("if_better", 1.0, 1.0, True, (True, "if_better")),
        ("if_better", 0.5, 1.0, True, (True, "if_better")),
        ("if_better", 1.5, 1.0, True, (False, "if_better_worse")),
        ("if_better", None, 1.0, True, (False, "if_better_no_score")),
    ],
)
def test_decide_promotion(
    policy: str, cand: float | None, active: float | None, has: bool, expected: Any
) -> None:
    assert decide_promotion(policy, cand, active, has) == expected


def test_versions_are_numbered_once_and_policy_applies(context: AppContext) -> None:
    reg = context.registry
    model = _model(context, "m1", policy="if_better")
    v1, promoted, reason = reg.register_version(
        model.id, _new(_publish(context, model.id, "a"), 1.0)
    )
    assert (v1.version, promoted, reason) == (1, True, "first_version")
    v2, promoted, _ = reg.register_version(model.id, _new(_publish(context, model.id, "b"), 2.0))
    assert (v2.version, promoted) == (2, False)
    v3, promoted, _ = reg.register_version(model.id, _new(_publish(context, model.id, "c"), 0.5))
    assert (v3.version, promoted) == (3, True)
    reg.delete_version("m1", 2)
    v4, _, _ = reg.register_version(
        model.id, _new(_publish(context, model.id, "d")), force_promote=False
    )
    assert v4.version == 4  # numbers are never reused
    with pytest.raises(ConflictError, match="is active"):
        reg.delete_version("m1", 3)
    model_row, active = reg.get_version("m1")
    assert active.version == 3 and model_row.active_version == 3


def test_if_better_compares_scores_on_the_same_holdout(context: AppContext) -> None:
    """The active version's score on the new version's held-out data wins over its stored one."""
    from dataclasses import replace

    reg = context.registry
    model = _model(context, "m1", policy="if_better")
    reg.register_version(model.id, _new(_publish(context, model.id, "a"), 5.0))
    # stored: 0.7 < 5.0 would promote, but on the same held-out data the active one does 0.5
    same = replace(_new(_publish(context, model.id, "b"), 0.7), active_score=(1, 0.5))
    _, promoted, reason = reg.register_version(model.id, same)
    assert (promoted, reason) == (False, "if_better_worse")
    # a comparison made against a version that is no longer active falls back to stored scores
    stale = replace(_new(_publish(context, model.id, "c"), 0.7), active_score=(2, 0.1))
    _, promoted, _ = reg.register_version(model.id, stale)
    assert promoted


def test_promote_and_rollback_walk_back(context: AppContext) -> None:
    reg = context.registry
    model = _model(context)
    for name in "abc":
        reg.register_version(model.id, _new(_publish(context, model.id, name)))
    assert reg.get_model("m1").active_version == 3
    assert reg.rollback("m1").active_version == 2
    assert reg.rollback("m1").active_version == 1
    with pytest.raises(ConflictError, match="no earlier version"):
        reg.rollback("m1")
    assert reg.promote("m1", 3).active_version == 3
    assert reg.rollback("m1").active_version == 1
    with pytest.raises(NotFoundError, match="has no version 9"):
        reg.promote("m1", 9)
    with context.db.session() as session:
        log = list(session.scalars(select(Promotion).order_by(Promotion.id)))
    assert [(p.from_version, p.to_version) for p in log][-2:] == [(1, 3), (3, 1)]


def test_register_checks_the_job_token(context: AppContext) -> None:
    model = _model(context)
    with pytest.raises(ConflictError, match="no longer running"):
        context.registry.register_version(
            model.id, _new(_publish(context, model.id, "a")), job_id="nope", run_token="t"
        )
    assert context.registry.get_model("m1").last_version == 0


def test_sweep_removes_unregistered_artifacts(context: AppContext) -> None:
    model = _model(context)
    registered = _publish(context, model.id, "kept")
    context.registry.register_version(model.id, _new(registered))
    orphan = _publish(context, model.id, "orphan")
    assert context.registry.sweep_orphans() == 1
    assert context.artifacts.exists(registered) and not context.artifacts.exists(orphan)


def test_sweep_with_shared_workers_keeps_what_a_job_may_still_register(
    context: AppContext,
) -> None:
    """Unreferenced artifacts go once their job ended; those of queued or running jobs stay."""
    from service.registry import job_artifact_key
    from service.tables import Job

    model = _model(context)
    with context.db.transaction() as session:
        for job_id, status in (("done", "succeeded"), ("dead", "failed"), ("live", "running")):
            session.add(Job(id=job_id, model_id=model.id, status=status, params={}))
        session.add(Job(id="waiting", model_id=model.id, status="queued", params={}))

    def publish(job_id: str) -> str:
        key = job_artifact_key(model.id, job_id)
        return _publish(context, model.id, key.split("/")[1])

    registered = publish("done")
    context.registry.register_version(model.id, _new(registered))
    dead, live, waiting = publish("dead"), publish("live"), publish("waiting")
    gone_job = publish("deleted-job")  # its job row no longer exists
    no_job = _publish(context, model.id, "legacy")  # a key that names no job
    assert context.registry.sweep_orphans(shared_workers=True) == 2
    for key in (registered, live, waiting, no_job):
        assert context.artifacts.exists(key), key
    assert not context.artifacts.exists(dead) and not context.artifacts.exists(gone_job)
    with context.db.transaction() as session:
        job = session.get(Job, "live")
        assert job is not None
        job.status = "failed"  # its worker was lost for good: the reaper failed it
    assert context.registry.sweep_orphans(shared_workers=True) == 1
    assert not context.artifacts.exists(live) and context.artifacts.exists(registered)


def test_no_active_version_is_a_conflict(context: AppContext) -> None:
    _model(context)
    with pytest.raises(ConflictError, match="no active version"):
        context.registry.get_version("m1")


def test_celery_dispatcher_resends_jobs_sent_but_never_claimed(
    context: AppContext, settings: Any
) -> None:
    """A replica that died between handing out a token and sending the message loses nothing."""
    pytest.importorskip("celery", reason="the scale extra (celery) is not installed")
    from datetime import timedelta

    from service.jobs.celery_backend import CeleryJobRunner
    from service.tables import Job, utcnow

    model = _model(context, "m1")
    runner = CeleryJobRunner(settings, context.db)
    with context.db.transaction() as session:
        for name, sent_ago in (("lost", 3600.0), ("recent", 1.0)):
            session.add(
                Job(
                    id=name,
                    model_id=model.id,
                    status="queued",
                    params={},
                    run_token="t-" + name,
                    heartbeat_at=utcnow() - timedelta(seconds=sent_ago),
                )
            )
    assert runner.resend_unclaimed() == 1
    with context.db.session() as session:
        lost, recent = session.get(Job, "lost"), session.get(Job, "recent")
        assert lost is not None and recent is not None
        assert lost.run_token is None  # the dispatcher sends it again
        assert recent.run_token == "t-recent"  # still in flight


def test_the_number_of_models_is_bounded(settings: Settings) -> None:
    """``RECONAD_MAX_MODELS``: creating one more model than the limit is a 409 that names
    the setting, and deleting one makes room."""
    ctx = AppContext.build(settings.model_copy(update={"max_models": 2}))
    upgrade_schema(ctx.db)
    try:
        _model(ctx, "a")
        _model(ctx, "b")
        with pytest.raises(ConflictError, match=r"2 models exist, the limit \(max_models\)"):
            _model(ctx, "c")
        ctx.registry.delete_model("a")
        assert _model(ctx, "c").name == "c"
    finally:
        ctx.scoring.close()
        ctx.db.dispose()
