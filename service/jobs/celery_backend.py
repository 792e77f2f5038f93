"""Training on Celery workers (``job_backend = "celery"``).

The jobs table stays the queue of record and the source of truth for status and progress; the
broker only carries "run job J under token T" messages:

- :class:`CeleryJobRunner` (in every API replica) gives each queued job a run token under a row
  lock that other replicas skip, then sends the task to the ``gpu`` queue when the job trains on
  ``cuda`` and to ``cpu`` otherwise;
- the task (in a ``reconad worker`` process) claims the job only if it is still queued under
  that token (or running under it with a stale heartbeat: a redelivery after its worker was
  lost), counts an attempt and calls :func:`service.jobs.worker.run_job`, which writes progress,
  heartbeats and the final state, and stops at the next epoch once cancellation is requested;
- the reaper (in the runner) looks for running jobs whose heartbeat went stale (their worker
  died): each is queued again under a new token, or failed once it has had
  ``job_max_attempts`` runs, so no job is silently lost.
- every ``orphan_sweep_s`` the runner deletes artifacts that jobs which ended published but
  never registered (a worker killed between the upload and the registration), keeping those of
  jobs still queued or running (:meth:`service.registry.ModelRegistry.sweep_orphans`).

Workers acknowledge late, are rejected back to the queue when lost, prefetch one message and
run one training at a time. Every change of a job's state or token goes through
:mod:`service.jobs.states`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select

from service.db import Database
from service.jobs import states
from service.jobs.runner import JobRunner
from service.settings import Settings
from service.tables import Job, utcnow

__all__ = ["QUEUES", "TASK_NAME", "CeleryJobRunner", "create_celery", "queue_for"]

logger = logging.getLogger(__name__)

TASK_NAME = "reconad.train"
QUEUES = ("cpu", "gpu")


def queue_for(params: dict[str, Any], settings: Settings) -> str:
    """``gpu`` for a job that trains on CUDA, ``cpu`` otherwise."""
    training = (params.get("config") or {}).get("training") or {}
    return "gpu" if training.get("device") == "cuda" else "cpu"


def create_celery(settings: Settings) -> Celery:
    """The Celery application of the service (producer in the API, consumer in workers)."""
    app = Celery("reconad", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_create_missing_queues=True,
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,  # every training gets a fresh process
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def train(job_id: str, token: str) -> str:
        return execute(Settings(), job_id, token)

    return app


def claim(db: Database, job_id: str, token: str, stale_after_s: float) -> bool:
    """Mark the job running for this delivery; False when it is not ours to run."""
    with db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or not states.claim(job, token, utcnow(), stale_after_s):
            return False  # not this token's, cancelled, finished, or alive elsewhere
        job.attempts = (job.attempts or 0) + 1
        job.pid = os.getpid()
    return True


def execute(settings: Settings, job_id: str, token: str) -> str:
    """Body of the Celery task: claim the job, then train it to a final state."""
    from service.jobs.worker import run_job

    db = Database(settings.database_url)
    try:
        if not claim(db, job_id, token, settings.job_stale_after_s):
            logger.info("job %s is not ours to run (token %s); skipped", job_id, token)
            return "skipped"
    finally:
        db.dispose()
    timer = threading.Timer(settings.job_timeout_s, _time_out, args=(settings, job_id, token))
    timer.daemon = True
    timer.start()
    try:
        code = run_job(settings, job_id)
    finally:
        timer.cancel()
    return "done" if code == 0 else "error"


def _time_out(settings: Settings, job_id: str, token: str) -> None:
    """Fail a job that outlived ``job_timeout_s`` and end its process (one process per job).

    The redelivered message that the lost process leaves behind is then refused by
    :func:`claim`, since the job is no longer queued or running.
    """
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            states.finish(
                session,
                job_id,
                token,
                "failed",
                f"timed out after {settings.job_timeout_s:g} s (RECONAD_JOB_TIMEOUT_S); "
                "lower max_seconds or raise the timeout, then retry",
            )
    finally:
        db.dispose()
    logger.error("job timed out; ending its process", extra={"job_id": job_id})
    os._exit(1)


class CeleryJobRunner(JobRunner):
    """Dispatches queued jobs to Celery workers and re-queues jobs whose worker was lost.

    Every API replica runs one; row locks with ``SKIP LOCKED`` make each job go out once.
    ``sweep`` (deleting orphan artifacts) runs in a thread of its own every ``orphan_sweep_s``,
    starting at once; replicas sweeping at the same time only find less to delete.
    """

    exclusive = False

    def __init__(
        self,
        settings: Settings,
        db: Database,
        poll_s: float = 1.0,
        sweep: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.poll_s = poll_s
        self.sweep = sweep
        self.app = create_celery(settings)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="job-dispatcher", daemon=True)
            self._thread.start()
        if self._sweeper is None and self.sweep is not None and self.settings.orphan_sweep_s > 0:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="orphan-sweep", daemon=True
            )
            self._sweeper.start()

    def notify(self) -> None:
        self._wake.set()

    def running(self) -> int:
        return 0  # jobs run on workers, not in this process

    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching; jobs keep running on their workers."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._sweeper):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._sweeper = None

    def _sweep_loop(self) -> None:
        delay = 0.0
        while self.sweep is not None and not self._stopping.wait(delay):
            try:
                self.sweep()
            except Exception:
                logger.exception("orphan artifact sweep error")
            delay = self.settings.orphan_sweep_s

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.reap()
                self.dispatch()
            except Exception:
                logger.exception("job dispatcher error")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def dispatch(self) -> int:
        """Send every queued, not yet sent job to its queue; return how many were sent."""
        with self.db.transaction() as session:
            jobs = session.scalars(
                select(Job)
                .where(Job.status == "queued", Job.run_token.is_(None))
                .order_by(Job.created_at)
                .limit(100)
                .with_for_update(skip_locked=True)
            ).all()
            batch = []
            for job in jobs:
                token = states.hand_out(job)
                job.heartbeat_at = utcnow()  # when it was sent; see resend_unclaimed
                batch.append((job.id, token, queue_for(job.params, self.settings)))
        for job_id, token, queue in batch:
            try:
                self.app.send_task(TASK_NAME, args=[job_id, token], queue=queue)
            except Exception:
                logger.exception("could not send job %s to the broker; it stays queued", job_id)
                with self.db.transaction() as session:
                    row = session.get(Job, job_id, with_for_update=True)
                    if row is not None and row.status == "queued" and row.run_token == token:
                        states.release(row)
                continue
            logger.info("job sent to the %s queue", queue, extra={"job_id": job_id})
        return len(batch)

    def resend_unclaimed(self) -> int:
        """Send again the jobs handed a token but never claimed for ``10 * job_stale_after_s``.

        Covers a replica that died between giving a job its token and sending the message:
        the job would otherwise stay queued forever. An old message that does arrive later is
        refused by :func:`claim`, whose token no longer matches, so a job never runs twice.
        """
        limit = utcnow() - timedelta(seconds=10 * self.settings.job_stale_after_s)
        with self.db.transaction() as session:
            stuck = session.scalars(
                select(Job)
                .where(Job.status == "queued", Job.run_token.is_not(None), Job.heartbeat_at < limit)
                .with_for_update(skip_locked=True)
            ).all()
            for job in stuck:
                states.release(job)
            resent = len(stuck)
        if resent:
            logger.warning("%d job(s) sent but never claimed: sending again", resent)
            self._wake.set()
        return resent

    def reap(self) -> int:
        """Re-queue or fail running jobs whose heartbeat is stale; return how many."""
        self.resend_unclaimed()
        limit = utcnow() - timedelta(seconds=self.settings.job_stale_after_s)
        handled = 0
        with self.db.transaction() as session:
            jobs = session.scalars(
                select(Job)
                .where(Job.status == "running", Job.heartbeat_at < limit)
                .with_for_update(skip_locked=True)
            ).all()
            for job in jobs:
                handled += 1
                if job.cancel_requested:
                    states.move(job, "cancelled", error="cancelled; its worker was lost")
                elif job.attempts >= self.settings.job_max_attempts:
                    states.move(
                        job,
                        "failed",
                        error=f"the worker running this job was lost {job.attempts} times "
                        f"(job_max_attempts={self.settings.job_max_attempts}); "
                        "POST /v1/jobs/{id}/retry runs it again",
                    )
                else:
                    states.move(job, "queued")  # sent again under a new token
                    job.progress = {**(job.progress or {}), "stage": "requeued: worker lost"}
                logger.warning("job lost its worker: %s", job.status, extra={"job_id": job.id})
        if handled:
            self._wake.set()
        return handled
