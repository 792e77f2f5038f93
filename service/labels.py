"""Feedback labels of a model: a person's verdict on a point or a time range of a series.

A label says ``anomaly`` (a real anomaly), ``normal`` (not an anomaly: a false alarm, or a
stretch known to be fine) or ``unsure``; it may carry a note, and records the id of the key that
gave it and when. Labels come one at a time (``POST /v1/models/{name}/labels``), from an
anomaly event (``POST /v1/events/{id}/label``: the label spans the event and links it), or as a
CSV of known incidents (``POST /v1/models/{name}/labels/import``: all rows or none).

Every label is stored, overlapping and contradicting ones included; where labels overlap, the
most recently created label covering a point decides for that point, and ``unsure`` covers a
point without counting as either verdict. That rule is owned by ``detector.feedback``, which
turns labels into per-point masks; this module only stores, bounds and serves them.

Bounds: at most ``max_labels_per_model`` labels per model (409 beyond), notes of at most
:data:`~service.schemas.MAX_NOTE` characters, import files of at most ``max_label_import_bytes``
(413 beyond). Labels go with their model: a model's deletion deletes them (foreign key cascade)
and ``GET /v1/models/{name}/labels/export`` writes them in the import's CSV format.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from detector.errors import ReconADError
from detector.feedback import VERDICTS
from service.db import Database
from service.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
)
from service.parsing import check_datetime
from service.registry import ModelRegistry
from service.schemas import MAX_NOTE
from service.storage import StoreError
from service.tables import AnomalyEvent, Label, Model, utcnow

__all__ = ["CSV_COLUMNS", "OVERLAP_RULE", "LabelService", "labels_of", "parse_label_csv"]

logger = logging.getLogger(__name__)

#: How overlapping labels combine (``detector.feedback.label_masks`` applies it), said in the
#: OpenAPI description of every route that stores labels.
OVERLAP_RULE = (
    "Every label is stored. Where labels overlap or contradict, the most recently created "
    "label covering a point decides for that point; 'unsure' covers a point but counts as "
    "neither anomaly nor normal."
)
#: The columns of a labels CSV, in the order an export writes them; ``end``, ``note`` and
#: ``series`` may be left out (or empty).
CSV_COLUMNS = ("start", "end", "label", "note", "series")
_REQUIRED = ("start", "label")
#: What a CSV's ``label`` column may say (case-insensitive): the verdicts, and 1/0 as label
#: files of benchmarks write them.
_CSV_VERDICTS = {**{v: v for v in VERDICTS}, "1": "anomaly", "0": "normal"}


def _csv_time(text: str, what: str) -> datetime:
    """An ISO-8601 time or epoch seconds, UTC; a ``ValueError`` saying what is wrong."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    try:
        if math.isfinite(number):
            stamp = pd.Timestamp(number, unit="s", tz="UTC")
        else:
            stamp = pd.Timestamp(text)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        raise ValueError(
            f"{what} {text[:40]!r} is not an ISO-8601 time (2024-01-31T12:00:00Z) or epoch seconds"
        ) from None
    if pd.isna(stamp):
        raise ValueError(f"{what} is empty")
    return check_datetime(stamp.to_pydatetime(), what)


