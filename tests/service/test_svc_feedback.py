"""What labels change in the service, on generated series with injected anomalies: retraining
leaves labelled anomalies out and keeps labelled-normal stretches inside events; a version refits
its live threshold on labels; ``if_better`` compares on labels when they exist; an event labelled
"not an anomaly" is remembered by its stream, so the same pattern streamed again raises no alert
while another anomaly still does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, add_event, make_frame, register_trained_version

from detector import feedback as fb
from service import feedback
from service.app import create_app
from service.context import AppContext
from service.jobs import states
from service.jobs.worker import run_job
from service.registry import decide_promotion
from service.settings import Settings
from service.tables import Job, Stream, Version, utcnow

T0 = pd.Timestamp("2026-11-01T00:00:00Z")


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        scheduler_interval_s=3600,
        stream_flush_interval_s=3600,
        device="cpu",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _, key = _ctx(client).auth.create("admin", "tests")
        yield client, {"Authorization": f"Bearer {key}"}, settings


def _model(client: TestClient, h: dict[str, str], name: str, policy: str) -> str:
    """Create a model; its id."""
    r = client.post(
        "/v1/models",
        json={"name": name, "config": TINY_CONFIG, "promotion_policy": policy},
        headers=h,
    )
    assert r.status_code == 201, r.text
    return _ctx(client).registry.get_model(name).id


def _label(
    client: TestClient, h: dict[str, str], name: str, start: Any, end: Any, verdict: str
) -> None:
    body = {"start": start.isoformat(), "end": end.isoformat(), "verdict": verdict}
    r = client.post(f"/v1/models/{name}/labels", json=body, headers=h)
    assert r.status_code == 201, r.text


def _run_job(ctx: AppContext, settings: Settings, name: str) -> Job:
    """Queue a job on the stored history and run it in this process to its end."""
    job = ctx.jobs.create(name)
    with ctx.db.transaction() as session:
        row = session.get(Job, job.id, with_for_update=True)
        assert row is not None
        token = states.hand_out(row)
        assert states.claim(row, token, utcnow())
    assert run_job(settings, job.id) == 0
    with ctx.db.session() as session:
        done = session.get(Job, job.id)
        assert done is not None
    assert done.status == "succeeded", done.error
    return done


def _version(ctx: AppContext, name: str, number: int) -> Version:
    return ctx.registry.get_version(name, number)[1]


def _spiky(n: int, seed: int, spans: list[tuple[int, int]], end: pd.Timestamp) -> pd.DataFrame:
    frame = make_frame(n, seed=seed, end=end)
    for lo, hi in spans:
        frame.iloc[lo:hi, 0] += 5.0
        frame.iloc[lo:hi, 1] -= 5.0
    return frame


# --------------------------------------------------------------------------- training data


def test_retraining_leaves_labelled_anomalies_out_and_keeps_labelled_normal_events(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, settings = app
    ctx = _ctx(client)
    _model(client, h, "m", "always")
    frame = _spiky(1500, 2, [(300, 320)], end=T0)
    ctx.history.append(ctx.registry.get_model("m").id, frame)
    ix = frame.index
    _label(client, h, "m", ix[300], ix[319], "anomaly")  # the injected anomaly
    add_event(ctx, "m", "", ix[600], ix[629])  # a false alarm ...
    _label(client, h, "m", ix[600], ix[629], "normal")  # ... labelled normal: kept
    add_event(ctx, "m", "", ix[900], ix[909])  # an unlabelled event: left out
    _label(client, h, "m", ix[1000], ix[1004], "unsure")  # counts as neither: kept

    model_id = ctx.registry.get_model("m").id
    kept, labels, report = feedback.training_data(ctx.db, model_id, frame, None)
    assert labels is None  # kind ae does not learn from labels
    assert not kept.index.isin(ix[300:320]).any()
    assert not kept.index.isin(ix[900:910]).any()
    assert ix[600:630].isin(kept.index).all() and ix[1000:1005].isin(kept.index).all()
    assert report == {
        "points": 1500,
        "kept": 1500 - 20 - 10,
        "left_out_events": 10,
        "left_out_labelled_anomaly": 20,
        "kept_labelled_normal": 30,
        "labelled_anomaly_trained": 0,
    }
    # A kind that learns from labels keeps the labelled anomaly, with its labels.
    kept2, labels2, report2 = feedback.training_data(ctx.db, model_id, frame, None, True)
    assert ix[300:320].isin(kept2.index).all() and not kept2.index.isin(ix[900:910]).any()
    assert labels2 is not None and len(labels2) == len(kept2) == 1490
    assert (labels2[kept2.index.isin(ix[300:320])] == 1).all()
    assert (labels2[kept2.index.isin(ix[600:630])] == 0).all()
    assert (labels2[kept2.index.isin(ix[1000:1005])] == -1).all()  # unsure: unknown
    assert report2["labelled_anomaly_trained"] == 20 and report2["left_out_labelled_anomaly"] == 0

    job = _run_job(ctx, settings, "m")
    version = _version(ctx, "m", 1)
    assert version.n_points == 1470  # what the detector was fitted on
    assert version.metrics["training_data"] == report
    assert job.progress["training_data"] == report  # in the job's result too


def test_labels_of_a_series_apply_to_that_series_only(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, _ = app
    ctx = _ctx(client)
    r = client.post(
        "/v1/models",
        json={"name": "fleet", "config": {**TINY_CONFIG, "key_column": "host"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    parts = []
    for host in ("h1", "h2"):
        part = make_frame(200, seed=1, end=T0)
        part["host"] = host
        parts.append(part)
    frame = pd.concat(parts)
    ix = parts[0].index
    for series, lo, hi in (("h1", 10, 19), ("h2", 50, 54)):
        body = {
            "start": ix[lo].isoformat(),
            "end": ix[hi].isoformat(),
            "verdict": "anomaly",
            "series": series,
        }
        assert client.post("/v1/models/fleet/labels", json=body, headers=h).status_code == 201
    _label(client, h, "fleet", ix[100], ix[101], "anomaly")  # no series: every series
    model_id = ctx.registry.get_model("fleet").id
    kept, _, report = feedback.training_data(ctx.db, model_id, frame, "host")
    h1 = kept[kept["host"] == "h1"].index
    h2 = kept[kept["host"] == "h2"].index
    assert not h1.isin(ix[10:20]).any() and ix[50:55].isin(h1).all()
    assert not h2.isin(ix[50:55]).any() and ix[10:20].isin(h2).all()
    assert not h1.isin(ix[100:102]).any() and not h2.isin(ix[100:102]).any()
    assert report["left_out_labelled_anomaly"] == 10 + 5 + 2 * 2

    # Refit and comparison score each series with its own causal monitor.
    spiky = []
    for host, seed in (("h1", 2), ("h2", 3)):
        part = _spiky(600, seed, [(100, 115), (300, 315)], end=T0 + pd.Timedelta("12h"))
        part["host"] = host
        spiky.append(part)
    ctx.history.append(model_id, pd.concat(spiky), key_column="host")
    later = spiky[0].index
    for series in ("h1", "h2"):
        for lo, hi, verdict in ((100, 114, "anomaly"), (300, 314, "anomaly"), (150, 290, "normal")):
            body = {
                "start": later[lo].isoformat(),
                "end": later[hi].isoformat(),
                "verdict": verdict,
                "series": series,
            }
            assert client.post("/v1/models/fleet/labels", json=body, headers=h).status_code == 201
    train = pd.concat(parts)
    register_trained_version(ctx, "fleet", train, {**TINY_CONFIG, "key_column": "host"})
    detector = ctx.registry.get_version("fleet", 1)[1]
    from detector import load_detector

    det = load_detector(ctx.artifacts.fetch(detector.artifact_key))
    refit = feedback.refit(det, ctx.history, ctx.db, model_id, "host")
    assert refit is not None and refit["n_anomaly_events"] >= 4
    compared = feedback.compare_versions(det, det, ctx.history, ctx.db, model_id, "host")
    assert compared is not None and compared["better"]  # a version ties with itself
    assert compared["new"] == compared["active"] and compared["new"]["vus_pr"] > 0.3


def test_a_kind_that_learns_from_labels_trains_on_them(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, settings = app
    ctx = _ctx(client)
    r = client.post(
        "/v1/models",
        json={"name": "semi", "config": {**TINY_CONFIG, "kind": "ssaae"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    frame = _spiky(1500, 3, [(300, 320), (800, 815)], end=T0)
    ctx.history.append(ctx.registry.get_model("semi").id, frame)
    _label(client, h, "semi", frame.index[300], frame.index[319], "anomaly")
    _label(client, h, "semi", frame.index[800], frame.index[814], "anomaly")
    job = _run_job(ctx, settings, "semi")
    report = job.progress["training_data"]
    assert report["labelled_anomaly_trained"] == 35 and report["kept"] == 1500
    assert _version(ctx, "semi", 1).n_points == 1500  # the labelled windows trained y


# --------------------------------------------------------------------------- threshold


def test_a_version_refits_its_live_threshold_on_enough_labels(
    app: tuple[TestClient, dict[str, str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, h, settings = app
    ctx = _ctx(client)
    _model(client, h, "m", "always")
    train = make_frame(1500, seed=1, end=T0)
    ctx.history.append(ctx.registry.get_model("m").id, train)
    _run_job(ctx, settings, "m")
    assert "label_refit" not in _version(ctx, "m", 1).metrics  # no labels: nothing to refit

    later = _spiky(600, 4, [(100, 115), (300, 315), (450, 465)], end=T0 + pd.Timedelta("10h"))
    ctx.history.append(ctx.registry.get_model("m").id, later)
    ix = later.index
    _label(client, h, "m", ix[100], ix[114], "anomaly")
    _label(client, h, "m", ix[20], ix[90], "normal")
    # One anomaly range is below the rule (2 ranges): no threshold refit, only its length.
    _run_job(ctx, settings, "m")
    assert _version(ctx, "m", 2).metrics["label_refit"] == {
        "lasting": {"anomaly": 15, "normal_event": 0}
    }
    _label(client, h, "m", ix[300], ix[314], "anomaly")
    _label(client, h, "m", ix[450], ix[464], "anomaly")
    _label(client, h, "m", ix[150], ix[290], "normal")
    _run_job(ctx, settings, "m")
    refit = _version(ctx, "m", 3).metrics["label_refit"]
    assert 0.5 <= refit["scale"] <= 2.0
    assert refit["f1"] >= refit["f1_before"] and refit["f1"] > 0.5
    assert refit["n_anomaly_events"] == 3 and refit["n_normal_points"] >= 20

    # A false alarm labelled normal is remembered by the live monitors: the next refit leaves
    # its points out instead of raising the threshold for it.
    event_id = add_event(ctx, "m", "", ix[500], ix[519])
    r = client.post(f"/v1/events/{event_id}/label", json={"verdict": "normal"}, headers=h)
    assert r.status_code == 201, r.text
    with monkeypatch.context() as patched:  # the same version, had the memory held nothing
        patched.setattr(feedback, "_normal_labelled", lambda db, where: {})
        _run_job(ctx, settings, "m")
    _run_job(ctx, settings, "m")
    counted = _version(ctx, "m", 4).metrics["label_refit"]
    remembered = _version(ctx, "m", 5).metrics["label_refit"]
    assert remembered["n_normal_points"] == counted["n_normal_points"] - 20

    # A live stream of that version runs with the factor on its online threshold (the test's
    # event row came with a stand-in stream state: a new stream starts).
    assert client.delete("/v1/models/m/stream", headers=h).status_code == 204
    points = make_frame(50, seed=9, end=T0 + pd.Timedelta("20h"))
    body = {
        "timestamps": [t.isoformat() for t in points.index],
        "values": {c: points[c].tolist() for c in ("a", "b")},
    }
    r = client.post("/v1/models/m/stream", json=body, headers=h)
    assert r.status_code == 200, r.text
    with ctx.db.session() as session:
        state = orjson.loads(session.query(Stream).one().state)
    assert state["feedback"]["factor"] == pytest.approx(remembered["scale"])


def _long_labelled_anomaly(client: TestClient, h: dict[str, str]) -> AppContext:
    """Model "m" with training history and, later, a 160-point anomaly labelled as one."""
    ctx = _ctx(client)
    model_id = _model(client, h, "m", "always")
    ctx.history.append(model_id, make_frame(1500, seed=1, end=T0))
    later = _spiky(600, 4, [(100, 260)], end=T0 + pd.Timedelta("10h"))
    ctx.history.append(model_id, later)
    _label(client, h, "m", later.index[100], later.index[259], "anomaly")
    return ctx


def _streamed_relearn_after(
    client: TestClient, h: dict[str, str], ctx: AppContext, options: dict[str, Any]
) -> Any:
    """The ``relearn_after`` a new stream of "m" runs with (the stream is deleted again)."""
    points = make_frame(30, seed=9, end=T0 + pd.Timedelta("20h"))
    body = {
        "timestamps": [t.isoformat() for t in points.index],
        "values": {c: points[c].tolist() for c in ("a", "b")},
        "options": options,
    }
    r = client.post("/v1/models/m/stream", json=body, headers=h)
    assert r.status_code == 200, r.text
    with ctx.db.session() as session:
        state = orjson.loads(session.query(Stream).one().state)
    assert client.delete("/v1/models/m/stream", headers=h).status_code == 204
    return state["options"]["relearn_after"]


def test_a_labelled_anomaly_longer_than_relearn_after_makes_live_monitors_wait(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, settings = app
    ctx = _long_labelled_anomaly(client, h)
    _run_job(ctx, settings, "m")
    refit = _version(ctx, "m", 1).metrics["label_refit"]
    assert refit == {"lasting": {"anomaly": 160, "normal_event": 0}}  # one range: no scale

    def relearn_after(options: dict[str, Any]) -> Any:
        return _streamed_relearn_after(client, h, ctx, options)

    # the default rule (100 points) was outlasted by a confirmed anomaly: it waits for 160
    assert relearn_after({}) == 160
    # a stream whose own rule is longer than any confirmed anomaly keeps it, and one off stays
    assert relearn_after({"relearn_after": 500}) == 500
    assert relearn_after({"relearn_after": None}) is None


def test_a_longer_wait_that_the_labelled_history_rejects_is_kept_apart(
    app: tuple[TestClient, dict[str, str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check itself is the library's (tests/detector/test_feedback.py); here: the refit
    # asks it on the labelled history's own scores, and a rejection reaches no monitor.
    client, h, settings = app
    ctx = _long_labelled_anomaly(client, h)
    asked: list[tuple[int | None, int]] = []

    def rejecting(
        self: fb.LastingRuns, current: int | None, masks: fb.LabelMasks, quiet: Any, decide: Any
    ) -> int | None:
        flags = decide(160)
        asked.append((current, int(flags[masks.anomaly].sum())))
        return current

    monkeypatch.setattr(fb.LastingRuns, "refit", rejecting)
    _run_job(ctx, settings, "m")
    refit = _version(ctx, "m", 1).metrics["label_refit"]
    assert refit == {"lasting_rejected": {"anomaly": 160, "normal_event": 0}}
    ((current, flagged),) = asked
    assert current == 100 and flagged > 100  # the decisions were made on the anomaly's scores
    assert _streamed_relearn_after(client, h, ctx, {}) == 100


# --------------------------------------------------------------------------- promotion


def test_if_better_decides_on_labels_when_they_exist() -> None:
    # Labels override the held-out scores both ways; without them the scores decide.
    assert decide_promotion("if_better", 2.0, 1.0, True, True) == (True, "if_better_labels")
    assert decide_promotion("if_better", 0.5, 1.0, True, False) == (
        False,
        "if_better_labels_worse",
    )
    assert decide_promotion("if_better", 0.5, 1.0, True) == (True, "if_better")
    assert decide_promotion("always", 2.0, 1.0, True, False) == (True, "policy_always")


def test_a_retrained_version_is_compared_on_the_labelled_history(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, settings = app
    ctx = _ctx(client)
    model_id = _model(client, h, "m", "if_better")
    ctx.history.append(model_id, _spiky(1500, 5, [(200, 215), (700, 715)], end=T0))
    _run_job(ctx, settings, "m")  # the first version: no comparison
    job = _run_job(ctx, settings, "m")
    assert job.progress["promotion"] in ("if_better", "if_better_worse")  # no labels yet
    assert "labels_comparison" not in _version(ctx, "m", 2).metrics

    ix = ctx.history.read(model_id).index
    _label(client, h, "m", ix[200], ix[214], "anomaly")
    _label(client, h, "m", ix[700], ix[714], "anomaly")
    _label(client, h, "m", ix[300], ix[600], "normal")
    active_before = ctx.registry.get_model("m").active_version
    job = _run_job(ctx, settings, "m")
    compared = _version(ctx, "m", 3).metrics["labels_comparison"]
    assert compared["active_version"] == active_before
    for side in ("new", "active"):
        assert set(compared[side]) == {"vus_pr", "f1"}
        assert 0.0 <= compared[side]["vus_pr"] <= 1.0
    # Both versions see the injected anomalies: far better than a random scorer's VUS-PR
    # (the labelled anomaly share, 30 / 331).
    assert compared["new"]["vus_pr"] > 0.5
    expected = "if_better_labels" if compared["better"] else "if_better_labels_worse"
    assert job.progress["promotion"] == expected and job.promoted is compared["better"]
    log = client.get("/v1/models/m/promotions", headers=h).json()["data"]
    if job.promoted:
        assert log[0]["reason"] == "if_better_labels"


# --------------------------------------------------------------------------- suppression


def _stream(client: TestClient, h: dict[str, str], frame: pd.DataFrame) -> dict[str, Any]:
    body = {
        "timestamps": [t.isoformat() for t in frame.index],
        "values": {c: [float(v) for v in frame[c]] for c in ("a", "b")},
    }
    r = client.post("/v1/models/live/stream", json=body, headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _live_frame(n: int, seed: int, offset_min: int) -> pd.DataFrame:
    """Normal data continuing the training pattern, ``offset_min`` minutes after T0."""
    full = make_frame(
        1200 + offset_min + n, seed=seed, end=T0 + pd.Timedelta(minutes=offset_min + n)
    )
    return full.iloc[-n:]


def _bump(frame: pd.DataFrame, at: int, length: int, sign: float) -> pd.DataFrame:
    out = frame.copy()
    out.iloc[at : at + length, 0] += sign * 4.0
    return out


def test_an_event_labelled_normal_no_longer_alerts_but_other_anomalies_do(
    app: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, h, _ = app
    ctx = _ctx(client)
    _model(client, h, "live", "manual")
    register_trained_version(ctx, "live", make_frame(1200, seed=1, end=T0), promote=True)

    _stream(client, h, _live_frame(120, 6, 0))  # warm-up: the stream's first context
    first = _stream(client, h, _bump(_live_frame(120, 7, 200), 60, 8, +1.0))
    bump = slice(60, 60 + 8 + 16)  # the bump, and the windows that still hold it
    assert all(first["anomalous"][60:68])  # the bump raises an event
    event_id = first["event"][60]
    r = client.post(
        f"/v1/events/{event_id}/label", json={"verdict": "normal", "note": "a deploy"}, headers=h
    )
    assert r.status_code == 201, r.text

    # The same pattern again (other noise; 180 minutes on, so the periodic features are in the
    # same phase): no flag, no event.
    again = _stream(client, h, _bump(_live_frame(120, 8, 380), 60, 8, +1.0))
    assert not any(again["anomalous"][bump]), again["anomalous"][bump]
    assert set(again["event"][bump]) == {None}
    # Another anomaly (the opposite bump) still alerts.
    other = _stream(client, h, _bump(_live_frame(120, 9, 560), 60, 8, -1.0))
    assert all(other["anomalous"][60:68])

    # Relabelled a real anomaly: the memory forgets it and the pattern alerts again.
    r = client.post(f"/v1/events/{event_id}/label", json={"verdict": "anomaly"}, headers=h)
    assert r.status_code == 201
    back = _stream(client, h, _bump(_live_frame(120, 10, 740), 60, 8, +1.0))
    assert all(back["anomalous"][60:68])
    with ctx.db.session() as session:
        memory = orjson.loads(session.query(Stream).one().state)["feedback"]["memory"]
    assert memory is not None and memory["stretches"] == []
