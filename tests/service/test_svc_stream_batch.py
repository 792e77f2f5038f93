"""The stream batcher: concurrent stream requests applied in one transaction give the decisions,
events and alerts of sequential ones; a failing request of a batch fails alone; the queue is
bounded with a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, make_frame, register_trained_version

from detector.errors import NonFiniteError
from service.app import create_app
from service.context import AppContext
from service.errors import ConflictError, TooManyRequestsError
from service.live.batcher import Batcher
from service.live.streams import StreamService, _Job, parse_stream_body
from service.settings import Settings
from service.tables import Alert, AnomalyEvent, Stream

TRAIN_END = pd.Timestamp("2026-11-01T00:00:00Z")
SERIES = ["s1", "s2", "s3", "s4"]
T = TypeVar("T")


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        scheduler_interval_s=3600,
        alert_poll_interval_s=300,
        stream_flush_interval_s=3600,
        stream_batch_wait_ms=150,
        stream_queue_max=64,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ctx = _ctx(client)
        _, key = ctx.auth.create("admin", "tests")
        headers = {"Authorization": f"Bearer {key}"}
        config = {**TINY_CONFIG, "key_column": "host"}
        r = client.post(
            "/v1/models",
            json={"name": "fleet", "config": config, "promotion_policy": "manual"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        train = make_frame(n=1200, seed=1, end=TRAIN_END)
        parts = []
        for s in ("s1", "s2"):
            part = train.copy()
            part["host"] = s
            parts.append(part)
        register_trained_version(ctx, "fleet", pd.concat(parts), config, promote=True)
        yield client, headers


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


def _call(client: TestClient, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on the app's event loop (where the service's caches live)."""
    assert client.portal is not None
    return client.portal.call(fn)


def _frames() -> dict[str, pd.DataFrame]:
    """Per series 40 normal points after the training data, two of them with a spike."""
    out = {}
    for k, s in enumerate(SERIES):
        frame = make_frame(n=1240, seed=10 + k, end=TRAIN_END + pd.Timedelta(minutes=40))
        frame = frame.iloc[-40:].copy()
        if k % 2 == 0:
            frame.iloc[25:29, 0] += 8.0
            frame.iloc[25:29, 1] -= 8.0
        out[s] = frame
    return out


def _body(frame: pd.DataFrame, series: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "series": series,
            "timestamps": [ts.isoformat() for ts in frame.index],
            "values": {c: [float(v) for v in frame[c]] for c in ("a", "b")},
            **extra,
        }
    )


def _spy(streams: StreamService) -> list[int]:
    """Record the size of every batch the batcher runs."""
    sizes: list[int] = []
    run = streams.batcher.run

    def spied(jobs: list[Any]) -> Any:
        sizes.append(len(jobs))
        return run(jobs)

    streams.batcher.run = spied
    return sizes


def _decisions(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: [v for a in answers for v in a[key]]
        for key in ("score", "normalized", "threshold", "anomalous")
    } | {"in_event": [v is not None for a in answers for v in a["event"]]}


def _events(ctx: AppContext, series: str) -> list[tuple[Any, ...]]:
    with ctx.db.session() as session:
        rows = session.query(AnomalyEvent).filter(AnomalyEvent.series == series).all()
        events = sorted((e.start, e.end, e.status, e.n_points) for e in rows)
        alerts = session.query(Alert).count()
    return [*events, ("alerts", alerts)]


def test_concurrent_requests_decide_as_sequential_ones(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    """Four series, five-point requests: once one request at a time, once all series at once
    (each series' requests in order). Same scores, flags, events and queued alerts; the
    concurrent run used batches of several requests."""
    client, headers = app_client
    ctx = _ctx(client)
    streams = ctx.live.streams
    frames = _frames()
    sizes = _spy(streams)

    async def sequential() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in SERIES}
        for i in range(0, 40, 5):
            for s in SERIES:
                out[s].append(
                    orjson.loads(await streams.ingest("fleet", _body(frames[s][i : i + 5], s)))
                )
        return out

    async def one_series(s: str) -> list[dict[str, Any]]:
        return [
            orjson.loads(await streams.ingest("fleet", _body(frames[s][i : i + 5], s)))
            for i in range(0, 40, 5)
        ]

    async def concurrent() -> dict[str, list[dict[str, Any]]]:
        got = await asyncio.gather(*(one_series(s) for s in SERIES))
        return dict(zip(SERIES, got, strict=True))

    first = _call(client, sequential)
    assert max(sizes) == 1
    before = {s: _events(ctx, s) for s in SERIES}
    assert any(len(v) > 1 for v in before.values())  # the spikes opened events
    for s in SERIES:
        assert client.delete(f"/v1/models/fleet/streams/{s}", headers=headers).status_code == 204
    with ctx.db.transaction() as session:
        session.query(Alert).delete()
    sizes.clear()
    second = _call(client, concurrent)
    assert max(sizes) >= 3, sizes  # requests of several series shared a transaction
    for s in SERIES:
        a, b = _decisions(first[s]), _decisions(second[s])
        for key in ("score", "normalized", "threshold"):
            np.testing.assert_allclose(
                np.asarray(a[key], dtype=float),
                np.asarray(b[key], dtype=float),
                rtol=1e-6,
                atol=1e-9,
                equal_nan=True,
            )
        assert a["anomalous"] == b["anomalous"] and a["in_event"] == b["in_event"]
    for s in SERIES:  # every point of a closed event, its closing one too, carries its id
        stamps = [pd.Timestamp(t) for a in second[s] for t in a["timestamps"]]
        ids = [v for a in second[s] for v in a["event"]]
        for start, end, status, n_points, *_ in _events(ctx, s)[:-1]:
            inside = [i for t, i in zip(stamps, ids, strict=True) if start <= t <= end]
            assert status != "closed" or (len(inside) == n_points and None not in inside)
    after = {s: _events(ctx, s) for s in SERIES}
    assert [e for s in SERIES for e in after[s][:-1]] == [e for s in SERIES for e in before[s][:-1]]
    assert after["s1"][-1] == before["s1"][-1]  # as many alerts queued


