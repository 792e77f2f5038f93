"""The server process's garbage-collection policy: long-lived objects kept out of full
collections.

A full (generation 2) collection walks every object the process tracks: a thousand live
monitors, their states and the models make it a pause of 145-156 ms in a server taking 1,200
stream points a second, and every request waiting through it takes the pause in its latency
(it was the stream benchmark's p99). Every ``freeze_interval_s`` this policy freezes what is
alive (:func:`gc.freeze`), so that later full collections walk only the objects made since
(6-11 ms in the same run). Objects frozen while inside a garbage cycle would never be freed,
so every ``full_interval_s`` it unfreezes everything and runs one full collection, which
reclaims them: at most one interval's cyclic garbage is held back, for one full pause per
interval. Objects without cycles are freed by reference counting either way.

``reconad serve`` runs it (``RECONAD_GC_FREEZE_INTERVAL_S``, ``RECONAD_GC_FULL_INTERVAL_S``);
the library and the test processes keep Python's default collector.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["GcPolicy"]

logger = logging.getLogger(__name__)


class GcPolicy:
    """Freeze the live objects every ``freeze_interval_s``; unfreeze and collect them all every
    ``full_interval_s`` (:meth:`tick` decides, :meth:`start` runs it on a daemon thread)."""

    def __init__(
        self,
        freeze_interval_s: float,
        full_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < freeze_interval_s <= full_interval_s:
            raise ValueError(
                "the freeze interval must be positive and at most the full-collection interval"
            )
        self.freeze_interval_s = freeze_interval_s
        self.full_interval_s = full_interval_s
        self._clock = clock
        self._last_full = clock()

    def tick(self) -> Literal["freeze", "full"]:
        """One step: a full collection when its interval has passed, else a freeze."""
        now = self._clock()
        if now - self._last_full >= self.full_interval_s:
            gc.unfreeze()
            started = time.perf_counter()
            gc.collect()
            logger.debug("full collection in %.1f ms", (time.perf_counter() - started) * 1000)
            self._last_full = now
            gc.freeze()
            return "full"
        gc.freeze()
        return "freeze"

    def start(self) -> threading.Thread:
        """Run :meth:`tick` every ``freeze_interval_s`` on a daemon thread (it ends with the
        process)."""

        def loop() -> None:
            while True:
                time.sleep(self.freeze_interval_s)
                self.tick()

        thread = threading.Thread(target=loop, name="gc-policy", daemon=True)
        thread.start()
        return thread
