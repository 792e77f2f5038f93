"""Benchmark of the HTTP service on this machine (not a test).

Starts ``reconad serve`` (one uvicorn worker) on a temp data dir with one trained model
(window 64, two features, the default network sizes), then, with 8 concurrent keep-alive
connections from a light raw-socket client:

1. ``GET /livez`` (no-op route) and ``POST /v1/models/bench/score`` with one 64-point window,
   in the same run: requests/s, p50 and p99 latency, and their rate ratio;
2. ``POST /v1/models/bench/score`` with a 1,000,000-point series, seconds end to end, the
   cases interleaved ``--repeats`` times (each run and the median printed): the default JSON
   answer (scores, normalized, anomalous, top 3 features); the lean JSON answer a client asks
   for with ``fields`` (anomalous point indices, no contributors); and the columnar path, an
   Arrow IPC body with an Arrow answer of the default fields and top features (one row per
   point). The target of a bulk request is under 3 s. Each case also prints the server's CPU
   seconds for the request (``/proc``), which a busy machine inflates less than the wall time.

Run: ``python benchmarks/bench_service.py [--seconds 10] [--repeats 3] [--torch-threads 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
from serving import cpu_seconds, served

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARROW = "application/vnd.apache.arrow.stream"
CONFIG: dict[str, Any] = {
    "kind": "ae",
    "window": 64,
    "training": {"max_epochs": 3, "max_seconds": 60},
    "calibration": {"method": "quantile", "fpr": 0.005},
}


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    index = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 300) + 0.05 * rng.standard_normal(n),
            "b": np.cos(2 * np.pi * t / 200) + 0.05 * rng.standard_normal(n),
        },
        index=index,
    )


def arrow_body(frame: pd.DataFrame) -> bytes:
    """A frame (timestamp index, one column per feature) as an Arrow IPC stream body."""
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _seed(data_dir: Path) -> str:
    """Create the model with one trained version directly in the data dir; return an API key."""
    from detector import DetectorConfig, create_detector
    from service.context import AppContext
    from service.db import upgrade_schema
    from service.registry import NewVersion
    from service.settings import Settings

    ctx = AppContext.build(Settings(data_dir=data_dir, log_level="WARNING"))
    upgrade_schema(ctx.db)
    cfg = DetectorConfig.model_validate(CONFIG)
    model = ctx.registry.create_model("bench", cfg, "benchmark", "always")
    frame = _frame(20_000)
    det = create_detector(cfg).fit(frame)
    key = f"{model.id}/v1"
    with ctx.artifacts.staging() as tmp:
        det.save(tmp / "m")
        ctx.artifacts.publish(tmp / "m", key)
    ctx.registry.register_version(
        model.id, NewVersion.from_detector(det, key, frame, float(det.validation_score_))
    )
    _, api_key = ctx.auth.create("admin", "bench")
    ctx.scoring.close()
    ctx.db.dispose()
    return api_key


def _request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _load(port: int, payload: bytes, seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(payload)
                await writer.drain()
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors,
        "rps": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--points", type=int, default=1_000_000, help="size of the big series")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each big-series case")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="the server's torch_threads (default 1)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reconad-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        key = _seed(data_dir)
        settings = {"TORCH_THREADS": str(args.torch_threads)}
        with served(data_dir, settings, log=Path(tmp) / "server.log") as server:
            port = server.port
            window = _frame(64, seed=1).to_numpy()[None].tolist()  # (1, 64, 2)
            score = _request(
                "POST", "/v1/models/bench/score", key, json.dumps({"windows": window}).encode()
            )
            livez = _request("GET", "/livez", key)
            # warm up (loads the model, fills caches)
            asyncio.run(_load(port, score, 2.0, args.connections))
            asyncio.run(_load(port, livez, 1.0, args.connections))
            live = asyncio.run(_load(port, livez, args.seconds, args.connections))
            scored = asyncio.run(_load(port, score, args.seconds, args.connections))

            print(
                f"machine: {os.cpu_count()} CPU cores; one uvicorn worker, torch_threads "
                f"{args.torch_threads}; "
                f"{args.connections} concurrent connections; {args.seconds:g}s per route"
            )
            for name, res in (("GET /livez", live), ("POST score 1x64-point window", scored)):
                print(
                    f"{name:<30} {res['rps']:8.0f} req/s   p50 {res['p50_ms']:6.2f} ms   "
                    f"p99 {res['p99_ms']:6.2f} ms   ({res['requests']:.0f} requests, "
                    f"{res['errors']:.0f} non-200)"
                )
            print(f"ratio score/livez requests/s: {scored['rps'] / live['rps']:.2f}")

            big = _frame(args.points, seed=2).round(6)
            series = {
                "timestamps": pd.DatetimeIndex(big.index).as_unit("s").asi8.tolist(),
                "values": {c: big[c].tolist() for c in big.columns},
            }
            json_in = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
            arrow_in = {**json_in, "content-type": ARROW, "accept": ARROW}
            lean = {"top_k": 0, "fields": ["anomalous_indices"]}
            cases = [
                ("JSON, default answer", json.dumps(series).encode(), json_in),
                (
                    "JSON, fields=[anomalous_indices] top_k=0",
                    json.dumps({**series, **lean}).encode(),
                    json_in,
                ),
                ("Arrow in and out, default answer", arrow_body(big), arrow_in),
            ]
            times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            cpu: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            answers: dict[str, str] = {}
            for _ in range(args.repeats):  # interleaved, so a load change hits every case
                for label, body, headers in cases:
                    before = cpu_seconds(server.pid)
                    started = time.perf_counter()
                    response = httpx.post(
                        f"http://127.0.0.1:{port}/v1/models/bench/score",
                        content=body,
                        headers=headers,
                        timeout=600,
                    )
                    times[label].append(time.perf_counter() - started)
                    cpu[label].append(cpu_seconds(server.pid) - before)
                    if response.status_code != 200:
                        raise SystemExit(f"{label}: {response.status_code} {response.text[:300]}")
                    answers[label] = (
                        f"{len(body) / 1e6:.1f} MB body, {len(response.content) / 1e6:.1f} MB "
                        f"{response.headers['content-type'].split('/')[-1]} answer"
                    )
            print(
                f"1 request, {args.points:,}-point series (median of {args.repeats}, interleaved; "
                "end to end, and the server's CPU seconds):"
            )
            for label, runs in times.items():
                print(
                    f"  {label:<42} {statistics.median(runs):6.2f} s, server CPU "
                    f"{statistics.median(cpu[label]):5.2f} s (runs "
                    f"{', '.join(f'{t:.2f}' for t in runs)}; {answers[label]})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
