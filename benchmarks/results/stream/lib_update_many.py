"""Library figure of summary.md: worker (process) time of one-point updates of 100 monitors of
one model, ``update`` of each vs ``Monitor.update_points`` of all (when the code has it).

    BENCH_CODE=../base PYTHONPATH=../base python lib_update_many.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ (bench_stream)
from bench_stream import CONFIG, _train_frame

import detector
from detector import DetectorConfig, Monitor, create_detector

N, ROUNDS = 100, 20
BASE = pd.Timestamp("2026-11-02", tz="UTC")


def frame(s: int, k: int) -> pd.DataFrame:
    idx = pd.DatetimeIndex([BASE + pd.Timedelta(seconds=10 * k)], name="timestamp")
    values = {"cpu": [np.sin(k / 10 + s)], "mem": [np.cos(k / 10 + s)], "host": [f"h{s % 8}"]}
    return pd.DataFrame(values, index=idx)


def main() -> None:
    print(f"code: {Path(detector.__file__).parents[1]}")
    det = create_detector(DetectorConfig.model_validate(CONFIG)).fit(_train_frame(8))
    monitors = [det.monitor(expected=True) for _ in range(N)]
    for k in range(20):  # a window of context
        for s, m in enumerate(monitors):
            m.update(frame(s, k))
    frames = [[frame(s, k) for s in range(N)] for k in range(20, 20 + 2 * ROUNDS)]
    started = time.process_time()
    for k in range(ROUNDS):
        for s, m in enumerate(monitors):
            m.update(frames[k][s])
    each = (time.process_time() - started) / (ROUNDS * N) * 1000
    print(f"update, one monitor at a time: {each:.3f} ms per point")
    if hasattr(Monitor, "update_points"):
        from detector.monitor import Points

        points = [
            [Points(f[["cpu", "mem"]].to_numpy(), f.index, str(f["host"].iloc[0])) for f in fr]
            for fr in frames
        ]
        started = time.process_time()
        for k in range(ROUNDS, 2 * ROUNDS):
            Monitor.update_points(monitors, points[k])
        many = (time.process_time() - started) / (ROUNDS * N) * 1000
        print(f"update_points, {N} monitors at once: {many:.3f} ms per point ({each / many:.1f}x)")


if __name__ == "__main__":
    main()
