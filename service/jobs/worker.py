"""The job process: ``python -m service.jobs.worker JOB_ID`` trains one model version.

Settings come from ``RECONAD_*`` environment variables (the runner exports its own). The process
writes progress (epoch, losses, elapsed time) to the job row after every epoch, stops when a
cancellation is requested, saves the fitted detector to a staging directory, publishes it, and
only then registers the version (and applies the promotion policy) in one transaction that also
checks the job still belongs to this run. It exits when its parent (the server) dies.

:func:`run_job` is the entry point a distributed backend calls from its own worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import select

from detector import Detector, TrainingProgress, create_detector, load_detector, stored_config
from detector import errors as det_errors
from detector.errors import ReconADError
from detector.models import model_class
from detector.retraining import refit_on_stream
from service import feedback
from service.db import Database
from service.errors import ServiceError
from service.jobs import states
from service.jobs.states import FinalState
from service.observability import configure_logging
from service.registry import ModelRegistry, NewVersion, finite_or_none, job_artifact_key
from service.settings import Settings
from service.storage import ArtifactStore, HistoryStore, StoreError, open_stores
from service.tables import Job, Model, utcnow

__all__ = ["main", "run_job"]

logger = logging.getLogger(__name__)

#: Epochs of losses a running job's progress keeps (the full history is in the version).
_MAX_CURVE = 1000


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; poll as a fallback."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


class _JobContext:
    def __init__(self, db: Database, job_id: str, token: str, heartbeat_s: float) -> None:
        self.db = db
        self.heartbeat_s = heartbeat_s
        self.job_id = job_id
        self.token = token
        self._stop = threading.Event()
        self._curve: list[dict[str, Any]] = []
        #: Facts of this run shown in every progress write (what the training data left out).
        self.facts: dict[str, Any] = {}

    def heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(Exception), self.db.transaction() as session:
                states.touch(session, self.job_id, self.token, heartbeat_at=utcnow())

    def progress(self, p: TrainingProgress) -> bool:
        losses = {k: finite_or_none(v) for k, v in p.losses.items()}
        # The loss curve so far, so a console opened mid-job draws every epoch (bounded).
        self._curve = [*self._curve, {"epoch": p.epoch, **losses}][-_MAX_CURVE:]
        values = {
            "epoch": p.epoch,
            "max_epochs": p.max_epochs,
            "losses": losses,
            "curve": self._curve,
            "elapsed_s": round(p.elapsed_s, 3),
            "stage": "training",
            **self.facts,
        }
        with self.db.transaction() as session:
            states.touch(session, self.job_id, self.token, progress=values, heartbeat_at=utcnow())
            row = session.execute(
                select(Job.status, Job.cancel_requested).where(Job.id == self.job_id)
            ).first()
        if row is None or row.status != "running" or row.cancel_requested:
            logger.info("cancellation requested", extra={"job_id": self.job_id})
            return False
        return True

    def stage(self, stage: str) -> None:
        with self.db.transaction() as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is not None and states.holds(job, self.token):
                job.progress = {**(job.progress or {}), **self.facts, "stage": stage}

    def finish(self, status: FinalState, error: str | None) -> None:
        with self.db.transaction() as session:
            states.finish(session, self.job_id, self.token, status, error)

    def close(self) -> None:
        self._stop.set()


def _load_data(
    job: Job,
    model: Model,
    artifacts: ArtifactStore,
    history: HistoryStore,
    db: Database,
    learns_from_labels: bool,
) -> tuple[pd.DataFrame, npt.NDArray[np.int8] | None, dict[str, int] | None]:
    """The training rows; from stored history also their feedback labels (for a kind that
    learns from them) and what events and labels left out or kept."""
    params = job.params
    report = None
    labels = None
    if params.get("source") == "inline":
        frame = pd.read_parquet(io.BytesIO(artifacts.get_bytes(params["input_key"])))
    else:
        start = pd.Timestamp(params["start"]) if params.get("start") else None
        end = pd.Timestamp(params["end"]) if params.get("end") else None
        frame = history.read(model.id, start, end)
        # Anomalies (events, labelled ones) must not become the new normal; labelled-normal
        # stretches stay even where an event covered them.
        frame, labels, report = feedback.training_data(
            db, model.id, frame, model.config.get("key_column"), learns_from_labels
        )
        logger.info("training data: %s", report)
    if frame.empty:
        raise det_errors.TooShortError(
            "the selected range holds no data; append history or choose another range"
        )
    return frame, labels, report


def _holdout_error(detector: Detector, holdout: pd.DataFrame) -> float | None:
    """The detector's error on held-out data (comparable across versions), or None."""
    try:
        return finite_or_none(detector.holdout_error(holdout))
    except ReconADError:
        return None


def _active_detector(
    registry: ModelRegistry, artifacts: ArtifactStore, model_name: str, log_extra: dict[str, Any]
) -> tuple[int, Detector] | None:
    """The active version's number and detector, for ``if_better``; None without one (or when
    it cannot be loaded)."""
    try:
        _, active = registry.get_version(model_name)
    except ServiceError:  # no active version yet
        return None
    try:
        return active.version, load_detector(artifacts.fetch(active.artifact_key), device="cpu")
    except (ReconADError, StoreError) as exc:
        logger.info("active version cannot be loaded: %s", exc, extra=log_extra)
        return None


