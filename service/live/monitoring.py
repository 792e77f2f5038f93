"""The adapter between the service and the library's live monitor (``detector.Monitor``).

Every call the service makes into the monitor goes through this module, so a change of the
library's interface touches one file. The contract (see ``detector/monitor.py``):
``det.monitor(**options)`` builds a monitor, ``monitor.update(frame)`` returns a frame with
``score``, ``normalized``, ``threshold``, ``anomalous``, ``event`` and, with ``expected=True``,
``expected.<feature>`` columns; ``Monitor.update_points(monitors, points)`` does the same for
many series at once on arrays (``Points`` in, ``Scores`` out); ``monitor.events`` lists
:class:`detector.Event` objects;
``monitor.state_dict()`` / ``Monitor.from_state(det, state)`` save and restore it;
``monitor.forget_closed_events()`` drops the closed events the service has stored;
``monitor.with_detector(det)`` hands the stream to a new model version;
``monitor.apply_feedback(scale=..., memory=..., relearn_after=...)`` takes what labels
taught (a re-fitted threshold factor, a memory of confirmed-normal windows, a ``relearn_after``
as long as the longest labelled anomaly where one outlasted it; ``service.feedback``), kept in
the state. :class:`LabelRefit` is what a version's label refit (``metrics.label_refit``) tells its
monitors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError

from detector import Detector, Monitor
from detector.feedback import LastingRuns, NormalMemory
from detector.monitor import MonitorOptions, Points, Scores
from service.errors import InvalidInputError, format_validation_errors

__all__ = [
    "EventView",
    "LabelRefit",
    "LiveMonitor",
    "check_options",
    "handover",
    "new_monitor",
    "restore",
]

#: Options the service always sets: responses carry expected values.
_FORCED = {"expected": True}


@dataclass(frozen=True)
class EventView:
    """What the service stores of one monitor event."""

    seq: int
    start: pd.Timestamp
    end: pd.Timestamp
    peak: float
    mean: float
    severity: float
    top_features: list[tuple[str, float]]
    status: str
    n_points: int


class LiveMonitor:
    """A monitor of one series, wrapped with the few operations the service needs.

    Parameters
    ----------
    monitor
        The library's monitor object.
    """

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score new points (causal); one row per point of ``frame``."""
        out: pd.DataFrame = self._monitor.update(frame)
        return out

    @staticmethod
    def update_many(monitors: Sequence[LiveMonitor], points: Sequence[Points]) -> list[Scores]:
        """Score new points of several series at once (one forward pass per model version):
        the same numbers as ``update`` of each, as arrays; no monitor moves on if one chunk is
        refused (``detector.errors.InputError``)."""
        return Monitor.update_points([m._monitor for m in monitors], points)

    def events(self, seqs: set[int]) -> dict[int, EventView]:
        """The events with ids in ``seqs`` (searched from the newest)."""
        found: dict[int, EventView] = {}
        if not seqs:
            return found
        for event in reversed(list(self._monitor.events)):
            seq = int(event.id)
            if seq in seqs:
                found[seq] = EventView(
                    seq=seq,
                    start=pd.Timestamp(event.start),
                    end=pd.Timestamp(event.end),
                    peak=float(event.peak),
                    mean=float(event.mean),
                    severity=float(event.severity),
                    top_features=[(str(n), float(v)) for n, v in event.top_features],
                    status=str(event.status),
                    n_points=int(event.n_points),
                )
                if len(found) == len(seqs):
                    break
        return found

    def forget_closed_events(self) -> None:
        """Drop the closed events from the monitor once they are in the events table (the
        state, written with every request, and the cached monitor then stay small)."""
        self._monitor.forget_closed_events()

    def state(self) -> dict[str, Any]:
        """The monitor's JSON-able state."""
        state: dict[str, Any] = self._monitor.state_dict()
        return state

    def apply_refit(self, refit: LabelRefit) -> None:
        """Take the version's label refit: make the factor on the online threshold
        ``refit.scale``, and this monitor's ``relearn_after`` what its lasting runs make of it.

        The monitor composes factors (and starts a new version at factor 1: a factor was fitted
        on the old version's scores), so only the change from the factor it holds is applied.
        """
        monitor = self._monitor
        held = monitor.feedback_factor
        current = monitor.options.relearn_after
        relearn_after = None if refit.lasting is None else refit.lasting.relearn_after(current)
        scale = refit.scale / held if abs(refit.scale / held - 1.0) > 1e-12 else None
        monitor.apply_feedback(
            scale=scale, relearn_after=None if relearn_after == current else relearn_after
        )

    def remember(self, memory: NormalMemory) -> None:
        """Suppress flags whose window matches ``memory`` (replaces the memory held)."""
        self._monitor.apply_feedback(memory=memory)

    @property
    def detector(self) -> Detector:
        """The model version the monitor scores with."""
        det: Detector = self._monitor.detector
        return det


