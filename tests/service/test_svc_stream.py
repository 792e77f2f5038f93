"""The stream endpoint in-process: decisions per point with state kept in the database,
the timestamp policy, events (list, show, acknowledge, metrics), webhook alerts through the
outbox to a real receiver process, and the hand-over of a stream to a new version."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, add_event, free_port, make_frame, register_trained_version

from detector import DetectorConfig
from service.app import create_app
from service.context import AppContext
from service.live.channels import ChannelConfig
from service.live.streams import _MonitorCache
from service.settings import Settings
from service.storage import StoreError
from service.tables import Alert, AnomalyEvent, Label, Stream, utcnow

Client = tuple[TestClient, dict[str, str]]
SECRET = "s3cret-key-for-tests-0123"
HERE = Path(__file__).resolve().parent


def _live_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        scheduler_interval_s=3600,
        alert_poll_interval_s=0.05,
        alert_backoff_s=0.05,
        stream_flush_interval_s=3600,
        stream_max_points_per_request=500,
        **overrides,
    )


@pytest.fixture
def live_client(tmp_path: Path) -> Iterator[Client]:
    with _live_app(_live_settings(tmp_path)) as client:
        yield client


@contextlib.contextmanager
def _live_app(settings: Settings) -> Iterator[Client]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = _ctx(client).auth.create("admin", "tests")
        yield client, {"Authorization": f"Bearer {key}"}


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


TRAIN_END = pd.Timestamp("2026-11-01T00:00:00Z")


def _series_frame(n: int, seed: int, start_offset: int = 0) -> pd.DataFrame:
    """Normal data continuing the training frame's pattern, minutes after ``TRAIN_END``."""
    frame = make_frame(
        n=1200 + start_offset + n, seed=seed, end=TRAIN_END + pd.Timedelta(minutes=start_offset + n)
    )
    return frame.iloc[-n:]


