"""What the normal memory (events labelled "not an anomaly") costs on the stream path.

In process (no HTTP server): a model with a key column and ``--features`` features, two live
series; one series' monitor remembers ``--events`` events of ``--event-points`` points (as
``StreamService.refresh_memory`` builds them), the other none. Requests of ``--points`` points
go to both in turn (interleaved, the order swapped every round) and the medians are compared as
a ratio measured in this one run; the stored state of each series is printed too (it is
written on every stream request)::

    OMP_NUM_THREADS=1 python benchmarks/bench_normal_memory.py --features 2
    OMP_NUM_THREADS=1 python benchmarks/bench_normal_memory.py --features 38
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector import DetectorConfig, create_detector  # noqa: E402
from detector.feedback import NormalMemory  # noqa: E402
from service.app import create_app  # noqa: E402
from service.context import AppContext  # noqa: E402
from service.live.streams import _Cached  # noqa: E402
from service.registry import NewVersion  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tables import Stream, utcnow  # noqa: E402

T0 = pd.Timestamp("2026-11-01", tz="UTC")


def _frame(n: int, features: int, seed: int, end: pd.Timestamp) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    index = pd.date_range(end=end, periods=n, freq="min", name="timestamp")
    return pd.DataFrame(
        {
            f"f{j}": np.sin(2 * np.pi * t / (40 + 5 * j)) + 0.05 * rng.standard_normal(n)
            for j in range(features)
        },
        index=index,
    )


def _model(ctx: AppContext, features: int) -> None:
    config = DetectorConfig.model_validate(
        {
            "kind": "ae",
            "window": 32,
            "hidden_dims": [32],
            "latent_dim": 8,
            "key_column": "host",
            "training": {"max_epochs": 3, "patience": 2, "seed": 0},
        }
    )
    ctx.registry.create_model("m", config, "", "manual")
    parts = []
    for host in ("with", "without"):
        part = _frame(1500, features, 1, T0)
        part["host"] = host
        parts.append(part)
    train = pd.concat(parts)
    det = create_detector(config).fit(train)
    model = ctx.registry.get_model("m")
    key = f"{model.id}/v1"
    with ctx.artifacts.staging() as tmp:
        det.save(tmp / "model")
        ctx.artifacts.publish(tmp / "model", key)
    ctx.registry.register_version(
        model.id,
        NewVersion.from_detector(det, key, train, float(det.validation_score_)),
        force_promote=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--events", type=int, default=16)
    parser.add_argument("--event-points", type=int, default=40)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()) / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="ERROR",
        stream_flush_interval_s=3600,
    )
    n_live = 200 + args.points * args.rounds
    live = _frame(1500 + n_live, args.features, 3, T0 + pd.Timedelta(minutes=n_live)).iloc[-n_live:]
    features = list(live.columns)
    with TestClient(create_app(settings)) as client:
        ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
        _, key = ctx.auth.create("admin", "bench")
        headers = {"Authorization": f"Bearer {key}"}
        _model(ctx, args.features)

        def send(series: str, lo: int, hi: int) -> float:
            part = live.iloc[lo:hi]
            body: dict[str, Any] = {
                "series": series,
                "timestamps": [t.isoformat() for t in part.index],
                "values": {f: part[f].tolist() for f in features},
                "expected": False,
            }
            started = time.perf_counter()
            r = client.post("/v1/models/m/stream", json=body, headers=headers)
            assert r.status_code == 200, r.text
            return time.perf_counter() - started

        for series in ("with", "without"):
            send(series, 0, 200)
        streams = ctx.live.streams
        window = 32
        with ctx.db.transaction() as session:
            row = session.query(Stream).filter_by(series="with").one()
            cached = streams.cache.get(row.id)
            assert cached is not None
            memory = NormalMemory.for_detector(cached.monitor.detector, args.events)
            history = _frame(1500 + 20_000, args.features, 9, T0).to_numpy()
            length = args.event_points + window - 1  # an event with its window of context
            for k in range(args.events):
                memory.add(history[1000 + k * 500 : 1000 + k * 500 + length])
            cached.monitor.remember(memory)
            row.state = orjson.dumps(cached.monitor.state()).decode()
            row.revision += 1
            row.updated_at = utcnow()
            revision, stream_id = row.revision, row.id
        streams.cache.put(
            stream_id, _Cached(revision, cached.version, cached.monitor, cached.recent)
        )
        with ctx.db.session() as session:
            sizes = {r.series: len(r.state) for r in session.query(Stream)}
        times: dict[str, list[float]] = {"with": [], "without": []}
        at = 200
        for i in range(args.rounds):
            for series in ("with", "without") if i % 2 == 0 else ("without", "with"):
                times[series].append(send(series, at, at + args.points))
            at += args.points
    with_ms = 1000 * statistics.median(times["with"])
    without_ms = 1000 * statistics.median(times["without"])
    print(
        f"features={args.features} events={args.events} x {args.event_points} points, "
        f"requests of {args.points} points, {args.rounds} rounds\n"
        f"state bytes: with memory {sizes['with']:,}, without {sizes['without']:,}\n"
        f"median request: with memory {with_ms:.1f} ms, without {without_ms:.1f} ms, "
        f"ratio {with_ms / without_ms:.2f}"
    )


if __name__ == "__main__":
    main()
