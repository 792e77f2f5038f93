"""Time of ``Monitor.state_dict`` for a series with many closed events (a state is written for
every streamed point): the bench's model, a stream with a spike every 20 points.

    python benchmarks/results/stream/state_with_events.py
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ (bench_stream)
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

from bench_stream import CONFIG, _train_frame

from detector import DetectorConfig, create_detector


def main() -> None:
    det = create_detector(DetectorConfig.model_validate(CONFIG)).fit(_train_frame(8))
    n = 20_000
    t = np.arange(n)
    frame = pd.DataFrame(
        {"cpu": np.sin(2 * np.pi * t / 60), "mem": np.cos(2 * np.pi * t / 60), "host": "h0"},
        index=pd.date_range("2026-11-02", periods=n, freq="10s", tz="UTC", name="timestamp"),
    )
    frame.loc[frame.index[t % 20 == 10], "cpu"] += 8.0
    monitor = det.monitor(expected=True)  # as the service runs it
    monitor.update(frame)
    calls = 200
    seconds = timeit.timeit(monitor.state_dict, number=calls) / calls
    size = len(orjson.dumps(monitor.state_dict()))
    print(f"{len(monitor.events)} events kept: state_dict {seconds * 1e3:.3f} ms, {size} bytes")
    if hasattr(monitor, "forget_closed_events"):  # what the service does once they are stored
        monitor.forget_closed_events()
        size = len(orjson.dumps(monitor.state_dict()))
        print(f"after forget_closed_events: {len(monitor.events)} kept, {size} bytes")


if __name__ == "__main__":
    main()
