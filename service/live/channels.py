"""Notification channels of a model and the alerts they are sent.

Two kinds:

- ``webhook``: ``POST <url>`` with a JSON body; the header ``X-ReconAD-Signature:
  sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes under the channel's secret, and
  ``X-ReconAD-Idempotency-Key`` repeats the body's ``idempotency_key``.
- ``alertmanager``: ``POST <url>/api/v2/alerts`` with one alert in Alertmanager's v2 shape
  (labels, annotations, ``startsAt``, ``endsAt`` once resolved, ``generatorURL``).

An event queues one ``firing`` alert per channel once its severity reaches the channel's
``min_severity``, and one ``resolved`` alert when it closes (only where it fired). The
idempotency key is ``<event id>:<state>``; ``(channel, key)`` is unique in the outbox, so an
event state is queued once, and a receiver that keeps the keys it saw drops the rare
redelivery after a crash between sending and marking.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.live.events import event_public
from service.registry import ModelRegistry
from service.tables import Alert, AnomalyEvent, Channel, utcnow

__all__ = [
    "ChannelConfig",
    "ChannelService",
    "alertmanager_body",
    "queue_alerts",
    "sign",
    "webhook_body",
]

ChannelKind = Literal["webhook", "alertmanager"]


class ChannelConfig(BaseModel):
    """Delivery settings of a channel (stored as its ``config``)."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(
        description="webhook: the URL posted to; alertmanager: its base URL "
        "(http://host:9093), /api/v2/alerts is appended."
    )
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="webhook: the HMAC-SHA256 key of the X-ReconAD-Signature header "
        "(required for webhooks; never shown again).",
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of one delivery attempt.")
    max_attempts: int = Field(
        10, ge=1, le=100, description="Attempts before an alert is marked failed."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description="alertmanager: extra labels on every alert (team, env, ...).",
    )


def check_channel(kind: str, config: ChannelConfig) -> None:
    """Refuse settings that do not fit the channel kind.

    Raises
    ------
    service.errors.InvalidInputError
    """
    if kind == "webhook" and not config.secret:
        raise InvalidInputError(
            "a webhook channel needs config.secret (16-256 characters): receivers check the "
            "X-ReconAD-Signature header with it"
        )
    if kind == "alertmanager" and config.secret:
        raise InvalidInputError("config.secret is for webhooks; Alertmanager takes no signature")


class ChannelUpdate(BaseModel):
    """Fields a PATCH may change."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    config: ChannelConfig | None = None
    min_severity: float | None = Field(None, ge=0, le=1)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=100_000)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _some(self) -> ChannelUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


def sign(secret: str, body: bytes) -> str:
    """The ``X-ReconAD-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _link(public_url: str, ev_id: int) -> str:
    return f"{public_url.rstrip('/')}/v1/events/{ev_id}"


def webhook_body(
    key: str, state: str, model_name: str, channel_name: str, ev: AnomalyEvent, public_url: str
) -> dict[str, Any]:
    """The JSON body a webhook receives (stored in the outbox, so retries send the same bytes)."""
    return {
        "idempotency_key": key,
        "status": state,
        "model": model_name,
        "channel": channel_name,
        "event": event_public(ev),
        "url": _link(public_url, ev.id),
    }


def _severity_label(severity: float) -> str:
    return "critical" if severity >= 0.8 else "warning" if severity >= 0.4 else "info"


def alertmanager_body(
    key: str,
    state: str,
    model_name: str,
    ev: AnomalyEvent,
    labels: dict[str, str],
    public_url: str,
) -> list[dict[str, Any]]:
    """The list Alertmanager's ``POST /api/v2/alerts`` receives for one event state."""
    top = ", ".join(f"{name} ({share:.2f})" for name, share in ev.top_features[:3])
    alert: dict[str, Any] = {
        "labels": {
            **labels,
            "alertname": "ReconADAnomaly",
            "model": model_name,
            "series": ev.series,
            "event_id": str(ev.id),
            "severity": _severity_label(ev.severity),
        },
        "annotations": {
            "summary": f"Anomaly on {model_name}" + (f" / {ev.series}" if ev.series else ""),
            "description": f"peak {ev.peak:.2f} x threshold over {ev.n_points} point(s); "
            f"top features: {top or 'n/a'}",
            "idempotency_key": key,
        },
        "startsAt": ev.start.isoformat(),
        "generatorURL": _link(public_url or "http://reconad.invalid", ev.id),
    }
    if state == "resolved":
        # The event's last point; never before startsAt (Alertmanager refuses that).
        alert["endsAt"] = max(ev.end, ev.start + timedelta(seconds=1)).isoformat()
    return [alert]


