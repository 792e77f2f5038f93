"""The model registry: models, their immutable versions and which version is active.

Consistency rules:

- a version row is inserted only after its artifact is published, in the same transaction that
  allocates its number (numbers are never reused, even after a version is deleted);
- the active version is one column of the model row, changed together with an entry in the
  promotion log in a single transaction, so a crash leaves exactly the old or the new version
  active;
- artifacts without a version row (a crash between publishing and registering) are removed by
  :meth:`ModelRegistry.sweep_orphans`: on start when this process alone runs jobs, and now and
  then with shared workers, where a job's artifact key names the job (:func:`job_artifact_key`)
  so that the artifacts of jobs still queued or running are kept.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
import torch
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from detector import Detector, DetectorConfig, stored_config
from detector.models import model_class
from service.db import Database
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.jobs import states
from service.settings import Settings
from service.storage import ArtifactStore, HistoryStore
from service.tables import ACTIVE_STATES, Job, Model, Promotion, Version, utcnow

__all__ = [
    "NAME_PATTERN",
    "ModelRegistry",
    "NewVersion",
    "PromotionPolicy",
    "check_model_size",
    "count_parameters",
    "decide_promotion",
    "finite_or_none",
    "job_artifact_key",
    "json_safe",
]

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
PromotionPolicy = Literal["always", "if_better", "manual"]
_JOB_KEY = re.compile(r"^job-(?P<job>.+)-[0-9a-f]{12}$")


def job_artifact_key(model_id: str, job_id: str) -> str:
    """A fresh key for an artifact that job ``job_id`` publishes: ``<model>/job-<job>-<random>``.

    The job in the key lets a sweep with shared workers tell an orphan (its job ended without
    registering it) from an artifact whose job may still register it.
    """
    return f"{model_id}/job-{job_id}-{uuid.uuid4().hex[:12]}"


def _job_of(key: str) -> str | None:
    match = _JOB_KEY.match(key.rsplit("/", 1)[-1])
    return match["job"] if match else None


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    Raises
    ------
    service.errors.InvalidInputError
        Otherwise (names are 1-64 letters, digits, '-' or '_', starting with a letter or digit).
    """
    if not _NAME_RE.match(name):
        raise InvalidInputError(
            f"invalid model name {name[:80]!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


#: Values per window an ``"auto"`` window resolves to at most (detector.windows' rule).
_AUTO_WINDOW_VALUES = 2048


def count_parameters(config: DetectorConfig) -> int:
    """Network parameters ``config`` asks for, counted on torch's meta device (nothing is
    allocated).

    The window and the feature count are only known once data arrives: an ``"auto"`` window
    counts its largest input (2,048 values); an explicit window counts its length times the
    configured features (one feature when they are left open), so the count is never above what
    a fit builds, and the hidden and latent layers, which grow quadratically, are exact.
    """
    n_features = len(config.features) if config.features else 1
    window = config.window if isinstance(config.window, int) else _AUTO_WINDOW_VALUES
    if not isinstance(config.window, int):
        n_features = 1
    cls = model_class(config.kind)
    n_conditions = 31 if cls.conditional else 0  # hour one-hot (24) + day of week (7)
    with torch.device("meta"):
        network = cls(config.network, window, n_features, n_conditions)
    return int(sum(p.numel() for p in network.parameters()))


def check_model_size(config: DetectorConfig, max_parameters: int | None) -> DetectorConfig:
    """Return ``config`` if its network stays within ``max_parameters`` (``None``: no limit).

    Raises
    ------
    service.errors.InvalidInputError
        When it asks for more, with the count and the limit.
    """
    if max_parameters is None:
        return config
    count = count_parameters(config)
    if count > max_parameters:
        raise InvalidInputError(
            f"this config asks for a network of {count:,} parameters (about "
            f"{count * 4 / 1e9:.1f} GB of weights); the limit is {max_parameters:,} "
            "(RECONAD_MAX_MODEL_PARAMETERS): use smaller hidden_dims, latent_dim or window"
        )
    return config


def decide_promotion(
    policy: str,
    candidate_score: float | None,
    active_score: float | None,
    has_active: bool,
    better_on_labels: bool | None = None,
) -> tuple[bool, str]:
    """Whether a freshly trained version becomes active, and why.

    Parameters
    ----------
    policy
        The model's promotion policy.
    candidate_score, active_score
        Validation scores (lower is better) of the new and the active version.
    has_active
        Whether the model has an active version; a model without one always takes the new one.
    better_on_labels
        Whether the new version beats the active one on the labelled history
        (``service.feedback.compare_versions``); None when there are no labels to compare on.
        ``if_better`` decides on it when given, else on the validation scores.

    Returns
    -------
    tuple[bool, str]
        The decision and a short reason stored in the promotion log and on the job.
    """
    if not has_active:
        return True, "first_version"
    if policy == "always":
        return True, "policy_always"
    if policy == "manual":
        return False, "policy_manual"
    if better_on_labels is not None:
        return (True, "if_better_labels") if better_on_labels else (False, "if_better_labels_worse")
    if candidate_score is None or active_score is None:
        return False, "if_better_no_score"
    if candidate_score <= active_score:
        return True, "if_better"
    return False, "if_better_worse"


@dataclass(frozen=True)
class NewVersion:
    """What a finished training run registers."""

    artifact_key: str
    config: dict[str, Any]
    threshold: float
    validation_score: float | None
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    history: list[Any]
    features: list[str]
    window: int
    data_start: datetime | None
    data_end: datetime | None
    n_points: int
    #: The active version's score on the same held-out data as ``validation_score``, with the
    #: number of that version; ``if_better`` compares these two when the version is still active.
    active_score: tuple[int, float] | None = None
    #: Whether the new version beats the active one (of that number) on the labelled history;
    #: ``if_better`` decides on it, when that version is still active.
    better_on_labels: tuple[int, bool] | None = None

    @classmethod
    def from_detector(
        cls,
        detector: Detector,
        artifact_key: str,
        data: pd.DataFrame,
        validation_score: float | None,
        metrics: dict[str, Any] | None = None,
        active_score: tuple[int, float] | None = None,
        better_on_labels: tuple[int, bool] | None = None,
    ) -> NewVersion:
        """What registering ``detector``, fitted on ``data`` and published at ``artifact_key``,
        records."""
        index = data.index
        dated = isinstance(index, pd.DatetimeIndex) and len(index) > 0
        return cls(
            artifact_key=artifact_key,
            config=detector.config.model_dump(mode="json"),
            threshold=float(detector.threshold_),
            validation_score=validation_score,
            calibration=json_safe(dict(detector.calibration_)),
            metrics=metrics or {},
            history=json_safe(list(detector.history_)),
            features=[str(f) for f in detector.feature_names_in_],
            window=int(detector.window_),
            data_start=index.min().to_pydatetime() if dated else None,
            data_end=index.max().to_pydatetime() if dated else None,
            n_points=len(data),
            active_score=active_score,
            better_on_labels=better_on_labels,
        )


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (JSON has no NaN or infinity)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def json_safe(value: Any) -> Any:
    """``value`` with string keys, lists for tuples and None for non-finite numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        return finite_or_none(value)
    except Exception:  # pragma: no cover - defensive
        return str(value)


class ModelRegistry:
    """Models, versions and promotions over the metadata database and the stores.

    Parameters
    ----------
    db
        The metadata database.
    artifacts
        Where version artifacts live.
    history
        Where observations live.
    promotion_pause_s
        Testing only: sleep inside the promotion transaction.
    max_parameters
        Largest network a model config may ask for (``None``: no limit).
    max_versions
        Versions each model keeps: registering one beyond it deletes the oldest that are not
        active (``None``: no limit).
    max_models
        Models the deployment may hold; creating one more is refused (``None``: no limit).
    """

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        history: HistoryStore,
        promotion_pause_s: float = 0.0,
        max_parameters: int | None = None,
        max_versions: int | None = None,
        max_models: int | None = None,
    ) -> None:
        self.db = db
        self.artifacts = artifacts
        self.history = history
        self._pause = promotion_pause_s
        self.max_parameters = max_parameters
        self.max_versions = max_versions
        self.max_models = max_models
        self._listeners: list[Any] = []

    @classmethod
    def for_settings(
        cls, settings: Settings, db: Database, artifacts: ArtifactStore, history: HistoryStore
    ) -> ModelRegistry:
        """The registry a deployment's settings describe (the API process and job workers)."""
        return cls(
            db,
            artifacts,
            history,
            settings.test_promotion_pause_s,
            max_parameters=settings.max_model_parameters,
            max_versions=settings.max_versions_per_model,
            max_models=settings.max_models,
        )

    def on_change(self, callback: Any) -> None:
        """Call ``callback(model_name)`` after a model's active version or config changes here."""
        self._listeners.append(callback)

    def _changed(self, name: str) -> None:
        for callback in self._listeners:
            callback(name)

    # ------------------------------------------------------------------ models
    @staticmethod
    def _get(session: Session, name: str, lock: bool = False) -> Model:
        query = select(Model).where(Model.name == name)
        if lock:  # a row lock (PostgreSQL) so concurrent writers queue instead of losing updates
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise NotFoundError(f"no model named {name[:80]!r}; GET /v1/models lists them")
        return row

    def create_model(
        self, name: str, config: DetectorConfig, description: str, policy: str
    ) -> Model:
        """Create a model.

        Raises
        ------
        service.errors.ConflictError
            When the name is taken, or :attr:`max_models` models exist.
        """
        check_name(name)
        check_model_size(config, self.max_parameters)
        with self.db.transaction() as session:
            if self.max_models is not None:
                count = int(session.scalar(select(func.count()).select_from(Model)) or 0)
                if count >= self.max_models:
                    raise ConflictError(
                        f"{count} models exist, the limit (max_models); delete one first"
                    )
            taken = session.scalar(select(Model.name).where(Model.name_key == name.lower()))
            if taken is not None:
                same = "" if taken == name else f" ({taken!r}: names are case-insensitive)"
                raise ConflictError(
                    f"a model named {name!r} already exists{same}; pick another name"
                )
            now = utcnow()
            row = Model(
                id=uuid.uuid4().hex,
                name=name,
                name_key=name.lower(),
                description=description,
                config=config.model_dump(mode="json"),
                promotion_policy=policy,
                active_version=None,
                last_version=0,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
        logger.info("model created", extra={"model": name})
        return row

    def list_models(self, offset: int, limit: int) -> tuple[list[Model], int]:
        """A page of models by name, and the total count."""
        with self.db.session() as session:
            count = int(session.scalar(select(func.count()).select_from(Model)) or 0)
            rows = session.scalars(select(Model).order_by(Model.name).offset(offset).limit(limit))
            return list(rows), count

    def get_model(self, name: str) -> Model:
        """The model named ``name``.

        Raises
        ------
        service.errors.NotFoundError
            When there is none.
        """
        with self.db.session() as session:
            return self._get(session, name)

    def update_model(
        self,
        name: str,
        config: DetectorConfig | None,
        description: str | None,
        policy: str | None,
    ) -> Model:
        """Change a model's settings; existing versions keep the config they were trained with."""
        if config is not None:
            check_model_size(config, self.max_parameters)
        with self.db.transaction() as session:
            row = self._get(session, name, lock=True)
            if config is not None:
                row.config = config.model_dump(mode="json")
            if description is not None:
                row.description = description
            if policy is not None:
                row.promotion_policy = policy
            row.updated_at = utcnow()
        self._changed(name)
        return row

    def delete_model(self, name: str) -> Model:
        """Delete a model, its versions, jobs, schedules, artifacts and stored history."""
        with self.db.transaction() as session:
            row = self._get(session, name, lock=True)
            session.delete(row)
        self._changed(name)
        self.artifacts.delete(row.id)
        self.artifacts.delete(f"inputs-{row.id}")
        self.history.delete(row.id)
        logger.info("model deleted", extra={"model": name})
        return row

    def mark_scored(self, model_id: str, at: datetime, resolution_s: float) -> bool:
        """Record that the model scored at ``at``; return whether the row was written.

        One conditional UPDATE: it writes only when the stored time is missing or older than
        ``resolution_s`` before ``at``, so replicas scoring the same model write about once per
        ``resolution_s`` between them and a late writer never moves the time backwards.
        """
        cutoff = at - timedelta(seconds=resolution_s)
        with self.db.transaction() as session:
            result = session.execute(
                update(Model)
                .where(
                    Model.id == model_id,
                    or_(Model.last_scored_at.is_(None), Model.last_scored_at < cutoff),
                )
                .values(last_scored_at=at)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    # ------------------------------------------------------------------ versions
    def list_versions(self, name: str) -> tuple[Model, list[Version]]:
        """A model and all its versions, newest first."""
        with self.db.session() as session:
            model = self._get(session, name)
            rows = session.scalars(
                select(Version).where(Version.model_id == model.id).order_by(Version.version.desc())
            )
            return model, list(rows)

    def list_promotions(
        self, name: str, offset: int = 0, limit: int = 100
    ) -> tuple[list[Promotion], int]:
        """A model's promotion log (every change of its active version), newest first, and the
        total count."""
        with self.db.session() as session:
            model = self._get(session, name)
            where = Promotion.model_id == model.id
            count = int(
                session.scalar(select(func.count()).select_from(Promotion).where(where)) or 0
            )
            rows = session.scalars(
                select(Promotion)
                .where(where)
                .order_by(Promotion.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return list(rows), count

    def get_version(self, name: str, version: int | None = None) -> tuple[Model, Version]:
        """A model and one of its versions (``None``: the active one).

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        service.errors.ConflictError
            When ``version`` is None and the model has no active version yet.
        """
        with self.db.session() as session:
            model = self._get(session, name)
            if version is None:
                if model.active_version is None:
                    raise ConflictError(
                        f"model {name!r} has no active version yet: train it "
                        f"(POST /v1/models/{name}/jobs) or promote a version"
                    )
                version = model.active_version
            row = session.scalar(
                select(Version).where(Version.model_id == model.id, Version.version == version)
            )
            if row is None:
                raise NotFoundError(
                    f"model {name!r} has no version {version}; "
                    f"GET /v1/models/{name}/versions lists them"
                )
            return model, row

    def register_version(
        self,
        model_id: str,
        new: NewVersion,
        job_id: str | None = None,
        run_token: str | None = None,
        force_promote: bool | None = None,
    ) -> tuple[Version, bool, str]:
        """Insert a version whose artifact is already published, and apply the promotion policy.

        When ``job_id`` and ``run_token`` are given, the job must still be running with that
        token (the server may have marked it interrupted meanwhile); it is marked succeeded in
        the same transaction.

        Returns
        -------
        tuple[Version, bool, str]
            The version row, whether it became active, and the reason.

        Raises
        ------
        service.errors.NotFoundError
            When the model was deleted meanwhile.
        service.errors.ConflictError
            When the job is no longer running under ``run_token``.
        """
        with self.db.transaction() as session:
            model = session.get(Model, model_id, with_for_update=True)
            if model is None:
                raise NotFoundError("the model was deleted while it was training")
            job: Job | None = None
            if job_id is not None:
                job = session.get(Job, job_id, with_for_update=True)
                if not states.holds(job, run_token):
                    raise ConflictError("the job is no longer running; its result is discarded")
            number = model.last_version + 1
            model.last_version = number
            row = Version(
                model_id=model_id,
                version=number,
                artifact_key=new.artifact_key,
                config=new.config,
                threshold=new.threshold,
                validation_score=new.validation_score,
                calibration=new.calibration,
                metrics=new.metrics,
                history=new.history,
                features=new.features,
                window=new.window,
                data_start=new.data_start,
                data_end=new.data_end,
                n_points=new.n_points,
                job_id=job_id,
                created_at=utcnow(),
            )
            session.add(row)
            active_score: float | None = None
            if new.active_score is not None and new.active_score[0] == model.active_version:
                active_score = new.active_score[1]
            elif model.active_version is not None:
                active_score = session.scalar(
                    select(Version.validation_score).where(
                        Version.model_id == model_id, Version.version == model.active_version
                    )
                )
            on_labels = new.better_on_labels
            if force_promote is None:
                promote, reason = decide_promotion(
                    model.promotion_policy,
                    new.validation_score,
                    active_score,
                    model.active_version is not None,
                    None
                    if on_labels is None or on_labels[0] != model.active_version
                    else on_labels[1],
                )
            else:
                promote = force_promote or model.active_version is None
                reason = "requested" if force_promote else "not_requested"
                if promote and not force_promote:
                    reason = "first_version"
            if promote:
                self._activate(session, model, number, reason)
            if job is not None:
                states.move(job, "succeeded")
                job.version = number
                job.promoted = promote
                job.progress = {**(job.progress or {}), "stage": "done", "promotion": reason}
            pruned = self._prune_versions(session, model)
        self._changed(model.name)
        self.artifacts.discard(pruned, "a pruned version's artifact")
        return row, promote, reason

    def _prune_versions(self, session: Session, model: Model) -> list[str]:
        """Delete the rows of the model's versions beyond :attr:`max_versions`, oldest first,
        never the active one; return their artifact keys. This runs where versions are
        registered (a job worker, often another process), so a scoring cache that holds a
        pruned version keeps it until it is evicted (the cache is bounded); live series on
        one move to the active version from their stored state."""
        if self.max_versions is None:
            return []
        session.flush()
        rows = session.scalars(
            select(Version).where(Version.model_id == model.id).order_by(Version.version.desc())
        ).all()
        gone = [r for r in rows[self.max_versions :] if r.version != model.active_version]
        for r in gone:
            session.delete(r)
        if gone:
            logger.info(
                "old versions deleted",
                extra={"model": model.name, "versions": [r.version for r in gone]},
            )
        return [r.artifact_key for r in gone]

    def _activate(self, session: Session, model: Model, version: int, reason: str) -> None:
        session.add(
            Promotion(
                model_id=model.id,
                from_version=model.active_version,
                to_version=version,
                reason=reason,
                created_at=utcnow(),
            )
        )
        model.active_version = version
        model.updated_at = utcnow()
        if self._pause > 0:
            session.flush()
            logger.warning("pausing %.1fs inside a promotion (test setting)", self._pause)
            time.sleep(self._pause)

    def promote(self, name: str, version: int, reason: str = "manual") -> Model:
        """Make ``version`` the active version of model ``name`` (one transaction).

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        """
        with self.db.transaction() as session:
            model = self._get(session, name, lock=True)
            exists = session.scalar(
                select(Version.id).where(Version.model_id == model.id, Version.version == version)
            )
            if exists is None:
                raise NotFoundError(
                    f"model {name!r} has no version {version}; "
                    f"GET /v1/models/{name}/versions lists them"
                )
            if model.active_version != version:
                self._activate(session, model, version, reason)
        self._changed(name)
        logger.info("version promoted", extra={"model": name, "version": version})
        return model

    def rollback(self, name: str) -> Model:
        """Re-activate the version that was active before the current one.

        Promotions push onto a stack and roll-backs pop it, so repeated roll-backs walk back
        through history; versions deleted since are skipped.

        Raises
        ------
        service.errors.ConflictError
            When there is nothing to roll back to.
        """
        with self.db.transaction() as session:
            model = self._get(session, name, lock=True)
            log = session.scalars(
                select(Promotion).where(Promotion.model_id == model.id).order_by(Promotion.id)
            )
            stack: list[int] = []
            for entry in log:
                if entry.reason == "rollback":
                    while stack and stack[-1] != entry.to_version:
                        stack.pop()
                    if not stack:
                        stack.append(entry.to_version)
                else:
                    stack.append(entry.to_version)
            existing = set(
                session.scalars(select(Version.version).where(Version.model_id == model.id))
            )
            stack = [v for v in stack if v in existing]
            while stack and stack[-1] == model.active_version:
                stack.pop()
            if not stack:
                raise ConflictError(f"model {name!r} has no earlier version to roll back to")
            self._activate(session, model, stack[-1], "rollback")
        self._changed(name)
        logger.info("version rolled back", extra={"model": name, "version": model.active_version})
        return model

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version that is not active (its number is never reused).

        Raises
        ------
        service.errors.ConflictError
            When it is the active version.
        """
        with self.db.transaction() as session:
            model = self._get(session, name, lock=True)
            row = session.scalar(
                select(Version).where(Version.model_id == model.id, Version.version == version)
            )
            if row is None:
                raise NotFoundError(f"model {name!r} has no version {version}")
            if model.active_version == version:
                raise ConflictError(
                    f"version {version} is active; promote another version before deleting it"
                )
            key = row.artifact_key
            session.delete(row)
        self.artifacts.delete(key)

    # ------------------------------------------------------------------ maintenance
    def sweep_orphans(self, shared_workers: bool = False) -> int:
        """Delete published artifacts that no version row references; return the count.

        Without ``shared_workers``, call only when no job can be between publishing and
        registering (on start, after running jobs were marked interrupted): every unreferenced
        artifact goes. With ``shared_workers`` (jobs run elsewhere at any time, and several
        replicas may sweep at once) an unreferenced artifact goes only when its key names a job
        that is no longer queued or running, so no job can still register it; keys that name no
        job are kept. The key listing comes first, then the jobs' states, then the version rows:
        a job that registered its artifact after the listing is seen succeeded, and then its
        version row is seen too.
        """
        with self.db.session() as session:
            model_ids = list(session.scalars(select(Model.id)))
        listed = [key for model_id in model_ids for key in self.artifacts.list(model_id)]
        with self.db.session() as session:
            active = set(session.scalars(select(Job.id).where(Job.status.in_(ACTIVE_STATES))))
            keys = set(session.scalars(select(Version.artifact_key)))
        removed = 0
        for key in listed:
            if key in keys:
                continue
            if shared_workers:
                job = _job_of(key)
                if job is None or job in active:
                    continue
            self.artifacts.delete(key)
            removed += 1
        if not shared_workers:  # with shared workers, staging folders may be in use
            self.artifacts.sweep_staging()
        if removed:
            logger.warning("removed %d unregistered artifacts", removed)
        return removed

    def validate_config(self, config: dict[str, Any]) -> DetectorConfig:
        """Parse a stored config dict (raises ``InvalidInputError`` when it no longer validates)."""
        try:
            return stored_config(config)
        except ValueError as exc:
            raise InvalidInputError(f"stored config is invalid: {exc}") from exc
