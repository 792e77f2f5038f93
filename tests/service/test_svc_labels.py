"""The labels resource in-process: create, list, get, delete, CSV import and export, labelling
an event, the bounds, bad input (4xx naming what to fix), scopes, and deletion with the model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from svc_helpers import TINY_CONFIG, add_event

from service.app import create_app
from service.context import AppContext
from service.settings import Settings
from service.tables import Label

Client = tuple[TestClient, dict[str, str]]
T0 = pd.Timestamp("2026-11-01T00:00:00Z")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    settings = Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_level="WARNING",
        scheduler_interval_s=3600,
        max_labels_per_model=5,
        max_label_import_bytes=2048,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        _, key = _ctx(c).auth.create("admin", "tests")
        headers = {"Authorization": f"Bearer {key}"}
        for name, extra in (("plain", {}), ("keyed", {"key_column": "host"})):
            r = c.post(
                "/v1/models",
                json={"name": name, "config": {**TINY_CONFIG, **extra}},
                headers=headers,
            )
            assert r.status_code == 201, r.text
        yield c, headers


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


def _at(minutes: int) -> str:
    return (T0 + pd.Timedelta(minutes=minutes)).isoformat()


def _event(ctx: AppContext, model: str, series: str, start: int, end: int) -> int:
    """An anomaly event from minute ``start`` to ``end`` after T0."""
    at = [T0 + pd.Timedelta(minutes=m) for m in (start, end)]
    return add_event(ctx, model, series, at[0], at[1])


def test_create_list_get_delete(client: Client) -> None:
    c, h = client
    r = c.post(
        "/v1/models/plain/labels",
        json={"start": _at(10), "end": _at(20), "verdict": "anomaly", "note": "disk full"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    rng = r.json()
    assert rng["model"] == "plain" and rng["verdict"] == "anomaly" and rng["series"] is None
    assert rng["key_id"] and rng["event_id"] is None and rng["note"] == "disk full"
    point = c.post(
        "/v1/models/plain/labels", json={"start": _at(50), "verdict": "normal"}, headers=h
    ).json()
    assert point["start"] == point["end"]  # a point label
    listed = c.get("/v1/models/plain/labels", headers=h).json()
    assert listed["count"] == 2 and [x["id"] for x in listed["data"]] == [point["id"], rng["id"]]
    only = c.get("/v1/models/plain/labels", params={"verdict": "anomaly"}, headers=h).json()
    assert [x["id"] for x in only["data"]] == [rng["id"]]
    window = {"start": _at(0), "end": _at(15)}
    assert [
        x["id"] for x in c.get("/v1/models/plain/labels", params=window, headers=h).json()["data"]
    ] == [rng["id"]]
    page = c.get("/v1/models/plain/labels", params={"limit": 1, "offset": 1}, headers=h).json()
    assert page["count"] == 2 and [x["id"] for x in page["data"]] == [rng["id"]]
    assert c.get(f"/v1/models/plain/labels/{rng['id']}", headers=h).json() == rng
    # A label belongs to its model: another model's path does not find it.
    assert c.get(f"/v1/models/keyed/labels/{rng['id']}", headers=h).status_code == 404
    assert c.delete(f"/v1/models/plain/labels/{rng['id']}", headers=h).status_code == 204
    assert c.get(f"/v1/models/plain/labels/{rng['id']}", headers=h).status_code == 404
    assert c.delete(f"/v1/models/plain/labels/{rng['id']}", headers=h).status_code == 404
    assert c.get("/v1/models/plain/labels", headers=h).json()["count"] == 1


def test_bad_input_is_a_4xx_saying_what_to_fix(client: Client) -> None:
    c, h = client

    def refused(body: dict[str, Any], status: int, text: str, model: str = "plain") -> None:
        r = c.post(f"/v1/models/{model}/labels", json=body, headers=h)
        assert r.status_code == status, r.text
        assert text in r.json()["detail"], r.json()

    refused({"start": _at(5), "end": _at(1), "verdict": "anomaly"}, 422, "must not be before")
    refused({"start": _at(5), "verdict": "bad"}, 422, "verdict")
    refused({"start": "1850-01-01T00:00:00Z", "verdict": "anomaly"}, 422, "out of range")
    refused({"start": "2300-01-01T00:00:00Z", "verdict": "anomaly"}, 422, "out of range")
    refused({"start": _at(5), "verdict": "anomaly", "note": "x" * 1001}, 422, "note")
    refused({"start": _at(5), "verdict": "anomaly", "series": "h1"}, 422, "no key column")
    refused({"start": _at(5), "verdict": "anomaly", "extra": 1}, 422, "extra")
    refused({"start": _at(5), "verdict": "anomaly"}, 404, "no model named", model="nope")
    r = c.get("/v1/models/plain/labels", params={"start": _at(5), "end": _at(1)}, headers=h)
    assert r.status_code == 422 and "before" in r.json()["detail"]
    assert c.get("/v1/models/plain/labels/0", headers=h).status_code == 422
    assert c.get("/v1/models/nope/labels", headers=h).status_code == 404
    r = c.post(
        "/v1/models/plain/labels",
        content=b"{not json",
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 400


def test_series_labels_of_a_keyed_model(client: Client) -> None:
    c, h = client
    for series in ("h1", "h2", None):
        body = {"start": _at(1), "verdict": "anomaly", **({"series": series} if series else {})}
        assert c.post("/v1/models/keyed/labels", json=body, headers=h).status_code == 201
    h1 = c.get("/v1/models/keyed/labels", params={"series": "h1"}, headers=h).json()
    assert h1["count"] == 1 and h1["data"][0]["series"] == "h1"


def test_the_bound_per_model_is_a_409(client: Client) -> None:
    c, h = client
    for i in range(5):
        body = {"start": _at(i), "verdict": "normal"}
        assert c.post("/v1/models/plain/labels", json=body, headers=h).status_code == 201
    r = c.post("/v1/models/plain/labels", json={"start": _at(9), "verdict": "normal"}, headers=h)
    assert r.status_code == 409 and "RECONAD_MAX_LABELS_PER_MODEL" in r.json()["detail"]
    # Another model has its own bound.
    r = c.post("/v1/models/keyed/labels", json={"start": _at(9), "verdict": "normal"}, headers=h)
    assert r.status_code == 201


def _import(c: TestClient, h: dict[str, str], text: str, model: str = "plain") -> Any:
    return c.post(
        f"/v1/models/{model}/labels/import",
        content=text.encode(),
        headers={**h, "Content-Type": "text/csv"},
    )


def test_csv_import_is_all_or_nothing_and_export_reads_back(client: Client) -> None:
    c, h = client
    good = (
        "start,end,label,note\n"
        f"{_at(0)},{_at(5)},anomaly,outage\n"
        f"{_at(10)},,normal,\n"
        f"{(T0 + pd.Timedelta(minutes=20)).timestamp():.0f},{_at(30)},1,epoch start\n"
        f'{_at(40)},{_at(41)},UNSURE,"a, quoted note"\n'
    )
    r = _import(c, h, good)
    assert r.status_code == 201, r.text
    assert r.json() == {"imported": 4, "count": 4}
    rows = c.get("/v1/models/plain/labels", headers=h).json()["data"]
    by_start = {pd.Timestamp(x["start"]): x for x in rows}
    point = by_start[pd.Timestamp(_at(10))]
    assert pd.Timestamp(point["end"]) == pd.Timestamp(_at(10))  # empty end: a point label
    assert by_start[pd.Timestamp(_at(20))]["verdict"] == "anomaly"  # '1', epoch-seconds start
    quoted = by_start[pd.Timestamp(_at(40))]
    assert quoted["verdict"] == "unsure" and quoted["note"] == "a, quoted note"

    exported = c.get("/v1/models/plain/labels/export", headers=h)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[0] == "start,end,label,note"  # no series: no key column
    # The export imports into another model as the same labels.
    assert _import(c, h, exported.text, "keyed").json()["imported"] == 4
    again = c.get("/v1/models/keyed/labels/export", headers=h).text.splitlines()
    assert again[0] == "start,end,label,note,series"
    assert [line[:-1] for line in again[1:]] == exported.text.splitlines()[1:]  # series empty

    before = c.get("/v1/models/plain/labels", headers=h).json()["count"]
    for text, status, message in (
        (
            "start,end,label\n" + f"{_at(0)},{_at(1)},anomaly\n{_at(5)},{_at(1)},anomaly\n",
            422,
            "row 2: end is before start",
        ),
        ("start,end,label\n" + f"{_at(0)},,maybe\n", 422, "row 1: label 'maybe'"),
        ("start,end,label\n" + "yesterday,,anomaly\n", 422, "row 1: start 'yesterday'"),
        ("start,end,label\n" + "1850-01-01,,anomaly\n", 422, "row 1: start"),
        ("start,end,label\n" + f"{_at(0)},{_at(1)}\n", 422, "row 1: 2 fields"),
        ("begin,label\n" + f"{_at(0)},anomaly\n", 422, "header must name start and label"),
        ("start,label,series\n" + f"{_at(0)},anomaly,h1\n", 422, "no key column"),
        ("", 422, "empty"),
        ("start,end,label\n", 422, "no rows"),
        ("start,label\n" + f"{_at(0)},anomaly\n" * 100, 413, "RECONAD_MAX_LABEL_IMPORT_BYTES"),
        # 2 more would pass the bound of 5 with the 4 held: none is stored.
        ("start,label\n" + f"{_at(0)},anomaly\n{_at(1)},normal\n", 409, "limit is 5"),
    ):
        r = _import(c, h, text)
        assert r.status_code == status, (text, r.text)
        assert message in r.json()["detail"], (text, r.json())
    r = c.post(
        "/v1/models/plain/labels/import",
        content=b"\xff\xfe\x00bad",
        headers={**h, "Content-Type": "text/csv"},
    )
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    assert c.get("/v1/models/plain/labels", headers=h).json()["count"] == before
    assert _import(c, h, "start,label\nx,anomaly\n", "nope").status_code == 404


def test_label_an_event_links_it_and_stays_apart_from_acknowledging(client: Client) -> None:
    c, h = client
    ctx = _ctx(c)
    event_id = _event(ctx, "keyed", "h1", 100, 110)
    r = c.post(
        f"/v1/events/{event_id}/label",
        json={"verdict": "normal", "note": "deploy"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    label = r.json()
    assert label["model"] == "keyed" and label["event_id"] == event_id
    span = (pd.Timestamp(label["start"]), pd.Timestamp(label["end"]), label["series"])
    assert span == (pd.Timestamp(_at(100)), pd.Timestamp(_at(110)), "h1")
    assert c.get(f"/v1/events/{event_id}", headers=h).json()["acknowledged_at"] is None
    assert ctx.labels.verdicts_of_events([event_id]) == {event_id: "normal"}
    # Relabelled: the newer label decides; both are kept.
    c.post(f"/v1/events/{event_id}/label", json={"verdict": "anomaly"}, headers=h)
    assert ctx.labels.verdicts_of_events([event_id, 12345]) == {event_id: "anomaly"}
    assert c.get("/v1/models/keyed/labels", headers=h).json()["count"] == 2
    r = c.post("/v1/events/999999/label", json={"verdict": "normal"}, headers=h)
    assert r.status_code == 404 and "no event" in r.json()["detail"]
    r = c.post(f"/v1/events/{event_id}/label", json={"verdict": "real"}, headers=h)
    assert r.status_code == 422
    # Removing the event's stream removes the event; its labels stay, unlinked.
    assert c.delete("/v1/models/keyed/streams/h1", headers=h).status_code == 204
    rows = c.get("/v1/models/keyed/labels", headers=h).json()["data"]
    assert [x["event_id"] for x in rows] == [None, None]


def test_scopes(client: Client) -> None:
    c, h = client
    ctx = _ctx(c)
    _, score = ctx.auth.create("score", "reader")
    _, write = ctx.auth.create("write", "writer")
    reader, writer = {"Authorization": f"Bearer {score}"}, {"Authorization": f"Bearer {write}"}
    body = {"start": _at(1), "verdict": "anomaly"}
    assert c.post("/v1/models/plain/labels", json=body, headers=reader).status_code == 403
    made = c.post("/v1/models/plain/labels", json=body, headers=writer)
    assert made.status_code == 201
    label_id = made.json()["id"]
    assert c.get("/v1/models/plain/labels", headers=reader).status_code == 200
    assert c.get(f"/v1/models/plain/labels/{label_id}", headers=reader).status_code == 200
    assert c.get("/v1/models/plain/labels/export", headers=reader).status_code == 200
    assert _import(c, reader, f"start,label\n{_at(0)},anomaly\n").status_code == 403
    event_id = _event(ctx, "plain", "", 1, 2)
    r = c.post(f"/v1/events/{event_id}/label", json={"verdict": "normal"}, headers=reader)
    assert r.status_code == 403
    assert c.delete(f"/v1/models/plain/labels/{label_id}", headers=writer).status_code == 403
    assert c.delete(f"/v1/models/plain/labels/{label_id}", headers=h).status_code == 204
    assert c.get("/v1/models/plain/labels").status_code == 401


def test_labels_go_with_their_model(client: Client) -> None:
    c, h = client
    ctx = _ctx(c)
    assert _import(c, h, f"start,label\n{_at(0)},anomaly\n{_at(1)},normal\n").status_code == 201
    model_id = ctx.registry.get_model("plain").id
    assert c.delete("/v1/models/plain", headers=h).status_code == 204
    with ctx.db.session() as session:
        left = session.execute(
            select(func.count()).select_from(Label).where(Label.model_id == model_id)
        ).scalar_one()
    assert left == 0
    r = c.post("/v1/models", json={"name": "plain", "config": TINY_CONFIG}, headers=h)
    assert r.status_code == 201
    assert c.get("/v1/models/plain/labels", headers=h).json()["count"] == 0


def test_the_overlap_rule_is_in_the_openapi_description(client: Client) -> None:
    c, h = client
    paths = c.get("/openapi.json", headers=h).json()["paths"]
    for path in (
        "/v1/models/{name}/labels",
        "/v1/models/{name}/labels/import",
        "/v1/events/{event_id}/label",
    ):
        post = paths[path]["post"]
        assert "most recently created label covering a point decides" in post["description"]
        assert {"201", "409", "404", "422"} <= set(post["responses"])
    assert "text/csv" in paths["/v1/models/{name}/labels/import"]["post"]["requestBody"]["content"]
