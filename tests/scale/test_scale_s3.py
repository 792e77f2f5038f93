"""Object storage through fsspec on a real S3-compatible server (moto) over loopback HTTP."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from service.storage import Retention, StoreError, create_artifact_store, create_history_store
from service.storage.objectstore import FsspecArtifactStore, FsspecHistoryStore


def test_artifacts_publish_fetch_and_stay_immutable(s3_endpoint: str, tmp_path: Path) -> None:
    store = create_artifact_store("s3://reconad/art", tmp_path / "cache", s3_endpoint)
    assert isinstance(store, FsspecArtifactStore)
    store.check()
    with store.staging() as tmp:
        (tmp / "model" / "sub").mkdir(parents=True)
        (tmp / "model" / "weights.bin").write_bytes(b"w" * 1000)
        (tmp / "model" / "sub" / "meta.json").write_text("{}")
        assert not store.exists("m1/v1")
        store.publish(tmp / "model", "m1/v1")
        with pytest.raises(StoreError, match="immutable"):
            store.publish(tmp / "model", "m1/v1")
    assert store.exists("m1/v1") and store.list("m1") == ["m1/v1"]
    # Another process (its own cache) sees the complete artifact.
    other = FsspecArtifactStore("s3://reconad/art", tmp_path / "cache2", s3_endpoint)
    local = other.fetch("m1/v1")
    assert (local / "weights.bin").read_bytes() == b"w" * 1000
    assert (local / "sub" / "meta.json").read_text() == "{}"
    # Files without the completion marker (an upload cut short) are not an artifact.
    store.fs.pipe_file("reconad/art/m1/v2/weights.bin", b"partial")
    assert not store.exists("m1/v2")
    with pytest.raises(StoreError, match="missing"):
        other.fetch("m1/v2")
    store.put_bytes("inputs-m1/j.parquet", b"abc")
    assert other.get_bytes("inputs-m1/j.parquet") == b"abc"
    store.delete("m1")
    assert not other.exists("m1/v1") and store.list("m1") == []
    with pytest.raises(StoreError, match="missing"):
        store.get_bytes("inputs-m1/none")


def test_history_append_rewrite_drop(s3_endpoint: str) -> None:
    store = create_history_store("s3://reconad/hist", s3_endpoint)
    assert isinstance(store, FsspecHistoryStore)
    store.check()
    index = pd.date_range("2024-01-01", periods=100, freq="min", tz="UTC")
    frame = pd.DataFrame({"a": range(100), "b": range(100)}, index=index, dtype=float)
    assert store.append("m1", frame.iloc[:50]) == 50
    assert store.append("m1", frame.iloc[50:]) == 50  # newer: a new part
    assert store.summary("m1").parts == 2
    assert store.append("m1", frame.iloc[40:60] * 2) == 20  # overlap: a new generation
    summary = store.summary("m1")
    assert summary.points == 100 and summary.parts == 1
    generations = [n for n in store.fs.ls("reconad/hist/m1", detail=False) if "/g" in n]
    assert len(generations) == 1  # the replaced generation was removed
    back = store.read("m1", index[40], index[60])
    assert len(back) == 20 and (back["a"].to_numpy() == frame["a"].iloc[40:60].to_numpy() * 2).all()
    assert store.drop_range("m1", index[0], index[10]) == 10
    assert store.summary("m1").points == 90
    with pytest.raises(StoreError, match="differ"):
        store.append("m1", pd.DataFrame({"c": [1.0]}, index=index[-1:] + pd.Timedelta("1h")))
    store.delete("m1")
    assert store.summary("m1").points == 0 and store.read("m1").empty


def _minutes_in_40_appends(store: FsspecHistoryStore) -> pd.DataFrame:
    """Append 400 minutes of two columns to model m1, ten rows at a time; return them."""
    index = pd.date_range("2024-01-01", periods=400, freq="min", tz="UTC")
    frame = pd.DataFrame({"a": range(400), "b": range(400)}, index=index, dtype=float)
    for i in range(40):
        store.append("m1", frame.iloc[i * 10 : (i + 1) * 10])
    return frame


def test_history_tail_merges_on_s3(s3_endpoint: str) -> None:
    """Beyond 9 parts the ones before the newest merge in place: the merged parts' objects
    are removed, the generation stays, and every row reads back once."""
    store = create_history_store("s3://reconad/tail", s3_endpoint)
    assert isinstance(store, FsspecHistoryStore)
    frame = _minutes_in_40_appends(store)
    summary = store.summary("m1")
    assert summary.points == 400 and 8 < summary.parts <= 8 + 6
    generations = [n for n in store.fs.ls("reconad/tail/m1", detail=False) if "/g" in n]
    assert len(generations) == 1
    files = [n for n in store.fs.ls(generations[0], detail=False) if n.endswith(".parquet")]
    assert len(files) == summary.parts
    pd.testing.assert_frame_equal(
        store.read("m1"), frame, check_freq=False, check_index_type=False, check_names=False
    )
    store.delete("m1")


def test_history_retention_on_s3(s3_endpoint: str) -> None:
    """Past an eighth over the row limit the oldest rows go on S3 too: the newest rows stay,
    each once, and the generation holds only the objects its manifest lists."""
    store = create_history_store("s3://reconad/keep", s3_endpoint, retention=Retention(300))
    assert isinstance(store, FsspecHistoryStore)
    frame = _minutes_in_40_appends(store)
    summary = store.summary("m1")
    assert 300 <= summary.points <= 337
    pd.testing.assert_frame_equal(
        store.read("m1"),
        frame.iloc[-summary.points :],
        check_freq=False,
        check_index_type=False,
        check_names=False,
    )
    store.fs.invalidate_cache()
    generations = [n for n in store.fs.ls("reconad/keep/m1", detail=False) if "/g" in n]
    files = [n for n in store.fs.ls(generations[0], detail=False) if n.endswith(".parquet")]
    assert len(generations) == 1 and len(files) == summary.parts
    store.delete("m1")
