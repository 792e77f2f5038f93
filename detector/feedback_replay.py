"""``reconad bench --replay --feedback``: the replay with a simulated operator's labels.

Each entity's test part is cut in two at ``mid`` (half its length, down to a multiple of the
chunk). The detector is fitted on ``train`` and its monitor takes the first half in chunks, as
in :mod:`detector.replay`. At ``mid`` a simulated operator labels (:mod:`detector.feedback`):

- every event the monitor raised in the first half: ``"anomaly"`` when it overlaps a labelled
  anomaly range of the first half, else ``"normal"`` (a false alarm);
- every labelled anomaly range of the first half (created after the events' labels, so they
  win where they overlap: a team bringing its known incidents).

Then the second half is streamed, in each of these modes, from the monitor's state at ``mid``:

- ``no feedback``: as if nobody labelled anything;
- ``retrain, no labels``: a control for ``full feedback`` without labels: the model refitted
  on ``train`` plus the first half with the points of the monitor's events left out (the
  service's rule for retraining on a stream, :func:`detector.retraining.refit_on_stream`), so
  that what retraining alone does is seen;
- ``threshold + memory``: the live threshold re-fitted on the first half's normalised scores
  and labels, its points without an alert counting as normal and the false alarms the memory
  holds left out (:func:`~detector.feedback.refit_threshold`, factor applied with
  :meth:`Monitor.apply_feedback <detector.monitor.Monitor.apply_feedback>`), and the events
  labelled normal remembered (:class:`~detector.feedback.NormalMemory`), and the monitor's
  ``relearn_after`` raised to the longest labelled anomaly where one outlasted it and the
  first half's scores, decided again under it, lose no F1 there
  (:meth:`LastingRuns.refit <detector.feedback.LastingRuns.refit>`);
- ``full feedback``: a model refitted (:func:`~detector.retraining.refit_on_stream`) on
  ``train`` plus the first half with the labels (:meth:`Detector.fit
  <detector.detector.Detector.fit>` ``labels``: labelled anomalies stay
  out of training and calibration, labelled-normal stretches stay in; the ``ssaae`` learns
  from them) takes the stream over (:meth:`Monitor.with_detector
  <detector.monitor.Monitor.with_detector>`), with the normal memory, the same
  ``relearn_after`` rule, and its threshold re-fitted on its own causal scores of the
  labelled first half, as the service's training job re-fits a new version
  (``service.feedback.refit``). Those scores are in-sample for the points labelled normal (the
  new model trained on them) and out of sample for the labelled anomalies (left out of its
  training; the ``ssaae`` learns their class, not their reconstruction), so the re-fit leans
  low; the 0.5-2x bounds of
  :func:`~detector.feedback.refit_threshold` hold it.

A refit that fails (e.g. too little held-out data once the events are left out) leaves the
model in use, as a failed training job leaves the active version; ``applied`` records it as
``refit_error``.

Only the second half is measured (labels for evaluation only): F1 at the live threshold,
composite F1, false alarm events per 10,000 normal points and the other figures of
:func:`detector.replay.replay_metrics`. Nothing of the second half's labels reaches a model or
a threshold: :func:`feedback_replay` takes them only to hand them back for scoring, and a test
poisons them to show the outputs do not change.

Entities are taken in sorted order, skipping those whose test part lacks an anomaly range in
either half (with nothing to label or nothing to find, feedback has nothing to show), at most
``limit`` per dataset; that rule reads the labels' presence only, never the scores.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from .bench import list_entities, load_entity, metric_window
from .config import DetectorConfig
from .detector import Detector, create_detector
from .errors import ReconADError
from .feedback import (
    Label,
    LabelMasks,
    LastingRuns,
    NormalMemory,
    ThresholdRefit,
    Verdict,
    label_masks,
    refit_threshold,
)
from .monitor import Monitor
from .replay import replay_metrics
from .retraining import outside_spans, refit_on_stream

__all__ = [
    "FEEDBACK_MODES",
    "LABELLED_MODES",
    "FeedbackResult",
    "feedback_markdown",
    "feedback_replay",
    "feedback_table",
    "operator_labels",
    "run_feedback_replay",
]

logger = logging.getLogger(__name__)

FEEDBACK_MODES = ("no feedback", "retrain, no labels", "threshold + memory", "full feedback")
#: The modes that use the operator's labels (the others are the comparisons).
LABELLED_MODES = ("threshold + memory", "full feedback")


@dataclass
class FeedbackResult:
    """The second-half figures of one entity, kind and mode."""

    dataset: str
    entity: str
    kind: str
    mode: str
    n_second: int
    n_anomalous_second: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[lo, hi]`` (inclusive) of label 1."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def operator_labels(
    index: pd.Index, labels: np.ndarray, events: Iterable[tuple[Any, Any]]
) -> list[Label]:
    """The simulated operator's labels of a stretch (module docstring).

    Parameters
    ----------
    index : Index, shape (T,)
        The stretch's index (the first half of the test part).
    labels : ndarray of 0/1, shape (T,)
        Its true labels.
    events : iterable of (start, end)
        Index labels of the events the monitor raised in it.
    """
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ranges = _ranges(labels)
    out: list[Label] = []
    positions = pd.Index(index)
    for i, (start, end) in enumerate(events):
        inside = (positions >= start) & (positions <= end)
        verdict: Verdict = "anomaly" if labels[np.asarray(inside)].any() else "normal"
        out.append(Label(_plain(start), _plain(end), verdict, t0 + timedelta(seconds=i)))
    later = t0 + timedelta(days=1)
    for j, (lo, hi) in enumerate(ranges):
        out.append(
            Label(_plain(index[lo]), _plain(index[hi]), "anomaly", later + timedelta(seconds=j))
        )
    return out


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) else pd.Timestamp(value)


def _stream(monitor: Monitor, frame: pd.DataFrame, chunk: int) -> pd.DataFrame:
    return pd.concat(
        [monitor.update(frame.iloc[i : i + chunk]) for i in range(0, len(frame), chunk)]
    )


def feedback_replay(
    det: Detector,
    config: DetectorConfig,
    train: pd.DataFrame,
    test: pd.DataFrame,
    labels: np.ndarray,
    chunk: int,
    options: dict[str, Any] | None = None,
    modes: Iterable[str] = FEEDBACK_MODES,
) -> tuple[int, dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """Replay ``test`` with the operator's first-half labels; the second half's outputs.

    Returns
    -------
    mid : int
        Where the second half starts.
    outputs : dict of mode to DataFrame
        The monitor's outputs on ``test.iloc[mid:]``.
    applied : dict of mode to dict
        What feedback did: the refit factor (or None), remembered stretches, label counts.
    """
    mid = (len(test) // 2) // chunk * chunk
    first, second = test.iloc[:mid], test.iloc[mid:]
    known = np.asarray(labels)[:mid]  # the only labels that are used below
    monitor = det.monitor(**(options or {}))
    if det.window_ > 1:
        monitor.update(train.iloc[-(det.window_ - 1) :])
    start = monitor.state_dict()
    head = _stream(monitor, first, chunk)
    state = monitor.state_dict()
    spans = [(e.start, e.end) for e in monitor.events if e.start <= first.index[-1]]
    given = operator_labels(first.index, known, spans)
    masks = label_masks(first.index, given)
    quiet = ~head["anomalous"].to_numpy()
    normal_spans = [(lab.start, lab.end) for lab in given if lab.verdict == "normal"]
    remembered = ~outside_spans(first.index, normal_spans)  # what the normal memory holds
    refit = refit_threshold(head["normalized"].to_numpy(), masks, 1.0, quiet, remembered)
    lasting = LastingRuns.of(masks, head["event"].notna().to_numpy())
    raw = head["score"].to_numpy()

    def decide(after: int) -> np.ndarray:
        again = Monitor.from_state(det, start)
        again.apply_feedback(relearn_after=after)
        return again.decide(raw)["anomalous"].to_numpy()

    relearn_after = lasting.refit(monitor.options.relearn_after, masks, quiet, decide)
    history = pd.concat([train, first])
    outputs: dict[str, pd.DataFrame] = {}
    applied: dict[str, dict[str, Any]] = {}
    for mode in modes:
        live = Monitor.from_state(det, state)
        info: dict[str, Any] = {
            "anomaly_labels": sum(lab.verdict == "anomaly" for lab in given),
            "normal_labels": len(normal_spans),
        }
        used = det
        try:
            if mode == "full feedback":
                point_labels = np.concatenate([np.full(len(train), -1), masks.point_labels()])
                used = refit_on_stream(config, history, labels=point_labels)
            elif mode == "retrain, no labels":
                keep = np.concatenate(
                    [np.ones(len(train), dtype=bool), outside_spans(first.index, spans)]
                )
                used = refit_on_stream(config, history, keep=keep)
        except ReconADError as exc:  # as a failed training job: the model in use stays
            info["refit_error"] = f"{type(exc).__name__}: {exc}"
        if used is not det:
            live = live.with_detector(used)
        if mode in LABELLED_MODES:
            memory = NormalMemory.for_detector(used)
            for start, end in normal_spans:
                memory.remember(used, history, start, end)
            own = (
                refit if used is det else _label_refit(used, train, first, masks, chunk, remembered)
            )
            scale = None if own is None else own.scale
            live.apply_feedback(scale=scale, memory=memory, relearn_after=relearn_after)
            info["refit_scale"] = scale
            info["relearn_after"] = relearn_after
            info["remembered"] = len(memory)
        outputs[mode] = _stream(live, second, chunk)
        applied[mode] = info
    return mid, outputs, applied


def _label_refit(
    det: Detector,
    train: pd.DataFrame,
    first: pd.DataFrame,
    masks: LabelMasks,
    chunk: int,
    remembered: np.ndarray,
) -> ThresholdRefit | None:
    """The threshold refit of a new model version on its own causal scores of the labelled
    first half, as the service's training job makes it (``service.feedback.refit``): a fresh
    monitor's normalised scores, its points without an alert counting as normal, the false
    alarms the memory holds left out."""
    fresh = det.monitor()
    if det.window_ > 1:
        fresh.update(train.iloc[-(det.window_ - 1) :])
    scored = _stream(fresh, first, chunk)
    quiet = ~scored["anomalous"].to_numpy()
    return refit_threshold(scored["normalized"].to_numpy(), masks, 1.0, quiet, remembered)


def _has_both_halves(labels: np.ndarray) -> bool:
    mid = len(labels) // 2
    return bool(labels[:mid].any()) and bool(labels[mid:].any())


def run_feedback_replay(
    root: Path,
    datasets: Iterable[str] | None = None,
    kinds: Iterable[str] = ("ae", "ssaae"),
    chunk: int = 100,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    on_result: Callable[[FeedbackResult], None] | None = None,
) -> list[FeedbackResult]:
    """Replay every chosen entity for every kind and mode (module docstring)."""
    chosen: list[tuple[str, Path]] = []
    counts: dict[str, int] = {}
    for dataset, folder in list_entities(root, datasets, None):
        if limit is not None and counts.get(dataset, 0) >= limit:
            continue
        _, _, labels = load_entity(folder)
        if _has_both_halves(labels):
            chosen.append((dataset, folder))
            counts[dataset] = counts.get(dataset, 0) + 1
    results: list[FeedbackResult] = []
    for dataset, folder in chosen:
        train, test, labels = load_entity(folder)
        window = metric_window(train)
        for kind in kinds:
            config = DetectorConfig.model_validate({**(overrides or {}), "kind": kind})
            t0 = time.perf_counter()
            try:
                det = create_detector(config).fit(train)
                batch = det.anomaly_score(test).to_numpy()
                mid, outputs, applied = feedback_replay(
                    det, config, train, test, labels, chunk, options
                )
            except Exception as exc:  # one broken entity must not end a long run
                logger.exception("feedback replay of %s/%s (%s) failed", dataset, folder.name, kind)
                for mode in FEEDBACK_MODES:
                    results.append(
                        FeedbackResult(
                            dataset,
                            folder.name,
                            kind,
                            mode,
                            0,
                            0,
                            math.nan,
                            error=f"{type(exc).__name__}: {exc}",
                        )
                    )
                continue
            seconds = time.perf_counter() - t0
            y = labels[mid:]
            for mode, out in outputs.items():
                result = FeedbackResult(
                    dataset,
                    folder.name,
                    kind,
                    mode,
                    len(y),
                    int(y.sum()),
                    seconds,
                    replay_metrics(y, out, batch[mid:], window),
                    applied[mode],
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def feedback_table(results: list[FeedbackResult]) -> pd.DataFrame:
    """Macro means per dataset, kind and mode of the second-half figures."""
    rows = [
        {"dataset": r.dataset, "kind": r.kind, "mode": r.mode, **r.metrics}
        for r in results
        if r.error is None
    ]
    frame = pd.DataFrame(rows)
    keys = ["dataset", "kind", "mode"]
    metrics = [
        "f1",
        "composite_f1",
        "false_alarm_events_per_10k",
        "event_recall",
        "precision",
        "recall",
        "normal_flag_rate",
        "best_f1_batch",
    ]
    table = frame.groupby(keys)[metrics].mean()
    table["entities"] = frame.groupby(keys).size()
    return table


def feedback_markdown(table: pd.DataFrame) -> str:
    """The per-dataset table, then per kind the mean over datasets and the bar's check."""
    lines = [
        "| dataset | kind | mode | entities | F1 live | composite F1 | false alarm events / 10k "
        "normal | event recall | precision | recall | flag rate on normal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in table.iterrows():
        dataset, kind, mode = (str(k) for k in cast(tuple[Any, ...], key))
        lines.append(
            f"| {dataset} | {kind} | {mode} | {int(row['entities'])} | {row['f1']:.3f} | "
            f"{row['composite_f1']:.3f} | {row['false_alarm_events_per_10k']:.1f} | "
            f"{row['event_recall']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['normal_flag_rate']:.2%} |"
        )
    lines += [
        "",
        "| kind | mode | mean F1 over datasets | ratio to no feedback | datasets worse |",
        "|---|---|---|---|---|",
    ]
    f1 = table["f1"].unstack("mode")  # (dataset, kind) x mode
    for kind in f1.index.get_level_values("kind").unique():
        per = f1.xs(kind, level="kind")
        base = per["no feedback"].mean()
        for mode in [m for m in FEEDBACK_MODES if m in per]:
            mean = per[mode].mean()
            worse = int((per[mode] < per["no feedback"] - 1e-12).sum())
            ratio = mean / base if base > 0 else math.nan
            lines.append(f"| {kind} | {mode} | {mean:.3f} | {ratio:.2f} | {worse} |")
    return "\n".join(lines) + "\n"
