"""Throughput of the stream endpoint on one API replica with the embedded defaults.

Starts ``reconad serve`` (SQLite, local files) on a temp data dir, registers a model with a key
column, then feeds ``POST /v1/models/<m>/stream`` from many series at once: every series sends
one point per request, round-robin, at an offered rate that steps up (open loop: requests are
sent on schedule whether or not earlier ones returned, up to a cap of requests in flight) until
the server falls behind. Per step it prints the offered and achieved rate and the p50/p99
latency; at the end the largest rate sustained (achieved >= 95% of offered and p99 under
``--p99-bound-ms``), the server's memory per series and the stored state per series, and an
in-process profile of where one request's time goes.

    python benchmarks/bench_stream.py                 # 10,000 series, steps of 20 s
    python benchmarks/bench_stream.py --short         # 200 series, steps of 4 s (a minute)
    python benchmarks/bench_stream.py --short --batch-max 256,1   # group commit on, then off

It stops by itself: after the first step that is not sustained, or after the last step.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
from serving import served

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector import DetectorConfig, create_detector  # noqa: E402
from service.context import AppContext  # noqa: E402
from service.db import upgrade_schema  # noqa: E402
from service.registry import NewVersion  # noqa: E402
from service.settings import Settings  # noqa: E402

CONFIG: dict[str, Any] = {
    "kind": "ae",
    "window": 16,
    "hidden_dims": [32],
    "latent_dim": 8,
    "key_column": "host",
    "training": {"max_epochs": 3, "patience": 2, "seed": 0},
}


def _train_frame(n_series: int, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    index = pd.date_range(end=pd.Timestamp("2026-11-01", tz="UTC"), periods=n, freq="10s")
    t = np.arange(n)
    parts = []
    for s in range(min(n_series, 8)):
        parts.append(
            pd.DataFrame(
                {
                    "cpu": np.sin(2 * np.pi * t / 60 + s) + 0.05 * rng.standard_normal(n),
                    "mem": np.cos(2 * np.pi * t / 90 + s) + 0.05 * rng.standard_normal(n),
                    "host": f"h{s}",
                },
                index=index,
            )
        )
    return pd.concat(parts)


def prepare(data_dir: Path, n_series: int) -> str:
    """Create the model and one trained version; return an admin key."""
    settings = Settings(data_dir=data_dir, bootstrap_admin_key=False, log_level="WARNING")
    ctx = AppContext.build(settings)
    upgrade_schema(ctx.db)
    config = DetectorConfig.model_validate(CONFIG)
    ctx.registry.create_model("bench", config, "stream benchmark", "manual")
    frame = _train_frame(n_series)
    det = create_detector(config).fit(frame)
    model = ctx.registry.get_model("bench")
    key = f"{model.id}/v1"
    with ctx.artifacts.staging() as tmp:
        det.save(tmp / "model")
        ctx.artifacts.publish(tmp / "model", key)
    ctx.registry.register_version(
        model.id,
        NewVersion.from_detector(det, key, frame, float(det.validation_score_)),
        force_promote=True,
    )
    _, api_key = ctx.auth.create("admin", "bench")
    ctx.scoring.close()
    ctx.db.dispose()
    return api_key


def _body(series: int, step: int) -> bytes:
    ts = 1_800_000_000 + 10 * step
    phase = 2 * np.pi * step / 60 + series % 8
    return orjson.dumps(
        {
            "series": f"h{series}",
            "timestamps": [ts],
            "values": {"cpu": [float(np.sin(phase))], "mem": [float(np.cos(phase))]},
            "expected": False,
        }
    )


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Feeder:
    """Sends one point per request for each series in turn; each series' points go in order."""

    def __init__(self, client: httpx.AsyncClient, n_series: int, max_in_flight: int) -> None:
        self.client = client
        self.n_series = n_series
        self.steps = [0] * n_series
        self.busy = [False] * n_series
        self.next_series = 0
        self.gate = asyncio.Semaphore(max_in_flight)
        self.errors = 0

    async def one(self, latencies: list[float]) -> None:
        # the next series with no request in flight (its points stay in order)
        for _ in range(self.n_series):
            s = self.next_series
            self.next_series = (s + 1) % self.n_series
            if not self.busy[s]:
                break
        else:
            return
        self.busy[s] = True
        step = self.steps[s]
        self.steps[s] += 1
        try:
            async with self.gate:
                started = time.perf_counter()
                try:
                    r = await self.client.post(
                        "/v1/models/bench/stream",
                        content=_body(s, step),
                        headers={"Content-Type": "application/json"},
                    )
                    failed = None if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    failed = f"{type(exc).__name__}"
                if failed is not None:
                    self.errors += 1
                    if self.errors <= 3:
                        print(f"  error {failed}", flush=True)
                latencies.append(time.perf_counter() - started)
        finally:
            self.busy[s] = False

    async def warm(self) -> None:
        """One point for every series (creates their state)."""
        sink: list[float] = []
        for start in range(0, self.n_series, 64):
            await asyncio.gather(*(self.one(sink) for _ in range(min(64, self.n_series - start))))

    async def step(self, rate: float, seconds: float) -> tuple[float, list[float]]:
        latencies: list[float] = []
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(latencies)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        return len(latencies) / elapsed, latencies


