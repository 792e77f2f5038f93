"""The history store interface, the generation logic every backend shares, and the local store.

:class:`HistoryStore` keeps each model's observations as a time-indexed table.
:class:`LocalHistoryStore` uses a directory on disk; the object-store backend
(:mod:`service.storage.objectstore`) supplies the same primitives over object puts.

History layout (one folder per model), the same in every backend of
:class:`GenerationHistoryStore`::

    <root>/<model_id>/CURRENT                    name of the live generation
    <root>/<model_id>/g<random>/manifest.json    parts, row counts, time range, columns
    <root>/<model_id>/g<random>/p000001.parquet

Appending rows none of whose timestamps (with their key, for a keyed model) is stored adds a
part (written before the manifest that lists it), even where the parts' time ranges overlap:
the series of a keyed model arrive interleaved in time. Beyond 9 parts, the two before the
newest are merged while the later is at least as large as the earlier (a binary counter: each
row is rewritten about log2 of the history's size over an append's, not the whole history
every 64 appends; a reader that misses a merged file reads again). Rows that replace stored
ones (or dropping a range) rewrite the model's history into a new generation and switch
``CURRENT`` atomically, so readers never see a half-written state and each timestamp (and key)
is stored once. Writers of one model serialise on a lock; readers that lose a generation to a
rewrite read the new one.

Each model's history is bounded (:class:`Retention`: a row count, optionally an age): an
append that takes it an eighth past a limit drops the oldest rows, whole parts where it can.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.storage.base import StoreError, atomic_write_bytes, thread_locks

__all__ = [
    "TIMESTAMP",
    "GenerationHistoryStore",
    "HistoryStore",
    "HistorySummary",
    "LocalHistoryStore",
    "Retention",
]

TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class HistorySummary:
    """How much history a model holds."""

    points: int = 0
    start: datetime | None = None
    end: datetime | None = None
    columns: list[str] = field(default_factory=list)
    bytes: int = 0
    parts: int = 0


@dataclass(frozen=True)
class Retention:
    """How much history each model keeps: at most ``max_points`` rows, and with ``max_age``
    no row older than that before the model's newest row (measured from the data, not the
    clock, so a backfill of last year's data is kept). The oldest rows go first.

    An append trims once the history is an eighth over a limit (:data:`_RETENTION_SLACK`),
    back to the limit, so one trim pays for many appends: the history holds at most
    ``max_points`` and an eighth.
    """

    max_points: int = 10_000_000
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_points < 1:
            raise ValueError(f"max_points must be at least 1, got {self.max_points}")
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ValueError(f"max_age must be positive, got {self.max_age}")


class HistoryStore(ABC):
    """Per-model observations: a frame with a UTC ``DatetimeIndex`` named ``timestamp``."""

    @abstractmethod
    def append(self, model_id: str, frame: pd.DataFrame, key_column: str | None = None) -> int:
        """Store rows (replacing stored rows with the same timestamp and key); return the count.

        Raises
        ------
        StoreError
            When the columns differ from those already stored.
        """

    @abstractmethod
    def read(
        self, model_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        """Rows with ``start <= timestamp < end`` in time order (empty frame when none)."""

    @abstractmethod
    def summary(self, model_id: str) -> HistorySummary:
        """Counts, range and columns."""

    @abstractmethod
    def drop_range(self, model_id: str, start: datetime | None, end: datetime | None) -> int:
        """Delete rows with ``start <= timestamp < end``; return how many were deleted."""

    @abstractmethod
    def delete(self, model_id: str) -> None:
        """Delete everything stored for a model."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`StoreError` when the store is not usable."""


_MODEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Parts a generation lists at most; one more rewrites the history into a new generation.
_MAX_PARTS = 64
#: Parts listed before the newest ones are merged (:meth:`GenerationHistoryStore._compact_tail`).
_KEPT_PARTS = 8
#: How far over a retention limit a history may grow before an append trims it (a share).
_RETENTION_SLACK = 1 / 8


def _utc_values(index: pd.DatetimeIndex) -> npt.NDArray[np.datetime64]:
    """A UTC index's values as naive ``datetime64[us]``."""
    values: npt.NDArray[np.datetime64] = index.tz_convert("UTC").tz_localize(None).to_numpy()
    return values.astype("datetime64[us]")


