"""Streams on PostgreSQL across replicas: two replicas receiving the same series' points at
once keep one consistent state (no lost, no double-counted points).

Both replicas get every chunk of one series, in order, concurrently (a client that sends each
request to two load-balanced replicas, or retries on the other one): exactly one applies each
chunk and the other sees exact duplicates, so the series ends with each point counted once.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from svc_helpers import TINY_CONFIG, ServerProcess, make_frame, register_trained_version
from test_scale_postgres import _settings, _two_replicas

from detector import DetectorConfig
from service.context import AppContext
from service.tables import Stream, StreamPoint

N_CHUNKS = 30
CHUNK = 4


def _chunks() -> list[bytes]:
    frame = make_frame(n=N_CHUNKS * CHUNK, seed=3, end=pd.Timestamp("2026-11-02T00:00:00Z"))
    out = []
    for i in range(N_CHUNKS):
        part = frame.iloc[i * CHUNK : (i + 1) * CHUNK]
        out.append(
            orjson.dumps(
                {
                    "series": "s1",
                    "timestamps": [ts.isoformat() for ts in part.index],
                    "values": {c: [float(v) for v in part[c]] for c in ("a", "b")},
                    "expected": False,
                }
            )
        )
    return out


def _check_one_state(ctx: AppContext, applied: int, duplicates: int) -> None:
    total = N_CHUNKS * CHUNK
    with ctx.db.session() as session:
        row = session.query(Stream).one()
        buffered = session.query(StreamPoint).count()
    stored = len(ctx.history.read(row.model_id))
    # every point is either still buffered or in the stored history (1,200 training rows are
    # not: they were never uploaded)
    assert row.n_points == total and buffered + stored == total
    assert applied == total  # each point scored exactly once over both replicas
    assert duplicates == total  # and seen as a duplicate by the other one
    assert row.revision == N_CHUNKS


def _register_model(ctx: AppContext) -> None:
    """Model ``m`` (key column ``host``) with an active version trained on series ``s1``."""
    config = {**TINY_CONFIG, "key_column": "host"}
    ctx.registry.create_model("m", DetectorConfig.model_validate(config), "", "manual")
    train = make_frame(n=1200, seed=1, end=pd.Timestamp("2026-11-01T00:00:00Z"))
    train["host"] = "s1"
    register_trained_version(ctx, "m", train, config, promote=True)


def test_two_replicas_one_series_in_process(tmp_path: Path, pg_url: str) -> None:
    with _two_replicas(_settings(tmp_path, pg_url)) as replicas:
        _register_model(replicas[0])
        chunks = _chunks()
        results: list[list[dict[str, Any]]] = [[], []]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def feed(i: int) -> None:
            async def run() -> None:
                for body in chunks:
                    out = await replicas[i].live.streams.ingest("m", body)
                    results[i].append(orjson.loads(out))

            try:
                barrier.wait()
                asyncio.run(run())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=feed, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        every = results[0] + results[1]
        _check_one_state(
            replicas[0], sum(r["n_points"] for r in every), sum(r["duplicates"] for r in every)
        )


def test_two_servers_one_series(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(tmp_path, pg_url)
    with _two_replicas(settings) as replicas:
        _register_model(replicas[0])
        _, key = replicas[0].auth.create("admin", "tests")
    env = {"RECONAD_DATABASE_URL": pg_url, "RECONAD_TORCH_THREADS": "1"}
    servers = [
        ServerProcess(data_dir, tmp_path / f"server{i}.log", **env).start(timeout=240)
        for i in range(2)
    ]
    try:
        chunks = _chunks()
        results: list[list[dict[str, Any]]] = [[], []]
        barrier = threading.Barrier(2)

        def feed(i: int) -> None:
            client = servers[i].client(key)
            barrier.wait()
            for body in chunks:
                r = client.post(
                    "/v1/models/m/stream",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                assert r.status_code == 200, r.text
                results[i].append(r.json())

        threads = [threading.Thread(target=feed, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = results[0] + results[1]
        assert len(every) == 2 * N_CHUNKS, [s.log()[-2000:] for s in servers]
        ctx = AppContext.build(settings)
        try:
            _check_one_state(
                ctx, sum(r["n_points"] for r in every), sum(r["duplicates"] for r in every)
            )
        finally:
            ctx.scoring.close()
            ctx.db.dispose()
    finally:
        for server in servers:
            server.stop()


def test_a_replica_whose_copy_is_behind_reads_the_row_again(tmp_path: Path, pg_url: str) -> None:
    # each replica keeps its monitors and duplicate-detection entries at the revision it saved
    # them; one that another replica moved on must read the row again, or a resent point that
    # the other replica accepted would be refused as a conflict instead of counted a duplicate
    with _two_replicas(_settings(tmp_path, pg_url)) as replicas:
        _register_model(replicas[0])
        first, second, third = _chunks()[:3]

        def post(i: int, body: bytes) -> dict[str, Any]:
            out: dict[str, Any] = orjson.loads(
                asyncio.run(replicas[i].live.streams.ingest("m", body))
            )
            return out

        assert post(0, first)["n_points"] == CHUNK  # replica 0 keeps its copy at revision 1
        assert post(1, second)["n_points"] == CHUNK  # replica 1 moves the row to revision 2
        again = post(0, second)  # replica 0's copy is behind: the resend is a duplicate
        assert again["n_points"] == 0 and again["duplicates"] == CHUNK
        assert post(0, third)["n_points"] == CHUNK
        with replicas[0].db.session() as session:
            row = session.query(Stream).one()
        assert row.n_points == 3 * CHUNK and row.revision == 3


def test_the_flush_moves_the_points_unchanged_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The flush reads the buffered points' columns raw from PostgreSQL's driver (timestamps,
    JSON values) and converts them in bulk: the stored history holds exactly what was sent."""
    with _two_replicas(_settings(tmp_path, pg_url)) as replicas:
        ctx = replicas[0]
        _register_model(ctx)

        async def run() -> None:
            for body in _chunks():
                await ctx.live.streams.ingest("m", body)

        asyncio.run(run())
        total = N_CHUNKS * CHUNK
        assert ctx.live.streams.flush() == total
        assert ctx.live.streams.flush() == 0
        with ctx.db.session() as session:
            model_id = session.query(Stream).one().model_id
        stored = ctx.history.read(model_id)
        sent = make_frame(n=total, seed=3, end=pd.Timestamp("2026-11-02T00:00:00Z"))
        assert isinstance(stored.index, pd.DatetimeIndex) and str(stored.index.tz) == "UTC"
        assert (stored["host"] == "s1").all()
        pd.testing.assert_frame_equal(
            stored[["a", "b"]], sent, check_freq=False, check_index_type=False, check_names=False
        )
