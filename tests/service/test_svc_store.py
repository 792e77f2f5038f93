"""Artifact and history stores on a temp directory."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from svc_helpers import REPO, make_frame

from service.db import Database
from service.settings import Settings
from service.storage import (
    LocalArtifactStore,
    LocalHistoryStore,
    Retention,
    StoreError,
    create_artifact_store,
    open_stores,
)


def test_artifacts_publish_is_atomic_and_immutable(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "art")
    with store.staging() as tmp:
        (tmp / "m").mkdir()
        (tmp / "m" / "config.json").write_text("{}")
        store.publish(tmp / "m", "model1/abc")
    assert store.exists("model1/abc")
    assert (store.fetch("model1/abc") / "config.json").read_text() == "{}"
    assert store.list("model1") == ["model1/abc"]
    with store.staging() as tmp:
        (tmp / "m").mkdir()
        with pytest.raises(StoreError, match="immutable"):
            store.publish(tmp / "m", "model1/abc")
    store.delete("model1/abc")
    assert not store.exists("model1/abc")
    with pytest.raises(StoreError, match="missing"):
        store.fetch("model1/abc")
    assert store.sweep_staging() == 0  # staging dirs remove themselves


def test_artifacts_publish_from_another_folder_copies(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "art")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("x")
    store.publish(outside, "m/v")
    assert (store.fetch("m/v") / "f").read_text() == "x"


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "", "a//b", ".hidden"])
def test_artifacts_reject_path_tricks(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(tmp_path / "art")
    with pytest.raises(StoreError, match="invalid storage key"):
        store.exists(key)


def test_artifact_blobs_and_urls(tmp_path: Path) -> None:
    store = create_artifact_store(f"file://{tmp_path / 'art'}")
    store.put_bytes("inputs-m/j.parquet", b"data")
    assert store.get_bytes("inputs-m/j.parquet") == b"data"
    store.check()
    with pytest.raises(StoreError, match="no storage backend"):
        create_artifact_store("nosuchscheme://bucket/x", tmp_path / "cache")


def test_history_append_read_and_summary(tmp_path: Path) -> None:
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(100)
    assert store.append("m1", frame.iloc[:60]) == 60
    assert store.append("m1", frame.iloc[60:]) == 40  # newer data: a new part
    summary = store.summary("m1")
    assert summary.points == 100 and summary.parts == 2
    assert summary.columns == ["a", "b"]
    assert summary.start == frame.index[0].to_pydatetime()
    assert summary.end == frame.index[-1].to_pydatetime()
    back = store.read("m1")
    pd.testing.assert_frame_equal(back, frame, check_freq=False, check_index_type=False)
    middle = store.read("m1", frame.index[10], frame.index[20])
    assert len(middle) == 10 and middle.index[0] == frame.index[10]


def test_history_overlap_replaces_rows(tmp_path: Path) -> None:
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(50)
    store.append("m1", frame)
    changed = frame.iloc[10:20] + 100.0
    store.append("m1", changed)
    back = store.read("m1")
    assert len(back) == 50
    assert store.summary("m1").points == 50
    assert (back.iloc[10:20]["a"] > 50).all() and (back.iloc[:10]["a"] < 50).all()


def test_history_series_interleaved_in_time_append_parts_and_a_repeat_replaces(
    tmp_path: Path,
) -> None:
    """A keyed model's series reach the store interleaved in time (another series' points of
    the same timestamps, then later ones): each append adds a part, without rewriting the
    history; a row with a stored timestamp and key still replaces the stored one."""
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(20)
    first, second = frame.iloc[:10], frame.iloc[10:]
    store.append("m1", first.assign(host="a"), key_column="host")
    store.append("m1", first.assign(host="b"), key_column="host")  # the same timestamps
    store.append("m1", second.iloc[:5].assign(host="b"), key_column="host")
    store.append("m1", second.assign(host="a"), key_column="host")  # overlaps b's newest
    summary = store.summary("m1")
    assert summary.parts == 4 and summary.points == 35
    back = store.read("m1")
    assert back.index.is_monotonic_increasing
    assert back.groupby("host").size().to_dict() == {"a": 20, "b": 15}
    pd.testing.assert_frame_equal(
        back[back["host"] == "a"].drop(columns="host"),
        frame,
        check_freq=False,
        check_index_type=False,
    )
    repeat = first.iloc[[3]].assign(host="b")
    repeat["a"] += 100.0
    store.append("m1", repeat, key_column="host")
    summary = store.summary("m1")
    assert summary.points == 35 and summary.parts == 1  # a rewrite, as before
    back = store.read("m1")
    changed = back[(back["host"] == "b") & (back.index == first.index[3])]
    assert len(changed) == 1 and changed["a"].iloc[0] > 50
    assert (back[back["host"] == "a"]["a"] < 50).all()


def test_history_of_many_appends_keeps_few_parts_in_one_generation(tmp_path: Path) -> None:
    """Beyond 9 parts the ones before the newest merge as a binary counter: 200 appends
    leave at most 9 + log2(200) parts, in the generation of the first append (no rewrite of
    the history), with every row stored once."""
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(2000)
    store.append("m1", frame.iloc[:10])
    current = (tmp_path / "hist" / "m1" / "CURRENT").read_text()
    for i in range(1, 200):
        store.append("m1", frame.iloc[i * 10 : (i + 1) * 10])
        assert store.summary("m1").parts <= 8 + 8
    assert (tmp_path / "hist" / "m1" / "CURRENT").read_text() == current
    summary = store.summary("m1")
    assert summary.points == 2000 and 8 < summary.parts <= 16
    pd.testing.assert_frame_equal(store.read("m1"), frame, check_freq=False, check_index_type=False)
    files = sorted((tmp_path / "hist" / "m1" / current).glob("*.parquet"))
    assert len(files) == summary.parts  # the merged parts' files are gone


def _interleaved(store: LocalHistoryStore, frame: pd.DataFrame, step: int) -> pd.DataFrame:
    """Append ``frame`` for hosts a and b, ``step`` rows of each per append, the series
    interleaved in time as a keyed model's streams reach the store; return every row sent."""
    sent = []
    for lo in range(0, len(frame), step):
        for host in ("a", "b"):
            rows = frame.iloc[lo : lo + step].assign(host=host)
            store.append("m1", rows, key_column="host")
            sent.append(rows)
    return pd.concat(sent)