def _library() -> tuple[Any, Any]:
    """The library's ``Monitor`` class and its ``MonitorOptions`` model."""
    from detector import Monitor
    from detector.monitor import MonitorOptions

    return Monitor, MonitorOptions


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate monitor options with the library's ``MonitorOptions``; return them normalised.

    Raises
    ------
    service.errors.InvalidInputError
        For unknown options or values out of range.
    """
    if "expected" in options:
        raise InvalidInputError("options.expected is always on in the service; leave it out")
    try:
        checked = MonitorOptions.model_validate({**options, **_FORCED})
    except ValidationError as exc:
        summary, _ = format_validation_errors(exc.errors())
        raise InvalidInputError(f"options: {summary}") from None
    dumped: dict[str, Any] = checked.model_dump(mode="json")
    dumped.pop("expected", None)
    return dumped


@dataclass(frozen=True)
class LabelRefit:
    """What a version's label refit (``metrics.label_refit``, ``service.feedback.refit``) tells
    its live monitors: the factor on the online threshold (1: none) and the labelled history's
    :class:`detector.feedback.LastingRuns` (None: no labelled anomaly)."""

    scale: float = 1.0
    lasting: LastingRuns | None = None

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> LabelRefit:
        """Read from a version's ``metrics.label_refit`` (None or absent keys: no refit)."""
        refit = stored or {}
        runs = refit.get("lasting")
        lasting = None if runs is None else LastingRuns(**runs)
        return cls(float(refit.get("scale", 1.0)), lasting)


def new_monitor(
    detector: Detector, options: dict[str, Any], refit: LabelRefit | None = None
) -> LiveMonitor:
    """A fresh monitor of ``detector`` with validated ``options`` and the version's label
    ``refit``."""
    monitor = LiveMonitor(detector.monitor(**{**options, **_FORCED}))
    monitor.apply_refit(refit or LabelRefit())
    return monitor


def restore(detector: Detector, state: dict[str, Any]) -> LiveMonitor:
    """The monitor saved as ``state`` (from :meth:`LiveMonitor.state`)."""
    return LiveMonitor(Monitor.from_state(detector, state))


def handover(
    monitor: LiveMonitor, detector: Detector, refit: LabelRefit | None = None
) -> LiveMonitor:
    """The same stream handed to a new model version (context, events and threshold kept),
    with the new version's label ``refit``."""
    return _refitted(monitor._monitor.with_detector(detector), refit)


def handover_state(
    state: dict[str, Any], detector: Detector, refit: LabelRefit | None = None
) -> LiveMonitor:
    """:func:`handover` of a saved state (from :meth:`LiveMonitor.state`), without the version
    that wrote it: a stream saved by a version since deleted goes on with ``detector``."""
    return _refitted(Monitor.handed_over(detector, state), refit)


def _refitted(monitor: Monitor, refit: LabelRefit | None) -> LiveMonitor:
    moved = LiveMonitor(monitor)
    moved.apply_refit(refit or LabelRefit())
    return moved
