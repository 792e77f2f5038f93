"""Deleting models and versions: the one place that knows what else a deletion touches.

A model's deletion stops its jobs (queued ones are cancelled, running ones asked to stop),
deletes its rows, artifacts and history (:meth:`ModelRegistry.delete_model`) and unloads its
versions from the scoring cache; a version's deletion removes the row and artifact and unloads
it. Database and store work runs in a worker thread; the cache is touched on the event loop,
which owns it. Rows that hang off the model in the metadata database (streams, events, labels,
channels) go with its row by foreign-key cascade; anything that later keeps per-model state
elsewhere hooks in here.
"""

from __future__ import annotations

import asyncio
import logging

from service.jobs.service import JobService
from service.registry import ModelRegistry
from service.scoring import ScoringService

__all__ = ["DeletionService"]

logger = logging.getLogger(__name__)


class DeletionService:
    """Deletes models and versions with everything that depends on them.

    Parameters
    ----------
    registry, jobs, scoring
        The services a deletion coordinates.
    """

    def __init__(self, registry: ModelRegistry, jobs: JobService, scoring: ScoringService) -> None:
        self.registry = registry
        self.jobs = jobs
        self.scoring = scoring

    async def delete_model(self, name: str) -> None:
        """Delete a model with its versions, jobs (running ones are stopped), schedules and data.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model.
        """

        def delete() -> str:
            model = self.registry.get_model(name)
            self.jobs.cancel_for_model(model.id)
            self.registry.delete_model(name)
            return model.id

        model_id = await asyncio.to_thread(delete)
        self.scoring.cache.drop_model(model_id)

    async def delete_version(self, name: str, version: int) -> None:
        """Delete a version that is not active (its number is never reused).

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        service.errors.ConflictError
            When it is the active version.
        """

        def delete() -> str:
            model = self.registry.get_model(name)
            self.registry.delete_version(name, version)
            return model.id

        model_id = await asyncio.to_thread(delete)
        self.scoring.cache.drop(model_id, version)