def _model(client: TestClient, headers: dict[str, str], name: str, key: str | None = None) -> None:
    config = {**TINY_CONFIG, **({"key_column": key} if key else {})}
    r = client.post(
        "/v1/models",
        json={"name": name, "config": config, "promotion_policy": "manual"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    train = make_frame(n=1200, seed=1, end=TRAIN_END)
    if key:
        parts = []
        for s in ("s1", "s2"):
            part = train.copy()
            part[key] = s
            parts.append(part)
        train = pd.concat(parts)
    register_trained_version(_ctx(client), name, train, config, promote=True)


def _body(frame: pd.DataFrame, series: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timestamps": [ts.isoformat() for ts in frame.index],
        "values": {c: [float(v) for v in frame[c]] for c in ("a", "b")},
        **extra,
    }
    if series is not None:
        body["series"] = series
    return body


def _post(client: TestClient, headers: dict[str, str], name: str, body: dict[str, Any]) -> Any:
    r = client.post(f"/v1/models/{name}/stream", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _with_spike(frame: pd.DataFrame, at: int, length: int) -> pd.DataFrame:
    spiked = frame.copy()
    spiked.iloc[at : at + length, 0] += 8.0
    spiked.iloc[at : at + length, 1] -= 8.0
    return spiked


# --------------------------------------------------------------------------- decisions


def test_stream_keeps_context_in_the_database(live_client: Client) -> None:
    """Point by point (with this process's monitors forgotten between requests, so the state
    comes from the database each time) gives the decisions of one big request."""
    client, headers = live_client
    _model(client, headers, "multi", key="host")
    frame = _with_spike(_series_frame(60, seed=5), 40, 4)
    whole = _post(client, headers, "multi", _body(frame, "s1"))
    assert whole["n_points"] == 60 and whole["series"] == "s1" and whole["version"] == 1
    for field in ("score", "normalized", "threshold", "anomalous", "event"):
        assert len(whole[field]) == 60
    assert set(whole["expected"]) == {"a", "b"} and len(whole["expected"]["a"]) == 60
    streams = _ctx(client).live.streams
    pieces: list[Any] = []
    for i in range(0, 60, 7):
        streams.cache = _MonitorCache(10)
        pieces.append(_post(client, headers, "multi", _body(frame.iloc[i : i + 7], "s2")))
    scores = [v for p in pieces for v in p["score"]]
    flags = [v for p in pieces for v in p["anomalous"]]
    np.testing.assert_allclose(
        np.asarray(scores, dtype=float),
        np.asarray(whole["score"], dtype=float),
        rtol=1e-6,
        atol=1e-9,
        equal_nan=True,
    )
    assert flags == whole["anomalous"]
    assert all(whole["anomalous"][40:44])  # the spike is flagged
    assert sum(whole["anomalous"][:35]) <= 3  # normal points rarely are
    listed = client.get("/v1/models/multi/streams", headers=headers).json()
    assert [s["series"] for s in listed["data"]] == ["s1", "s2"]
    assert all(s["n_points"] == 60 for s in listed["data"])


def test_batch_of_series_in_one_request(live_client: Client) -> None:
    client, headers = live_client
    _model(client, headers, "multi", key="host")
    f1, f2 = _series_frame(20, seed=2), _series_frame(20, seed=3)
    out = _post(client, headers, "multi", {"batch": [_body(f1, "s1"), _body(f2, "s2")]})
    assert [r["series"] for r in out["results"]] == ["s1", "s2"]
    assert all(r["n_points"] == 20 for r in out["results"])
    r = client.post(
        "/v1/models/multi/stream",
        json={"batch": [_body(f1, "s1"), _body(f2, "s1")]},
        headers=headers,
    )
    assert r.status_code == 422 and "twice" in r.json()["detail"]
    # a body's timestamps are parsed together and cut per item: items in different forms
    # (each valid alone) still parse, and an error names its item
    g1, g2 = _series_frame(25, seed=2).iloc[20:], _series_frame(25, seed=3).iloc[20:]
    epoch = {**_body(g2, "s2"), "timestamps": [ts.timestamp() for ts in g2.index]}
    bad = {**_body(g2, "s2"), "timestamps": ["2026-13-01T00:00:00Z"] * len(g2)}
    back = {**_body(g2, "s2"), "timestamps": [ts.isoformat() for ts in g2.index[::-1]]}
    for item, words in ((bad, "batch[1].timestamps"), (back, "batch[1].timestamps must be")):
        r = client.post(
            "/v1/models/multi/stream", json={"batch": [_body(g1, "s1"), item]}, headers=headers
        )
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    out = _post(client, headers, "multi", {"batch": [_body(g1, "s1"), epoch]})
    assert [r["timestamps"] for r in out["results"]] == [
        [ts.isoformat() for ts in g.index] for g in (g1, g2)
    ]


def test_timestamp_policy_and_bad_input(live_client: Client) -> None:
    client, headers = live_client
    _model(client, headers, "single")
    frame = _series_frame(10, seed=4)
    _post(client, headers, "single", _body(frame.iloc[:5]))
    again = _post(client, headers, "single", _body(frame.iloc[3:5]))
    assert again["duplicates"] == 2 and again["n_points"] == 0
    overlap = _post(client, headers, "single", _body(frame.iloc[2:7]))
    assert overlap["duplicates"] == 3 and overlap["n_points"] == 2
    assert overlap["timestamps"] == [ts.isoformat() for ts in frame.index[5:7]]
    changed = frame.iloc[6:7].copy()
    changed["a"] = changed["a"] + 1.0
    r = client.post("/v1/models/single/stream", json=_body(changed), headers=headers)
    assert r.status_code == 409 and "exact duplicate" in r.json()["detail"]
    late = frame.iloc[[0]].copy()
    late.index = pd.DatetimeIndex(late.index) - pd.Timedelta(minutes=30)
    r = client.post("/v1/models/single/stream", json=_body(late), headers=headers)
    assert r.status_code == 409 and "/data" in r.json()["detail"]
    row_count = _ctx(client).db.session().query(Stream).one().n_points
    assert row_count == 7  # nothing of the refused requests was applied

    def refused(body: Any, code: int, words: str) -> None:
        r = client.post("/v1/models/single/stream", json=body, headers=headers)
        assert r.status_code == code, r.text
        assert words in r.json()["detail"], r.json()

    nxt = frame.iloc[7:9]
    refused({**_body(nxt), "series": "x"}, 422, "no key column")
    refused({"timestamps": [nxt.index[0].isoformat()], "values": {"a": [1.0]}}, 422, "missing")
    refused({**_body(nxt), "values": {"a": [1.0, 2.0], "b": [1.0]}}, 422, "one entry per")
    refused(
        {**_body(nxt), "timestamps": [nxt.index[1].isoformat(), nxt.index[0].isoformat()]},
        422,
        "strictly increasing",
    )
    refused({**_body(nxt), "options": {"sensitivity": 500}}, 422, "options: sensitivity")
    refused({**_body(nxt), "options": {"sensitivity": 80}}, 409, "options are fixed")
    refused({**_body(nxt), "colour": 1}, 422, "unknown field")
    big = _series_frame(501, seed=9, start_offset=100)
    refused(_body(big), 413, "stream_max_points_per_request")
    r = client.post(
        "/v1/models/single/stream",
        content=b'{"timestamps": [1], "values": {"a": [NaN]}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    r = client.post("/v1/models/nope/stream", json=_body(nxt), headers=headers)
    assert r.status_code == 404
    _model(client, headers, "multi", key="host")
    r = client.post("/v1/models/multi/stream", json=_body(nxt), headers=headers)
    assert r.status_code == 422 and "give 'series'" in r.json()["detail"]
    r = client.post(
        "/v1/models/multi/stream",
        json={**_body(nxt, "s9"), "options": {"bogus": 1}},
        headers=headers,
    )
    assert r.status_code == 422 and "options" in r.json()["detail"]


def test_streamed_points_join_the_stored_history(live_client: Client) -> None:
    client, headers = live_client
    _model(client, headers, "multi", key="host")
    before = client.get("/v1/models/multi/data", headers=headers).json()["points"]
    sent = {"s1": _series_frame(12, seed=6), "s2": _series_frame(8, seed=7)}
    for series, frame in sent.items():
        _post(client, headers, "multi", _body(frame, series))
    ctx = _ctx(client)
    assert ctx.live.streams.flush() == 20
    after = client.get("/v1/models/multi/data", headers=headers).json()["points"]
    assert after == before + 20
    assert ctx.live.streams.flush() == 0  # moved once
    # unchanged: the values and UTC timestamps of each series (the flush converts in bulk)
    stored = ctx.history.read(ctx.registry.get_model("multi").id, start=TRAIN_END)
    for series, frame in sent.items():
        pd.testing.assert_frame_equal(
            stored[stored["host"] == series][["a", "b"]],
            frame,
            check_freq=False,
            check_index_type=False,
            check_names=False,
        )


# --------------------------------------------------------------------------- events, alerts


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path, Any]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"received-{port}.jsonl"
        log.touch()
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "alert_receiver.py"), str(port), str(log), *args]
        )
        started.append(proc)
        _wait_port(port)
        return f"http://127.0.0.1:{port}/hook", log

    url, log = start()
    yield url, log, start
    for proc in started:
        proc.kill()
        proc.wait(10)