def test_a_failing_request_fails_alone(app_client: tuple[TestClient, dict[str, str]]) -> None:
    """One batch: s1 twice in order, s2 out of order (409), s3 with changed options (409),
    s1 again. The bad ones fail alone, s1's three requests apply in order."""
    client, _ = app_client
    ctx = _ctx(client)
    streams = ctx.live.streams
    frames = _frames()

    async def setup() -> Any:
        for s in ("s2", "s3"):
            await streams.ingest("fleet", _body(frames[s][:10], s))
        return await streams.scoring.resolve("fleet", None)

    loaded = _call(client, setup)

    def job(body: bytes) -> _Job:
        request = parse_stream_body(body, streams.max_points)
        values = [streams._values(loaded, item) for item in request.items]
        return _Job(loaded, request.items, values)

    f1 = frames["s1"]
    refused = job(_body(frames["s4"][0:5], "s4"))  # a new series whose chunk the monitor refuses
    refused.values[0][2, 1] = np.inf  # (the body parser would refuse it; here the monitor does)
    answers = streams._apply_batch(
        [
            job(_body(f1[0:5], "s1")),
            refused,  # scored with s1's first request: that one still applies
            job(_body(f1[5:10], "s1")),
            job(_body(frames["s2"][3:6] + 1.0, "s2")),
            job(_body(frames["s3"][10:12], "s3", options={"sensitivity": 90})),
            job(_body(f1[10:15], "s1")),
        ]
    )
    assert isinstance(answers[1], NonFiniteError)
    assert isinstance(answers[3], ConflictError) and "exact duplicate" in str(answers[3])
    assert isinstance(answers[4], ConflictError) and "options are fixed" in str(answers[4])
    good = [a for i, a in enumerate(answers) if i not in (1, 3, 4)]
    assert all(not isinstance(a, BaseException) for a in good)
    with ctx.db.session() as session:
        rows = {r.series: r for r in session.query(Stream).all()}
    assert rows["s1"].n_points == 15 and rows["s2"].n_points == 10 and rows["s3"].n_points == 10
    assert "s4" not in rows  # the refused request's new row is gone with it
    assert rows["s1"].revision == 3  # one revision per request applied

    # the same points one request at a time on a new series give the same scores
    async def alone() -> list[float]:
        out: list[float] = []
        for i in range(0, 15, 5):
            answer = orjson.loads(await streams.ingest("fleet", _body(f1[i : i + 5], "s4")))
            out += answer["score"]
        return out

    scores = [v for a in good for o in a[0] for v in o.scores.score.tolist()]  # type: ignore[index, union-attr]
    np.testing.assert_allclose(
        np.asarray(scores, dtype=float),
        np.asarray(_call(client, alone), dtype=float),
        rtol=1e-6,
        atol=1e-9,
        equal_nan=True,
    )


def test_queue_bound_refuses_with_retry_after(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = app_client

    def slow(jobs: list[int]) -> list[int]:
        time.sleep(0.2)
        return [j * 10 for j in jobs]

    batcher: Batcher[int, int] = Batcher(slow, max_batch=2, max_wait_s=0.0, max_queue=3)

    async def flood() -> list[Any]:
        return await asyncio.gather(*(batcher.submit(j) for j in range(5)), return_exceptions=True)

    got = _call(client, flood)
    assert got[:3] == [0, 10, 20]
    for refused in got[3:]:
        assert isinstance(refused, TooManyRequestsError)
        assert refused.status_code == 429 and refused.headers == {"Retry-After": "1"}
        assert "stream_queue_max" in str(refused)

    # through the endpoint: a queue of one, the batcher waiting for more
    streams = _ctx(client).live.streams
    streams.batcher.max_queue = 1
    streams.batcher.max_wait_s = 0.5
    frames = _frames()

    async def two() -> list[Any]:
        return await asyncio.gather(
            *(streams.ingest("fleet", _body(frames[s][:3], s)) for s in ("s1", "s2")),
            return_exceptions=True,
        )

    got = _call(client, two)  # whichever queued first is applied, the other refused
    assert sorted(type(g).__name__ for g in got) == ["TooManyRequestsError", "bytes"], got
    r = client.post(
        "/v1/models/fleet/stream",
        content=_body(frames["s2"][:3], "s2"),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text  # the queue drained: accepted again
