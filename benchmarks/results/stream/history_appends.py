"""Cost of appending streamed rows to a long stored history: a model's history holds
``--stored`` rows of 1,000 series (one part), then ``--appends`` appends of 1,000 rows each (one
point of every series, as a flush brings them); mean and max seconds per block of 16 appends.

    python benchmarks/results/stream/history_appends.py --stored 2000000 --appends 128
    python benchmarks/results/stream/history_appends.py --stored 2000000 --interleave
    python benchmarks/results/stream/history_appends.py --stored 2000000 --max-points 1800000

With ``--max-points`` the store keeps that many rows (:class:`service.storage.Retention`): the
append that takes the history an eighth past it trims the oldest rows, and its own time is
printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

from service.storage import LocalHistoryStore, Retention

SERIES = 1000


def rows(first_step: int, steps: int) -> pd.DataFrame:
    """One point of every series per 10-second step."""
    step = np.repeat(np.arange(first_step, first_step + steps), SERIES)
    index = pd.DatetimeIndex(
        pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(step * 10, unit="s"),
        name="timestamp",
    )
    n = len(step)
    rng = np.random.default_rng(first_step)
    return pd.DataFrame(
        {
            "cpu": rng.standard_normal(n),
            "mem": rng.standard_normal(n),
            "host": np.tile([f"h{s}" for s in range(SERIES)], steps),
        },
        index=index,
    )


def report(label: str, first: int, seconds: list[float], extra: str = "") -> None:
    """One line of a block of timings: its range, mean and max in milliseconds."""
    print(
        f"{label} {first}-{first + len(seconds) - 1}{extra}: mean "
        f"{np.mean(seconds) * 1e3:.0f} ms, max {max(seconds) * 1e3:.0f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=2_000_000)
    parser.add_argument("--appends", type=int, default=128)
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="each append: the second half of the series at one step, the first half at the "
        "next (so every append overlaps the stored time range, as flushes of independent "
        "series do)",
    )
    parser.add_argument("--max-points", type=int, default=None)
    args = parser.parse_args()
    retention = None if args.max_points is None else Retention(args.max_points)
    store = LocalHistoryStore(Path(tempfile.mkdtemp()) / "history", retention)
    steps = args.stored // SERIES
    stored = rows(0, steps)
    if args.interleave:  # the last step's second half comes with the first append
        stored = stored.iloc[: len(stored) - SERIES // 2]
    store.append("m", stored, key_column="host")
    block: list[float] = []
    for k in range(args.appends):
        frame = rows(steps + k, 1)
        if args.interleave:
            half = SERIES // 2
            frame = pd.concat([rows(steps + k - 1, 1).iloc[half:], frame.iloc[:half]])
        started = time.perf_counter()
        before = store.summary("m").points
        store.append("m", frame, key_column="host")
        block.append(time.perf_counter() - started)
        after = store.summary("m").points
        if after < before:
            print(
                f"append {k} trimmed {before + len(frame):,} -> {after:,} rows: "
                f"{block[-1] * 1e3:.0f} ms",
                flush=True,
            )
        if len(block) == 16:
            report("appends", k - 14, block, f", parts {store.summary('m').parts}")
            block = []


if __name__ == "__main__":
    main()