def _active_holdout_error(
    active: tuple[int, Detector] | None, holdout: pd.DataFrame
) -> tuple[int, float] | None:
    """The active version's error on the new version's held-out data, for ``if_better``.

    None when there is no active version or it cannot score this data (other features, say);
    promotion then falls back to the stored validation scores.
    """
    if active is None:
        return None
    score = _holdout_error(active[1], holdout)
    return None if score is None else (active[0], score)


def run_job(settings: Settings, job_id: str) -> int:
    """Run one claimed job to its end; return the process exit status.

    Parameters
    ----------
    settings
        Service settings.
    job_id
        A job in state ``running`` (claimed by a runner, which set its run token).

    Returns
    -------
    int
        0 when the job reached a final state (even ``failed``), 1 on an internal error.
    """
    db = Database(settings.database_url)
    with db.session() as session:
        job = session.get(Job, job_id)
        model = session.get(Model, job.model_id) if job is not None else None
    token = None if job is None else job.run_token
    if job is None or model is None or token is None or not states.holds(job, token):
        logger.warning("job %s is not claimed for running; nothing to do", job_id)
        return 0
    ctx = _JobContext(db, job_id, token, settings.job_heartbeat_s)
    threading.Thread(target=ctx.heartbeat, name="heartbeat", daemon=True).start()
    artifacts, history = open_stores(settings, db)
    registry = ModelRegistry.for_settings(settings, db, artifacts, history)
    log_extra = {"job_id": job_id, "model": model.name}
    started = time.monotonic()
    try:
        config = stored_config(job.params["config"])
        if settings.device != "auto":
            training = config.training.model_copy(update={"device": settings.device})
            config = config.model_copy(update={"training": training})
        ctx.stage("loading data")
        learns = model_class(config.kind).learns_from_labels
        frame, labels, report = _load_data(job, model, artifacts, history, db, learns)
        if report is not None:
            ctx.facts["training_data"] = report
        logger.info("training on %d points", len(frame), extra=log_extra)
        ctx.stage("training")
        if job.params.get("source") == "inline":
            detector = create_detector(config).fit(frame, progress=ctx.progress, labels=labels)
        else:  # stored history holds what the stream's monitor let through: the refit rule
            detector = refit_on_stream(config, frame, labels=labels, progress=ctx.progress)
        train_s = time.monotonic() - started
        key_column = model.config.get("key_column")
        ctx.stage("checking on labels")
        refit = feedback.refit(detector, history, db, model.id, key_column)
        ctx.stage("saving")
        key = job_artifact_key(model.id, job_id)
        with artifacts.staging() as tmp:
            detector.save(tmp / "model")
            artifacts.publish(tmp / "model", key)
        holdout = detector.holdout(frame)  # the rows fit calibrated on, per segment
        active = _active_detector(registry, artifacts, model.name, log_extra)
        metrics: dict[str, Any] = {
            "train_seconds": round(train_s, 3),
            "epochs": len(detector.history_),
            "device": str(getattr(detector, "device_", "cpu")),
            **({"training_data": report} if report is not None else {}),
            **({"label_refit": refit} if refit is not None else {}),
        }
        on_labels = None
        if active is not None and model.promotion_policy == "if_better":
            compared = feedback.compare_versions(
                detector, active[1], history, db, model.id, key_column
            )
            if compared is not None:
                metrics["labels_comparison"] = {**compared, "active_version": active[0]}
                on_labels = (active[0], bool(compared["better"]))
        new = NewVersion.from_detector(
            detector,
            key,
            frame,
            validation_score=_holdout_error(detector, holdout),
            metrics=metrics,
            active_score=_active_holdout_error(active, holdout),
            better_on_labels=on_labels,
        )
        try:
            version, promoted, reason = registry.register_version(
                model.id,
                new,
                job_id=job_id,
                run_token=ctx.token,
                force_promote=job.params.get("promote"),
            )
        except BaseException:
            artifacts.delete(key)
            raise
        if job.params.get("source") == "inline":
            with contextlib.suppress(Exception):
                artifacts.delete(job.params["input_key"])
        logger.info(
            "job succeeded: version %d (%s, %s)",
            version.version,
            "promoted" if promoted else "not promoted",
            reason,
            extra=log_extra,
        )
        return 0
    except det_errors.TrainingCancelled:
        ctx.finish("cancelled", "cancelled while running")
        logger.info("job cancelled", extra=log_extra)
        return 0
    except (det_errors.ReconADError, ServiceError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        ctx.finish("failed", message[:4000])
        logger.info("job failed: %s", message, extra=log_extra)
        return 0
    except Exception as exc:
        logger.exception("job crashed", extra=log_extra)
        ctx.finish("failed", f"internal error ({type(exc).__name__}): {exc}"[:4000])
        return 1
    finally:
        ctx.close()
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m service.jobs.worker JOB_ID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service.jobs.worker JOB_ID", file=sys.stderr)  # noqa: T201
        return 2
    _die_with_parent()
    settings = Settings()
    if settings.job_niceness:
        with contextlib.suppress(OSError):
            os.nice(settings.job_niceness)
    configure_logging(settings.log_level, settings.log_json, static={"job_id": args[0]})
    return run_job(settings, args[0])


if __name__ == "__main__":
    sys.exit(main())
