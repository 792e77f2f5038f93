"""Retraining schedules: cron or interval, over a rolling range of stored history.

A schedule stores its ``next_run_at``; the :class:`Scheduler` loop of the server queues a job for
every due schedule and moves ``next_run_at`` past *now* in the same transaction (a claim that
only one server can win), so a restart neither loses nor repeats runs and missed runs are not
replayed one by one. A schedule whose previous job is still queued or running skips its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter
from sqlalchemy import func, select, update

from service.db import Database
from service.errors import ConflictError, InvalidInputError, NotFoundError, ServiceError
from service.jobs.service import JobService
from service.observability import Metrics
from service.registry import ModelRegistry
from service.tables import Model, Schedule, utcnow

__all__ = ["ScheduleService", "Scheduler", "next_run"]

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0


def check_cron(expression: str, now: datetime | None = None) -> str:
    """Return ``expression`` if croniter accepts it (5 to 7 fields, UTC) and it fires again.

    Raises
    ------
    service.errors.InvalidInputError
        For an invalid expression, or one that never fires after ``now`` (``0 0 30 2 *``, or a
        year field that has passed).
    """
    if not croniter.is_valid(expression):
        raise InvalidInputError(
            f"invalid cron expression {expression[:100]!r}: use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '0 3 * * *' (03:00 UTC daily)"
        )
    try:
        next_run(expression, None, now or utcnow())
    except (CroniterBadDateError, ValueError, OverflowError):
        raise InvalidInputError(
            f"cron expression {expression[:100]!r} never fires from now on (a date that does not "
            "exist, such as 30 February, or a year that has passed)"
        ) from None
    return expression


def next_run(cron: str | None, interval_s: float | None, after: datetime) -> datetime:
    """The first run time strictly after ``after`` (UTC)."""
    if cron is not None:
        value = croniter(cron, after.astimezone(UTC)).get_next(datetime)
        assert isinstance(value, datetime)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    assert interval_s is not None
    return after + timedelta(seconds=interval_s)


class ScheduleService:
    """Schedule rows: create, list, pause, resume, delete, run now, fire what is due.

    Parameters
    ----------
    db, registry, jobs
        The database, the model registry and the job service.
    metrics
        Counts jobs queued by schedules.
    """

    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        jobs: JobService,
        metrics: Metrics | None,
        max_per_model: int | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.jobs = jobs
        self.metrics = metrics
        self.max_per_model = max_per_model

    def create(
        self,
        model_name: str,
        cron: str | None,
        interval_s: float | None,
        window_s: float,
        anchor: str = "now",
        paused: bool = False,
    ) -> tuple[Schedule, str]:
        """Attach a schedule to a model.

        Raises
        ------
        service.errors.InvalidInputError
            Unless exactly one of ``cron`` and ``interval_s`` is given and valid.
        service.errors.ConflictError
            When the model has ``max_per_model`` schedules already.
        """
        if (cron is None) == (interval_s is None):
            raise InvalidInputError("give exactly one of 'cron' and 'interval'")
        if cron is not None:
            check_cron(cron)
        if interval_s is not None and interval_s < MIN_INTERVAL_S:
            raise InvalidInputError(f"interval must be at least {MIN_INTERVAL_S:g} second")
        model = self.registry.get_model(model_name)
        now = utcnow()
        row = Schedule(
            id=uuid.uuid4().hex,
            model_id=model.id,
            cron=cron,
            interval_s=interval_s,
            window_s=window_s,
            anchor=anchor,
            paused=paused,
            next_run_at=next_run(cron, interval_s, now),
            created_at=now,
        )
        with self.db.transaction() as session:
            if session.get(Model, model.id, with_for_update={"key_share": True}) is None:
                raise NotFoundError(f"model {model_name!r} was deleted")
            count = int(
                session.scalar(
                    select(func.count()).select_from(Schedule).where(Schedule.model_id == model.id)
                )
                or 0
            )
            if self.max_per_model is not None and count >= self.max_per_model:
                raise ConflictError(
                    f"the model has {count} schedules, the limit (max_schedules_per_model); "
                    "delete one first"
                )
            session.add(row)
        logger.info("schedule created", extra={"model": model_name, "schedule_id": row.id})
        return row, model.name

    def list_schedules(self, model_name: str | None = None) -> list[tuple[Schedule, str]]:
        """Schedules (of one model, or all), oldest first, with their model names."""
        query = select(Schedule, Model.name).join(Model, Model.id == Schedule.model_id)
        if model_name is not None:
            model = self.registry.get_model(model_name)
            query = query.where(Schedule.model_id == model.id)
        with self.db.session() as session:
            rows = session.execute(query.order_by(Schedule.created_at, Schedule.id)).all()
            return [(r[0], r[1]) for r in rows]

    def get(self, schedule_id: str) -> tuple[Schedule, str]:
        """One schedule and its model's name.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown id.
        """
        with self.db.session() as session:
            row = session.execute(
                select(Schedule, Model.name)
                .join(Model, Model.id == Schedule.model_id)
                .where(Schedule.id == schedule_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"no schedule with id {schedule_id[:64]!r}; GET /v1/schedules lists them"
            )
        return row[0], row[1]

    def set_paused(self, schedule_id: str, paused: bool) -> tuple[Schedule, str]:
        """Pause or resume; resuming computes the next run from now (no catch-up)."""
        with self.db.transaction() as session:
            row = session.get(Schedule, schedule_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no schedule with id {schedule_id[:64]!r}")
            if row.paused and not paused:
                row.next_run_at = next_run(row.cron, row.interval_s, utcnow())
            row.paused = paused
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule (jobs it queued stay)."""
        with self.db.transaction() as session:
            row = session.get(Schedule, schedule_id)
            if row is None:
                raise NotFoundError(f"no schedule with id {schedule_id[:64]!r}")
            session.delete(row)

    def run_now(self, schedule_id: str) -> str:
        """Queue the schedule's job now (its regular timing is unchanged); return the job id.

        Raises
        ------
        service.errors.ConflictError
            When its previous job is still queued or running.
        """
        schedule, name = self.get(schedule_id)
        if self.jobs.has_active(schedule.model_id, schedule_id=schedule.id):
            raise ConflictError("this schedule's previous job is still queued or running")
        job_id = self._queue(schedule, name)
        with self.db.transaction() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id)
                .values(last_run_at=utcnow(), last_job_id=job_id, last_error=None)
            )
        return job_id

    def _failed(self, schedule: Schedule, name: str, now: datetime, message: str) -> None:
        """Record why a due run queued no job: on the schedule (shown by the API) and in the
        ``reconad_schedule_failures`` counter."""
        logger.warning(
            "schedule could not queue a job: %s",
            message,
            extra={"schedule_id": schedule.id, "model": name},
        )
        with self.db.transaction() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id)
                .values(
                    last_error=f"{now.isoformat()}: {message}"[:2000],
                    failures=Schedule.failures + 1,
                )
            )
        if self.metrics is not None:
            self.metrics.schedule_failures.inc()

    def _queue(self, schedule: Schedule, name: str) -> str:
        job = self.jobs.create(
            name,
            last_s=schedule.window_s,
            anchor=schedule.anchor,
            trigger="schedule",
            schedule_id=schedule.id,
        )
        if self.metrics is not None:
            self.metrics.schedule_runs.inc()
        return job.id

    def fire_due(self, now: datetime | None = None) -> list[str]:
        """Queue a job for every due, unpaused schedule; return the ids of the queued jobs."""
        now = now or utcnow()
        with self.db.session() as session:
            due = session.execute(
                select(Schedule, Model.name)
                .join(Model, Model.id == Schedule.model_id)
                .where(Schedule.paused.is_(False), Schedule.next_run_at <= now)
                .order_by(Schedule.next_run_at)
            ).all()
        fired: list[str] = []
        for schedule, name in due:
            following = next_run(schedule.cron, schedule.interval_s, now)
            with self.db.transaction() as session:
                claimed = session.execute(
                    update(Schedule)
                    .where(
                        Schedule.id == schedule.id,
                        Schedule.next_run_at == schedule.next_run_at,
                        Schedule.paused.is_(False),
                    )
                    .values(next_run_at=following, last_run_at=now)
                )
                if not getattr(claimed, "rowcount", 0):
                    continue  # another scheduler took it, or it was paused meanwhile
            if self.jobs.has_active(schedule.model_id, schedule_id=schedule.id):
                logger.info(
                    "schedule skipped: its previous job is still active",
                    extra={"schedule_id": schedule.id, "model": name},
                )
                continue
            try:
                job_id = self._queue(schedule, name)
            except ServiceError as exc:
                self._failed(schedule, name, now, exc.message)
                continue
            with self.db.transaction() as session:
                session.execute(
                    update(Schedule)
                    .where(Schedule.id == schedule.id)
                    .values(last_job_id=job_id, last_error=None)
                )
            fired.append(job_id)
            logger.info(
                "schedule queued a job", extra={"schedule_id": schedule.id, "job_id": job_id}
            )
        return fired


class Scheduler:
    """The loop that fires due schedules every ``interval_s`` seconds (in a worker thread)."""

    def __init__(self, service: ScheduleService, interval_s: float) -> None:
        self.service = service
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.service.fire_due)
            except Exception:
                logger.exception("scheduler error")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
