"""Anomaly events: list, show, acknowledge, label."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from service.deps import AnyKey, LabelsDep, LiveDep, ScoreKey, WriteKey
from service.errors import InvalidInputError
from service.labels import OVERLAP_RULE
from service.live.schemas import EventPublic, EventsPublic
from service.routers.params import API_PREFIX, Limit, Offset
from service.schemas import EventLabel, LabelPublic

router = APIRouter(prefix=API_PREFIX + "/events", tags=["events"])

EventId = Annotated[int, Path(ge=1, le=2**62, description="Event id.")]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("", response_model=EventsPublic)
def list_events(
    live: LiveDep,
    _key: ScoreKey,
    model: Annotated[str | None, Query(max_length=64, description="Model name.")] = None,
    series: Annotated[str | None, Query(max_length=200, description="Series name.")] = None,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
    start: Annotated[datetime | None, Query(description="Events ending at or after.")] = None,
    end: Annotated[datetime | None, Query(description="Events starting before.")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> EventsPublic:
    """Events, newest first, by model, series, time range and status."""
    lo, hi = _utc(start), _utc(end)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidInputError("start must be before end")
    rows, total = live.events.list_events(model, series, status, lo, hi, offset, limit)
    return EventsPublic(data=[EventPublic.from_row(ev, m) for ev, m in rows], count=total)


@router.get("/{event_id}", response_model=EventPublic)
def get_event(event_id: EventId, live: LiveDep, _key: AnyKey) -> EventPublic:
    """One event."""
    ev, model = live.events.get(event_id)
    return EventPublic.from_row(ev, model)


@router.post("/{event_id}/acknowledge", response_model=EventPublic)
def acknowledge_event(event_id: EventId, live: LiveDep, key: WriteKey) -> EventPublic:
    """Mark the event seen (by the calling key); acknowledging twice keeps the first."""
    ev, model = live.events.acknowledge(event_id, key.key_id)
    return EventPublic.from_row(ev, model)


@router.post(
    "/{event_id}/label",
    response_model=LabelPublic,
    status_code=status.HTTP_201_CREATED,
    description="Say whether the event is a real anomaly ('anomaly') or not ('normal'): a "
    "label spanning the event (as it is now) and linked to it, in the model's labels. An event "
    "labelled 'normal' is remembered by its series' live monitor: a window like it raises no "
    f"flag any more. Acknowledging is separate. {OVERLAP_RULE}",
)
async def label_event(
    event_id: EventId, body: EventLabel, labels: LabelsDep, key: WriteKey
) -> LabelPublic:
    """Label the event."""
    row, model = await labels.label_event(event_id, body.verdict, body.note, key.key_id)
    return LabelPublic.of(row, model=model)
