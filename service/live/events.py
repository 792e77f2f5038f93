"""Anomaly events: list, show, acknowledge; and their counts for ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.db import Database
from service.errors import NotFoundError
from service.tables import AnomalyEvent, Model, utcnow

__all__ = ["EventCountsCollector", "EventService", "event_mask", "event_public"]


def event_public(ev: AnomalyEvent) -> dict[str, Any]:
    """An event as the API shows it."""
    return {
        "id": ev.id,
        "series": ev.series or None,
        "status": ev.status,
        "start": ev.start.isoformat(),
        "end": ev.end.isoformat(),
        "peak": ev.peak,
        "mean": ev.mean,
        "severity": ev.severity,
        "n_points": ev.n_points,
        "top_features": ev.top_features,
        "version": ev.version,
        "acknowledged_at": None if ev.acknowledged_at is None else ev.acknowledged_at.isoformat(),
        "acknowledged_by": ev.acknowledged_by,
    }


class EventService:
    """Reads and acknowledges events.

    Parameters
    ----------
    db
        The metadata database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def list_events(
        self,
        model: str | None,
        series: str | None,
        status: str | None,
        start: datetime | None,
        end: datetime | None,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[AnomalyEvent, str]], int]:
        """A page of events (newest start first) with their model's name; and the total.

        ``start``/``end`` select events that overlap ``[start, end)``.
        """
        where: list[Any] = []
        if model is not None:
            where.append(Model.name == model)
        if series is not None:
            where.append(AnomalyEvent.series == series)
        if status is not None:
            where.append(AnomalyEvent.status == status)
        if start is not None:
            where.append(AnomalyEvent.end >= start)
        if end is not None:
            where.append(AnomalyEvent.start < end)
        with self.db.session() as session:
            total = session.execute(
                select(func.count())
                .select_from(AnomalyEvent)
                .join(Model, Model.id == AnomalyEvent.model_id)
                .where(*where)
            ).scalar_one()
            rows = session.execute(
                select(AnomalyEvent, Model.name)
                .join(Model, Model.id == AnomalyEvent.model_id)
                .where(*where)
                .order_by(AnomalyEvent.start.desc(), AnomalyEvent.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return list(rows), int(total)

    def get(self, event_id: int) -> tuple[AnomalyEvent, str]:
        """One event and its model's name.

        Raises
        ------
        service.errors.NotFoundError
        """
        with self.db.session() as session:
            row = session.execute(
                select(AnomalyEvent, Model.name)
                .join(Model, Model.id == AnomalyEvent.model_id)
                .where(AnomalyEvent.id == event_id)
            ).first()
            if row is None:
                raise NotFoundError(f"no event {event_id}")
            return row[0], row[1]

    def acknowledge(self, event_id: int, by: str) -> tuple[AnomalyEvent, str]:
        """Mark an event acknowledged (again: keeps the first acknowledgement).

        Raises
        ------
        service.errors.NotFoundError
        """
        with self.db.transaction() as session:
            ev = session.get(AnomalyEvent, event_id, with_for_update=True)
            if ev is None:
                raise NotFoundError(f"no event {event_id}")
            if ev.acknowledged_at is None:
                ev.acknowledged_at = utcnow()
                ev.acknowledged_by = by
            name = session.execute(select(Model.name).where(Model.id == ev.model_id)).scalar_one()
        return ev, name

    def counts(self) -> dict[tuple[str, str], int]:
        """Events by model name and status."""
        with self.db.session() as session:
            rows = session.execute(
                select(Model.name, AnomalyEvent.status, func.count())
                .join(Model, Model.id == AnomalyEvent.model_id)
                .group_by(Model.name, AnomalyEvent.status)
            )
            return {(name, status): int(n) for name, status, n in rows}


class EventCountsCollector(Collector):
    """``reconad_events{model, status}`` at scrape time (no per-series labels)."""

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "reconad_events", "Anomaly events by model and status.", labels=["model", "status"]
        )
        try:
            counts = self._counts()
        except Exception:  # the database being down must not break /metrics
            counts = {}
        for (model, status), n in sorted(counts.items()):
            family.add_metric([model, status], n)
        yield family


def event_mask(
    db: Database,
    model_id: str,
    frame: pd.DataFrame,
    key_column: str | None,
    only: Collection[int] | None = None,
) -> npt.NDArray[np.bool_]:
    """Which rows of ``frame`` lie inside the model's anomaly events, (T,) bool.

    Retraining on a stream must not learn an anomaly as the new normal: every point from an
    event's start to its end (of that event's series, for a model with a key column) is inside,
    whether the event is open or closed. ``service.feedback.training_data`` decides what of it
    labels bring back. ``only``: the events with these ids (the label refit's remembered false
    alarms), instead of all.
    """
    inside = np.zeros(len(frame), dtype=bool)
    if frame.empty or (only is not None and not only):
        return inside
    query = select(AnomalyEvent.series, AnomalyEvent.start, AnomalyEvent.end).where(
        AnomalyEvent.model_id == model_id
    )
    if only is not None:
        query = query.where(AnomalyEvent.id.in_(list(only)))
    with db.session() as session:
        spans = session.execute(query).all()
    if not spans:
        return inside
    index = pd.DatetimeIndex(frame.index)
    stamps = (index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")).as_unit(
        "us"
    )
    t = stamps.asi8  # (T,) microseconds
    series = frame[key_column].astype(str).to_numpy() if key_column else None
    for name, start, end in spans:
        lo = pd.Timestamp(start).value // 1000  # ns -> us, as t
        hi = pd.Timestamp(end).value // 1000
        hit = (t >= lo) & (t <= hi)
        if series is not None:
            hit &= series == name
        inside |= hit
    return inside
