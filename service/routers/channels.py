"""Notification channels of a model (webhook, Alertmanager) and their alerts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status
from starlette.responses import Response

from service.deps import AdminKey, LiveDep, ScoreKey, WriteKey
from service.live.channels import ChannelUpdate
from service.live.schemas import (
    AlertPublic,
    AlertsPublic,
    ChannelCreate,
    ChannelPublic,
    ChannelsPublic,
)
from service.routers.params import API_PREFIX, Limit, ModelName, Offset

router = APIRouter(prefix=API_PREFIX + "/models/{name}/channels", tags=["channels"])

ChannelId = Annotated[str, Path(min_length=1, max_length=64, description="Channel id.")]


@router.post("", response_model=ChannelPublic, status_code=status.HTTP_201_CREATED)
def create_channel(
    name: ModelName, body: ChannelCreate, live: LiveDep, _key: WriteKey
) -> ChannelPublic:
    """Add a channel; the model's events are sent to it from now on."""
    row = live.channels.create(
        name,
        body.name,
        body.kind,
        body.config,
        body.min_severity,
        body.rate_limit_per_minute,
        body.enabled,
    )
    return ChannelPublic.of(row)


@router.get("", response_model=ChannelsPublic)
def list_channels(name: ModelName, live: LiveDep, _key: ScoreKey) -> ChannelsPublic:
    """The model's channels."""
    rows = live.channels.list_channels(name)
    return ChannelsPublic(data=[ChannelPublic.of(r) for r in rows], count=len(rows))


@router.get("/{channel_id}", response_model=ChannelPublic)
def get_channel(
    name: ModelName, channel_id: ChannelId, live: LiveDep, _key: ScoreKey
) -> ChannelPublic:
    """One channel."""
    return ChannelPublic.of(live.channels.get(name, channel_id))


@router.patch("/{channel_id}", response_model=ChannelPublic)
def update_channel(
    name: ModelName, channel_id: ChannelId, body: ChannelUpdate, live: LiveDep, _key: WriteKey
) -> ChannelPublic:
    """Change a channel (a new ``config`` replaces the old one whole, secret included)."""
    return ChannelPublic.of(live.channels.update(name, channel_id, body))


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_channel(
    name: ModelName, channel_id: ChannelId, live: LiveDep, _key: AdminKey
) -> Response:
    """Remove a channel and its queued alerts."""
    live.channels.delete(name, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{channel_id}/alerts", response_model=AlertsPublic)
def list_alerts(
    name: ModelName,
    channel_id: ChannelId,
    live: LiveDep,
    _key: ScoreKey,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> AlertsPublic:
    """The channel's alerts, newest first: what was delivered, what waits, what failed."""
    rows, total = live.channels.alerts(name, channel_id, status, offset, limit)
    return AlertsPublic(data=[AlertPublic.of(a) for a in rows], count=total)
