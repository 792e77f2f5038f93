"""In-process worker time per point of the stream endpoint, without HTTP: 1,000 series of the
bench's model, ten batch bodies of 100 series at once per round, after a window of warm-up
rounds (``bench_stream.profile_in_process``, whose cProfile listing is left out here).

    OMP_NUM_THREADS=1 python benchmarks/results/stream/worker_inprocess.py 40

The argument is the number of rounds (1,000 points each). Run it on each revision in turn (a
worktree's own copy): the figure is the seconds inside the batcher's worker call per point,
and the wall seconds per point with the event loop's parsing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ (bench_stream)
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

import torch
from bench_stream import prepare, profile_in_process

PER_REQUEST, CONCURRENT = 100, 10


def main() -> None:
    torch.set_num_threads(1)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    data = Path(tempfile.mkdtemp()) / "data"
    prepare(data, PER_REQUEST * CONCURRENT)
    points = rounds * PER_REQUEST * CONCURRENT
    report = profile_in_process(data, points, PER_REQUEST, CONCURRENT, top=0)
    print(report.splitlines()[0])


if __name__ == "__main__":
    main()
