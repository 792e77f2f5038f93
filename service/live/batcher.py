"""Group commit for the stream endpoint: concurrent requests applied together in one worker call.

Requests queue on the running event loop; one drainer per loop takes up to ``max_batch`` of them
(after waiting ``max_wait_s`` for more when the batch is not full) and hands them to ``run`` in a
worker thread. While a batch runs, new requests queue, so under load batches grow by themselves
and one database commit (one fsync) serves many requests. ``run`` answers each job apart: a
result, or the exception that job alone raised. The queue is bounded: a request beyond
``max_queue`` waiting ones gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import TooManyRequestsError

__all__ = ["Batcher"]

J = TypeVar("J")
R = TypeVar("R")


@dataclass
class _Lane(Generic[J, R]):
    """The queue and drainer of one event loop."""

    queue: deque[tuple[J, asyncio.Future[R]]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Batcher(Generic[J, R]):
    """Collects jobs that arrive together and runs them as one batch in a worker thread.

    Parameters
    ----------
    run
        Applies a batch (in arrival order) and returns one entry per job: its result or the
        exception to raise for it. An exception raised by ``run`` itself fails every job of
        the batch.
    max_batch
        Most jobs in one call of ``run``.
    max_wait_s
        How long to wait for more jobs before running a batch that is not full.
    max_queue
        Most jobs waiting; beyond, :meth:`submit` raises :class:`TooManyRequestsError`.
    """

    def __init__(
        self,
        run: Callable[[list[J]], Sequence[R | BaseException]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._lanes: dict[asyncio.AbstractEventLoop, _Lane[J, R]] = {}

    def waiting(self) -> int:
        """Jobs queued on the running loop (not counting the batch in progress)."""
        lane = self._lanes.get(asyncio.get_running_loop())
        return 0 if lane is None else len(lane.queue)

    async def submit(self, job: J) -> R:
        """Queue ``job`` and return its result once its batch ran.

        Raises
        ------
        TooManyRequestsError
            When ``max_queue`` jobs are waiting already.
        """
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            self._lanes = {lp: ln for lp, ln in self._lanes.items() if not lp.is_closed()}
            lane = self._lanes[loop] = _Lane()
        if len(lane.queue) >= self.max_queue:
            raise TooManyRequestsError(
                f"{len(lane.queue)} stream requests are waiting (stream_queue_max): slow "
                "down, or send several points or series per request",
                retry_after_s=1,
            )
        future: asyncio.Future[R] = loop.create_future()
        lane.queue.append((job, future))
        if lane.task is None or lane.task.done():
            lane.task = loop.create_task(self._drain(lane))
        return await future

    async def _drain(self, lane: _Lane[J, R]) -> None:
        while lane.queue:
            if self.max_wait_s > 0 and len(lane.queue) < self.max_batch:
                await asyncio.sleep(self.max_wait_s)
            taken = [lane.queue.popleft() for _ in range(min(self.max_batch, len(lane.queue)))]
            try:
                answers = await asyncio.to_thread(self.run, [job for job, _ in taken])
            except Exception as exc:  # the whole batch failed (its transaction did not commit)
                answers = [exc] * len(taken)
            for (_, future), answer in zip(taken, answers, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