def parse_label_csv(content: bytes, key_column: str | None) -> list[dict[str, Any]]:
    """The rows of a labels CSV as label fields, checked; all of them or an error.

    Parameters
    ----------
    content
        A CSV with a header row naming ``start`` and ``label`` and optionally ``end``,
        ``note`` and ``series`` (UTF-8, any column order).
    key_column
        The model's key column (``series`` is refused for a model without one).

    Raises
    ------
    service.errors.InvalidInputError
        Naming the first bad row (row 1 is the first row after the header) and what to fix.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"the labels CSV is not UTF-8 text: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise InvalidInputError(
            "the labels CSV is empty; send a header row 'start,end,label[,note][,series]' "
            "and one row per label"
        ) from None
    except csv.Error as exc:
        raise InvalidInputError(f"the labels CSV cannot be read: {exc}") from None
    unknown = [name for name in header if name not in CSV_COLUMNS]
    missing = [name for name in _REQUIRED if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InvalidInputError(
            "the labels CSV header must name start and label, and may name end, note and "
            f"series, each once (got {','.join(header)[:200]!r})"
        )
    if "series" in header and key_column is None:
        raise InvalidInputError(
            "the model has no key column, so its labels have no series: drop the series column"
        )
    rows: list[dict[str, Any]] = []
    try:
        for number, raw in enumerate(reader, start=1):
            if not any(cell.strip() for cell in raw):
                continue
            if len(raw) != len(header):
                raise InvalidInputError(
                    f"row {number}: {len(raw)} fields, the header has {len(header)}"
                )
            cells = {name: cell.strip() for name, cell in zip(header, raw, strict=True)}
            try:
                rows.append(_csv_row(cells))
            except ValueError as exc:
                raise InvalidInputError(f"row {number}: {exc}") from None
    except csv.Error as exc:
        raise InvalidInputError(f"the labels CSV cannot be read: {exc}") from None
    return rows


def _csv_row(cells: dict[str, str]) -> dict[str, Any]:
    start = _csv_time(cells["start"], "start")
    end = _csv_time(cells["end"], "end") if cells.get("end") else start
    if end < start:
        raise ValueError("end is before start (a point label has end == start, or no end)")
    verdict = _CSV_VERDICTS.get(cells["label"].lower())
    if verdict is None:
        raise ValueError(
            f"label {cells['label'][:40]!r} is not one of anomaly, normal, unsure (or 1, 0)"
        )
    note = cells.get("note", "")
    if len(note) > MAX_NOTE:
        raise ValueError(f"the note has {len(note)} characters, at most {MAX_NOTE}")
    series = cells.get("series") or None
    if series is not None and len(series) > 200:
        raise ValueError("the series name is longer than 200 characters")
    return {"start": start, "end": end, "verdict": verdict, "note": note, "series": series}


def _csv_cell(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class LabelService:
    """Stores, lists, deletes, imports and exports a model's labels.

    Parameters
    ----------
    db
        The metadata database.
    registry
        Model lookup by name.
    max_per_model
        Most labels one model may hold.
    max_import_bytes
        Largest CSV one import may send.
    on_event_verdict
        Awaited with the model name and the series after an event's verdict changed (a label
        of an event given or deleted).
    """

    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        max_per_model: int,
        max_import_bytes: int,
        on_event_verdict: Callable[[str, str], Awaitable[int]] | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.max_per_model = max_per_model
        self.max_import_bytes = max_import_bytes
        self.on_event_verdict = on_event_verdict

    async def _learn(self, name: str, series: str) -> None:
        """Tell the live monitor of the series that an event's verdict changed (its normal
        memory is rebuilt: ``StreamService.refresh_memory``)."""
        if self.on_event_verdict is None:
            return
        try:
            await self.on_event_verdict(name, series)
        except ServiceError as exc:  # no active version: no live monitor to teach
            logger.info("event verdict not applied to a live monitor: %s", exc.message)
        except (StoreError, ReconADError) as exc:
            # The label is stored; the monitor learns it on the next verdict of its events.
            logger.warning("event verdict not applied to the live monitor: %s", exc)

    # ------------------------------------------------------------------ writing
    def _add(
        self, session: Session, model_id: str, items: list[dict[str, Any]], key_id: str | None
    ) -> list[Label]:
        """Insert labels in the caller's transaction, within the model's bound.

        The model row is locked first, so concurrent writers cannot pass the bound together.
        """
        session.get(Model, model_id, with_for_update=True)
        held = int(
            session.execute(
                select(func.count()).select_from(Label).where(Label.model_id == model_id)
            ).scalar_one()
        )
        if held + len(items) > self.max_per_model:
            raise ConflictError(
                f"the model holds {held} labels and this adds {len(items)}: the limit is "
                f"{self.max_per_model} (RECONAD_MAX_LABELS_PER_MODEL); delete labels first"
            )
        now = utcnow()
        rows = [
            Label(
                model_id=model_id,
                series=item.get("series"),
                start=item["start"],
                end=item["end"],
                verdict=item["verdict"],
                note=item.get("note", ""),
                event_id=item.get("event_id"),
                key_id=key_id,
                created_at=now,
            )
            for item in items
        ]
        session.add_all(rows)
        session.flush()
        return rows

    @staticmethod
    def _check_series(model: Model, series: str | None) -> None:
        if series is not None and not model.config.get("key_column"):
            raise InvalidInputError(
                f"model {model.name!r} has no key column, so its labels have no series: "
                "leave 'series' out"
            )

    def create(
        self,
        name: str,
        start: datetime,
        end: datetime,
        verdict: str,
        note: str,
        series: str | None,
        key_id: str | None,
    ) -> Label:
        """Store one label of a model's point or range (``start <= end``, both inclusive).

        Raises
        ------
        NotFoundError, InvalidInputError, ConflictError
        """
        model = self.registry.get_model(name)
        self._check_series(model, series)
        item = {"start": start, "end": end, "verdict": verdict, "note": note, "series": series}
        with self.db.transaction() as session:
            (row,) = self._add(session, model.id, [item], key_id)
        return row

    async def label_event(
        self, event_id: int, verdict: str, note: str, key_id: str | None
    ) -> tuple[Label, str]:
        """Label an anomaly event: a label spanning the event as it is now, linked to it; the
        series' live monitor then remembers the events labelled "normal" (suppression).

        Labelling an event again adds a newer label (which then decides); acknowledging an
        event is separate (``EventService.acknowledge``).

        Returns
        -------
        tuple[Label, str]
            The label and its model's name.

        Raises
        ------
        NotFoundError, ConflictError
        """
        row, name, series = await asyncio.to_thread(
            self._label_event, event_id, verdict, note, key_id
        )
        await self._learn(name, series)
        return row, name

    def _label_event(
        self, event_id: int, verdict: str, note: str, key_id: str | None
    ) -> tuple[Label, str, str]:
        with self.db.transaction() as session:
            ev = session.get(AnomalyEvent, event_id)
            if ev is None:
                raise NotFoundError(f"no event {event_id}; GET /v1/events lists them")
            item = {
                "start": ev.start,
                "end": ev.end,
                "verdict": verdict,
                "note": note,
                "series": ev.series or None,
                "event_id": ev.id,
            }
            (row,) = self._add(session, ev.model_id, [item], key_id)
            name = session.execute(select(Model.name).where(Model.id == ev.model_id)).scalar_one()
            series = ev.series
        return row, name, series

    def import_csv(self, name: str, content: bytes, key_id: str | None) -> tuple[int, int]:
        """Store every row of a labels CSV (:func:`parse_label_csv`), or none.

        Returns
        -------
        tuple[int, int]
            Labels imported, and how many the model holds now.

        Raises
        ------
        NotFoundError, PayloadTooLargeError, InvalidInputError, ConflictError
        """
        if len(content) > self.max_import_bytes:
            raise PayloadTooLargeError(
                f"the labels CSV has {len(content)} bytes, more than "
                f"{self.max_import_bytes} (RECONAD_MAX_LABEL_IMPORT_BYTES): split it"
            )
        model = self.registry.get_model(name)
        items = parse_label_csv(content, model.config.get("key_column"))
        if not items:
            raise InvalidInputError("the labels CSV has a header but no rows")
        with self.db.transaction() as session:
            self._add(session, model.id, items, key_id)
            held = session.execute(
                select(func.count()).select_from(Label).where(Label.model_id == model.id)
            ).scalar_one()
        return len(items), int(held)

    async def delete(self, name: str, label_id: int) -> None:
        """Delete one label (a label of an event: its series' monitor forgets the verdict).

        Raises
        ------
        service.errors.NotFoundError
        """
        series = await asyncio.to_thread(self._delete, name, label_id)
        if series is not None:
            await self._learn(name, series)

    def _delete(self, name: str, label_id: int) -> str | None:
        """Delete a label; the series of the event it labelled, if any."""
        model = self.registry.get_model(name)
        with self.db.transaction() as session:
            row = self._get(session, model.id, label_id)
            series = None
            if row.event_id is not None:
                series = session.execute(
                    select(AnomalyEvent.series).where(AnomalyEvent.id == row.event_id)
                ).scalar_one_or_none()
            session.delete(row)
        return series

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _get(session: Session, model_id: str, label_id: int) -> Label:
        row = session.get(Label, label_id)
        if row is None or row.model_id != model_id:
            raise NotFoundError(f"no label {label_id} for this model")
        return row

    def get(self, name: str, label_id: int) -> Label:
        """One label of a model.

        Raises
        ------
        service.errors.NotFoundError
        """
        model = self.registry.get_model(name)
        with self.db.session() as session:
            return self._get(session, model.id, label_id)

    def list_labels(
        self,
        name: str,
        verdict: str | None,
        series: str | None,
        start: datetime | None,
        end: datetime | None,
        offset: int,
        limit: int,
    ) -> tuple[list[Label], int]:
        """A page of a model's labels (newest start first) and the total.

        ``start``/``end`` select labels that overlap ``[start, end)``.
        """
        model = self.registry.get_model(name)
        where: list[Any] = [Label.model_id == model.id]
        if verdict is not None:
            where.append(Label.verdict == verdict)
        if series is not None:
            where.append(Label.series == series)
        if start is not None:
            where.append(Label.end >= start)
        if end is not None:
            where.append(Label.start < end)
        with self.db.session() as session:
            total = session.execute(select(func.count()).select_from(Label).where(*where))
            rows = session.execute(
                select(Label)
                .where(*where)
                .order_by(Label.start.desc(), Label.id.desc())
                .offset(offset)
                .limit(limit)
            ).scalars()
            return list(rows), int(total.scalar_one())

    def for_model(self, model_id: str) -> list[Label]:
        """Every label of a model, oldest first (bounded by ``max_labels_per_model``)."""
        return labels_of(self.db, model_id)

    def export_csv(self, name: str) -> bytes:
        """Every label of a model as a CSV the import reads back (oldest first; a ``series``
        column only for a model with a key column)."""
        model = self.registry.get_model(name)
        keyed = bool(model.config.get("key_column"))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS if keyed else CSV_COLUMNS[:-1])
        for row in self.for_model(model.id):
            cells = [_csv_cell(row.start), _csv_cell(row.end), row.verdict, row.note]
            writer.writerow([*cells, row.series or ""] if keyed else cells)
        return out.getvalue().encode()

    def verdicts_of_events(self, event_ids: list[int]) -> dict[int, str]:
        """The newest verdict given to each of these events (events without one are absent)."""
        if not event_ids:
            return {}
        with self.db.session() as session:
            rows = session.execute(
                select(Label.event_id, Label.verdict)
                .where(Label.event_id.in_(event_ids))
                .order_by(Label.created_at, Label.id)
            ).all()
        return {int(ev): verdict for ev, verdict in rows if ev is not None}


def labels_of(db: Database, model_id: str) -> list[Label]:
    """Every label of a model, oldest first (for training jobs, which have no service)."""
    with db.session() as session:
        return list(
            session.execute(
                select(Label).where(Label.model_id == model_id).order_by(Label.created_at, Label.id)
            ).scalars()
        )