def queue_alerts(
    session: Session,
    model_id: str,
    model_name: str,
    changed: list[tuple[AnomalyEvent, bool]],
    public_url: str = "",
) -> int:
    """Write the outbox rows the event changes cause, in the caller's transaction.

    Parameters
    ----------
    session
        The transaction that changed the events (flushed, so they have ids).
    changed
        ``(event, closed_now)`` for each event written.

    Returns
    -------
    int
        Alerts queued.
    """
    if not changed:
        return 0
    channels = list(
        session.execute(
            select(Channel).where(Channel.model_id == model_id, Channel.enabled.is_(True))
        ).scalars()
    )
    if not channels:
        return 0
    ids = [ev.id for ev, _ in changed]
    existing: set[tuple[str, str]] = {
        (cid, key)
        for cid, key in session.execute(
            select(Alert.channel_id, Alert.idempotency_key).where(Alert.event_id.in_(ids))
        ).all()
    }
    now = utcnow()
    queued = 0
    for ev, _closed_now in changed:
        for state in ("firing", "resolved"):
            if state == "resolved" and ev.status != "closed":
                continue
            key = f"{ev.id}:{state}"
            for ch in channels:
                if (ch.id, key) in existing:
                    continue
                if state == "firing" and ev.severity < ch.min_severity:
                    continue
                if state == "resolved" and (ch.id, f"{ev.id}:firing") not in existing:
                    continue
                config = ChannelConfig.model_validate(ch.config)
                payload: Any = (
                    webhook_body(key, state, model_name, ch.name, ev, public_url)
                    if ch.kind == "webhook"
                    else alertmanager_body(key, state, model_name, ev, config.labels, public_url)
                )
                session.add(
                    Alert(
                        channel_id=ch.id,
                        event_id=ev.id,
                        state=state,
                        idempotency_key=key,
                        payload={"body": payload},
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                existing.add((ch.id, key))
                queued += 1
    return queued


class ChannelService:
    """CRUD of a model's channels and a view of their alerts.

    Parameters
    ----------
    db
        The metadata database.
    registry
        Model lookup by name.
    max_per_model
        Most channels per model.
    """

    def __init__(self, db: Database, registry: ModelRegistry, max_per_model: int) -> None:
        self.db = db
        self.registry = registry
        self.max_per_model = max_per_model

    def _model_id(self, name: str) -> str:
        return self.registry.get_model(name).id

    def create(
        self,
        model: str,
        name: str,
        kind: ChannelKind,
        config: ChannelConfig,
        min_severity: float,
        rate_limit_per_minute: int,
        enabled: bool,
    ) -> Channel:
        """Add a channel.

        Raises
        ------
        InvalidInputError, ConflictError
        """
        check_channel(kind, config)
        model_id = self._model_id(model)
        with self.db.transaction() as session:
            count = session.execute(
                select(func.count()).select_from(Channel).where(Channel.model_id == model_id)
            ).scalar_one()
            if count >= self.max_per_model:
                raise ConflictError(
                    f"the model has {count} channels, the limit (max_channels_per_model)"
                )
            taken = session.execute(
                select(Channel.id).where(Channel.model_id == model_id, Channel.name == name)
            ).first()
            if taken is not None:
                raise ConflictError(f"the model already has a channel named {name!r}")
            now = utcnow()
            channel = Channel(
                id=uuid.uuid4().hex,
                model_id=model_id,
                name=name,
                kind=kind,
                config=orjson.loads(config.model_dump_json()),
                min_severity=min_severity,
                rate_limit_per_minute=rate_limit_per_minute,
                enabled=enabled,
                created_at=now,
                updated_at=now,
            )
            session.add(channel)
        return channel

    def list_channels(self, name: str) -> list[Channel]:
        """The model's channels by name."""
        model_id = self._model_id(name)
        with self.db.session() as session:
            return list(
                session.execute(
                    select(Channel).where(Channel.model_id == model_id).order_by(Channel.name)
                ).scalars()
            )

    @staticmethod
    def _get(session: Session, model_id: str, channel_id: str) -> Channel:
        channel = session.get(Channel, channel_id)
        if channel is None or channel.model_id != model_id:
            raise NotFoundError(f"no channel {channel_id!r} for this model")
        return channel

    def get(self, name: str, channel_id: str) -> Channel:
        """One channel.

        Raises
        ------
        service.errors.NotFoundError
        """
        model_id = self._model_id(name)
        with self.db.session() as session:
            return self._get(session, model_id, channel_id)

    def update(self, name: str, channel_id: str, change: ChannelUpdate) -> Channel:
        """Change a channel (a new config replaces the old one whole).

        Raises
        ------
        InvalidInputError, NotFoundError
        """
        model_id = self._model_id(name)
        with self.db.transaction() as session:
            channel = self._get(session, model_id, channel_id)
            if change.config is not None:
                check_channel(channel.kind, change.config)
                channel.config = orjson.loads(change.config.model_dump_json())
            if change.min_severity is not None:
                channel.min_severity = change.min_severity
            if change.rate_limit_per_minute is not None:
                channel.rate_limit_per_minute = change.rate_limit_per_minute
            if change.enabled is not None:
                channel.enabled = change.enabled
            channel.updated_at = utcnow()
        return channel

    def delete(self, name: str, channel_id: str) -> None:
        """Remove a channel and its queued alerts.

        Raises
        ------
        service.errors.NotFoundError
        """
        model_id = self._model_id(name)
        with self.db.transaction() as session:
            session.delete(self._get(session, model_id, channel_id))

    def alerts(
        self, name: str, channel_id: str, status: str | None, offset: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of a channel's alerts, newest first.

        Raises
        ------
        service.errors.NotFoundError
        """
        model_id = self._model_id(name)
        with self.db.session() as session:
            self._get(session, model_id, channel_id)
            where = [Alert.channel_id == channel_id]
            if status is not None:
                where.append(Alert.status == status)
            total = session.execute(select(func.count()).select_from(Alert).where(*where))
            rows = session.execute(
                select(Alert).where(*where).order_by(Alert.id.desc()).offset(offset).limit(limit)
            ).scalars()
            return list(rows), int(total.scalar_one())
