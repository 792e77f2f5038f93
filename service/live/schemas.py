"""Request and response schemas of the live-detection routes (streams, events, channels)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.live.channels import ChannelConfig
from service.registry import NAME_PATTERN
from service.schemas import _FromRow, _RowView
from service.tables import AnomalyEvent, Channel

__all__ = [
    "AlertPublic",
    "AlertsPublic",
    "ChannelCreate",
    "ChannelPublic",
    "ChannelsPublic",
    "EventPublic",
    "EventsPublic",
    "StreamPoints",
    "StreamPublic",
    "StreamsPublic",
]


class StreamSeries(BaseModel):
    """New points of one series."""

    model_config = ConfigDict(extra="forbid")

    series: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The series (a value of the model's key column); leave out for a model "
        "without one.",
    )
    timestamps: list[str | float] = Field(
        description="Strictly increasing ISO-8601 strings or epoch seconds, one per point."
    )
    values: dict[str, list[float | None]] = Field(
        description="Feature name -> one number (or null for missing) per timestamp."
    )
    options: dict[str, Any] | None = Field(
        None,
        description="Monitor options (sensitivity 0-100, min_duration, merge_gap, ...), taken "
        "when the series starts; fixed afterwards.",
    )


class StreamPoints(StreamSeries):
    """A stream request: one series, or ``batch`` for several (then give only ``batch``)."""

    batch: list[StreamSeries] | None = Field(None, description="Several series in one request.")
    expected: bool = Field(True, description="Return the expected (reconstructed) values.")


def _none_if_empty(value: Any) -> Any:
    return value or None  # the tables store "" for a model without a series key


class StreamPublic(_FromRow):
    """A live series."""

    series: str | None
    version: int
    options: dict[str, Any]
    n_points: int
    last_timestamp: datetime | None = Field(validation_alias="last_ts")
    created_at: datetime
    updated_at: datetime

    _series = field_validator("series", mode="before")(_none_if_empty)


class StreamsPublic(BaseModel):
    """A page of live series."""

    data: list[StreamPublic]
    count: int


class EventPublic(_FromRow):
    """An anomaly event."""

    id: int
    model: str
    series: str | None
    status: Literal["open", "closed"]
    start: datetime
    end: datetime
    peak: float = Field(description="Largest normalised score (score / threshold).")
    mean: float = Field(description="Mean normalised score.")
    severity: float = Field(description="0-1.")
    n_points: int
    top_features: list[tuple[str, float]]
    version: int = Field(description="Model version that last updated the event.")
    acknowledged_at: datetime | None
    acknowledged_by: str | None

    _series = field_validator("series", mode="before")(_none_if_empty)

    @classmethod
    def from_row(cls, ev: AnomalyEvent, model: str) -> EventPublic:
        """:meth:`of` with the model's name (what the routes and the console call)."""
        return cls.of(ev, model=model)


class EventsPublic(BaseModel):
    """A page of events."""

    data: list[EventPublic]
    count: int


class ChannelCreate(BaseModel):
    """A new notification channel."""

    # what check_channel_config asks of the kind's config, in the schema too
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "webhook"}}},
            "then": {
                "properties": {
                    "config": {"required": ["secret"], "properties": {"secret": {"type": "string"}}}
                }
            },
            "else": {"properties": {"config": {"properties": {"secret": {"type": "null"}}}}},
        },
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    kind: Literal["webhook", "alertmanager"]
    config: ChannelConfig
    min_severity: float = Field(
        0.0, ge=0, le=1, description="Alert on events at least this severe."
    )
    rate_limit_per_minute: int = Field(
        60, ge=1, le=100_000, description="Most deliveries a minute; more wait their turn."
    )
    enabled: bool = True


class ChannelPublic(_FromRow):
    """A channel (its secret is never shown)."""

    id: str
    name: str
    kind: str
    url: str
    timeout_s: float
    max_attempts: int
    labels: dict[str, str]
    has_secret: bool
    min_severity: float
    rate_limit_per_minute: int
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _settings(cls, data: Any) -> Any:
        """A row's delivery settings (its stored config, defaults filled) as its attributes."""
        if not isinstance(data, Channel):
            return data
        config = ChannelConfig.model_validate(data.config)
        return _RowView(data, {**config.model_dump(mode="json"), "has_secret": bool(config.secret)})


class ChannelsPublic(BaseModel):
    """A model's channels."""

    data: list[ChannelPublic]
    count: int


class AlertPublic(_FromRow):
    """One outbox row: an event state queued for a channel."""

    id: int
    event_id: int
    state: Literal["firing", "resolved"]
    idempotency_key: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AlertsPublic(BaseModel):
    """A page of a channel's alerts."""

    data: list[AlertPublic]
    count: int
