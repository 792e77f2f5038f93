"""In-process worker time per point of the stream endpoint, without HTTP: 1,000 series of the
bench's model, ten batch bodies of 100 series at once per round, after 20 rounds of warm-up.

    OMP_NUM_THREADS=1 python benchmarks/results/stream/worker_inprocess.py 40

Run it on each revision in turn (a worktree's own copy): the figure is the seconds inside the
batcher's worker call per point, and the wall seconds per point with the event loop's parsing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ (bench_stream)
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

import torch
from bench_stream import _body, prepare

from service.context import AppContext
from service.settings import Settings

PER_REQUEST, CONCURRENT = 100, 10


def main() -> None:
    torch.set_num_threads(1)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    data = Path(tempfile.mkdtemp()) / "data"
    prepare(data, PER_REQUEST * CONCURRENT)
    ctx = AppContext.build(Settings(data_dir=data, bootstrap_admin_key=False, log_level="WARNING"))
    streams = ctx.live.streams

    async def run(first: int, n: int) -> None:
        for r in range(n):
            bodies = (_body(s, first + r, PER_REQUEST) for s in range(CONCURRENT))
            await asyncio.gather(*(streams.ingest("bench", b) for b in bodies))

    asyncio.run(run(100_000, 20))
    apply = streams.batcher.run
    worker = [0.0]

    def timed(jobs: list[Any]) -> Any:
        started = time.perf_counter()
        try:
            return apply(jobs)
        finally:
            worker[0] += time.perf_counter() - started

    streams.batcher.run = timed
    started = time.perf_counter()
    asyncio.run(run(100_020, rounds))
    points = rounds * PER_REQUEST * CONCURRENT
    wall = time.perf_counter() - started
    print(
        f"worker {worker[0] / points * 1e3:.3f} ms/pt, wall {wall / points * 1e3:.3f} ms/pt, "
        f"{points} points"
    )


if __name__ == "__main__":
    main()