class GenerationHistoryStore(HistoryStore):
    """History as Parquet parts in generation folders (see the module docstring).

    Every backend shares this logic and supplies the storage primitives below: reading and
    atomically writing a file, listing and removing, and the lock that serialises the writers of
    one model. Paths are ``/``-joined strings under ``top``; ``where`` names the store in errors;
    ``retention`` bounds each model's history (:class:`Retention`; default 10,000,000 rows).
    """

    def __init__(self, top: str, where: str, retention: Retention | None = None) -> None:
        self._top = top.rstrip("/")
        self._where = where
        self.retention = retention or Retention()

    # -- storage primitives
    @abstractmethod
    def _locked(self, model_id: str) -> contextlib.AbstractContextManager[None]:
        """Held while a model's history is written."""

    @abstractmethod
    def _get(self, path: str) -> bytes:
        """A file's content; raises ``FileNotFoundError`` when it is missing."""

    @abstractmethod
    def _put(self, path: str, data: bytes) -> None:
        """Write a file atomically (readers see the old or the new content)."""

    @abstractmethod
    def _names(self, path: str) -> list[str]:
        """Names directly in a folder (none when it is missing)."""

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Remove a file or a folder with its content; a missing one is ignored."""

    # -- helpers
    @staticmethod
    def _check_model_id(model_id: str) -> str:
        if not _MODEL_ID.match(model_id):
            raise StoreError(f"invalid model id {model_id!r}")
        return model_id

    def _dir(self, model_id: str) -> str:
        return f"{self._top}/{self._check_model_id(model_id)}"

    def _current(self, mdir: str) -> tuple[str, dict[str, Any]] | None:
        try:
            gen = self._get(f"{mdir}/CURRENT").decode().strip()
            manifest = json.loads(self._get(f"{mdir}/{gen}/manifest.json"))
        except FileNotFoundError:
            return None
        return f"{mdir}/{gen}", manifest

    def _write_part(self, gen: str, frame: pd.DataFrame, index: int) -> dict[str, Any]:
        idx = frame.index
        return self._write_table(
            gen,
            pa.Table.from_pandas(frame, preserve_index=True),
            index,
            idx.min().isoformat() if len(frame) else None,
            idx.max().isoformat() if len(frame) else None,
        )

    def _write_table(
        self, gen: str, table: pa.Table, index: int, start: str | None, end: str | None
    ) -> dict[str, Any]:
        """Write part ``index`` of a generation; return its manifest entry (``start`` and
        ``end``: its time range, ISO)."""
        name = f"p{index:06d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        self._put(f"{gen}/{name}", data)
        return {
            "file": name,
            "rows": table.num_rows,
            "start": start,
            "end": end,
            "bytes": len(data),
        }

    @staticmethod
    def _next_part(manifest: dict[str, Any]) -> int:
        """The number of a generation's next part file (parts merged away leave gaps)."""
        numbers = [int(p["file"][1:7]) for p in manifest["parts"]]
        return max(numbers, default=0) + 1

    def _compact_tail(self, gen: str, manifest: dict[str, Any]) -> None:
        """Merge the two parts before the newest while the later is at least as large as the
        earlier (and more than :data:`_KEPT_PARTS` parts precede the newest): a binary counter
        over the parts, so every stored row is rewritten about log2(history / append) times in
        all, instead of the whole history at every 64th append. The newest part stays as it
        was appended: the next append's rows overlap it in time (series arrive interleaved),
        so :meth:`_collides` reads one append's rows, not a merged part. The merged part is
        written, then the manifest that lists it, then the merged files go; a reader holding
        the earlier manifest misses a file and reads again (:meth:`read`)."""
        parts = manifest["parts"]
        if len(parts) > _KEPT_PARTS + 1 and parts[-2]["rows"] >= parts[-3]["rows"]:
            self._sweep(gen, manifest)
        while len(parts) > _KEPT_PARTS + 1 and parts[-2]["rows"] >= parts[-3]["rows"]:
            pair = {"parts": parts[-3:-1], "columns": manifest["columns"]}
            merged = self._read_gen(gen, pair, None, None)  # sorted; parts share no row
            gone = [p["file"] for p in parts[-3:-1]]
            parts[-3:-1] = [self._write_part(gen, merged, self._next_part(manifest))]
            self._put_manifest(gen, manifest)
            for name in gone:
                self._remove(f"{gen}/{name}")

    def _sweep(self, gen: str, manifest: dict[str, Any]) -> None:
        """Remove the files of a generation that its manifest does not list: what a writer
        that died between a manifest and the removals after it (a merge, a trim) left. Only
        writers, which hold the model's lock, write a generation's files, so an unlisted one
        is no other writer's work in progress."""
        listed = {p["file"] for p in manifest["parts"]} | {"manifest.json"}
        for name in self._names(gen):
            if name not in listed:
                self._remove(f"{gen}/{name}")

    def _cutoff(
        self,
        rows: int,
        oldest: pd.Timestamp,
        newest: pd.Timestamp,
        stamps: Callable[[], npt.NDArray[np.datetime64]],
    ) -> pd.Timestamp | None:
        """The oldest timestamp the retention keeps, or None while the history is within an
        eighth of both limits. ``stamps`` returns every stored timestamp (UTC); it is called
        only when there are more rows than the limit."""
        limit = self.retention
        over_rows = rows > limit.max_points * (1 + _RETENTION_SLACK)
        over_age = limit.max_age is not None and newest - oldest > limit.max_age * (
            1 + _RETENTION_SLACK
        )
        if not (over_rows or over_age):
            return None
        cut: pd.Timestamp | None = None if limit.max_age is None else newest - limit.max_age
        if rows > limit.max_points:
            values = stamps().astype("datetime64[us]")
            first = len(values) - limit.max_points
            by_rows = pd.Timestamp(np.partition(values, first)[first]).tz_localize("UTC")
            cut = by_rows if cut is None else max(cut, by_rows)
        return cut

    def _retain(self, gen: str, manifest: dict[str, Any]) -> None:
        """Trim a generation to the retention in place: parts wholly older than the cutoff
        leave the manifest, a part that straddles it is rewritten without its older rows
        (as a new file, so that readers of the earlier manifest read again), then the files
        that left go."""
        parts = manifest["parts"]
        summary = self._summarise(manifest)
        if summary.start is None or summary.end is None:
            return

        def stamps() -> npt.NDArray[np.datetime64]:
            return np.concatenate([self._part_stamps(gen, p) for p in parts])

        cutoff = self._cutoff(
            summary.points, pd.Timestamp(summary.start), pd.Timestamp(summary.end), stamps
        )
        if cutoff is None:
            return
        self._sweep(gen, manifest)
        kept: list[dict[str, Any]] = []
        gone: list[str] = []
        number = self._next_part(manifest)
        for part in parts:
            if pd.Timestamp(part["start"]) >= cutoff:
                kept.append(part)
                continue
            gone.append(part["file"])
            if pd.Timestamp(part["end"]) >= cutoff:
                kept.append(self._trim_part(gen, part, cutoff, number))
                number += 1
        manifest["parts"] = kept
        self._put_manifest(gen, manifest)
        for name in gone:
            self._remove(f"{gen}/{name}")

    def _trim_part(
        self, gen: str, part: dict[str, Any], cutoff: pd.Timestamp, number: int
    ) -> dict[str, Any]:
        """Write part ``number``: the rows of ``part`` from ``cutoff`` on (in Arrow: the
        straddling part is the oldest and largest, and a trip through pandas cost most of the
        trim); return its manifest entry."""
        table = pq.read_table(io.BytesIO(self._get(f"{gen}/{part['file']}")))
        stamps = table.column(TIMESTAMP)
        table = table.filter(pc.greater_equal(stamps, pa.scalar(cutoff, type=stamps.type)))
        start = pd.Timestamp(pc.min(table.column(TIMESTAMP)).as_py()).isoformat()
        return self._write_table(gen, table, number, start, part["end"])

    def _part_stamps(self, gen: str, part: dict[str, Any]) -> npt.NDArray[np.datetime64]:
        """The UTC timestamps of one part (its index column alone)."""
        table = pq.read_table(io.BytesIO(self._get(f"{gen}/{part['file']}")), columns=[TIMESTAMP])
        return _utc_values(pd.DatetimeIndex(table.column(TIMESTAMP).to_pandas()))

    def _put_manifest(self, gen: str, manifest: dict[str, Any]) -> None:
        self._put(f"{gen}/manifest.json", json.dumps(manifest).encode())

    def _new_generation(
        self, mdir: str, frame: pd.DataFrame, columns: list[str], key_column: str | None
    ) -> None:
        name = f"g{uuid.uuid4().hex[:12]}"
        if len(frame):
            index = pd.DatetimeIndex(frame.index)
            cutoff = self._cutoff(len(frame), index.min(), index.max(), lambda: _utc_values(index))
            if cutoff is not None:
                frame = frame[index >= cutoff]
        parts = [self._write_part(f"{mdir}/{name}", frame, 1)] if len(frame) else []
        manifest = {"parts": parts, "columns": columns, "key_column": key_column}
        self._put_manifest(f"{mdir}/{name}", manifest)
        self._put(f"{mdir}/CURRENT", name.encode())
        # Readers holding an old manifest retry once its parts vanish; leftovers of a crash go too.
        for old in self._names(mdir):
            if old.startswith("g") and old != name:
                self._remove(f"{mdir}/{old}")

    @staticmethod
    def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise StoreError("history frames need a DatetimeIndex")
        index = frame.index
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        frame = frame.copy()
        frame.index = index.as_unit("us").rename(TIMESTAMP)
        return frame

    @staticmethod
    def _dedupe(frame: pd.DataFrame, key_column: str | None) -> pd.DataFrame:
        if key_column is None:
            frame = frame[~frame.index.duplicated(keep="last")]
            return frame.sort_index(kind="stable")
        keys = frame[key_column].astype(str)
        mask = ~pd.DataFrame({"t": frame.index, "k": keys.to_numpy()}).duplicated(keep="last")
        frame = frame[mask.to_numpy()]
        return frame.sort_index(kind="stable")

    @staticmethod
    def _empty(columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {c: pd.Series(dtype="float64") for c in columns},
            index=pd.DatetimeIndex([], tz="UTC", name=TIMESTAMP).as_unit("us"),
        )

    @staticmethod
    def _check_columns(manifest: dict[str, Any], columns: list[str]) -> None:
        if sorted(manifest["columns"]) != sorted(columns):
            raise StoreError(
                f"columns {columns} differ from the stored columns {manifest['columns']}; "
                "send the same columns every time (null for a missing value)"
            )

    @staticmethod
    def _outside(frame: pd.DataFrame, lo: Any, hi: Any) -> Any:
        """Boolean mask of the rows outside ``lo <= t < hi`` (the rows a drop keeps)."""
        mask = pd.Series(True, index=frame.index)
        if lo is not None:
            mask &= frame.index >= lo
        if hi is not None:
            mask &= frame.index < hi
        return ~mask.to_numpy()

    @staticmethod
    def _summarise(manifest: dict[str, Any] | None) -> HistorySummary:
        if manifest is None:
            return HistorySummary()
        parts = manifest["parts"]
        if not parts:
            return HistorySummary(columns=list(manifest["columns"]))
        return HistorySummary(
            points=sum(int(p["rows"]) for p in parts),
            start=min(pd.Timestamp(p["start"]) for p in parts).to_pydatetime(),
            end=max(pd.Timestamp(p["end"]) for p in parts).to_pydatetime(),
            columns=list(manifest["columns"]),
            bytes=sum(int(p["bytes"]) for p in parts),
            parts=len(parts),
        )

    def _read_gen(self, gen: str, manifest: dict[str, Any], start: Any, end: Any) -> pd.DataFrame:
        """Rows of a generation with ``start <= t < end``, reading only overlapping parts."""
        frames = []
        for part in manifest["parts"]:
            if start is not None and part["end"] is not None and pd.Timestamp(part["end"]) < start:
                continue
            if end is not None and part["start"] is not None and pd.Timestamp(part["start"]) >= end:
                continue
            table = pq.read_table(io.BytesIO(self._get(f"{gen}/{part['file']}")))
            frames.append(table.to_pandas())
        if not frames:
            return self._empty(manifest.get("columns", []))
        frame = pd.concat(frames) if len(frames) > 1 else frames[0]
        frame = self._normalise(frame)
        if start is not None:
            frame = frame[frame.index >= start]
        if end is not None:
            frame = frame[frame.index < end]
        result: pd.DataFrame = frame.sort_index(kind="stable")
        return result

    def _collides(
        self, gen: str, manifest: dict[str, Any], frame: pd.DataFrame, key_column: str | None
    ) -> bool:
        """Whether a stored row has the timestamp (and key) of one of ``frame``'s rows.

        Only the parts whose time range reaches the frame's are read: for streamed points, the
        latest part or two. (Series of a keyed model reach the store interleaved in time, so
        newer-than-everything-stored would send nearly every flush through a rewrite of the
        whole history.)
        """
        lo, hi = frame.index.min(), frame.index.max()
        if lo > max(pd.Timestamp(p["end"]) for p in manifest["parts"]):
            return False
        stored = self._read_gen(gen, manifest, lo, hi + pd.Timedelta(microseconds=1))
        if stored.empty:
            return False
        if key_column is None:
            return bool(frame.index.isin(stored.index).any())
        new = pd.MultiIndex.from_arrays([frame.index, frame[key_column].astype(str)])
        old = pd.MultiIndex.from_arrays([stored.index, stored[key_column].astype(str)])
        return bool(new.isin(old).any())

    @staticmethod
    def _ts(value: datetime | None) -> pd.Timestamp | None:
        if value is None:
            return None
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")

    # -- interface
    def append(self, model_id: str, frame: pd.DataFrame, key_column: str | None = None) -> int:
        if frame.empty:
            return 0
        frame = self._dedupe(self._normalise(frame), key_column)
        columns = [str(c) for c in frame.columns]
        mdir = self._dir(model_id)
        with self._locked(model_id):
            current = self._current(mdir)
            if current is None or not current[1]["parts"]:
                self._new_generation(mdir, frame, columns, key_column)
                return len(frame)
            gen, manifest = current
            self._check_columns(manifest, columns)
            frame = frame[manifest["columns"]]
            parts = manifest["parts"]
            if len(parts) < _MAX_PARTS and not self._collides(gen, manifest, frame, key_column):
                parts.append(self._write_part(gen, frame, self._next_part(manifest)))
                self._put_manifest(gen, manifest)
                self._compact_tail(gen, manifest)
                self._retain(gen, manifest)
                return len(frame)
            merged = pd.concat([self._read_gen(gen, manifest, None, None), frame])
            merged = self._dedupe(merged, key_column)
            self._new_generation(mdir, merged, manifest["columns"], key_column)
            return len(frame)

    def read(
        self, model_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        mdir = self._dir(model_id)
        lo, hi = self._ts(start), self._ts(end)
        for _attempt in range(5):
            current = self._current(mdir)
            if current is None:
                return self._empty([])
            try:
                return self._read_gen(current[0], current[1], lo, hi)
            except FileNotFoundError:
                time.sleep(0.05)  # a rewrite replaced the generation; read the new one
        raise StoreError(f"history of model {model_id} kept changing while it was read")

    def summary(self, model_id: str) -> HistorySummary:
        current = self._current(self._dir(model_id))
        return self._summarise(None if current is None else current[1])

    def drop_range(self, model_id: str, start: datetime | None, end: datetime | None) -> int:
        lo, hi = self._ts(start), self._ts(end)
        mdir = self._dir(model_id)
        with self._locked(model_id):
            current = self._current(mdir)
            if current is None:
                return 0
            frame = self._read_gen(current[0], current[1], None, None)
            keep = self._outside(frame, lo, hi)
            dropped = int((~keep).sum())
            if dropped:
                self._new_generation(
                    mdir, frame[keep], current[1]["columns"], current[1]["key_column"]
                )
            return dropped

    def delete(self, model_id: str) -> None:
        self._remove(self._dir(model_id))

    def check(self) -> None:
        probe = f"{self._top}/.probe-{uuid.uuid4().hex}"
        try:
            self._put(probe, b"ok")
            self._remove(probe)
        except Exception as exc:
            raise StoreError(f"history store at {self._where} is not usable: {exc}") from exc


class LocalHistoryStore(GenerationHistoryStore):
    """History in a local folder: files are replaced by fsync'd renames, and the writers of a
    model serialise on a lock file in its folder (``flock``, so across processes too).

    Parameters
    ----------
    root
        Folder holding one sub-folder per model (created if missing).
    retention
        How much history each model keeps (default: 10,000,000 rows).
    """

    def __init__(self, root: Path, retention: Retention | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(str(self.root), str(self.root), retention)
        self._threads = thread_locks()  # flock does not serialise the threads of one process

    @contextlib.contextmanager
    def _locked(self, model_id: str) -> Iterator[None]:
        mdir = Path(self._dir(model_id))
        mdir.mkdir(parents=True, exist_ok=True)
        with self._threads(model_id), open(mdir / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _get(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def _put(self, path: str, data: bytes) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), data)

    def _names(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def _remove(self, path: str) -> None:
        # Rename first, so a half-removed folder is never seen under its name.
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()
