"""One APIRouter per resource."""

from service.routers import data, health, jobs, models, schedules, scoring, versions

__all__ = ["data", "health", "jobs", "models", "schedules", "scoring", "versions"]