def test_history_keeps_the_newest_rows_within_its_row_limit(tmp_path: Path) -> None:
    """Past an eighth over ``max_points`` an append drops the oldest rows back to the limit:
    what stays is exactly the newest rows sent, every one of them, and no file is left that
    the manifest does not list."""
    store = LocalHistoryStore(tmp_path / "hist", Retention(max_points=1000))
    sent = _interleaved(store, make_frame(1500), step=25)  # 3,000 rows in 120 appends
    summary = store.summary("m1")
    assert 1000 <= summary.points <= 1125
    back = store.read("m1")
    newest = sent.sort_index(kind="stable").iloc[-summary.points :]
    assert back.index.min() == newest.index.min()  # the oldest rows went, no newer one
    assert back.groupby("host").size().to_dict() == newest.groupby("host").size().to_dict()
    a = back[back["host"] == "a"].drop(columns="host")
    pd.testing.assert_frame_equal(
        a,
        sent[sent["host"] == "a"].drop(columns="host").loc[a.index.min() :],
        check_freq=False,
        check_index_type=False,
    )
    gen = tmp_path / "hist" / "m1" / (tmp_path / "hist" / "m1" / "CURRENT").read_text()
    assert len(list(gen.glob("*.parquet"))) == summary.parts


def test_history_keeps_rows_within_its_age_limit_of_the_newest(tmp_path: Path) -> None:
    """With ``max_age`` the rows more than that before the newest row go (measured from the
    data, so a backfill of old data stays while it is the newest there is), by whole parts
    and by rewriting the part that straddles the cutoff; the rewrite path trims too."""
    day = pd.Timedelta("1D")
    store = LocalHistoryStore(tmp_path / "hist", Retention(max_points=10**6, max_age=day))
    end = pd.Timestamp("2024-01-04", tz="UTC")  # years old: the age counts from the data
    frame = make_frame(3 * 24 * 6, seed=1, end=end, freq="10min")  # three days
    store.append("m1", frame.iloc[:100])
    assert store.summary("m1").points == 100
    for lo in range(100, len(frame), 37):
        store.append("m1", frame.iloc[lo : lo + 37])
        summary = store.summary("m1")
        assert summary.end is not None and summary.start is not None
        assert summary.end - summary.start <= day * 9 / 8
    back = store.read("m1")
    newest = back.index.max()
    kept = frame.loc[back.index.min() :]
    pd.testing.assert_frame_equal(back, kept, check_freq=False, check_index_type=False)
    assert back.index.min() <= newest - day * 15 / 16  # trimmed to the limit, not far past it
    store.append("m1", frame.iloc[-5:] * 2)  # a stored timestamp: rewrites the history
    assert store.read("m1").index.min() >= newest - day * 9 / 8


