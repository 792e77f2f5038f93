"""One APIRouter per resource."""

from service.routers import (
    channels,
    data,
    docs,
    events,
    health,
    jobs,
    keys,
    labels,
    models,
    schedules,
    scoring,
    streams,
    versions,
)

__all__ = [
    "channels",
    "data",
    "docs",
    "events",
    "health",
    "jobs",
    "keys",
    "labels",
    "models",
    "schedules",
    "scoring",
    "streams",
    "versions",
]
