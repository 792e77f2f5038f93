"""The console in-process: sign-in and its cookie, CSRF, scopes, chart data and downsampling,
upload preview, schedule preview (the browser tests drive the same routes through chromium)."""

from __future__ import annotations

import io
import itertools
import re
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, make_frame, register_trained_version

from service.app import create_app
from service.context import AppContext
from service.settings import Settings
from service.ui import router as ui_router
from service.ui.downsample import break_gaps, minmax, runs
from service.ui.eventplot import sparkline
from service.ui.series import preview_threshold


def _series(client: TestClient, **params: Any) -> dict[str, Any]:
    """A chart body once the version has scored the stored series (it scores in the background)."""
    for _ in range(600):
        body: dict[str, Any] = client.get("/ui/api/models/m1/series", params=params).json()
        if body["scored"]:
            return body
        time.sleep(0.05)
    raise AssertionError("the stored series was not scored within 30 s")


def _stream_body(live: pd.DataFrame) -> dict[str, Any]:
    """A stream request body of the frame's points (features a and b)."""
    return {
        "timestamps": [ts.isoformat() for ts in live.index],
        "values": {c: [float(v) for v in live[c]] for c in ("a", "b")},
    }


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


def _sign_in(client: TestClient, key: str) -> str:
    """Sign in through the form; return the page's CSRF token."""
    form = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    r = client.post(
        "/ui/login",
        data={"key": key, "csrf_token": token.group(1), "next": "/ui/models"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = client.get("/ui/models")
    assert page.status_code == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert csrf is not None
    return csrf.group(1)


def _spiky_frame(n: int = 3000) -> tuple[pd.DataFrame, slice]:
    frame = make_frame(n, seed=3)
    where = slice(n - 400, n - 380)
    frame.iloc[where, 0] += 4.0
    return frame, where


@pytest.fixture
def console(settings: Settings) -> Any:
    """An app with a trained model 'm1' holding data with one injected anomaly."""
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        ctx = _ctx(client)
        _, admin = ctx.auth.create("admin", "ops")
        _, score = ctx.auth.create("score", "viewer")
        headers = {"Authorization": f"Bearer {admin}"}
        r = client.post("/v1/models", json={"name": "m1", "config": TINY_CONFIG}, headers=headers)
        assert r.status_code == 201
        train = make_frame(2000, seed=1, end=pd.Timestamp("2026-01-01", tz="UTC"))
        register_trained_version(ctx, "m1", train)
        frame, where = _spiky_frame()
        ctx.history.append(ctx.registry.get_model("m1").id, frame)
        yield client, admin, score, frame, where


# --------------------------------------------------------------------------- downsampling


def test_minmax_keeps_every_columns_extremes_and_returns_raw_points_when_few() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(100_000, dtype=np.float64)
    y = rng.standard_normal(100_000)
    y[54_321] = 50.0
    y[77] = -40.0
    down = minmax(x, [y], 0, 99_999, 500)
    assert not down.raw and len(down.x) <= 1000 and down.n_points == 100_000
    assert down.ys[0].max() == 50.0 and down.ys[0].min() == -40.0
    assert np.all(np.diff(down.x) >= 0)
    # Each column's min and max are those of the stored points in it.
    starts = np.unique(np.searchsorted(x, np.linspace(0, 99_999, 501)[:-1]))
    assert np.allclose(down.ys[0][0::2], np.minimum.reduceat(y, starts))
    assert np.allclose(down.ys[0][1::2], np.maximum.reduceat(y, starts))
    zoom = minmax(x, [y], 54_000, 54_400, 500)
    assert zoom.raw and zoom.n_points == 401
    assert np.array_equal(zoom.ys[0], y[54_000:54_401])


def test_break_gaps_puts_a_break_in_each_stretch_without_data() -> None:
    x = np.concatenate([np.arange(100.0), np.arange(1000.0, 1100.0)])
    y = np.ones_like(x)
    down = break_gaps(minmax(x, [y], 0, 1099, 50), gap=2 * 1099 / 50)
    breaks = np.flatnonzero(np.isnan(down.ys[0]))
    assert len(breaks) == 1 and 99 < down.x[breaks[0]] < 1000
    assert np.all(np.diff(down.x) > 0) and np.isfinite(down.x).all()
    regular = minmax(np.arange(1000.0), [np.ones(1000)], 0, 999, 2000)
    assert break_gaps(regular, 5.0) is regular  # no gap: nothing inserted


def test_runs_finds_consecutive_flags() -> None:
    flags = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert runs(flags).tolist() == [[1, 2], [5, 5], [7, 9]]
    assert runs(np.zeros(5, dtype=bool)).shape == (0, 2)


def test_sensitivity_scales_the_threshold_monotonically() -> None:
    values = [preview_threshold(2.0, s) for s in (0, 25, 50, 75, 100)]
    assert values[2] == 2.0
    assert all(a > b for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------- sign-in


def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie(console: Any) -> None:
    client, admin, *_ = console
    r = client.get("/ui/models", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert client.get("/ui/api/models/m1/series").status_code == 401
    form = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    # A bad key is refused on the form, with the reason.
    bad = client.post("/ui/login", data={"key": "rad_nope", "csrf_token": token.group(1)})
    assert bad.status_code == 401 and "invalid API key" in bad.text
    # A sign-in post without the form's token (cross-site) is refused.
    client.cookies.clear()
    forged = client.post("/ui/login", data={"key": admin, "csrf_token": "x"})
    assert forged.status_code == 403
    form = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    ok = client.post(
        "/ui/login",
        data={"key": admin, "csrf_token": token.group(1), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/models"
    cookie = ok.headers["set-cookie"]
    assert "reconad_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/ui" in cookie
    assert admin not in cookie  # the key never goes to the browser
    page = client.get("/ui/models")
    assert page.status_code == 200 and "m1" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_models_page_counts_open_anomaly_events(console: Any) -> None:
    client, admin, *_ = console
    _sign_in(client, admin)
    assert " open</a>" not in client.get("/ui/models").text
    # A stream that ends inside a spike leaves one event open.
    live = make_frame(300, seed=4, end=pd.Timestamp("2026-03-01", tz="UTC"))
    live.iloc[-6:, 0] += 8.0
    body = _stream_body(live)
    r = client.post("/v1/models/m1/stream", json=body, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    assert r.json()["anomalous"][-1] is True
    page = client.get("/ui/models").text
    assert "/ui/events?model=m1&amp;status=open" in page and ">1 open</a>" in page
    # The model page's chart lists the event in its range (shaded there), not outside it.
    end = live.index[-1].timestamp()
    (event,) = _series(client, start=end - 3600, end=end + 60)["events"]
    assert event["status"] == "open" and event["start"] <= end <= event["end"] + 60
    assert _series(client, start=end - 7 * 86400, end=end - 6 * 86400)["events"] == []


def test_scoring_and_streams_record_the_last_scoring_time_without_a_write_per_request(
    console: Any,
) -> None:
    client, admin, *_ = console
    ctx = _ctx(client)
    auth = {"Authorization": f"Bearer {admin}"}
    _sign_in(client, admin)
    assert client.get("/v1/models/m1", headers=auth).json()["last_scored_at"] is None
    cell = re.compile(r'<td class="last-scored">(.*?)</td>', re.S)
    assert "never" in cell.findall(client.get("/ui/models").text)[0]
    written: list[bool] = []
    mark = ctx.registry.mark_scored

    def counted(model_id: str, at: datetime, resolution_s: float) -> bool:
        written.append(mark(model_id, at, resolution_s))
        return written[-1]

    ctx.registry.mark_scored = counted  # type: ignore[method-assign]
    live = make_frame(100, seed=9, end=pd.Timestamp("2026-06-01", tz="UTC"))
    body = _stream_body(live)
    before = datetime.now(UTC).replace(microsecond=0)
    for _ in range(5):
        assert client.post("/v1/models/m1/score", json=body, headers=auth).status_code == 200

    for _ in range(200):  # the write happens off the request's path
        if written:
            break
        time.sleep(0.05)
    value = client.get("/v1/models/m1", headers=auth).json()["last_scored_at"]
    first = datetime.fromisoformat(value)
    assert first >= before
    assert written == [True]  # five requests, one write (the resolution is 60 s)
    shown = cell.findall(client.get("/ui/models").text)[0]
    assert first.strftime("%Y-%m-%d %H:%M:%S") in shown
    # The stream path records it too (here with no resolution: every request may write).
    ctx.scoring.scored_at_resolution_s = 0.0
    time.sleep(1.1)  # a later second than the first write
    assert client.post("/v1/models/m1/stream", json=body, headers=auth).status_code == 200
    for _ in range(200):
        if len(written) == 2:
            break
        time.sleep(0.05)
    value = client.get("/v1/models/m1", headers=auth).json()["last_scored_at"]
    assert datetime.fromisoformat(value) > first
    assert written == [True, True]


def test_sign_out_and_revocation_end_the_session(console: Any) -> None:
    client, admin, *_ = console
    csrf = _sign_in(client, admin)
    assert client.get("/ui/models").status_code == 200
    r = client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/ui/models", follow_redirects=False).status_code == 303
    # A revoked key's sessions end too.
    ctx = _ctx(client)
    row, key = ctx.auth.create("write", "temp")
    _sign_in(client, key)
    ctx.auth.revoke(row.id)
    assert client.get("/ui/models", follow_redirects=False).status_code == 303


def test_sessions_per_key_are_bounded(settings: Settings) -> None:
    limited = settings.model_copy(update={"ui_max_sessions_per_key": 2})
    with TestClient(create_app(limited)) as client:
        ctx = _ctx(client)
        _, key = ctx.auth.create("score", "many")
        tokens = [ctx.console.sign_in(key)[0] for _ in range(3)]
        assert ctx.console.lookup(tokens[0]) is None  # the oldest ended
        assert all(ctx.console.lookup(t) is not None for t in tokens[1:])


def test_state_changes_need_the_csrf_token(console: Any) -> None:
    client, admin, *_ = console
    csrf = _sign_in(client, admin)
    url = "/ui/api/models/m1/versions/1/promote"
    missing = client.post(url)
    assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
    wrong = client.post(url, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403
    ok = client.post(url, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["active_version"] == 1
    bad_logout = client.post("/ui/logout", data={"csrf_token": "x"})
    assert bad_logout.status_code == 403
    assert client.get("/ui/models").status_code == 200  # still signed in


def test_a_score_key_sees_but_cannot_change_anything(console: Any) -> None:
    client, _admin, score, *_ = console
    csrf = _sign_in(client, score)
    headers = {"X-CSRF-Token": csrf}
    page = client.get("/ui/models/m1/versions")
    assert page.status_code == 200
    assert "needs a key with scope &#39;write&#39; (yours: score)" in page.text
    assert re.search(r"data-action=\"/ui/api/models/m1/rollback\"[^>]*disabled", page.text)
    for url, body in (
        ("/ui/api/models/m1/train", {}),
        ("/ui/api/models/m1/versions/1/promote", None),
        ("/ui/api/models/m1/rollback", None),
        ("/ui/api/models/m1/versions/1/delete", None),
        ("/ui/api/models/m1/schedules", {"interval": "1h", "window": "1d"}),
    ):
        r = client.post(url, json=body, headers=headers)
        assert r.status_code == 403, (url, r.text)
        assert "needs a key with scope" in r.json()["detail"]
    files = {"file": ("d.csv", b"timestamp,a,b\n2026-01-01T00:00:00Z,1,2\n", "text/csv")}
    assert (
        client.post("/ui/api/models/m1/data/store", files=files, headers=headers).status_code == 403
    )
    # Reading works.
    assert client.get("/ui/api/models/m1/series?width=200").status_code == 200
    assert client.get("/ui/jobs").status_code == 200


# --------------------------------------------------------------------------- charts


def test_series_shows_the_injected_anomaly_and_zooming_returns_stored_points(
    console: Any,
) -> None:
    client, admin, _score, frame, where = console
    _sign_in(client, admin)
    # The first view shows the stored values at once and scores them in the background.
    first = client.get("/ui/api/models/m1/series", params={"width": 300}).json()
    assert first["scored"] is False and first["n_points"] == len(frame)
    assert first["score"] is None and first["series"]["a"]["expected"] is None
    assert np.nanmax(np.array(first["series"]["a"]["value"], dtype=float)) == pytest.approx(
        frame["a"].max(), rel=1e-5
    )
    body = _series(client, width=300)
    assert body["x"] == first["x"] and body["series"]["a"]["value"] == first["series"]["a"]["value"]
    assert body["n_points"] == len(frame) and not body["raw"]
    assert len(body["x"]) <= 600
    assert set(body["series"]["a"]) == {"value", "expected", "lower", "upper"}
    # The injected stretch is flagged and is the strongest stretch listed.
    ts = np.array([t.timestamp() for t in frame.index])
    lo, hi = ts[where.start], ts[where.stop - 1]
    strongest = max(body["stretches"], key=lambda s: s["peak"])
    assert strongest["start"] <= hi and strongest["end"] >= lo
    assert strongest["top_features"][0][0] == "a"
    # Flagged points are mostly the injected ones (a random scorer would not be).
    inside = _series(client, start=lo, end=hi, width=300)
    assert inside["n_flagged"] >= 0.5 * (where.stop - where.start)
    assert body["n_flagged"] <= 4 * (where.stop - where.start) + 0.02 * len(frame)
    # Zoomed in, the stored values come back exactly.
    assert inside["raw"] and inside["n_points"] == where.stop - where.start
    assert np.allclose(inside["series"]["a"]["value"], frame["a"].iloc[where], atol=1e-5)
    # Sensitivity changes the flags without retraining, monotonically.
    counts = [_series(client, sensitivity=s, width=100)["n_flagged"] for s in (0, 50, 100)]
    assert counts[0] <= counts[1] <= counts[2] and counts[0] < counts[2]
    point = client.get("/ui/api/models/m1/explain", params={"at": ts[where.start + 5]}).json()
    assert point["contributions"][0][0] == "a" and point["score"] > point["threshold"]


def test_an_unchanged_chart_is_a_304_and_new_events_or_data_change_its_tag(
    console: Any,
) -> None:
    client, admin, _score, frame, _where = console
    _sign_in(client, admin)
    url = "/ui/api/models/m1/series"
    params = {"width": 200}
    unscored = client.get(url, params=params)
    _series(client, **params)
    scored = client.get(url, params=params)
    tag = scored.headers["etag"]
    assert tag.startswith('"') and tag != unscored.headers["etag"]  # scores in: a new state
    same = client.get(url, params=params, headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == tag
    listed = client.get(url, params=params, headers={"If-None-Match": f'"x", W/{tag}'})
    assert listed.status_code == 304
    # Another view of the same state is another tag.
    other = client.get(url, params={"width": 201}, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    # A live event in view changes the body, so the tag; so does its acknowledgement.
    live = make_frame(300, seed=4, end=frame.index[-1] + pd.Timedelta(hours=6))
    live.iloc[-6:, 0] += 8.0
    zoom = {"width": 200, "start": frame.index[0].timestamp(), "end": live.index[-1].timestamp()}
    before = _series(client, **zoom)
    assert before["events"] == []
    tag = client.get(url, params=zoom).headers["etag"]
    body = _stream_body(live)
    auth = {"Authorization": f"Bearer {admin}"}
    assert client.post("/v1/models/m1/stream", json=body, headers=auth).status_code == 200
    changed = client.get(url, params=zoom, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    (event,) = changed.json()["events"]
    tag = changed.headers["etag"]
    assert client.get(url, params=zoom, headers={"If-None-Match": tag}).status_code == 304
    assert client.post(f"/v1/events/{event['id']}/acknowledge", headers=auth).status_code == 200
    acked = client.get(url, params=zoom, headers={"If-None-Match": tag})
    assert acked.status_code == 200 and acked.json()["events"][0]["acknowledged"] is True
    # New stored data is a new state of the history (scored again in the background).
    tag = acked.headers["etag"]
    _ctx(client).live.streams.flush()
    moved = client.get(url, params=zoom, headers={"If-None-Match": tag})
    assert moved.status_code == 200 and moved.headers["etag"] != tag


def test_a_chart_line_breaks_where_the_stored_history_has_a_gap(console: Any) -> None:
    client, admin, _score, frame, _where = console
    _sign_in(client, admin)
    later = make_frame(500, seed=8, end=frame.index[-1] + pd.Timedelta(days=30))
    ctx = _ctx(client)
    ctx.history.append(ctx.registry.get_model("m1").id, later)
    for params in ({"width": 300}, {"width": 2000}):  # min/max columns, and every point
        body = _series(client, **params)
        values = body["series"]["a"]["value"]
        breaks = [i for i, v in enumerate(values) if v is None]
        assert len(breaks) == 1, params
        t = body["x"][breaks[0]]
        assert frame.index[-1].timestamp() < t < later.index[0].timestamp()
        assert body["score"][breaks[0]] is None and body["flag"][breaks[0]] is None
    assert body["raw"] and len(values) == len(frame) + len(later) + 1


def test_the_live_poll_shows_new_events_and_data_without_rescoring(console: Any) -> None:
    client, admin, _score, frame, _where = console
    _sign_in(client, admin)
    ctx = _ctx(client)
    url = "/ui/api/models/m1/live"
    end = frame.index[-1] + pd.Timedelta(hours=6)
    view = {"start": frame.index[0].timestamp(), "end": end.timestamp()}
    chart = _series(client, **view)
    first = client.get(url, params=view)
    assert first.status_code == 200 and first.json() == {"events": [], "history": chart["history"]}
    tag = first.headers["etag"]
    assert client.get(url, params=view, headers={"If-None-Match": tag}).status_code == 304
    live = make_frame(300, seed=4, end=end)
    live.iloc[-6:, 0] += 8.0
    body = _stream_body(live)
    auth = {"Authorization": f"Bearer {admin}"}
    assert client.post("/v1/models/m1/stream", json=body, headers=auth).status_code == 200
    opened = client.get(url, params=view, headers={"If-None-Match": tag})
    assert opened.status_code == 200 and len(opened.json()["events"]) == 1
    assert opened.json()["history"] == chart["history"]  # buffered, not yet stored
    ctx.live.streams.flush()
    moved = client.get(url, params=view, headers={"If-None-Match": opened.headers["etag"]})
    assert moved.status_code == 200
    assert moved.json()["history"]["points"] == chart["history"]["points"] + len(live)
    assert not ctx.series._scoring  # the poll started no scoring of the longer history
    assert client.get("/ui/api/models/nope/live").status_code == 404


def test_a_model_with_a_key_column_is_charted_one_series_at_a_time(console: Any) -> None:
    client, admin, *_ = console
    ctx = _ctx(client)
    config = {**TINY_CONFIG, "key_column": "host"}
    headers = {"Authorization": f"Bearer {admin}"}
    r = client.post("/v1/models", json={"name": "fleet", "config": config}, headers=headers)
    assert r.status_code == 201, r.text
    end = pd.Timestamp("2026-01-01", tz="UTC")
    train = pd.concat(
        [make_frame(1500, seed=s, end=end).assign(host=h) for s, h in ((1, "h1"), (2, "h2"))]
    )
    register_trained_version(ctx, "fleet", train, config)
    later = end + pd.Timedelta(days=1)
    h1 = make_frame(900, seed=3, end=later).assign(host="h1")
    h2 = make_frame(600, seed=4, end=later).assign(host="h2")
    h2.iloc[-200:-180, 0] += 4.0  # an anomaly in h2 only
    ctx.history.append(ctx.registry.get_model("fleet").id, pd.concat([h1, h2]), "host")
    _sign_in(client, admin)

    def fleet(**params: Any) -> dict[str, Any]:
        for _ in range(600):
            r = client.get("/ui/api/models/fleet/series", params=params)
            assert r.status_code == 200, r.text
            if r.json()["scored"]:
                return dict(r.json())
            time.sleep(0.05)
        raise AssertionError("not scored within 30 s")

    first = fleet(width=200)
    assert first["keys"] == ["h1", "h2"] and first["key"] == "h1"
    assert first["n_points"] == first["stored_points"] == 900
    second = fleet(width=200, key="h2")
    assert second["key"] == "h2" and second["n_points"] == 600
    # The anomaly is h2's: its strongest stretch covers it; h1 has none that strong there.
    ts = h2.index[-200].timestamp()
    strongest = max(second["stretches"], key=lambda st: st["peak"])
    assert strongest["start"] <= h2.index[-181].timestamp() and strongest["end"] >= ts
    point = client.get("/ui/api/models/fleet/explain", params={"at": ts + 300, "key": "h2"})
    assert point.status_code == 200 and point.json()["score"] > point.json()["threshold"]
    unknown = client.get("/ui/api/models/fleet/series", params={"key": "h9"})
    assert unknown.status_code == 404 and "h9" in unknown.json()["detail"]
    page = client.get("/ui/models/fleet")
    assert 'id="series-key"' in page.text


def test_chart_requests_are_bounded_and_checked(console: Any) -> None:
    client, admin, *_ = console
    _sign_in(client, admin)
    for params in (
        {"width": 0},
        {"width": 100_000},
        {"sensitivity": 101},
        {"feature": "nope"},
        {"start": 10, "end": 5},
        {"version": 9},
    ):
        r = client.get("/ui/api/models/m1/series", params=params)
        assert 400 <= r.status_code < 500, (params, r.text)
        assert r.json()["detail"]
    assert client.get("/ui/api/models/nope/series").status_code == 404


def test_two_versions_side_by_side(console: Any) -> None:
    client, admin, *_ = console
    ctx = _ctx(client)
    register_trained_version(ctx, "m1", make_frame(2000, seed=7), promote=False)
    _sign_in(client, admin)
    body = client.get("/ui/api/models/m1/compare", params={"a": 1, "b": 2, "width": 200}).json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert len(body["versions"][0]["x"]) == len(body["versions"][1]["x"])
    page = client.get("/ui/models/m1/versions")
    assert 'id="compare"' in page.text and "cmp-a" in page.text


# --------------------------------------------------------------------------- data, schedules


def test_upload_preview_stores_nothing_and_refusals_say_why(console: Any) -> None:
    client, admin, *_ = console
    csrf = _sign_in(client, admin)
    headers = {"X-CSRF-Token": csrf}
    ctx = _ctx(client)
    before = ctx.data.summary("m1").points
    more = make_frame(50, seed=9, end=pd.Timestamp("2030-01-01", tz="UTC"))
    buffer = io.BytesIO()
    more.reset_index().to_parquet(buffer)
    files = {"file": ("more.parquet", buffer.getvalue(), "application/octet-stream")}
    preview = client.post("/ui/api/models/m1/data/preview", files=files, headers=headers)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["rows"] == 50 and body["columns"] == ["a", "b"] and len(body["head"]) == 10
    assert ctx.data.summary("m1").points == before
    stored = client.post("/ui/api/models/m1/data/store", files=files, headers=headers)
    assert stored.status_code == 200 and stored.json()["appended"] == 50
    assert ctx.data.summary("m1").points == before + 50
    for content, needle in (
        (b"time,a,b\n2026-01-01,1,2\n", "no 'timestamp' column"),
        (b"timestamp,a,c\n2026-01-01,1,2\n", "differ from the stored columns"),
        (b"", "empty"),
    ):
        r = client.post(
            "/ui/api/models/m1/data/preview",
            files={"file": ("x.csv", content, "text/csv")},
            headers=headers,
        )
        assert 400 <= r.status_code < 500 and needle in r.json()["detail"], r.text
    assert ctx.data.summary("m1").points == before + 50


def test_schedule_preview_lists_the_next_runs(console: Any) -> None:
    client, admin, *_ = console
    _sign_in(client, admin)
    cron = client.get("/ui/api/schedules/preview", params={"cron": "0 3 * * *"}).json()
    runs_ = [pd.Timestamp(t) for t in cron["next_runs"]]
    assert len(runs_) == 5 and all(t.hour == 3 and t.minute == 0 for t in runs_)
    assert all((b - a) == pd.Timedelta("1D") for a, b in itertools.pairwise(runs_))
    every = client.get("/ui/api/schedules/preview", params={"interval": "90s"}).json()
    stamps = [pd.Timestamp(t) for t in every["next_runs"]]
    assert (stamps[1] - stamps[0]) == pd.Timedelta("90s")
    bad = client.get("/ui/api/schedules/preview", params={"cron": "every day"})
    assert bad.status_code == 422 and "cron" in bad.json()["detail"]
    assert client.get("/ui/api/schedules/preview").status_code == 422


def test_every_page_renders_for_a_signed_in_key(console: Any) -> None:
    client, admin, *_ = console
    csrf = _sign_in(client, admin)
    job = client.post(
        "/ui/api/models/m1/train", json={"last": "1d"}, headers={"X-CSRF-Token": csrf}
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    for path in (
        "/ui/models",
        "/ui/models/m1",
        "/ui/models/m1/versions",
        "/ui/models/m1/data",
        "/ui/jobs",
        f"/ui/jobs/{job_id}",
        "/ui/schedules",
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
    missing = client.get("/ui/models/nope")
    assert missing.status_code == 404 and "nope" in missing.text
    assert client.get("/ui/static/vendor/uplot-1.6.32/uPlot.iife.min.js").status_code == 200


# --------------------------------------------------------------------------- every route


def _console_routes(client: TestClient) -> list[tuple[str, str, Any]]:
    """Every console route (the router the app includes under /ui) and method."""
    from fastapi.routing import APIRoute

    from service.ui.router import router

    assert client.get("/ui/login").status_code == 200  # the app serves this router
    return [
        (route.path, method, route)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


_URL_PARAMS = {
    "name": "m1",
    "version": "1",
    "job_id": "no-such-job",
    "schedule_id": "no-such-schedule",
    "step": "preview",
    "action": "pause",
    "event_id": "999999",
}


def test_every_console_route_needs_exactly_its_scope_a_session_and_the_csrf_token(
    console: Any,
) -> None:
    """Each console route against the one scope table, with sessions of every scope."""
    from service.auth import SCOPES
    from service.scopes import ROUTE_SCOPES

    client, *_ = console
    routes = _console_routes(client)
    assert {(m, p) for p, m, _ in routes} == {k for k in ROUTE_SCOPES if k[1].startswith("/ui")}
    ctx = _ctx(client)
    csrf: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for scope in SCOPES:
        _, key = ctx.auth.create(scope, f"ui-{scope}")
        client.cookies.clear()
        csrf[scope] = _sign_in(client, key)
        cookies[scope] = client.cookies["reconad_session"]
    wrong: list[str] = []

    def call(method: str, url: str, scope: str | None, with_csrf: bool = True) -> int:
        client.cookies.clear()
        headers = {}
        if scope is not None:
            client.cookies.set("reconad_session", cookies[scope], path="/ui")
            if with_csrf:
                headers["X-CSRF-Token"] = csrf[scope]
        body: dict[str, Any] = {"json": {}} if method == "POST" and "/data/" not in url else {}
        r = client.request(method, url, headers=headers, follow_redirects=False, **body)
        return int(r.status_code)

    for path, method, _ in routes:
        needed = ROUTE_SCOPES[(method, path)]
        url = path.format(**{k: v for k, v in _URL_PARAMS.items() if "{" + k + "}" in path})
        if needed is None:
            continue
        anonymous = call(method, url, None)
        if anonymous != (401 if path.startswith("/ui/api") else 303):
            wrong.append(f"{method} {path} answers {anonymous} without a session")
        if method == "POST" and call(method, url, "admin", with_csrf=False) != 403:
            wrong.append(f"{method} {path} accepts a change without the CSRF token")
        rank = SCOPES.index(needed)
        if rank > 0 and call(method, url, SCOPES[rank - 1]) != 403:
            wrong.append(f"{method} {path} accepts scope {SCOPES[rank - 1]}; table: {needed}")
        if call(method, url, needed) in (401, 403):
            wrong.append(f"{method} {path} refuses scope {needed}, which the table gives it")
    assert not wrong, wrong


def test_console_routes_never_answer_5xx_to_odd_input(console: Any) -> None:
    client, admin, *_ = console
    csrf = _sign_in(client, admin)
    rng = np.random.default_rng(14)
    names = ["m1", "nope", "1", "0", "x" * 80, "%00", "%C3%BC", "a.b", "-1", "99999999999"]
    values = ["", "abc", "-1", "0", "1e308", "nan", "inf", "-inf", "99999999999", "0 3 * * *"]
    values += ["1d", "0s", "1e-9s", "[]", "{}", "\u00fc" * 50, "true", "2026-01-01"]
    bodies: list[Any] = [None, {}, [], "junk", {"last": "x"}, {"last": "-1d"}, {"promote": "x"}]
    bodies += [{"interval": "1s", "window": "nan"}, {"cron": "* * *", "window": "1d"}]
    bodies += [{"interval": "0.5s", "window": "1d"}, {"cron": None, "interval": None}]
    files: list[Any] = [
        None,
        {"file": ("x.csv", b"\x00\xff" * 10, "text/csv")},
        {"file": ("x.parquet", b"PAR1garbage", "application/octet-stream")},
        {"file": ("x.csv", b"timestamp,a,b\nnot-a-time,1,2\n", "text/csv")},
        {"file": ("x.csv", b"timestamp,a,b\n2026-01-01,inf,2\n", "text/csv")},
    ]
    checked = 0
    for path, method, route in _console_routes(client):
        if path in ("/ui/logout",):
            continue
        query_names = [p.alias for p in route.dependant.query_params]
        for _ in range(12):
            url = _fill(path, str(rng.choice(names)))
            params = {q: str(rng.choice(values)) for q in query_names if rng.random() < 0.7}
            kwargs: dict[str, Any] = {"params": params, "headers": {"X-CSRF-Token": csrf}}
            if method == "POST":
                chosen_files = files[int(rng.integers(len(files)))]
                if chosen_files is not None and "data" in path:
                    kwargs["files"] = chosen_files
                else:
                    body = bodies[int(rng.integers(len(bodies)))]
                    if body is not None:
                        kwargs["json"] = body
            r = client.request(method, url, follow_redirects=False, **kwargs)
            assert r.status_code < 500, (method, url, params, r.text[:300])
            checked += 1
    assert checked > 250
    assert client.get("/ui/models").status_code == 200  # still signed in and serving


def _path_points(svg: str) -> list[tuple[float, float]]:
    path = re.search(r'<path d="([^"]+)"', svg)
    assert path is not None
    return [(float(a), float(b)) for a, b in re.findall(r"[ML]([\d.]+) ([\d.]+)", path.group(1))]


def test_sparkline_shades_the_event_and_breaks_at_gaps() -> None:
    x = np.arange(100, dtype=np.float64)
    y = np.sin(x / 5)
    y[50:55] += 5.0
    y[20] = np.nan
    svg = sparkline(x, y, (50, 54), (0, 99), title="a <b>")
    rect = re.search(r'<rect x="([\d.]+)" y="0" width="([\d.]+)"', svg)
    assert rect is not None and "<title>a &lt;b&gt;</title>" in svg
    left, width = float(rect.group(1)), float(rect.group(2))
    points = _path_points(svg)
    top = min(points, key=lambda p: p[1])  # the highest point drawn: the spike
    assert left <= top[0] <= left + width
    assert svg.count("M") == 2 and len(points) == 99  # the NaN broke the line once


def test_events_page_plots_each_event_lazily_a_page_at_a_time(
    console: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, admin, score, *_ = console
    headers = {"Authorization": f"Bearer {admin}"}
    for end in ("2031-01-01", "2031-02-01"):  # two streams' spikes: two events
        live = make_frame(600, seed=11, end=pd.Timestamp(end, tz="UTC"))
        live.iloc[400:415, 0] += 8.0
        live.iloc[400:415, 1] -= 8.0
        body = _stream_body(live)
        assert client.post("/v1/models/m1/stream", json=body, headers=headers).status_code == 200
    events = client.get("/v1/events", params={"model": "m1"}, headers=headers).json()["data"]
    assert len(events) >= 2
    assert client.get(f"/ui/api/events/{events[0]['id']}/plot.svg").status_code == 401
    _sign_in(client, score)  # looking needs scope 'score' only
    for ev in events[:2]:
        r = client.get(f"/ui/api/events/{ev['id']}/plot.svg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        rect = re.search(r'<rect x="([\d.]+)" y="0" width="([\d.]+)"', r.text)
        assert rect is not None
        left, width = float(rect.group(1)), float(rect.group(2))
        points = _path_points(r.text)
        assert len(points) > 2 * (ev["n_points"] + 10)  # context on both sides
        top = min(points, key=lambda p: p[1])  # the top feature's spike lies in the shade
        assert ev["top_features"][0][0] in r.text and left - 1 <= top[0] <= left + width + 1
    assert client.get("/ui/api/events/999999/plot.svg").status_code == 404
    page = client.get("/ui/events").text
    assert f'src="/ui/api/events/{events[0]["id"]}/plot.svg" loading="lazy"' in page
    assert 'id="pager"' not in page  # one page
    monkeypatch.setattr(ui_router, "EVENTS_PER_PAGE", 1)
    first = client.get("/ui/events?model=m1").text
    assert first.count("plot.svg") == 1 and f'data-event="{events[0]["id"]}"' in first
    assert 'href="/ui/events?model=m1&amp;page=2" id="older"' in first and 'id="newer"' not in first
    second = client.get("/ui/events?model=m1&page=2").text
    assert f'data-event="{events[1]["id"]}"' in second and 'id="newer"' in second
    assert client.get("/ui/events?page=0").status_code == 422


def test_events_page_lists_stream_events_acknowledges_and_labels(console: Any) -> None:
    client, admin, score, *_ = console
    headers = {"Authorization": f"Bearer {admin}"}
    live = make_frame(600, seed=11, end=pd.Timestamp("2031-01-01", tz="UTC"))
    live.iloc[400:415, 0] += 8.0
    live.iloc[400:415, 1] -= 8.0
    body = _stream_body(live)
    r = client.post("/v1/models/m1/stream", json=body, headers=headers)
    assert r.status_code == 200, r.text
    events = client.get("/v1/events", params={"model": "m1"}, headers=headers).json()["data"]
    assert events, "the injected anomaly opened no event"
    event_id = events[0]["id"]
    csrf = _sign_in(client, score)
    page = client.get("/ui/events")
    assert page.status_code == 200 and f'data-event="{event_id}"' in page.text
    assert re.search(r"data-action=\"/ui/api/events/\d+/acknowledge\"[^>]*disabled", page.text)
    for verdict in ("anomaly", "normal"):  # shown, disabled, with the reason
        button = re.search(
            rf"data-action=\"/ui/api/events/{event_id}/label\"[^>]*"
            rf"data-body='{{&#34;verdict&#34;: &#34;{verdict}&#34;}}'[^>]*"
            r"disabled title=\"([^\"]+)\"",
            page.text,
        )
        assert button is not None and "needs a key with scope &#39;write&#39;" in button.group(1)
    denied = client.post(f"/ui/api/events/{event_id}/acknowledge", headers={"X-CSRF-Token": csrf})
    assert denied.status_code == 403
    denied = client.post(
        f"/ui/api/events/{event_id}/label",
        json={"verdict": "normal"},
        headers={"X-CSRF-Token": csrf},
    )
    assert denied.status_code == 403
    client.cookies.clear()
    csrf = _sign_in(client, admin)
    ok = client.post(f"/ui/api/events/{event_id}/acknowledge", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["acknowledged_at"]
    assert "acknowledged" in client.get("/ui/events?status=" + events[0]["status"]).text
    page = client.get("/ui/events")
    assert re.search(rf"data-action=\"/ui/api/events/{event_id}/label\"[^>]*>Not an", page.text)
    assert "labelled:" not in page.text
    no_csrf = client.post(f"/ui/api/events/{event_id}/label", json={"verdict": "normal"})
    assert no_csrf.status_code == 403
    bad = client.post(
        f"/ui/api/events/{event_id}/label",
        json={"verdict": "maybe"},
        headers={"X-CSRF-Token": csrf},
    )
    assert bad.status_code == 422
    labelled = client.post(
        f"/ui/api/events/{event_id}/label",
        json={"verdict": "normal", "note": "a deploy"},
        headers={"X-CSRF-Token": csrf},
    )
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["event_id"] == event_id and labelled.json()["note"] == "a deploy"
    assert "labelled: not an anomaly" in client.get("/ui/events").text
    listed = client.get("/v1/models/m1/labels", headers=headers).json()
    assert [x["event_id"] for x in listed["data"]] == [event_id]  # the same labels resource
