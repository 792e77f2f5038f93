"""What a model's labels change in the service; the rules themselves are ``detector.feedback``'s.

This module turns stored labels (:class:`service.tables.Label`) into the library's
:class:`detector.feedback.Label` and applies the library's functions where the service decides:

- **Training data** (:func:`training_data`, called by the training job): retraining on stored
  history leaves out the points inside anomaly events (open or closed, unless labelled) and the
  labelled anomalies, and keeps every point labelled normal even where an event covered it
  (``detector.feedback.training_mask``). A kind that learns from labels (``ssaae``) keeps the
  labelled anomalies instead and gets every kept point's label in ``Detector.fit(labels=...)``.
  The counts go into the new version's ``metrics.training_data`` and the job's
  ``progress.training_data``.
- **Threshold** (:func:`refit`, called by the training job after fitting): when the labelled
  history satisfies ``detector.feedback.refit_threshold``'s "enough labels" rule (at least 2
  labelled anomaly ranges and 20 normal points with a score: labelled normal, or unlabelled
  and raising no alert), the new version's causal scores over the stored history around the
  labelled spans, normalised by its live threshold, give the factor that makes point F1 there
  best, within 0.5-2x, with the points of the events labelled normal left out (the live
  monitors remember those false alarms and stop windows like them, so the threshold need not
  rise for them too); it is stored as ``metrics.label_refit`` and every live
  monitor of that version applies it to its online threshold (which keeps adapting from there).
  With any labelled anomaly, ``metrics.label_refit.lasting`` holds the labelled history's
  ``detector.feedback.LastingRuns`` (the longest labelled anomaly, the longest run of stored
  event points labelled normal): a monitor whose ``relearn_after`` a confirmed anomaly
  outlasted (and no confirmed lasting change did) waits that long before it takes an open
  event for a lasting change. That longer wait is checked first on the labelled history
  (``LastingRuns.refit``: the new version's causal scores there decided again under it, by a
  fresh monitor of the default options, as the threshold's scores are made); where it loses
  point F1 there, the runs are stored as ``lasting_rejected`` instead and no monitor waits.
  The refit runs when a version is trained, not when a label changes: scoring the labelled
  history takes a model pass, and a label given later acts at once through the normal memory
  below and through the next retraining's refit.
- **Suppression** (:func:`normal_events`, used by ``StreamService.refresh_memory``): the events
  whose newest label says "not an anomaly" are remembered in their series' monitor
  (``detector.feedback.NormalMemory``), so a window like one of them raises no flag and opens no
  event; relabelling or deleting the label rebuilds the memory.
- **Promotion** (:func:`compare_versions`, called by the training job for ``if_better``): with
  a labelled anomaly and a labelled normal point in the stored history, the new version is
  compared with the active one there (VUS-PR and best F1 on the labelled points,
  ``detector.feedback.compare_on_labels``); otherwise on held-out error as before.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import select

from detector import Detector
from detector import feedback as fb
from detector.errors import ReconADError
from detector.monitor import MonitorOptions
from service.db import Database
from service.labels import labels_of
from service.live.events import event_mask
from service.storage import HistoryStore
from service.tables import AnomalyEvent, Label

__all__ = [
    "MAX_LABELLED_POINTS",
    "compare_versions",
    "library_labels",
    "normal_events",
    "refit",
    "training_data",
]

logger = logging.getLogger(__name__)

#: Most points of stored history scored to refit a threshold or compare versions on labels
#: (the newest labelled spans first are kept when more are labelled).
MAX_LABELLED_POINTS = 500_000


def library_labels(rows: list[Label]) -> list[fb.Label]:
    """Stored labels as the library's labels (``created`` orders them for the overlap rule)."""
    return [
        fb.Label(
            start=pd.Timestamp(r.start),
            end=pd.Timestamp(r.end),
            verdict=r.verdict,  # type: ignore[arg-type]  # one of fb.VERDICTS (checked on input)
            created=r.created_at,
            series=r.series,
        )
        for r in rows
    ]


def _series_groups(
    frame: pd.DataFrame, key_column: str | None
) -> list[tuple[str | None, npt.NDArray[np.int64]]]:
    """``(series, row positions)`` of each series of a frame (one group without a key)."""
    if not key_column or key_column not in frame.columns:
        return [(None, np.arange(len(frame)))]
    keys = frame[key_column].astype(str).to_numpy()
    return [(str(k), np.flatnonzero(keys == k)) for k in pd.unique(keys)]


def _masks(frame: pd.DataFrame, labels: list[fb.Label], key_column: str | None) -> fb.LabelMasks:
    """The label masks of every row of ``frame`` (per series for a model with a key column)."""
    n = len(frame)
    anomaly, normal, unsure = (np.zeros(n, dtype=bool) for _ in range(3))
    index = pd.DatetimeIndex(frame.index)
    for series, rows in _series_groups(frame, key_column):
        masks = fb.label_masks(index[rows], labels, series)
        anomaly[rows], normal[rows], unsure[rows] = masks.anomaly, masks.normal, masks.unsure
    return fb.LabelMasks(anomaly, normal, unsure)


