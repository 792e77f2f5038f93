"""Time of the stream's flush into the stored history as the history grows: 1,000 series of
the bench's model, half of each step's batch bodies, a flush, then the other half (so the
series reach the store interleaved in time, as they do from independent clients).

    OMP_NUM_THREADS=1 python benchmarks/results/stream/flush_growth.py 192
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ (bench_stream)
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

import torch
from bench_stream import _body, prepare
from history_appends import report  # this folder

from service.context import AppContext
from service.settings import Settings


def main() -> None:
    torch.set_num_threads(1)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    data = Path(tempfile.mkdtemp()) / "data"
    prepare(data, 1000)
    ctx = AppContext.build(Settings(data_dir=data, bootstrap_admin_key=False, log_level="WARNING"))
    streams = ctx.live.streams

    async def run(step: int, groups: range) -> None:
        await asyncio.gather(*(streams.ingest("bench", _body(s, step, 100)) for s in groups))

    # as the server's collector policy does (service/gc_policy.py): the monitors alive are not
    # walked by every full collection, so the figures are the flush's own
    gc.freeze()
    block: list[float] = []
    for k in range(steps):
        asyncio.run(run(100_000 + k, range(5)))
        started = time.perf_counter()
        moved = streams.flush()
        block.append(time.perf_counter() - started)
        asyncio.run(run(100_000 + k, range(5, 10)))
        if len(block) == 16:
            report("flushes", k - 14, block, f" ({moved} rows each)")
            block = []


if __name__ == "__main__":
    main()
