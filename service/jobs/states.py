"""The one owner of a job's state: the allowed transitions and the run-token guard.

Job states::

    queued -> running -> succeeded | failed | cancelled | interrupted
    queued -> cancelled
    running -> queued            (a shared worker was lost: the job is sent again)

A run token is handed out (:func:`hand_out`) when a job is claimed or, with shared workers,
when it is sent; :func:`claim` starts it only for the holder of that token, and whoever writes a
running job's progress or final state must hold it, so a process that lost its job (timed out,
requeued, marked interrupted after a restart) can never overwrite what happened since. Every
write of ``jobs.status`` and ``jobs.run_token`` goes through this module: :func:`move` for a
locked row, :func:`finish` and :func:`touch` for a guarded update by job id and token,
:func:`move_all` for bulk changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from service.tables import ACTIVE_STATES, Job, utcnow

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "JOB_STATES",
    "RETRYABLE_STATES",
    "TRANSITIONS",
    "FinalState",
    "IllegalTransitionError",
    "JobState",
    "claim",
    "finish",
    "hand_out",
    "holds",
    "move",
    "move_all",
    "release",
    "running_under",
    "touch",
]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
FinalState = Literal["succeeded", "failed", "cancelled", "interrupted"]

JOB_STATES: tuple[JobState, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
)
FINAL_STATES: tuple[FinalState, ...] = ("succeeded", "failed", "cancelled", "interrupted")
RETRYABLE_STATES: tuple[FinalState, ...] = ("failed", "cancelled", "interrupted")

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled"}),
    "running": frozenset({"queued", *FINAL_STATES}),
    **{state: frozenset() for state in FINAL_STATES},
}
"""The states each state may move to; a final state moves nowhere (retry makes a new job)."""


class IllegalTransitionError(RuntimeError):
    """A state change outside :data:`TRANSITIONS` (a bug in the caller, never user input)."""


def _check(old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransitionError(f"a job cannot go from {old} to {new}")


def running_under(job_id: str, token: str) -> ColumnElement[bool]:
    """The token guard as a SQL condition: the job is running under ``token``."""
    return (Job.id == job_id) & (Job.run_token == token) & (Job.status == "running")


def holds(job: Job | None, token: str | None) -> bool:
    """The token guard for a loaded row: ``job`` is running under ``token``."""
    return (
        job is not None
        and token is not None
        and job.status == "running"
        and (job.run_token == token)
    )


def move(job: Job, to: JobState, *, error: str | None = None, now: datetime | None = None) -> None:
    """Change a (locked) row's state, with the timestamps that go with it.

    Parameters
    ----------
    job
        The row, loaded ``FOR UPDATE`` in the caller's transaction.
    to
        The new state; ``running`` stamps ``started_at`` and ``heartbeat_at``, a final state
        ``finished_at``, ``queued`` (sent again) clears the run token.
    error
        The job's error message (final states other than ``succeeded``).
    now
        The time to stamp (default: now).

    Raises
    ------
    IllegalTransitionError
        When ``to`` is not allowed from the row's state.
    """
    _check(job.status, to)
    stamp = now or utcnow()
    job.status = to
    if to == "running":
        job.started_at = stamp
        job.heartbeat_at = stamp
    elif to == "queued":
        job.run_token = None
    else:
        job.finished_at = stamp
    if error is not None:
        job.error = error


def hand_out(job: Job) -> str:
    """Give a queued (locked) row a fresh run token and return it."""
    if job.status != "queued":
        raise IllegalTransitionError(f"only a queued job gets a run token, not a {job.status} one")
    job.run_token = uuid.uuid4().hex
    return job.run_token


def release(job: Job) -> None:
    """Take back the run token of a queued (locked) row that was never started under it."""
    if job.status != "queued":
        raise IllegalTransitionError(f"a {job.status} job keeps its run token")
    job.run_token = None


def claim(job: Job | None, token: str, now: datetime, stale_after_s: float | None = None) -> bool:
    """Start a (locked) row under ``token``; False when it is not this token's to run.

    Parameters
    ----------
    job
        The row, loaded ``FOR UPDATE``.
    token
        The token the job was handed (:func:`hand_out`).
    now
        The time to stamp.
    stale_after_s
        With shared workers: a job already running under ``token`` whose heartbeat is older
        than this is claimed again (its worker was lost and the message redelivered); a fresh
        one is a duplicate delivery. ``None``: a running job is never claimed again.
    """
    if job is None or job.run_token != token or job.cancel_requested:
        return False
    if job.status == "running":
        if stale_after_s is None:
            return False
        last = job.heartbeat_at or job.started_at
        if last is not None and now - last < timedelta(seconds=stale_after_s):
            return False  # still alive elsewhere
        job.started_at = job.heartbeat_at = now
        return True
    if job.status != "queued":
        return False
    move(job, "running", now=now)
    return True


def finish(
    session: Session, job_id: str, token: str, to: FinalState, error: str | None = None
) -> bool:
    """Set a running job's final state if it still runs under ``token``; return whether it did.

    A job that already reached a final state (the job process wrote it, or the server marked it
    interrupted) or was handed a new token keeps what it has.
    """
    _check("running", to)
    result = session.execute(
        update(Job)
        .where(running_under(job_id, token))
        .values(status=to, error=error, finished_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


def touch(session: Session, job_id: str, token: str, **values: Any) -> bool:
    """Write progress or a heartbeat of a job running under ``token``; return whether it did.

    Raises
    ------
    IllegalTransitionError
        When ``values`` would change the state (use :func:`finish` or :func:`move`).
    """
    if "status" in values or "run_token" in values:
        raise IllegalTransitionError("touch() writes progress, not the state or the token")
    result = session.execute(update(Job).where(running_under(job_id, token)).values(**values))
    return bool(getattr(result, "rowcount", 0))


def move_all(
    session: Session,
    condition: ColumnElement[bool],
    old: JobState,
    to: JobState,
    error: str | None = None,
) -> int:
    """Move every job in state ``old`` that matches ``condition`` to ``to``; return how many."""
    _check(old, to)
    values: dict[str, Any] = {"status": to}
    if to in FINAL_STATES:
        values["finished_at"] = utcnow()
    if error is not None:
        values["error"] = error
    result = session.execute(update(Job).where(condition, Job.status == old).values(**values))
    return int(getattr(result, "rowcount", 0) or 0)