def training_data(
    db: Database,
    model_id: str,
    frame: pd.DataFrame,
    key_column: str | None,
    learns_from_labels: bool = False,
) -> tuple[pd.DataFrame, npt.NDArray[np.int8] | None, dict[str, int]]:
    """The rows of stored history to train on, their labels for a kind that learns from them,
    and what was left out or kept.

    For a kind that learns from labels (``ssaae``), labelled anomalies stay in the rows and
    come with their labels (1 anomaly, 0 normal, -1 unknown) for ``Detector.fit``; for the
    others they are left out and no labels are returned.

    Returns
    -------
    tuple[pandas.DataFrame, numpy.ndarray | None, dict[str, int]]
        The rows; their labels or None; and ``points`` (read), ``kept``, ``left_out_events``
        (inside unlabelled events), ``left_out_labelled_anomaly``, ``kept_labelled_normal``
        (labelled normal inside an event span, kept) and ``labelled_anomaly_trained`` (kept
        with its label, for a kind that learns from labels).
    """
    report = {"points": len(frame), "kept": len(frame)}
    if frame.empty:
        return frame, None, report
    in_events = event_mask(db, model_id, frame, key_column)
    labels = library_labels(labels_of(db, model_id))
    masks = _masks(frame, labels, key_column)
    if learns_from_labels:
        keep = ~in_events | masks.anomaly | masks.normal
    else:
        keep = fb.training_mask(masks, in_events)
    report.update(
        kept=int(keep.sum()),
        left_out_events=int((in_events & ~masks.anomaly & ~masks.normal).sum()),
        left_out_labelled_anomaly=0 if learns_from_labels else int(masks.anomaly.sum()),
        kept_labelled_normal=int((in_events & masks.normal).sum()),
        labelled_anomaly_trained=int(masks.anomaly.sum()) if learns_from_labels else 0,
    )
    point_labels = masks.point_labels()[keep] if learns_from_labels else None
    return frame[keep], point_labels, report


def _labelled_history(
    history: HistoryStore,
    model_id: str,
    labels: list[fb.Label],
    margin: pd.Timedelta,
) -> pd.DataFrame:
    """Stored history around the labelled spans (``margin`` of context before each), bounded
    by :data:`MAX_LABELLED_POINTS` (the newest rows are kept)."""
    if not labels:
        return pd.DataFrame()
    lo = min(pd.Timestamp(lab.start) for lab in labels) - margin
    hi = max(pd.Timestamp(lab.end) for lab in labels) + pd.Timedelta(microseconds=1)
    frame = history.read(model_id, lo.to_pydatetime(), hi.to_pydatetime())
    return frame.iloc[-MAX_LABELLED_POINTS:]


def _margin(detector: Detector) -> pd.Timedelta:
    return pd.Timedelta(int(detector.preprocessor_.step_) * (detector.window_ + 1), unit="ns")


