"""One APIRouter per resource; :data:`ROUTERS` is the one list of them, in matching order."""

from fastapi import APIRouter

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

#: Every resource's router in the order the app matches them: the health probes, the hot
#: scoring route right after them, then the rest. The docs router is built per app
#: (:func:`docs.build_router`, it depends on the settings).
ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router
    for module in (
        health,
        scoring,
        streams,
        models,
        versions,
        data,
        jobs,
        schedules,
        keys,
        events,
        channels,
        labels,
    )
)

__all__ = ["ROUTERS", "docs"]
