"""Bulk requests over HTTP in JSON and in Arrow IPC, in one run (not a test).

Starts ``reconad serve`` (one uvicorn worker) with the trained model of
``benchmarks/bench_service.py`` (window 64, two features), then, for a series of ``--points``
points (default 1,000,000), times end to end on loopback, each case ``--repeats`` times with
the formats interleaved (the median is printed):

1. ``POST /v1/models/{name}/data``: JSON rows vs an Arrow IPC stream (``Content-Type:
   application/vnd.apache.arrow.stream``), each into a fresh model;
2. ``POST /v1/models/bench/score``: a JSON body with a JSON answer (the default fields and
   ``top_k`` 3), the same JSON body with an Arrow answer (``Accept``), and an Arrow body with
   an Arrow answer; then the lean answer (``fields`` ``anomalous``, ``top_k`` 0) as JSON in
   and out vs Arrow in and out.

Run: ``python benchmarks/bench_bulk.py [--points 1000000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import ARROW, CONFIG, _frame, _seed, arrow_body
from serving import served


def _run(
    cases: dict[str, list[float]],
    sizes: dict[str, int],
    label: str,
    client: httpx.Client,
    url: str,
    **kwargs: Any,
) -> None:
    """POST once; record the seconds (end to end) and the answer's size under ``label``."""
    started = time.perf_counter()
    response = client.post(url, **kwargs)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{label}: {response.status_code} {response.text[:300]}")
    cases.setdefault(label, []).append(seconds)
    sizes[label] = len(response.content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reconad-bulk-") as tmp:
        data_dir = Path(tmp) / "data"
        key = _seed(data_dir)
        settings = {"MAX_POINTS_PER_REQUEST": str(max(2_000_000, args.points))}
        auth = {"Authorization": f"Bearer {key}"}
        with served(data_dir, settings, log=Path(tmp) / "server.log") as server:
            base = server.url
            client = httpx.Client(base_url=base, headers=auth, timeout=900)
            big = _frame(args.points, seed=2).round(6)
            stamps = pd.DatetimeIndex(big.index).as_unit("s").asi8.tolist()
            rows = json.dumps(
                {
                    "rows": [
                        {"timestamp": t, "a": a, "b": b}
                        for t, a, b in zip(stamps, big["a"], big["b"], strict=True)
                    ]
                }
            ).encode()
            table = arrow_body(big)
            series: dict[str, Any] = {
                "timestamps": stamps,
                "values": {c: big[c].tolist() for c in big.columns},
            }
            full_json = json.dumps(series).encode()
            lean_json = json.dumps({**series, "top_k": 0, "fields": ["anomalous"]}).encode()
            print(
                f"{args.points:,} points, two features; bodies: JSON rows "
                f"{len(rows) / 1e6:.1f} MB, "
                f"JSON series {len(full_json) / 1e6:.1f} MB, Arrow {len(table) / 1e6:.1f} MB; "
                f"median of {args.repeats}, formats interleaved"
            )
            # warm up: load the model, touch every code path once on a small series
            small = _frame(5000, seed=3)
            client.post(
                "/v1/models/bench/score",
                content=arrow_body(small),
                headers={"content-type": ARROW, "accept": ARROW},
            )
            client.post(
                "/v1/models/bench/score",
                json={
                    "timestamps": pd.DatetimeIndex(small.index).as_unit("s").asi8.tolist(),
                    "values": {c: small[c].tolist() for c in small.columns},
                },
            )

            json_in = {"content-type": "application/json"}
            arrow_in = {"content-type": ARROW}
            lean = {"top_k": "0", "fields": "anomalous"}
            scorings: list[tuple[str, dict[str, Any]]] = [
                ("score, JSON in, JSON out", {"content": full_json, "headers": json_in}),
                (
                    "score, JSON in, Arrow out",
                    {"content": full_json, "headers": {**json_in, "accept": ARROW}},
                ),
                (
                    "score, Arrow in, Arrow out",
                    {"content": table, "headers": {**arrow_in, "accept": ARROW}},
                ),
                ("lean score, JSON in, JSON out", {"content": lean_json, "headers": json_in}),
                (
                    "lean score, Arrow in, Arrow out",
                    {"content": table, "params": lean, "headers": {**arrow_in, "accept": ARROW}},
                ),
            ]
            uploads = (("JSON rows", rows, "application/json"), ("Arrow", table, ARROW))
            cases: dict[str, list[float]] = {}
            sizes: dict[str, int] = {}
            for i in range(args.repeats):
                for fmt, body, media in uploads:
                    name = f"bulk{i}{'a' if fmt == 'Arrow' else 'j'}"
                    created = client.post("/v1/models", json={"name": name, "config": CONFIG})
                    assert created.status_code == 201, created.text
                    label = f"upload, {fmt}"
                    url = f"/v1/models/{name}/data"
                    _run(
                        cases,
                        sizes,
                        label,
                        client,
                        url,
                        content=body,
                        headers={"content-type": media},
                    )
                for label, kwargs in scorings:
                    _run(cases, sizes, label, client, "/v1/models/bench/score", **kwargs)
            for label, times in cases.items():
                print(
                    f"{label:<34} {statistics.median(times):6.2f} s "
                    f"(runs {', '.join(f'{t:.2f}' for t in times)}; "
                    f"answer {sizes[label] / 1e6:.1f} MB)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
