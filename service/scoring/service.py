"""The scoring service: resolve a model's version, load it through the cache, batch, answer.

:meth:`ScoringService.score` parses the body with :class:`ScoreRequest` (in a worker thread for
large bodies), resolves the model's active (or pinned) version (the active version is cached
for ``model_meta_ttl_s`` and dropped at once when this process promotes), gets the loaded
detector from :class:`DetectorCache` and queues the request on the :class:`MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from detector import load_detector
from service.columnar import JSON, columnar_type
from service.live.monitoring import LabelRefit
from service.observability import Metrics
from service.registry import ModelRegistry
from service.scoring.batcher import BulkThreads, MicroBatcher
from service.scoring.cache import DetectorCache, LoadedVersion
from service.scoring.request import DEFAULT_MAX_VALUES, ScoreRequest
from service.storage import ArtifactStore
from service.tables import utcnow

__all__ = ["ScoringService"]

logger = logging.getLogger(__name__)

_INLINE_PARSE_BYTES = 256 * 1024  # larger bodies are parsed in a worker thread
_INLINE_FRAME_POINTS = 50_000  # longer series are framed in a worker thread


class ScoringService:
    """Resolves versions, keeps loaded detectors and scores requests.

    Parameters
    ----------
    registry
        Where models and versions are looked up.
    artifacts
        Where version artifacts are read from.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    cache_size, max_points, max_values, batch_max_windows, batch_wait_s, inference_threads,
    meta_ttl_s, bulk_torch_threads, bulk_torch_min_points
        See :class:`service.settings.Settings`.
    metrics
        The app's metrics.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        artifacts: ArtifactStore,
        metrics: Metrics,
        *,
        device: str = "auto",
        cache_size: int = 8,
        max_points: int = 2_000_000,
        max_values: int = DEFAULT_MAX_VALUES,
        batch_max_windows: int = 4096,
        batch_wait_s: float = 0.0,
        inference_threads: int = 1,
        meta_ttl_s: float = 1.0,
        inline_max_cells: int = 0,
        scored_at_resolution_s: float = 60.0,
        bulk_torch_threads: int = 0,
        bulk_torch_min_points: int = 100_000,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.device = device
        self.max_points = max_points
        self.max_values = max_values
        self.meta_ttl_s = meta_ttl_s
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(inference_threads, thread_name_prefix="inference")
        self.cache = DetectorCache(cache_size, on_size=metrics.models_loaded.set)
        self.batcher = MicroBatcher(
            self.executor,
            batch_max_windows,
            batch_wait_s,
            metrics,
            inline_max_cells,
            BulkThreads(bulk_torch_threads, bulk_torch_min_points),
        )
        self._meta: dict[str, tuple[float, str, int | None]] = {}
        self.scored_at_resolution_s = scored_at_resolution_s
        self._scored_at: dict[str, float] = {}  # model id -> when this process last wrote it
        self._marking: set[asyncio.Task[None]] = set()
        registry.on_change(self.forget)

    def forget(self, name: str) -> None:
        """Drop the cached active version of a model (called when it changes here)."""
        self._meta.pop(name, None)

    def note_scored(self, model_id: str) -> None:
        """Record that a model has just scored (its ``last_scored_at``), off the request's path.

        The hot path pays a dict lookup: this process writes a model's time at most once per
        ``scored_at_resolution_s`` (one conditional UPDATE, in a worker thread, see
        :meth:`ModelRegistry.mark_scored`), so the stored time may lag by that much. A failed
        write is logged; the request that scored is not affected. Call it on the event loop.
        """
        now = time.monotonic()
        last = self._scored_at.get(model_id)
        if last is not None and now - last < self.scored_at_resolution_s:
            return
        if len(self._scored_at) > 10_000:
            self._scored_at.clear()
        self._scored_at[model_id] = now
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._mark, model_id))
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    def _mark(self, model_id: str) -> None:
        try:
            self.registry.mark_scored(model_id, utcnow(), self.scored_at_resolution_s)
        except Exception:
            logger.warning("could not record the last scoring time", exc_info=True)

    def close(self) -> None:
        """Stop the inference threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _model(self, name: str) -> tuple[str, int | None]:
        cached = self._meta.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        model = await asyncio.to_thread(self.registry.get_model, name)
        self._meta[name] = (now + self.meta_ttl_s, model.id, model.active_version)
        if len(self._meta) > 10_000:
            self._meta.clear()
        return model.id, model.active_version

    async def resolve(self, name: str, version: int | None) -> LoadedVersion:
        """The loaded detector of a model's active version or of a pinned version.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        service.errors.ConflictError
            When the model has no active version and none is pinned.
        """
        model_id, active = await self._model(name)
        if version is None and active is None:
            # Make sure the answer is current before refusing.
            self.forget(name)
            model_id, active = await self._model(name)
        if version is None:
            if active is None:  # raises the explanatory ConflictError
                await asyncio.to_thread(self.registry.get_version, name, None)
            version = active
        assert version is not None
        number = version

        def load() -> LoadedVersion:
            model, row = self.registry.get_version(name, number)
            path = self.artifacts.fetch(row.artifact_key)
            detector = load_detector(path, device=self.device)
            logger.info("model version loaded", extra={"model": name, "version": number})
            key_column = (row.config or {}).get("key_column")
            refit = LabelRefit.of((row.metrics or {}).get("label_refit"))
            return LoadedVersion.of(model.id, model.name, number, detector, key_column, refit)

        return await self.cache.get((model_id, number), load)

    async def score(
        self,
        name: str,
        body: bytes,
        response_type: str = JSON,
        content_type: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> bytes:
        """Score a raw request body against a model; return the encoded response.

        Parameters
        ----------
        name, body
            The model and the request body: JSON, or a table when ``content_type`` names a
            :mod:`service.columnar` format.
        options
            The query parameters: the request fields of a table body; with a JSON body they
            take the place of the body's fields of the same name.
        response_type
            JSON or a :mod:`service.columnar` media type (the client's ``Accept``).

        Raises
        ------
        BadRequestError, InvalidInputError, PayloadTooLargeError, NotFoundError, ConflictError,
        detector.errors.InputError
        """
        table = columnar_type(content_type)
        if table is not None:
            request = await asyncio.to_thread(
                ScoreRequest.from_table, body, table, options or {}, self.max_points
            )
        elif len(body) > _INLINE_PARSE_BYTES:
            request = await asyncio.to_thread(
                ScoreRequest.from_body, body, self.max_points, self.max_values, options
            )
        else:
            request = ScoreRequest.from_body(body, self.max_points, self.max_values, options)
        request.answer_as(response_type)
        loaded = await self.resolve(name, request.version)
        frame: pd.DataFrame | None = None
        if request.windows is not None:
            request.windows_for(loaded.window, loaded.features)
        elif request.n_points > _INLINE_FRAME_POINTS:
            frame = await asyncio.to_thread(request.frame_for, loaded.features, loaded.key_column)
        else:
            frame = request.frame_for(loaded.features, loaded.key_column)
        out = await self.batcher.submit(loaded, request, frame)
        self.note_scored(loaded.model_id)
        return out