def profile_in_process(data_dir: Path, n_requests: int, concurrent: int = 50) -> str:
    """Where one request's time goes: ``concurrent`` one-point requests of as many series at
    once (the batcher applies them together), profiled in the worker thread that applies them
    (the event loop only parses and encodes)."""
    settings = Settings(data_dir=data_dir, bootstrap_admin_key=False, log_level="WARNING")
    ctx = AppContext.build(settings)
    streams = ctx.live.streams
    rounds = max(1, n_requests // concurrent)

    async def run(first_step: int) -> None:
        for r in range(rounds):
            await asyncio.gather(
                *(streams.ingest("bench", _body(s, first_step + r)) for s in range(concurrent))
            )

    asyncio.run(run(100_000))  # warm: models loaded, series states cached
    profiler = cProfile.Profile()
    apply = streams.batcher.run

    def profiled(jobs: list[Any]) -> Any:
        profiler.enable()
        try:
            return apply(jobs)
        finally:
            profiler.disable()

    streams.batcher.run = profiled
    started = time.perf_counter()
    asyncio.run(run(200_000))
    per_request_ms = (time.perf_counter() - started) / (rounds * concurrent) * 1000
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).sort_stats("cumulative")
    stats.print_stats(30)
    ctx.scoring.close()
    ctx.db.dispose()
    return (
        f"in-process: {per_request_ms:.2f} ms per one-point request ({concurrent} series at "
        "once; profile of the worker thread)\n" + buffer.getvalue()
    )


async def main_async(args: argparse.Namespace, url: str, key: str, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as client:
        feeder = Feeder(client, args.series, args.max_in_flight)
        rss_before = rss_kb(pid)
        t0 = time.perf_counter()
        await feeder.warm()
        print(f"warm-up: {args.series} series started in {time.perf_counter() - t0:.1f} s")
        rss_after = rss_kb(pid)
        sustained = 0.0
        sustained_p = (float("nan"), float("nan"))
        for rate in args.rates:
            achieved, lat = await feeder.step(rate, args.step_s)
            p50, p99 = (float(np.percentile(lat, q)) * 1000 for q in (50, 99)) if lat else (0, 0)
            ok = achieved >= 0.95 * rate and p99 <= args.p99_bound_ms
            print(
                f"offered {rate:7.0f}/s  achieved {achieved:7.1f}/s  p50 {p50:7.1f} ms  "
                f"p99 {p99:7.1f} ms  {'sustained' if ok else 'FELL BEHIND'}",
                flush=True,
            )
            if not ok:
                break
            sustained, sustained_p = rate, (p50, p99)
        return {
            "sustained": sustained,
            "p50": sustained_p[0],
            "p99": sustained_p[1],
            "rss_per_series_kb": (rss_after - rss_before) / args.series,
            "errors": feeder.errors,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="200 series, 4 s steps")
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--step-s", type=float, default=20.0)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[100, 250, 500, 1000, 2000, 4000],
    )
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--p99-bound-ms", type=float, default=1000.0)
    parser.add_argument("--profile-requests", type=int, default=300, help="0: no profile")
    parser.add_argument(
        "--batch-max",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[256],
        help="stream_batch_max of the server; several (e.g. 256,1) run one server each in turn",
    )
    args = parser.parse_args()
    if args.short:
        args.series, args.step_s = 200, 4.0
    args.rates = sorted(set(args.rates))
    if args.series >= 10_000:
        # "one point each every 10 s" is the first step
        args.rates = sorted({args.series / 10.0, *args.rates})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for batch_max in args.batch_max:
        print(f"\n== stream_batch_max {batch_max}", flush=True)
        run_once(args, batch_max)


def run_once(args: argparse.Namespace, batch_max: int) -> None:
    """One server with ``stream_batch_max`` = ``batch_max`` on a fresh data dir."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = prepare(data_dir, args.series)
        settings = {"LOG_LEVEL": "WARNING", "STREAM_BATCH_MAX": str(batch_max)}
        with served(data_dir, settings) as server:
            result = asyncio.run(main_async(args, server.url, key, server.pid))
        db_path = data_dir / "reconad.db"
        import sqlite3

        with sqlite3.connect(db_path) as conn:
            state_bytes = conn.execute("SELECT avg(length(state)) FROM streams").fetchone()[0]
        print(
            f"\nlargest sustained rate: {result['sustained']:.0f} points/s "
            f"(p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms), "
            f"server memory per series {result['rss_per_series_kb']:.1f} KiB, "
            f"stored state per series {state_bytes or 0:.0f} bytes, errors {result['errors']}"
        )
        if args.profile_requests:
            print("\nwhere the time goes (one replica, in-process, top cumulative):")
            print(profile_in_process(data_dir, args.profile_requests))


if __name__ == "__main__":
    main()
