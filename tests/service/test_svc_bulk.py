"""Columnar bulk formats: Arrow IPC and Parquet tables in (data append) and out (export, score),
written and read with pyarrow; bad tables are 4xx that say what to fix, and nothing of them is
stored."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient
from svc_helpers import TINY_CONFIG, make_frame, register_trained_version, windows_of

from service.app import create_app
from service.context import AppContext
from service.scoring.batcher import BulkThreads
from service.settings import Settings

Client = tuple[TestClient, dict[str, str]]

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
END = pd.Timestamp("2024-03-01T00:00:00Z")


def _ctx(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return ctx


def _model(client: TestClient, headers: dict[str, str], name: str = "m1") -> None:
    body = {"name": name, "config": {**TINY_CONFIG, "features": ["a", "b"]}}
    r = client.post("/v1/models", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _arrow_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _arrow_file(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _read_arrow(content: bytes) -> pa.Table:
    return ipc.open_stream(pa.BufferReader(content)).read_all()


def _read_parquet(content: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(content))


READERS = ((ARROW, _read_arrow), (PARQUET, _read_parquet))


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(), preserve_index=False)


def _post(client: TestClient, headers: dict[str, str], body: bytes, media: str) -> Any:
    return client.post(
        "/v1/models/m1/data", content=body, headers={**headers, "content-type": media}
    )


def _points(client: TestClient, headers: dict[str, str]) -> int:
    r = client.get("/v1/models/m1/data", headers=headers)
    assert r.status_code == 200
    return int(r.json()["points"])


def test_append_tables_and_export_them_back(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    frame = make_frame(300, end=END)
    parts = [frame.iloc[:100], frame.iloc[100:200], frame.iloc[200:]]
    bodies = [
        (_arrow_stream(_table(parts[0])), ARROW),
        (_arrow_file(_table(parts[1])), ARROW),  # an IPC file, by its magic bytes
        (_parquet(_table(parts[2])), f"{PARQUET}; charset=binary"),  # parameters ignored
    ]
    for body, media in bodies:
        r = _post(client, headers, body, media)
        assert r.status_code == 200, r.text
        assert r.json()["appended"] == 100
    assert _points(client, headers) == 300
    # Epoch-second integers as timestamps, as in JSON rows; an overlap replaces stored rows.
    again = frame.iloc[:10].copy()
    again["a"] = 5.0
    epoch = pa.table(
        {
            "timestamp": pa.array(pd.DatetimeIndex(again.index).as_unit("s").asi8),
            "a": again["a"].to_numpy(),
            "b": again["b"].to_numpy(),
        }
    )
    assert _post(client, headers, _arrow_stream(epoch), ARROW).status_code == 200
    assert _points(client, headers) == 300

    url = "/v1/models/m1/data/export"
    for accept, read in READERS:
        r = client.get(url, headers={**headers, "accept": f"text/html, {accept}"})
        assert r.status_code == 200 and r.headers["content-type"] == accept
        back = read(r.content).to_pandas()
        assert list(back.columns) == ["timestamp", "a", "b"] and len(back) == 300
        stamps = pd.DatetimeIndex(back["timestamp"])
        assert str(stamps.tz) == "UTC" and (stamps == frame.index).all()
        assert (back["a"].to_numpy()[:10] == 5.0).all()
        assert back["b"].to_numpy() == pytest.approx(frame["b"].to_numpy())
    # ``format`` wins over Accept; no Accept of ours means CSV, as before.
    r = client.get(url, params={"format": "arrow"}, headers={**headers, "accept": PARQUET})
    assert r.headers["content-type"] == ARROW
    assert 'filename="m1.arrow"' in r.headers["content-disposition"]
    r = client.get(url, headers={**headers, "accept": "*/*"})
    assert r.headers["content-type"].startswith("text/csv")


def test_multipart_upload_reads_arrow_files(app_client: Client) -> None:
    client, headers = app_client
    _model(client, headers)
    body = _arrow_file(_table(make_frame(50, end=END)))
    r = client.post(
        "/v1/models/m1/data/upload",
        files={"file": ("part.arrow", body, "application/octet-stream")},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["appended"] == 50


def _with(frame: pd.DataFrame, **columns: Any) -> pa.Table:
    table = _table(frame)
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        array = pa.array(values)
        table = (
            table.set_column(index, name, array) if index >= 0 else table.append_column(name, array)
        )
    return table


@pytest.mark.parametrize("media", [ARROW, PARQUET])
def test_bad_tables_are_refused_and_nothing_is_stored(app_client: Client, media: str) -> None:
    client, headers = app_client
    _model(client, headers)
    encode = _arrow_stream if media == ARROW else _parquet
    frame = make_frame(20, end=END)
    far = pd.date_range("2250-01-01", periods=20, freq="min", tz="UTC")
    cases: list[tuple[bytes, int, str]] = [
        (b"not a table at all", 400, "could not read the body as"),
        (b"", 422, "empty"),
        (encode(_table(frame).drop_columns(["timestamp"])), 422, "no 'timestamp' column"),
        (encode(_with(frame, timestamp=far.as_unit("us"))), 422, "1900-01-01"),
        (encode(_with(frame, timestamp=["soon"] * 20)), 422, "timestamp"),
        (encode(_with(frame, a=[True, False] * 10)), 422, "booleans"),
        (encode(_with(frame, a=["x"] * 20)), 422, "'a'"),
        (encode(_with(frame, c=np.ones(20))), 422, "unknown ['c']"),
        (encode(_table(frame).drop_columns(["b"])), 422, "missing ['b']"),
        (encode(_with(frame, a=[np.inf] * 20)), 422, "infinite"),
        (encode(_with(frame, a=[[1.0, 2.0]] * 20)), 422, "nested type"),
        (encode(_with(frame, a=[{"x": 1.0}] * 20)), 422, "nested type"),
        (encode(_with(frame, timestamp=[True] * 20)), 422, "timestamp"),
        (encode(_table(frame).append_column("a", pa.array(np.ones(20)))), 422, "['a'] appear"),
    ]
    for body, status, message in cases:
        r = _post(client, headers, body, media)
        assert r.status_code == status, (message, r.text)
        assert message in r.json()["detail"], r.text
    # A truncated stream (the end of the body lost in transit).
    whole = encode(_table(frame))
    r = _post(client, headers, whole[: len(whole) // 2], media)
    assert r.status_code == 400, r.text
    assert _points(client, headers) == 0


@pytest.fixture
def small(settings: Settings) -> Iterator[Client]:
    """An app with small body and row limits."""
    limits = {"max_points_per_request": 1000, "max_body_bytes": 200_000}
    app = create_app(settings.model_copy(update=limits))
    with TestClient(app, raise_server_exceptions=False) as client:
        _, key = app.state.context.auth.create("admin", "tests")
        yield client, {"Authorization": f"Bearer {key}"}


def test_table_bodies_are_bounded(small: Client) -> None:
    client, headers = small
    _model(client, headers)
    rows = _arrow_stream(_table(make_frame(1001, end=END)))  # under the byte limit
    assert len(rows) < 200_000
    r = _post(client, headers, rows, ARROW)
    assert r.status_code == 413 and "1000" in r.json()["detail"]
    big = _parquet(
        pa.table({"timestamp": pa.array(np.arange(30_000)), "a": np.random.rand(30_000)})
    )
    assert len(big) > 200_000
    r = _post(client, headers, big, PARQUET)
    assert r.status_code == 413
    assert _points(client, headers) == 0
    # A table to score: counted by its rows before anything else.
    r = client.post("/v1/models/m1/score", content=rows, headers={**headers, "content-type": ARROW})
    assert r.status_code == 413 and "1001 rows" in r.json()["detail"]


def _scored(client: TestClient, headers: dict[str, str]) -> pd.DataFrame:
    _model(client, headers)
    frame = make_frame(400, end=END)
    spiked = frame["a"].to_numpy(copy=True)
    spiked[300] += 3.0  # something to flag
    frame["a"] = spiked
    register_trained_version(_ctx(client), "m1", make_frame(1200, seed=3, end=END))
    return frame


def test_score_answers_a_table_when_accept_asks(app_client: Client) -> None:
    client, headers = app_client
    frame = _scored(client, headers)
    values = {c: frame[c].tolist() for c in frame.columns}
    for column in values.values():
        column[:3] = [None, None, None]  # not observed: not scored (null in JSON)
    body = {
        "timestamps": [t.isoformat() for t in frame.index],
        "values": values,
        "reconstruct": True,
        "top_k": 2,
    }
    url = "/v1/models/m1/score"
    plain = client.post(url, json=body, headers=headers)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    expected = plain.json()
    for accept, read in READERS:
        r = client.post(url, json=body, headers={**headers, "accept": accept})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == accept
        table = read(r.content)
        meta = json.loads(table.schema.metadata[b"reconad"])
        assert meta["model"] == "m1" and meta["n_points"] == 400 and meta["shape"] == [400]
        assert meta["n_anomalous"] == expected["n_anomalous"] >= 1
        assert table.num_rows == 400
        assert table.column_names == [
            "scores",
            "normalized",
            "anomalous",
            "top1_feature",
            "top1_contribution",
            "top2_feature",
            "top2_contribution",
            "expected_a",
            "expected_b",
        ]
        back = table.to_pandas()
        scores = np.array([np.nan if v is None else v for v in expected["scores"]])
        assert np.isnan(back["scores"].to_numpy()).sum() == np.isnan(scores).sum() > 0
        assert np.allclose(back["scores"], scores, equal_nan=True)
        assert table.column("scores").null_count == np.isnan(scores).sum()  # null, as in JSON
        assert back["anomalous"].tolist() == expected["anomalous"]
        first = [row[0] if row else None for row in expected["top_features"]]
        assert (
            back["top1_feature"].astype(object).where(back["top1_feature"].notna(), None).tolist()
            == first
        )
        assert np.allclose(back["expected_a"], expected["expected"]["a"], equal_nan=True)


def test_score_windows_as_a_table_and_what_a_table_cannot_carry(app_client: Client) -> None:
    client, headers = app_client
    frame = _scored(client, headers)
    url = "/v1/models/m1/score"
    windows = {"windows": windows_of(frame, count=3, window=16), "top_k": 0}
    r = client.post(url, json=windows, headers={**headers, "accept": ARROW})
    assert r.status_code == 200, r.text
    table = ipc.open_stream(pa.BufferReader(r.content)).read_all()
    assert table.num_rows == 48 and table.column_names == ["scores", "normalized", "anomalous"]
    assert json.loads(table.schema.metadata[b"reconad"])["shape"] == [3, 16]
    plain = client.post(url, json=windows, headers=headers).json()
    assert np.allclose(table.column("scores").to_numpy(), np.ravel(plain["scores"]))
    # Only some fields: only those columns.
    some = {**windows, "fields": ["anomalous"]}
    r = client.post(url, json=some, headers={**headers, "accept": PARQUET})
    assert pq.read_table(pa.BufferReader(r.content)).column_names == ["anomalous"]
    # The compact JSON field has no place in a table: a 422 that says what to ask for.
    lean = {**windows, "fields": ["anomalous_indices"]}
    r = client.post(url, json=lean, headers={**headers, "accept": ARROW})
    assert r.status_code == 422 and "fields ['anomalous']" in r.json()["detail"]
    # An Accept without a table format keeps JSON.
    r = client.post(url, json=windows, headers={**headers, "accept": "text/csv, */*"})
    assert r.headers["content-type"] == "application/json"


def test_score_a_table_body(app_client: Client) -> None:
    client, headers = app_client
    frame = _scored(client, headers)
    url = "/v1/models/m1/score"
    plain = client.post(
        url,
        json={
            "timestamps": [t.isoformat() for t in frame.index],
            "values": {c: frame[c].tolist() for c in frame.columns},
            "top_k": 1,
        },
        headers=headers,
    ).json()
    table = _table(frame)
    for body, media in ((_arrow_stream(table), ARROW), (_parquet(table), PARQUET)):
        r = client.post(
            url,
            params={"top_k": "1"},
            content=body,
            headers={**headers, "content-type": media, "accept": ARROW},
        )
        assert r.status_code == 200, r.text
        back = ipc.open_stream(pa.BufferReader(r.content)).read_all()
        assert np.allclose(back.column("scores").to_numpy(), plain["scores"], equal_nan=True)
        assert back.column_names[-2:] == ["top1_feature", "top1_contribution"]
    # A table in, JSON out; options as query parameters.
    r = client.post(
        url,
        params={"fields": "anomalous_indices", "top_k": "0"},
        content=_arrow_stream(table),
        headers={**headers, "content-type": ARROW},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert set(r.json()) >= {"anomalous_indices"} and "scores" not in r.json()
    assert r.json()["anomalous_indices"] == [i for i, a in enumerate(plain["anomalous"]) if a]
    bad: list[tuple[dict[str, str], bytes, int, str]] = [
        ({"top_k": "three"}, _arrow_stream(table), 422, "integer"),
        ({"window": "16"}, _arrow_stream(table), 422, "unknown query parameter"),
        ({}, _arrow_stream(_table(frame).drop_columns(["b"])), 422, "lacks the feature"),
        ({}, _arrow_stream(_with(frame, a=["x"] * 400)), 422, "'a'"),
        ({}, _arrow_stream(_with(frame, a=[True] * 400)), 422, "booleans"),
        ({}, b"garbage", 400, "could not read the body as Arrow IPC"),
    ]
    for params, body, status, message in bad:
        r = client.post(
            url, params=params, content=body, headers={**headers, "content-type": ARROW}
        )
        assert r.status_code == status, (message, r.text)
        assert message in r.json()["detail"], r.text
    # Query options with a JSON body take the place of its fields (the schema documents them
    # for every body); unknown ones are refused, not silently ignored.
    r = client.post(
        url,
        params={"top_k": "0", "fields": "anomalous"},
        json={"windows": windows_of(frame), "top_k": 2, "fields": ["scores"]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert "top_features" not in r.json() and "scores" not in r.json() and "anomalous" in r.json()
    r = client.post(
        url, params={"window": "16"}, json={"windows": windows_of(frame)}, headers=headers
    )
    assert r.status_code == 422 and "unknown query parameter" in r.json()["detail"]


def test_score_a_table_with_a_series_key(app_client: Client) -> None:
    client, headers = app_client
    config = {**TINY_CONFIG, "key_column": "host"}
    r = client.post("/v1/models", json={"name": "keyed", "config": config}, headers=headers)
    assert r.status_code == 201, r.text
    train = make_frame(1200, seed=1, end=END)
    register_trained_version(
        _ctx(client), "keyed", pd.concat([train.assign(host=h) for h in ("h1", "h2")]), config
    )
    part = make_frame(100, seed=2, end=END + pd.Timedelta(hours=2))
    frame = pd.concat([part.assign(host="h1"), part.assign(host="h2")])
    plain = client.post(
        "/v1/models/keyed/score",
        json={
            "timestamps": [t.isoformat() for t in frame.index],
            "values": {c: frame[c].tolist() for c in ("a", "b", "host")},
        },
        headers=headers,
    )
    assert plain.status_code == 200, plain.text
    r = client.post(
        "/v1/models/keyed/score",
        content=_arrow_stream(_table(frame)),
        headers={**headers, "content-type": ARROW, "accept": ARROW},
    )
    assert r.status_code == 200, r.text
    back = _read_arrow(r.content)
    assert back.num_rows == 200
    assert np.allclose(back.column("scores").to_numpy(), plain.json()["scores"], equal_nan=True)


def test_long_series_run_with_more_torch_threads_which_are_restored() -> None:
    base = torch.get_num_threads()
    bulk = BulkThreads(threads=base + 1, min_points=10)
    seen = []
    with bulk.around(9):  # short: unchanged
        seen.append(torch.get_num_threads())
    with bulk.around(10):
        with bulk.around(20):  # two long series in flight: the last one out restores
            seen.append(torch.get_num_threads())
        seen.append(torch.get_num_threads())
    seen.append(torch.get_num_threads())
    with pytest.raises(RuntimeError), bulk.around(10):
        raise RuntimeError("scoring failed")
    seen.append(torch.get_num_threads())
    assert seen == [base, base + 1, base + 1, base, base]
