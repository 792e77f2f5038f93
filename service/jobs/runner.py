"""Job runners: where and when queued jobs run.

:class:`JobRunner` is the seam a distributed backend plugs into. :class:`InProcessJobRunner`
(the embedded default) runs each job in its own child process
(``python -m service.jobs.worker JOB_ID``): training never shares the API's event loop, threads
or GIL, cancellation can always kill it, and at most ``max_concurrent_jobs`` run at once. A child
dies with the server (parent-death signal plus a watchdog), and a restarted server marks what
was running ``interrupted``. Claims and final states go through :mod:`service.jobs.states`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update

from service.db import Database
from service.jobs import states
from service.jobs.states import FinalState
from service.settings import Settings, settings_to_env
from service.tables import Job, utcnow

__all__ = ["InProcessJobRunner", "JobRunner", "create_job_runner"]

logger = logging.getLogger(__name__)


class JobRunner(ABC):
    """Runs queued jobs; the job rows in the database are the queue."""

    #: Whether this process alone runs jobs, so that at start any job left ``running`` was
    #: interrupted and any unregistered artifact is an orphan (False for shared workers).
    exclusive = True

    @abstractmethod
    def start(self) -> None:
        """Start dispatching queued jobs."""

    @abstractmethod
    def notify(self) -> None:
        """Look at the queue now (a job was queued or a cancellation requested)."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching; jobs still running are stopped and marked ``interrupted``."""

    @abstractmethod
    def running(self) -> int:
        """Number of jobs this runner is running now."""


@dataclass
class _Child:
    job_id: str
    token: str
    process: subprocess.Popen[bytes]
    started: float
    cancel_seen: float | None = None
    killed_for: str | None = None


class InProcessJobRunner(JobRunner):
    """One child process per job, dispatched by a background thread of the server.

    Parameters
    ----------
    settings
        Service settings (``max_concurrent_jobs``, ``job_timeout_s``, ``cancel_grace_s``); the
        child process rebuilds them from the environment.
    db
        The metadata database.
    poll_s
        How often the dispatcher looks at the queue when not notified.
    """

    def __init__(self, settings: Settings, db: Database, poll_s: float = 1.0) -> None:
        self.settings = settings
        self.db = db
        self.poll_s = poll_s
        self._children: dict[str, _Child] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._env = settings_to_env(settings)

    # -- interface
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="job-dispatcher", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def running(self) -> int:
        return len(self._children)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for child in list(self._children.values()):
            self._kill(child)
        deadline = time.monotonic() + timeout
        for child in list(self._children.values()):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not time out
                logger.error("job process %s did not exit", child.process.pid)
            self._finish(
                child,
                "interrupted",
                "the server stopped while this job was running; "
                "POST /v1/jobs/{id}/retry runs it again",
            )
        self._children.clear()

    # -- loop
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reap()
                self._enforce()
                self._launch()
            except Exception:
                logger.exception("job dispatcher error")
            self._wake.wait(self.poll_s if self._children else max(self.poll_s, 1.0))
            self._wake.clear()

    def _launch(self) -> None:
        free = self.settings.max_concurrent_jobs - len(self._children)
        if free <= 0 or self._stopping.is_set():
            return
        claimed: list[tuple[str, str]] = []
        with self.db.transaction() as session:
            rows = session.scalars(
                select(Job)
                .where(Job.status == "queued")
                .order_by(Job.created_at)
                .limit(free)
                .with_for_update(skip_locked=True)
            )
            now = utcnow()
            for job in rows:
                token = states.hand_out(job)
                if states.claim(job, token, now):
                    claimed.append((job.id, token))
        for job_id, token in claimed:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "service.jobs.worker", job_id],
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                logger.exception("could not start a job process")
                self._finish_row(job_id, token, "failed", f"could not start the job process: {exc}")
                continue
            self._children[job_id] = _Child(job_id, token, process, time.monotonic())
            with self.db.transaction() as session:
                session.execute(update(Job).where(Job.id == job_id).values(pid=process.pid))
            logger.info("job started", extra={"job_id": job_id, "pid": process.pid})

    def _reap(self) -> None:
        for child in list(self._children.values()):
            code = child.process.poll()
            if code is None:
                continue
            del self._children[child.job_id]
            if child.killed_for == "timeout":
                self._finish(
                    child,
                    "failed",
                    f"the job ran longer than job_timeout_s={self.settings.job_timeout_s:g}s "
                    "and was stopped",
                )
            elif child.killed_for == "cancel":
                self._finish(child, "cancelled", "cancelled while running")
            else:
                self._finish(child, "failed", f"the job process exited unexpectedly (code {code})")
            logger.info("job process exited", extra={"job_id": child.job_id, "code": code})

    def _enforce(self) -> None:
        if not self._children:
            return
        ids = list(self._children)
        with self.db.session() as session:
            rows = {
                r.id: r
                for r in session.execute(
                    select(Job.id, Job.status, Job.cancel_requested).where(Job.id.in_(ids))
                )
            }
        now = time.monotonic()
        for job_id in ids:
            child = self._children[job_id]
            row = rows.get(job_id)
            if child.killed_for is not None:
                continue
            if row is None or (row.cancel_requested and row.status == "running"):
                child.cancel_seen = child.cancel_seen or now
                if row is None or now - child.cancel_seen >= self.settings.cancel_grace_s:
                    child.killed_for = "cancel"
                    self._kill(child)
            elif now - child.started > self.settings.job_timeout_s:
                child.killed_for = "timeout"
                self._kill(child)

    @staticmethod
    def _kill(child: _Child) -> None:
        if child.process.poll() is None:
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:  # pragma: no cover - defensive
                child.process.kill()

    def _finish(self, child: _Child, status: FinalState, error: str) -> None:
        self._finish_row(child.job_id, child.token, status, error)

    def _finish_row(self, job_id: str, token: str, status: FinalState, error: str) -> None:
        """Set a final state unless the job process already wrote one."""
        with self.db.transaction() as session:
            states.finish(session, job_id, token, status, error)


def create_job_runner(
    settings: Settings, db: Database, sweep: Callable[[], object] | None = None
) -> JobRunner:
    """Build the runner named by ``settings.job_backend``.

    ``sweep`` deletes orphan artifacts; a runner sharing its workers calls it periodically (the
    exclusive runner leaves it to the start-up sweep).
    """
    if settings.job_backend == "inprocess":
        return InProcessJobRunner(settings, db)
    if settings.job_backend == "celery":
        from service.jobs.celery_backend import CeleryJobRunner

        return CeleryJobRunner(settings, db, sweep=sweep)
    raise ValueError(f"unknown job backend {settings.job_backend!r}")  # pragma: no cover
