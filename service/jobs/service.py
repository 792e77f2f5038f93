"""Training jobs as database rows: create, list, cancel, retry, recover after a crash.

The states and their transitions are :mod:`service.jobs.states`'s, which every writer of a
job's state calls. ``interrupted`` means the server stopped (or was killed) while the job ran;
``failed``, ``cancelled`` and ``interrupted`` jobs can be retried, which queues a new job with
the same parameters. The job process itself writes ``running`` progress and the final state; a
:class:`~service.jobs.runner.JobRunner` decides when and where it runs.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import func, select, true, update
from sqlalchemy.orm import Session

from detector import DetectorConfig
from service.data import frame_from_rows
from service.db import Database
from service.errors import ConflictError, InvalidInputError, NotFoundError, TooManyRequestsError
from service.jobs import states
from service.jobs.states import ACTIVE_STATES, FINAL_STATES, JOB_STATES, RETRYABLE_STATES
from service.registry import ModelRegistry, check_model_size
from service.storage import ArtifactStore, HistoryStore
from service.tables import AzureModel, Job, Model, Schedule, utcnow

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "JOB_STATES", "RETRYABLE_STATES", "JobService"]

logger = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else pd.Timestamp(value).tz_convert("UTC").isoformat()


class JobService:
    """Creates and manages job rows; the runner is told through ``notify``.

    Parameters
    ----------
    db, registry, artifacts, history
        The database and stores.
    notify
        Called after a job is queued or a cancellation is requested (wakes the runner).
    max_queued_per_model, max_queued
        Queued jobs one model, and all models together, may have; more are refused with 429
        (``None``: no bound).
    retry_after_s
        The ``Retry-After`` of that refusal.
    max_finished_per_model
        Finished jobs one model keeps (``None``: all): queuing a job beyond it deletes the
        oldest finished ones and the uploaded data no remaining job uses.
    """

    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        artifacts: ArtifactStore,
        history: HistoryStore,
        notify: Any = None,
        *,
        max_queued_per_model: int | None = None,
        max_queued: int | None = None,
        retry_after_s: int = 30,
        max_finished_per_model: int | None = None,
    ) -> None:
        self.db = db
        self.max_finished_per_model = max_finished_per_model
        self.registry = registry
        self.artifacts = artifacts
        self.history = history
        self._notify = notify or (lambda: None)
        self.max_queued_per_model = max_queued_per_model
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s

    def set_notifier(self, notify: Any) -> None:
        """Replace the callback that wakes the job runner."""
        self._notify = notify

    # ------------------------------------------------------------------ creation
    def create(
        self,
        model_name: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        last_s: float | None = None,
        anchor: str = "now",
        config: DetectorConfig | None = None,
        promote: bool | None = None,
        inline: pd.DataFrame | None = None,
        rows: list[dict[str, Any]] | None = None,
        trigger: str = "api",
        schedule_id: str | None = None,
    ) -> Job:
        """Queue a training job for a model.

        Parameters
        ----------
        model_name
            The model to train.
        start, end
            Range of stored history (``start <= t < end``); ``None`` leaves that side open.
        last_s
            Instead of ``start``: the last ``last_s`` seconds before ``anchor`` (``end`` too
            when ``end`` is unset).
        anchor
            ``"now"`` or ``"latest"`` (the newest stored timestamp) for ``last_s``.
        config
            Train with this config instead of the model's.
        promote
            ``None`` applies the model's promotion policy; True/False force the decision.
        inline
            Train on this frame instead of the stored history.
        rows
            Train on these JSON rows (``{"timestamp": ..., "<feature>": ...}``) instead.
        trigger, schedule_id
            Who asked (``api``, ``schedule``, ``retry``).

        Raises
        ------
        service.errors.InvalidInputError
            For an empty or inverted range, a range holding no stored data, or a config over
            the model size limit.
        service.errors.TooManyRequestsError
            When the model's or the service's job queue is full.
        """
        model = self.registry.get_model(model_name)
        if config is not None:
            check_model_size(config, self.registry.max_parameters)
        self._check_queue(model)
        if rows is not None:
            inline = frame_from_rows(rows, model.config.get("key_column"))
        job_id = uuid.uuid4().hex
        params: dict[str, Any] = {
            "config": (config.model_dump(mode="json") if config else model.config),
            "promote": promote,
        }
        if inline is not None:
            key = f"inputs-{model.id}/{job_id}.parquet"
            buffer = io.BytesIO()
            inline.to_parquet(buffer)
            self.artifacts.put_bytes(key, buffer.getvalue())
            params.update(source="inline", input_key=key, points=len(inline))
        else:
            if last_s is not None:
                if anchor == "latest":
                    summary = self.history.summary(model.id)
                    base = summary.end + timedelta(microseconds=1) if summary.end else utcnow()
                else:
                    base = utcnow()
                end = end or base
                try:
                    start = end - timedelta(seconds=last_s)
                except OverflowError:
                    raise InvalidInputError(
                        f"'last' reaches before the year 1: {end.isoformat()} minus "
                        f"{last_s:g} s is not a date; use a later 'end' or a shorter 'last'"
                    ) from None
            if start is not None and end is not None and start >= end:
                raise InvalidInputError(
                    f"the range is empty: start {start} is not before end {end}"
                )
            summary = self.history.summary(model.id)
            if summary.points == 0:
                raise InvalidInputError(
                    f"model {model_name!r} has no stored history: append data "
                    f"(POST /v1/models/{model_name}/data) or send it with the job"
                )
            assert summary.start is not None and summary.end is not None
            if (start is not None and start > summary.end) or (
                end is not None and end <= summary.start
            ):
                hint = (
                    '; for historical data send "anchor": "latest" so that \'last\' counts '
                    "back from the newest stored timestamp instead of from now"
                    if last_s is not None and anchor == "now"
                    else ""
                )
                raise InvalidInputError(
                    f"the range holds no stored data: model {model_name!r} has data from "
                    f"{_iso(summary.start)} to {_iso(summary.end)}{hint}"
                )
            params.update(source="history", start=_iso(start), end=_iso(end))
        return self._insert(model, job_id, params, trigger, schedule_id, retry_of=None)

    def _check_queue(self, model: Model, session: Session | None = None) -> None:
        """Refuse a new job when a queue bound is reached (inside the insert's transaction the
        count is exact: SQLite serialises writers and the job joins the same transaction)."""
        if self.max_queued_per_model is None and self.max_queued is None:
            return
        if session is None:
            with self.db.session() as own:
                self._check_queue(model, own)
            return
        queued = select(func.count()).select_from(Job).where(Job.status == "queued")
        total = int(session.scalar(queued) or 0)
        mine = int(session.scalar(queued.where(Job.model_id == model.id)) or 0)
        if self.max_queued_per_model is not None and mine >= self.max_queued_per_model:
            raise TooManyRequestsError(
                f"model {model.name!r} already has {mine} queued jobs, the most allowed "
                "(RECONAD_MAX_QUEUED_JOBS_PER_MODEL); wait for them to run or cancel some",
                self.retry_after_s,
            )
        if self.max_queued is not None and total >= self.max_queued:
            raise TooManyRequestsError(
                f"{total} training jobs are queued, the most allowed (RECONAD_MAX_QUEUED_JOBS); "
                "retry later",
                self.retry_after_s,
            )

    def _insert(
        self,
        model: Model,
        job_id: str,
        params: dict[str, Any],
        trigger: str,
        schedule_id: str | None,
        retry_of: str | None,
    ) -> Job:
        with self.db.transaction() as session:
            # Key-share lock: the model cannot be deleted before this job row is in.
            if session.get(Model, model.id, with_for_update={"key_share": True}) is None:
                raise NotFoundError(f"model {model.name!r} was deleted")
            self._check_queue(model, session)
            job = Job(
                id=job_id,
                model_id=model.id,
                status="queued",
                trigger=trigger,
                schedule_id=schedule_id,
                retry_of=retry_of,
                params=params,
                progress={},
                cancel_requested=False,
                created_at=utcnow(),
            )
            session.add(job)
            inputs = self._prune(session, model)
        logger.info("job queued", extra={"job_id": job_id, "model": model.name})
        self._notify()
        self.artifacts.discard(inputs, "a pruned job's uploaded data")
        return job

    def _prune(self, session: Session, model: Model) -> list[str]:
        """Delete the model's finished jobs beyond :attr:`max_finished_per_model`, oldest
        first, except those a schedule or an Azure-compatible model names; return the keys
        of the uploaded data that no remaining job of the model uses."""
        if self.max_finished_per_model is None:
            return []
        session.flush()
        named = (
            select(Schedule.last_job_id)
            .where(Schedule.last_job_id.is_not(None))
            .union(select(AzureModel.job_id).where(AzureModel.job_id.is_not(None)))
        )
        finished = session.scalars(
            select(Job)
            .where(
                Job.model_id == model.id,
                Job.status.in_(FINAL_STATES),
                Job.id.not_in(named),
            )
            .order_by(Job.created_at.desc(), Job.id.desc())
            .offset(self.max_finished_per_model)
        ).all()
        if not finished:
            return []
        keys = {j.params.get("input_key") for j in finished} - {None}
        for j in finished:
            session.delete(j)
        session.flush()
        used = {
            params.get("input_key")
            for params in session.scalars(select(Job.params).where(Job.model_id == model.id))
        }
        logger.info("old jobs deleted", extra={"model": model.name, "jobs": len(finished)})
        return sorted(str(k) for k in keys - used)

    # ------------------------------------------------------------------ queries
    def get(self, job_id: str) -> tuple[Job, str]:
        """A job and its model's name.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown id.
        """
        with self.db.session() as session:
            row = session.execute(
                select(Job, Model.name)
                .join(Model, Model.id == Job.model_id)
                .where(Job.id == job_id)
            ).first()
            if row is None:
                raise NotFoundError(f"no job with id {job_id[:64]!r}; GET /v1/jobs lists them")
            return row[0], row[1]

    def list_jobs(
        self,
        model_name: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[tuple[Job, str]], int]:
        """Jobs newest first (optionally of one model / in one state) and the total count."""
        query = select(Job, Model.name).join(Model, Model.id == Job.model_id)
        counter = select(func.count()).select_from(Job).join(Model, Model.id == Job.model_id)
        if model_name is not None:
            model = self.registry.get_model(model_name)
            query = query.where(Job.model_id == model.id)
            counter = counter.where(Job.model_id == model.id)
        if status is not None:
            query = query.where(Job.status == status)
            counter = counter.where(Job.status == status)
        with self.db.session() as session:
            total = int(session.scalar(counter) or 0)
            rows = session.execute(
                query.order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)
            ).all()
            return [(r[0], r[1]) for r in rows], total

    def counts_by_state(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, zeros included)."""
        with self.db.session() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    # ------------------------------------------------------------------ actions
    def cancel(self, job_id: str) -> tuple[Job, str]:
        """Cancel a queued job at once, or ask a running one to stop.

        Raises
        ------
        service.errors.ConflictError
            When the job has already finished.
        """
        with self.db.transaction() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise NotFoundError(f"no job with id {job_id[:64]!r}; GET /v1/jobs lists them")
            if job.status == "queued":
                states.move(job, "cancelled", error="cancelled before it started")
            elif job.status == "running":
                job.cancel_requested = True
            else:
                raise ConflictError(f"job {job_id} has already finished ({job.status})")
        self._notify()
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        """Queue a new job with the parameters of a failed, cancelled or interrupted one.

        Raises
        ------
        service.errors.ConflictError
            When the job is queued, running or succeeded.
        """
        job, _name = self.get(job_id)
        if job.status not in RETRYABLE_STATES:
            raise ConflictError(
                f"job {job_id} is {job.status}; only {', '.join(RETRYABLE_STATES)} jobs can be "
                "retried"
            )
        with self.db.session() as session:
            model = session.get(Model, job.model_id)
        if model is None:  # pragma: no cover - cascade deletes jobs with their model
            raise NotFoundError("the job's model no longer exists")
        params = dict(job.params)
        if params.get("source") == "inline" and not self.artifacts_exists(params["input_key"]):
            raise ConflictError("the job's uploaded data is gone; start a new job with the data")
        self._check_queue(model)
        return self._insert(
            model, uuid.uuid4().hex, params, "retry", job.schedule_id, retry_of=job.id
        )

    def artifacts_exists(self, key: str) -> bool:
        """Whether a job input blob still exists."""
        try:
            self.artifacts.get_bytes(key)
        except Exception:
            return False
        return True

    def recover_after_restart(self) -> int:
        """Mark jobs left ``running`` by a stopped server as ``interrupted``; return the count."""
        with self.db.transaction() as session:
            count = states.move_all(
                session,
                true(),
                "running",
                "interrupted",
                error="the server stopped while this job was running; "
                "POST /v1/jobs/{id}/retry runs it again",
            )
        if count:
            logger.warning("marked %d running jobs as interrupted", count)
        return count

    def has_active(self, model_id: str, schedule_id: str | None = None) -> bool:
        """Whether the model (or the schedule) has a queued or running job."""
        query = select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE_STATES))
        if schedule_id is not None:
            query = query.where(Job.schedule_id == schedule_id)
        else:
            query = query.where(Job.model_id == model_id)
        with self.db.session() as session:
            return int(session.scalar(query) or 0) > 0

    def cancel_for_model(self, model_id: str) -> None:
        """Cancel every queued or running job of a model (before it is deleted)."""
        with self.db.transaction() as session:
            states.move_all(
                session, Job.model_id == model_id, "queued", "cancelled", error="model deleted"
            )
            session.execute(
                update(Job)
                .where(Job.model_id == model_id, Job.status == "running")
                .values(cancel_requested=True)
            )
        self._notify()
