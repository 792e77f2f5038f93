"""SQLAlchemy tables of the metadata database.

The schema is created and changed only by the Alembic migrations in ``service/migrations``; these
classes must match the latest migration (a test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ACTIVE_STATES",
    "Alert",
    "AnomalyEvent",
    "ApiKey",
    "AzureModel",
    "AzureResult",
    "Base",
    "Channel",
    "ConsoleSession",
    "Job",
    "Label",
    "Model",
    "Promotion",
    "Schedule",
    "Stream",
    "StreamPoint",
    "Version",
    "utcnow",
]


#: Job states in which a job may still run (and publish or register an artifact).
ACTIVE_STATES = ("queued", "running")


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored naive in UTC, read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def utc_index(stored: Sequence[Any], name: str | None = None) -> pd.DatetimeIndex:
    """Many :class:`UTCDateTime` values as read raw (naive UTC datetimes, or SQLite's text) as
    one UTC index, converted in one call."""
    index = pd.DatetimeIndex(pd.to_datetime(list(stored), format="ISO8601"), name=name)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    """An API key: only its SHA-256 digest is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConsoleSession(Base):
    """A signed-in console browser: the digest of its cookie, its key and its CSRF token."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Model(Base):
    """A named detector: its config, promotion policy and active version."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: ``name.lower()``: names are unique regardless of case (``latency`` and ``LATENCY`` clash).
    name_key: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    promotion_policy: Mapped[str] = mapped_column(String(16), default="if_better")
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When a request last scored with it (API, stream); written at most once a
    #: ``scored_at_resolution_s`` per model and process, so it may lag by that much.
    last_scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Version(Base):
    """An immutable trained version of a model; written only once its artifact is complete."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    artifact_key: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    validation_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    calibration: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[list[Any]] = mapped_column(JSON)
    features: Mapped[list[Any]] = mapped_column(JSON)
    window: Mapped[int] = mapped_column(Integer)
    data_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    data_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    n_points: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Promotion(Base):
    """One change of a model's active version (the audit trail and the roll-back stack)."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A training job; its process writes status and progress here."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="api")
    schedule_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    retry_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    promoted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Schedule(Base):
    """A cron or interval retraining schedule over a rolling range of stored history."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    cron: Mapped[str | None] = mapped_column(String(100), nullable=True)
    interval_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_s: Mapped[float] = mapped_column(Float)
    anchor: Mapped[str] = mapped_column(String(16), default="now")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: Why the last due run queued no job ("<time>: <message>"); cleared by the next job.
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Stream(Base):
    """The live state of one series of a model: the monitor's ``state_dict()`` as JSON.

    ``revision`` grows with every accepted request, so a process that cached the monitor object
    knows whether another replica moved the state on since.
    """

    __tablename__ = "streams"
    __table_args__ = (UniqueConstraint("model_id", "series", name="uq_streams_model_series"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    series: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    n_points: Mapped[int] = mapped_column(Integer, default=0)
    last_ts: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recent: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @classmethod
    def start(
        cls, model_id: str, series: str, version: int, options: dict[str, Any], state: str
    ) -> Stream:
        """A new series' row: no points yet, revision 0, created now."""
        now = utcnow()
        return cls(
            model_id=model_id,
            series=series,
            version=version,
            options=options,
            state=state,
            revision=0,
            n_points=0,
            last_ts=None,
            recent=[],
            created_at=now,
            updated_at=now,
        )


class StreamPoint(Base):
    """A streamed point written with its stream's state, waiting to join the stored history."""

    __tablename__ = "stream_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    series: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    values: Mapped[dict[str, Any]] = mapped_column(JSON)


class AnomalyEvent(Base):
    """An anomaly event of a stream, as its monitor last reported it (``seq`` = its id there)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("stream_id", "seq", name="uq_events_stream_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    stream_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("streams.id", ondelete="CASCADE"), index=True
    )
    series: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    peak: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    severity: Mapped[float] = mapped_column(Float)
    n_points: Mapped[int] = mapped_column(Integer)
    top_features: Mapped[list[Any]] = mapped_column(JSON)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Label(Base):
    """A person's verdict on a point (``start == end``) or a time range of a model's series.

    ``series`` is None for a model without a key column, and for a label of every series of one
    with a key column. Every label is stored; where labels overlap, the newest one decides
    (``detector.feedback.label_masks`` owns that rule). ``event_id`` links a label given to an
    anomaly event (set to null when the event is removed with its stream).
    """

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_model_id_start", "model_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(32), ForeignKey("models.id", ondelete="CASCADE"))
    series: Mapped[str | None] = mapped_column(String(200), nullable=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    verdict: Mapped[str] = mapped_column(String(16))  #: one of detector.feedback.VERDICTS
    note: Mapped[str] = mapped_column(String(1000), default="")
    event_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("events.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: The id of the API key that gave the label.
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Channel(Base):
    """A notification channel of a model: a webhook or an Alertmanager."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_channels_model_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    min_severity: Mapped[float] = mapped_column(Float, default=0.0)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Alert(Base):
    """The transactional outbox: one alert of one event state for one channel.

    Written in the transaction that changes the event; the dispatcher claims, delivers, retries
    and marks it. ``(channel_id, idempotency_key)`` is unique, so one event state is queued once.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("channel_id", "idempotency_key", name="uq_alerts_channel_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("events.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AzureModel(Base):
    """A multivariate model of the Azure-compatible API: the request it was created with and
    what its training data showed; the ReconAD model of the same name does the work."""

    __tablename__ = "azure_models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    variable_states: Mapped[list[Any]] = mapped_column(JSON)
    correlations: Mapped[dict[str, Any]] = mapped_column(JSON)
    errors: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AzureResult(Base):
    """An asynchronous batch detection of the Azure-compatible API; the per-timestamp results
    live in the artifact store at ``result_key`` once it is ``READY``."""

    __tablename__ = "azure_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    azure_model_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("azure_models.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    setup: Mapped[dict[str, Any]] = mapped_column(JSON)
    errors: Mapped[list[Any]] = mapped_column(JSON)
    variable_states: Mapped[list[Any]] = mapped_column(JSON)
    result_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
