"""A stand-in for the library's live monitor, used by the stream tests only while
``detector.Monitor`` is not in the installed library.

It follows the documented contract (``det.monitor(**options)``, ``update``, ``events``,
``state_dict``/``from_state``, ``with_detector``) with the simplest honest rules: the score of a
point is the detector's batch score of the last ``window`` points ending at it (causal), the
threshold is the detector's own moved by ``sensitivity``, consecutive flagged points form an
event that closes at the first unflagged point. The real monitor replaces it as soon as it
exists; the service tests then exercise that one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict, Field

from detector import Detector


class MonitorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensitivity: float = Field(50.0, ge=0, le=100)
    min_duration: int = Field(1, ge=1)
    merge_gap: int = Field(0, ge=0)
    expected: bool = False


@dataclass
class Event:
    id: int
    start: Any
    end: Any
    peak: float
    mean: float
    severity: float
    top_features: list[tuple[str, float]] = field(default_factory=list)
    status: str = "open"
    n_points: int = 0


class Monitor:
    def __init__(self, det: Detector, options: dict[str, Any]) -> None:
        self.det = det
        self.options = MonitorOptions.model_validate(options)
        self.context = pd.DataFrame()
        self.events: list[Event] = []
        self._sum = 0.0

    def _threshold(self) -> float:
        return float(self.det.threshold_) * 2.0 ** ((50.0 - self.options.sensitivity) / 25.0)

    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        window = int(self.det.window_)
        features = [str(f) for f in self.det.feature_names_in_]
        rows: list[dict[str, Any]] = []
        threshold = self._threshold()
        for ts in frame.index:
            point = frame.loc[[ts]]
            self.context = pd.concat([self.context, point]).iloc[-window:]
            score = float("nan")
            expected = {f: float("nan") for f in features}
            if len(self.context) == window:
                details = self.det.score_details(self.context, reconstruct=True)
                score = float(details.scores.iloc[-1])
                if details.expected is not None:
                    expected = {f: float(details.expected[f].iloc[-1]) for f in features}
            normalized = score / threshold
            flagged = bool(normalized > 1.0)
            event_id: int | None = None
            last = self.events[-1] if self.events else None
            if flagged:
                if last is None or last.status == "closed":
                    last = Event(
                        self.events[-1].id + 1 if self.events else 1, ts, ts, 0.0, 0.0, 0.0
                    )
                    self.events.append(last)
                    self._sum = 0.0
                last.end = ts
                last.n_points += 1
                self._sum += normalized
                last.peak = max(last.peak, normalized)
                last.mean = self._sum / last.n_points
                last.severity = float(1.0 - 1.0 / max(last.peak, 1.0))
                last.top_features = [(features[0], 1.0)]
                event_id = last.id
            elif last is not None and last.status == "open":
                last.status = "closed"
            row = {
                "score": score,
                "normalized": normalized,
                "threshold": threshold,
                "anomalous": flagged,
                "event": event_id,
            }
            if self.options.expected:
                row.update({f"expected.{f}": v for f, v in expected.items()})
            rows.append(row)
        out = pd.DataFrame(rows, index=frame.index)
        out["event"] = out["event"].astype("Int64")
        return out

    def state_dict(self) -> dict[str, Any]:
        ctx = self.context
        return {
            "options": self.options.model_dump(),
            "index": [ts.isoformat() for ts in ctx.index],
            "columns": {
                str(c): [
                    None if pd.isna(v) else (v if isinstance(v, str) else float(v)) for v in ctx[c]
                ]
                for c in ctx.columns
            },
            "events": [
                {
                    **asdict(e),
                    "start": pd.Timestamp(e.start).isoformat(),
                    "end": pd.Timestamp(e.end).isoformat(),
                }
                for e in self.events
            ],
            "sum": self._sum,
        }

    @classmethod
    def from_state(cls, det: Detector, state: dict[str, Any]) -> Monitor:
        mon = cls(det, state["options"])
        if state["index"]:
            mon.context = pd.DataFrame(
                {
                    c: np.asarray(v, dtype=object if v and isinstance(v[0], str) else np.float64)
                    for c, v in state["columns"].items()
                },
                index=pd.DatetimeIndex(state["index"]),
            )
        mon.events = [
            Event(
                **{
                    **e,
                    "start": pd.Timestamp(e["start"]),
                    "end": pd.Timestamp(e["end"]),
                    "top_features": [tuple(t) for t in e["top_features"]],
                }
            )
            for e in state["events"]
        ]
        mon._sum = state["sum"]
        return mon

    def with_detector(self, det: Detector) -> Monitor:
        mon = Monitor.from_state(det, self.state_dict())
        return mon


def install(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Install the stand-in when the library has no monitor; return whether it did."""
    try:
        from detector import Monitor as _Real  # noqa: F401
    except ImportError:
        pass
    else:
        return False
    from service.live import monitoring

    def monitor(self: Detector, **options: Any) -> Monitor:
        return Monitor(self, options)

    monkeypatch.setattr(Detector, "monitor", monitor, raising=False)
    monkeypatch.setattr(monitoring, "_library", lambda: (Monitor, MonitorOptions))
    return True
