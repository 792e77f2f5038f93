"""One APIRouter per resource."""

from service.routers import (
    data,
    docs,
    health,
    jobs,
    keys,
    models,
    schedules,
    scoring,
    versions,
)

__all__ = [
    "data",
    "docs",
    "health",
    "jobs",
    "keys",
    "models",
    "schedules",
    "scoring",
    "versions",
]