def test_history_removes_files_a_crashed_merge_left(tmp_path: Path) -> None:
    """A writer that died between a merge's manifest and its removals leaves unlisted part
    files in the generation; the next merge removes them and reads the listed ones."""
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(400)
    store.append("m1", frame.iloc[:10])
    gen = tmp_path / "hist" / "m1" / (tmp_path / "hist" / "m1" / "CURRENT").read_text()
    (gen / "p999998.parquet").write_bytes(b"left by a crash")
    (gen / ".tmp-123").write_bytes(b"half written")
    for i in range(1, 40):
        store.append("m1", frame.iloc[i * 10 : (i + 1) * 10])
    assert not (gen / "p999998.parquet").exists() and not (gen / ".tmp-123").exists()
    assert len(list(gen.glob("*.parquet"))) == store.summary("m1").parts
    pd.testing.assert_frame_equal(store.read("m1"), frame, check_freq=False, check_index_type=False)


def test_the_settings_set_each_store_s_retention(tmp_path: Path, db: Database) -> None:
    settings = Settings(data_dir=tmp_path, history_max_points=5000, history_max_age_days=1.5)
    _, history = open_stores(settings, db)
    assert isinstance(history, LocalHistoryStore)
    assert history.retention == Retention(5000, timedelta(hours=36))
    _, history = open_stores(Settings(data_dir=tmp_path), db)
    assert isinstance(history, LocalHistoryStore)
    assert history.retention == Retention(10_000_000, None)  # the default keeps any age
    with pytest.raises(ValidationError, match="history_max_points"):
        Settings(data_dir=tmp_path, history_max_points=10)


def test_retention_refuses_limits_that_keep_nothing() -> None:
    with pytest.raises(ValueError, match="max_points"):
        Retention(max_points=0)
    with pytest.raises(ValueError, match="max_age"):
        Retention(max_age=timedelta(0))


def test_history_drop_range_and_columns(tmp_path: Path) -> None:
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(50)
    store.append("m1", frame)
    assert store.drop_range("m1", frame.index[0], frame.index[25]) == 25
    assert store.summary("m1").points == 25
    assert store.drop_range("m1", None, None) == 25
    assert store.summary("m1").points == 0
    store.append("m1", frame)
    with pytest.raises(StoreError, match="differ from the stored columns"):
        later = make_frame(5, end=frame.index[-1] + pd.Timedelta("10min"))
        store.append("m1", later.rename(columns={"a": "z"}))
    store.delete("m1")
    assert store.summary("m1").points == 0
    assert store.read("m1").empty


def test_history_recovers_from_a_crash_between_generations(tmp_path: Path) -> None:
    store = LocalHistoryStore(tmp_path / "hist")
    frame = make_frame(30)
    store.append("m1", frame)
    # a rewrite that died before switching CURRENT leaves a stray generation behind
    stray = tmp_path / "hist" / "m1" / "g000002"
    stray.mkdir()
    (stray / "p000001.parquet").write_bytes(b"garbage")
    assert store.summary("m1").points == 30
    store.append("m1", frame.iloc[:5] * 2)  # overlap: rewrites into a new generation
    assert store.summary("m1").points == 30
    assert not stray.exists() or (stray / "manifest.json").exists()


def test_history_rejects_bad_model_ids(tmp_path: Path) -> None:
    store = LocalHistoryStore(tmp_path / "hist")
    with pytest.raises(StoreError):
        store.summary("../etc")


_WRITER = """
import sys
import pandas as pd
from service.storage import LocalHistoryStore
store = LocalHistoryStore(sys.argv[1])
for i in range(int(sys.argv[2]), 40, 2):
    at = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=i)
    store.append("m1", pd.DataFrame({"a": [float(i)]}, index=pd.DatetimeIndex([at])))
"""


def test_history_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    """Interleaved appends (many overlap, so they rewrite) serialise on the model's lock file."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "hist"), first], env=env)
        for first in ("0", "1")
    ]
    assert [w.wait(120) for w in writers] == [0, 0]
    store = LocalHistoryStore(tmp_path / "hist")
    back = store.read("m1")
    assert back["a"].tolist() == [float(i) for i in range(40)]
    assert [p.name for p in (tmp_path / "hist" / "m1").iterdir() if p.name.startswith("g")] == [
        (tmp_path / "hist" / "m1" / "CURRENT").read_text()
    ]