def _wait_port(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("receiver did not start")


def _covering(events: list[dict[str, Any]], start: pd.Timestamp, end: pd.Timestamp) -> Any:
    """The one event that covers ``[start, end]``."""
    found = [
        e for e in events if pd.Timestamp(e["start"]) <= start and pd.Timestamp(e["end"]) >= end
    ]
    assert len(found) == 1, events
    return found[0]


def _keys(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["headers"]["x-reconad-idempotency-key"] for m in msgs]


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def _wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _channel(client: TestClient, headers: dict[str, str], name: str, url: str, **extra: Any) -> Any:
    body = {
        "name": "hook",
        "kind": "webhook",
        "config": {"url": url, "secret": SECRET, "timeout_s": 2, **extra.pop("config", {})},
        **extra,
    }
    r = client.post(f"/v1/models/{name}/channels", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_events_and_webhook_alerts(live_client: Client, receiver: Any) -> None:
    client, headers = live_client
    url, log, _ = receiver
    _model(client, headers, "single")
    channel = _channel(client, headers, "single", url)
    assert channel["has_secret"] and "secret" not in channel
    frame = _with_spike(_series_frame(90, seed=8), 40, 5)
    opened = _post(client, headers, "single", _body(frame.iloc[:44]))
    spike = _covering(opened["events"], frame.index[40], frame.index[43])
    assert spike["status"] == "open" and spike["peak"] > 1
    event_id = spike["id"]
    assert opened["event"][40:44] == [event_id] * 4
    closed = _post(client, headers, "single", _body(frame.iloc[44:]))
    assert [e["status"] for e in closed["events"] if e["id"] == event_id] == ["closed"]
    assert all(e["status"] == "closed" for e in closed["events"])  # normal data closes all

    def mine() -> list[dict[str, Any]]:
        return [m for m in received(log) if json.loads(m["body"])["event"]["id"] == event_id]

    msgs = _wait_for(lambda: len(mine()) >= 2 and mine())
    keys = [m["headers"]["x-reconad-idempotency-key"] for m in msgs]
    assert keys == [f"{event_id}:firing", f"{event_id}:resolved"]
    for m in received(log):
        expected = (
            "sha256=" + hmac.new(SECRET.encode(), m["body"].encode(), hashlib.sha256).hexdigest()
        )
        assert m["headers"]["x-reconad-signature"] == expected
        assert json.loads(m["body"])["model"] == "single"
    assert [json.loads(m["body"])["status"] for m in msgs] == ["firing", "resolved"]
    assert len(set(_keys(received(log)))) == len(received(log))  # no key twice

    listed = client.get(
        "/v1/events", params={"model": "single", "status": "closed"}, headers=headers
    ).json()
    assert event_id in [e["id"] for e in listed["data"]]
    assert (
        client.get(
            "/v1/events", params={"model": "single", "status": "open"}, headers=headers
        ).json()["count"]
        == 0
    )
    n_closed = listed["count"]
    window = {"start": frame.index[0].isoformat(), "end": frame.index[10].isoformat()}
    assert client.get("/v1/events", params=window, headers=headers).json()["count"] == 0
    shown = client.get(f"/v1/events/{event_id}", headers=headers).json()
    assert shown["peak"] > 1 and 0 <= shown["severity"] <= 1 and shown["acknowledged_at"] is None
    acked = client.post(f"/v1/events/{event_id}/acknowledge", headers=headers).json()
    assert acked["acknowledged_at"] is not None
    assert client.get("/v1/events/999999", headers=headers).status_code == 404
    metrics = client.get("/metrics", headers=headers).text
    assert f'reconad_events{{model="single",status="closed"}} {n_closed:.1f}' in metrics
    _wait_for(lambda: len(received(log)) >= 2 * n_closed)
    alerts = client.get(f"/v1/models/single/channels/{channel['id']}/alerts", headers=headers)
    assert [a["status"] for a in alerts.json()["data"]] == ["delivered"] * (2 * n_closed)


def test_closed_events_live_in_the_events_table_not_in_the_series_state(
    live_client: Client,
) -> None:
    """Once stored, closed events leave the monitor: the series' stored state carries none
    however many it raised, and a monitor restored from that state (a restart) goes on with
    new event ids."""
    client, headers = live_client
    _model(client, headers, "single")
    ctx = _ctx(client)
    ids: list[int] = []
    for k in range(4):
        frame = _with_spike(_series_frame(60, seed=20 + k, start_offset=60 * k), 20, 4)
        out = _post(client, headers, "single", _body(frame))
        assert [e["status"] for e in out["events"]] and all(
            e["status"] == "closed" for e in out["events"]
        )
        ids += [e["id"] for e in out["events"]]
        if k == 1:  # as after a restart: the next request restores the stored state
            for stream_id in list(ctx.live.streams.cache._items):
                ctx.live.streams.cache.drop(stream_id)
    with ctx.db.session() as session:
        row = session.query(Stream).one()
        state = json.loads(row.state)
        seqs = [e.seq for e in session.query(AnomalyEvent).order_by(AnomalyEvent.seq)]
    assert state["events"] == [] and state["open"] is None
    assert len(ids) == len(set(ids)) >= 4  # every request's events, none twice
    assert seqs == list(range(1, len(seqs) + 1)) and state["next_id"] == len(seqs) + 1


def test_failed_deliveries_are_retried_and_channels_are_managed(
    live_client: Client, receiver: Any
) -> None:
    client, headers = live_client
    _, _, start = receiver
    url, log = start("--fail-first", "2")
    _model(client, headers, "single")
    channel = _channel(client, headers, "single", url)
    frame = _with_spike(_series_frame(60, seed=10), 30, 3)
    out = _post(client, headers, "single", _body(frame.iloc[:32]))
    spike = _covering(out["events"], frame.index[30], frame.index[31])
    wanted = {f"{e['id']}:firing" for e in out["events"]} | {
        f"{e['id']}:resolved" for e in out["events"] if e["status"] == "closed"
    }
    _wait_for(lambda: len([m for m in received(log) if m["answered"] == 200]) == len(wanted))
    msgs = received(log)
    assert [m["answered"] for m in msgs[:2]] == [500, 500]
    assert len(msgs) == len(wanted) + 2  # two refusals, then each alert once
    assert set(_keys(msgs)) == wanted

    def alerts() -> list[Alert]:
        with _ctx(client).db.session() as session:
            return session.query(Alert).all()

    _wait_for(lambda: {a.status for a in alerts()} == {"delivered"})
    assert sum(a.attempts for a in alerts()) == len(alerts()) + 2
    assert any(a.event_id == spike["id"] for a in alerts())
    # CRUD and validation of channels
    r = client.post(
        "/v1/models/single/channels",
        headers=headers,
        json={"name": "hook", "kind": "webhook", "config": {"url": url, "secret": SECRET}},
    )
    assert r.status_code == 409
    r = client.post(
        "/v1/models/single/channels",
        headers=headers,
        json={"name": "nosecret", "kind": "webhook", "config": {"url": url}},
    )
    assert r.status_code == 422 and "secret" in r.json()["detail"]
    r = client.post(
        "/v1/models/single/channels",
        headers=headers,
        json={"name": "bad", "kind": "webhook", "config": {"url": "not a url", "secret": SECRET}},
    )
    assert r.status_code == 422
    r = client.patch(
        f"/v1/models/single/channels/{channel['id']}",
        headers=headers,
        json={"enabled": False, "min_severity": 0.5},
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert client.get("/v1/models/single/channels", headers=headers).json()["count"] == 1
    r = client.delete(f"/v1/models/single/channels/{channel['id']}", headers=headers)
    assert r.status_code == 204
    assert (
        client.get(f"/v1/models/single/channels/{channel['id']}", headers=headers).status_code
        == 404
    )


def test_rate_limit_postpones_alerts_without_dropping_them(
    live_client: Client, receiver: Any
) -> None:
    client, headers = live_client
    url, log, _ = receiver
    _model(client, headers, "single")
    _channel(client, headers, "single", url, rate_limit_per_minute=2)
    frame = _series_frame(130, seed=11)
    for at in (20, 55, 90):  # separate events: their alerts, at most two a minute
        frame = _with_spike(frame, at, 2)
    _post(client, headers, "single", _body(frame))
    _wait_for(lambda: len(received(log)) >= 2)
    time.sleep(1.0)
    assert len(received(log)) == 2
    with _ctx(client).db.session() as session:
        statuses = sorted(a.status for a in session.query(Alert))
    assert len(statuses) >= 4  # at least two events' firing and resolved
    assert statuses.count("delivered") == 2 and statuses.count("pending") == len(statuses) - 2


def test_new_version_takes_over_the_stream_without_a_burst(
    live_client: Client, receiver: Any
) -> None:
    client, headers = live_client
    url, log, _ = receiver
    _model(client, headers, "single")
    _channel(client, headers, "single", url)
    frame = _series_frame(80, seed=12)
    first = _post(client, headers, "single", _body(frame.iloc[:40]))
    assert first["version"] == 1
    assert all(e["status"] == "closed" for e in first["events"])
    n_before = 2 * len(first["events"])
    _wait_for(lambda: len(received(log)) == n_before or n_before == 0)
    register_trained_version(
        _ctx(client), "single", make_frame(n=1200, seed=2, end=TRAIN_END), promote=True
    )
    _ctx(client).scoring.forget("single")
    after = _post(client, headers, "single", _body(frame.iloc[40:]))
    assert after["version"] == 2
    assert not any(after["anomalous"]) and not after["events"]
    with _ctx(client).db.session() as session:
        row = session.query(Stream).one()
        assert row.version == 2 and row.n_points == 80
    time.sleep(0.3)
    assert len(received(log)) == n_before  # nothing new at or after the switch


def test_a_series_goes_on_after_its_version_is_deleted(live_client: Client) -> None:
    """A series last moved on by version 1; version 2 is promoted and version 1 deleted. The
    next points (on a replica without the series' monitor, or after a restart) are handed
    to version 2 from the stored state alone, as if version 1 still existed: before, every
    request of the series was refused with "no version 1"."""
    client, headers = live_client
    _model(client, headers, "single")
    frame = _series_frame(80, seed=12)
    _post(client, headers, "single", _body(frame.iloc[:40]))
    ctx = _ctx(client)
    register_trained_version(ctx, "single", make_frame(n=1200, seed=2, end=TRAIN_END), promote=True)
    assert client.delete("/v1/models/single/versions/1", headers=headers).status_code == 204
    ctx.scoring.forget("single")
    with ctx.db.session() as session:
        row = session.query(Stream).one()
        assert row.version == 1
        stream_id = row.id
    ctx.live.streams.cache.drop(stream_id)  # as on another replica, or after a restart
    after = _post(client, headers, "single", _body(frame.iloc[40:]))
    assert after["version"] == 2 and len(after["score"]) == 40
    assert not any(after["anomalous"]) and not after["events"]  # normal data, no burst
    with ctx.db.session() as session:
        row = session.query(Stream).one()
        assert row.version == 2 and row.n_points == 80


def test_stream_requests_wait_while_the_history_store_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECONAD_STREAM_MAX_BUFFERED_POINTS``: while the stored history refuses points they
    stay buffered, and past the limit stream requests get 503 with Retry-After, applying
    nothing; once the store takes them, every buffered point reaches the history and the
    stream goes on."""
    with _live_app(_live_settings(tmp_path, stream_max_buffered_points=1000)) as (client, headers):
        _model(client, headers, "fleet", key="host")
        ctx = _ctx(client)
        streams = ctx.live.streams
        append = streams.history.append

        def failing(*_args: Any, **_kwargs: Any) -> int:
            raise StoreError("the disk is full")

        monkeypatch.setattr(streams.history, "append", failing)
        frame = _series_frame(400, seed=5)
        for host in ("s1", "s2", "s3"):
            _post(client, headers, "fleet", _body(frame, series=host))
        assert streams.flush() == 0 and streams.buffered == 1200
        later = _series_frame(410, seed=5).iloc[-10:]
        refused = client.post("/v1/models/fleet/stream", json=_body(later, "s1"), headers=headers)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "3600"
        assert "1200 streamed points are waiting" in refused.json()["detail"]
        with ctx.db.session() as session:
            assert {r.series: r.n_points for r in session.query(Stream)} == {
                "s1": 400,
                "s2": 400,
                "s3": 400,
            }
        monkeypatch.setattr(streams.history, "append", append)
        assert streams.flush() == 1200 and streams.buffered == 0
        model_id = ctx.registry.get_model("fleet").id
        assert streams.history.summary(model_id).points == 1200
        after = _post(client, headers, "fleet", _body(later, "s1"))
        assert len(after["score"]) == 10


def test_events_before_the_stored_history_are_deleted(context: AppContext) -> None:
    """Closed events that end before the model's stored history begins go, with their alerts
    (a label on one keeps its span); later ones and open ones stay."""
    ctx = context
    ctx.registry.create_model("m", DetectorConfig.model_validate(TINY_CONFIG), "", "manual")
    model_id = ctx.registry.get_model("m").id
    history = make_frame(100, end=TRAIN_END)
    ctx.history.append(model_id, history)
    begin = history.index[0]
    config = ChannelConfig.model_validate({"url": "http://127.0.0.1:9/", "secret": "s" * 16})
    channel = ctx.live.channels.create("m", "out", "webhook", config, 0.0, 60, True)
    old = add_event(ctx, "m", "s", begin - pd.Timedelta("2h"), begin - pd.Timedelta("1h"))
    straddling = add_event(ctx, "m", "s", begin - pd.Timedelta("1h"), begin + pd.Timedelta("1min"))
    still_open = add_event(ctx, "m", "s", begin - pd.Timedelta("3h"), begin - pd.Timedelta("2h"))
    with ctx.db.transaction() as session:
        opened = session.get(AnomalyEvent, still_open)
        assert opened is not None
        opened.status = "open"
        session.add(
            Label(
                model_id=model_id,
                series="s",
                start=begin - pd.Timedelta("2h"),
                end=begin - pd.Timedelta("1h"),
                verdict="anomaly",
                event_id=old,
            )
        )
        session.add(
            Alert(
                channel_id=channel.id,
                event_id=old,
                state="resolved",
                idempotency_key=f"{old}:resolved",
                payload={},
                status="delivered",
                next_attempt_at=utcnow(),
            )
        )
    assert ctx.live.streams.prune_events() == 1
    with ctx.db.session() as session:
        assert {e.id for e in session.query(AnomalyEvent)} == {straddling, still_open}
        assert session.query(Alert).count() == 0
        label = session.query(Label).one()
        assert label.event_id is None and label.verdict == "anomaly"
    assert ctx.live.streams.prune_events() == 0
