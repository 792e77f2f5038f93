"""Time of the stream's flush into the stored history: 1,000 series of the bench's model.

    OMP_NUM_THREADS=1 python benchmarks/results/stream/flush_growth.py 192
    OMP_NUM_THREADS=1 python benchmarks/results/stream/flush_growth.py 8 --steps-per-flush 10

By default, as the history grows: half of each step's batch bodies, a flush, then the other
half (so the series reach the store interleaved in time, as they do from independent
clients); mean and max per block of 16 flushes. With ``--steps-per-flush N``: N whole steps
(1,000 points each) between flushes, and each flush's wall and CPU milliseconds (the first
starts the history, a new generation).
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flushes", type=int, nargs="?", default=80)
    parser.add_argument("--steps-per-flush", type=int, default=0, help="0: half-step interleave")
    args = parser.parse_args()
    torch.set_num_threads(1)
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
    step = 100_000
    for k in range(args.flushes):
        if args.steps_per_flush:
            for _ in range(args.steps_per_flush):
                asyncio.run(run(step, range(10)))
                step += 1
            gc.freeze()
        else:
            asyncio.run(run(step, range(5)))
        started, cpu = time.perf_counter(), time.process_time()
        moved = streams.flush()
        block.append(time.perf_counter() - started)
        if args.steps_per_flush:
            print(
                f"{moved} rows: wall {block[-1] * 1e3:.0f} ms, "
                f"cpu {(time.process_time() - cpu) * 1e3:.0f} ms",
                flush=True,
            )
            continue
        asyncio.run(run(step, range(5, 10)))
        step += 1
        if len(block) == 16:
            report("flushes", k - 14, block, f" ({moved} rows each)")
            block = []


if __name__ == "__main__":
    main()
