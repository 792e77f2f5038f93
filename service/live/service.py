"""The live-detection services of one app, built together and started by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

from service.db import Database
from service.live.channels import ChannelService
from service.live.dispatcher import AlertDispatcher
from service.live.events import EventCountsCollector, EventService
from service.live.streams import StreamService
from service.observability import Metrics
from service.scoring import ScoringService
from service.settings import Settings
from service.storage import HistoryStore

__all__ = ["LiveServices"]

#: Seconds between two housekeeping passes: alerts past their retention, events before the
#: stored history.
HOUSEKEEPING_EVERY_S = 3600.0

logger = logging.getLogger(__name__)


@dataclass
class LiveServices:
    """Streams, events, channels, the alert dispatcher and the stream-history flusher."""

    settings: Settings
    streams: StreamService
    events: EventService
    channels: ChannelService
    dispatcher: AlertDispatcher
    _flusher: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        scoring: ScoringService,
        history: HistoryStore,
        metrics: Metrics,
    ) -> LiveServices:
        """Create the services (nothing runs yet)."""
        dispatcher = AlertDispatcher(
            db,
            poll_interval_s=settings.alert_poll_interval_s,
            batch_size=settings.alert_batch_size,
            claim_s=settings.alert_claim_s,
            backoff_s=settings.alert_backoff_s,
            backoff_max_s=settings.alert_backoff_max_s,
            retention=timedelta(days=settings.alert_retention_days),
        )
        streams = StreamService(
            db,
            scoring,
            history,
            max_points=settings.stream_max_points_per_request,
            max_series=settings.stream_max_series,
            dedup_points=settings.stream_dedup_points,
            cache_size=settings.stream_cache_size,
            batch_max=settings.stream_batch_max,
            batch_wait_ms=settings.stream_batch_wait_ms,
            queue_max=settings.stream_queue_max,
            memory_events=settings.normal_memory_events,
            public_url=settings.public_url,
            on_alerts=dispatcher.notify,
            max_buffered=settings.stream_max_buffered_points,
            retry_after_s=max(1, math.ceil(settings.stream_flush_interval_s)),
        )
        events = EventService(db)
        metrics.registry.register(EventCountsCollector(events.counts))
        return cls(
            settings=settings,
            streams=streams,
            events=events,
            channels=ChannelService(db, scoring.registry, settings.max_channels_per_model),
            dispatcher=dispatcher,
        )

    def start(self) -> None:
        """Start the dispatcher and the flusher on the running loop."""
        self.dispatcher.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Move buffered points to the stored history every flush interval, and keep house
        every hour (:meth:`_housekeeping`)."""
        pruned_at: float | None = None
        while True:
            await asyncio.sleep(self.settings.stream_flush_interval_s)
            try:
                await asyncio.to_thread(self.streams.flush)
            except Exception:
                logger.exception("moving streamed points to the stored history failed")
            if pruned_at is None or time.monotonic() - pruned_at >= HOUSEKEEPING_EVERY_S:
                pruned_at = time.monotonic()
                try:
                    await asyncio.to_thread(self._housekeeping)
                except Exception:
                    logger.exception("deleting old alerts and events failed")

    def _housekeeping(self) -> None:
        """Delete the alerts past their retention, then the events before the stored history
        (their remaining alerts go with them)."""
        self.dispatcher.prune()
        self.streams.prune_events()

    async def stop(self) -> None:
        """Stop both loops and move what is buffered into the stored history."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.dispatcher.stop()
        try:
            await asyncio.to_thread(self.streams.flush)
        except Exception:
            logger.exception("final flush of streamed points failed; they stay buffered")