def _causal_scores(
    detector: Detector, frame: pd.DataFrame, key_column: str | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each row's causal score as a fresh monitor sees the rows, that score over the live
    threshold, and whether it raised no alert there."""
    raw, out = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    quiet = np.zeros(len(frame), dtype=bool)
    for _series, rows in _series_groups(frame, key_column):
        scored = detector.monitor().update(frame.iloc[rows])
        raw[rows] = scored["score"].to_numpy(dtype=np.float64)
        out[rows] = raw[rows] / scored["threshold"].to_numpy(dtype=np.float64)
        quiet[rows] = ~scored["anomalous"].to_numpy(dtype=bool)
    return raw, out, quiet


def _lasting(
    detector: Detector,
    frame: pd.DataFrame,
    key_column: str | None,
    raw: npt.NDArray[np.float64],
    masks: fb.LabelMasks,
    ordered: fb.LabelMasks,
    quiet: npt.NDArray[np.bool_],
    lasting: fb.LastingRuns,
) -> bool:
    """Whether the monitors take ``lasting`` (``LastingRuns.refit`` under a fresh monitor's
    options); ``masks`` and ``raw`` in the frame's row order, ``ordered`` and ``quiet`` in
    :func:`_series_runs`' order."""
    current = MonitorOptions().relearn_after
    if lasting.relearn_after(current) == current:
        return True  # nothing to check: no option the runs would change at the default

    def decide(after: int) -> npt.NDArray[np.bool_]:
        flags = np.zeros(len(frame))
        for _series, rows in _series_groups(frame, key_column):
            again = detector.monitor(relearn_after=after).decide(raw[rows])
            flags[rows] = again["anomalous"].to_numpy(dtype=np.float64)
        return np.nan_to_num(_series_runs(flags, masks, frame, key_column)[0]) > 0

    return lasting.refit(current, ordered, quiet, decide) != current


def _series_runs(
    scores: npt.NDArray[np.float64],
    masks: fb.LabelMasks,
    frame: pd.DataFrame,
    key_column: str | None,
) -> tuple[npt.NDArray[np.float64], fb.LabelMasks]:
    """Scores and masks with each series' rows together and an unlabelled, unscored point
    between series, so a labelled range is counted once (the rows of several series
    interleave in time order)."""
    groups = _series_groups(frame, key_column)
    if len(groups) == 1:
        return scores, masks
    gap = np.zeros(1, dtype=bool)
    parts = [
        (scores[rows], masks.anomaly[rows], masks.normal[rows], masks.unsure[rows])
        for _, rows in groups
    ]
    return (
        np.concatenate([np.append(p[0], np.nan) for p in parts]),
        fb.LabelMasks(
            *(np.concatenate([np.concatenate([p[i], gap]) for p in parts]) for i in (1, 2, 3))
        ),
    )


def refit(
    detector: Detector, history: HistoryStore, db: Database, model_id: str, key_column: str | None
) -> dict[str, Any] | None:
    """The label refit of a new version's live decisions (module docstring): ``lasting`` with
    a labelled anomaly, the threshold's ``scale`` (and its figures) when the "enough labels"
    rule holds; None when neither (or when the history cannot be scored)."""
    labels = library_labels(labels_of(db, model_id))
    frame = _labelled_history(history, model_id, labels, _margin(detector))
    if frame.empty:
        return None
    try:
        raw, normalized, quiet = _causal_scores(detector, frame, key_column)
    except ReconADError as exc:
        logger.info("labelled history cannot be scored for a refit: %s", exc)
        return None
    masks = _masks(frame, labels, key_column)
    scores, ordered = _series_runs(normalized, masks, frame, key_column)
    quiet_runs, _ = _series_runs(quiet.astype(np.float64), masks, frame, key_column)
    in_events = event_mask(db, model_id, frame, key_column).astype(np.float64)
    event_runs, _ = _series_runs(in_events, masks, frame, key_column)
    false_alarms = _normal_labelled(db, AnomalyEvent.model_id == model_id)
    remembered = event_mask(db, model_id, frame, key_column, only=false_alarms)
    remembered_runs, _ = _series_runs(remembered.astype(np.float64), masks, frame, key_column)
    lasting = fb.LastingRuns.of(ordered, np.nan_to_num(event_runs) > 0)
    history_quiet = np.nan_to_num(quiet_runs) > 0
    out: dict[str, Any] = {}
    if lasting.anomaly > 0:
        taken = _lasting(detector, frame, key_column, raw, masks, ordered, history_quiet, lasting)
        out["lasting" if taken else "lasting_rejected"] = asdict(lasting)
    result = fb.refit_threshold(
        scores, ordered, 1.0, quiet=history_quiet, remembered=np.nan_to_num(remembered_runs) > 0
    )
    if result is not None:
        out.update(
            scale=result.scale,
            f1=result.f1,
            f1_before=result.f1_current,
            n_anomaly_events=result.n_anomaly_events,
            n_normal_points=result.n_normal_points,
        )
    return out or None


def compare_versions(
    new: Detector,
    old: Detector,
    history: HistoryStore,
    db: Database,
    model_id: str,
    key_column: str | None,
) -> dict[str, Any] | None:
    """Both versions' VUS-PR and best F1 on the labelled history and whether the new one wins
    (``detector.feedback.compare_on_labels``); None without labelled anomalies and normal
    points there, or when either version cannot score it."""
    labels = library_labels(labels_of(db, model_id))
    frame = _labelled_history(history, model_id, labels, max(_margin(new), _margin(old)))
    if frame.empty:
        return None
    masks = _masks(frame, labels, key_column)
    try:
        figures = [
            fb.labelled_metrics(
                *_series_runs(
                    det.anomaly_score(frame).to_numpy(dtype=np.float64), masks, frame, key_column
                )
            )
            for det in (new, old)
        ]
    except ReconADError as exc:
        logger.info("versions cannot be compared on labels: %s", exc)
        return None
    ours, theirs = figures
    if ours is None or theirs is None:
        return None
    return {"new": ours, "active": theirs, "better": fb.compare_on_labels(ours, theirs)}


def normal_events(db: Database, stream_id: int, limit: int) -> list[tuple[datetime, datetime]]:
    """``(start, end)`` of a stream's events whose newest label says "normal", newest first."""
    found = _normal_labelled(db, AnomalyEvent.stream_id == stream_id)
    spans = [(start, end) for start, end in found.values()]
    return sorted(spans, key=lambda span: span[0], reverse=True)[:limit]


def _normal_labelled(db: Database, where: Any) -> dict[int, tuple[datetime, datetime]]:
    """``{event id: (start, end)}`` of the events matching ``where`` whose newest label says
    "normal" (the false alarms the live monitors remember)."""
    with db.session() as session:
        rows = session.execute(
            select(Label.event_id, Label.verdict, AnomalyEvent.start, AnomalyEvent.end)
            .join(AnomalyEvent, AnomalyEvent.id == Label.event_id)
            .where(where)
            .order_by(Label.created_at, Label.id)
        ).all()
    newest: dict[int, tuple[str, datetime, datetime]] = {}
    for event_id, verdict, start, end in rows:  # oldest first: the newest label stays
        if event_id is not None:
            newest[int(event_id)] = (verdict, start, end)
    return {i: (s, e) for i, (verdict, s, e) in newest.items() if verdict == "normal"}
