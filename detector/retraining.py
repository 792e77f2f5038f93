"""Retraining on a stream's history: the one rule for refitting a model on what it watched.

The service's scheduled retraining (``service/jobs/worker.py``, on stored history), the
replay's ``--retrain-every`` (:func:`detector.replay.replay_entity`) and the feedback replay's
refits (:mod:`detector.feedback_replay`) all fit through :func:`refit_on_stream`.

Why not a plain :meth:`Detector.fit <detector.detector.Detector.fit>`
-------------------------------------------------------------------
Data given to ``fit`` is taken as normal, and its last ``validation_fraction`` is held out to
set the per-feature error scales and the threshold. A stream's history is not such data: it is
what the live monitor watched, minus the points inside its events (and labelled anomalies).
Whatever the monitor missed stays in it, and the monitor misses most where the data had
drifted, since its threshold follows the score level up. With the tail rule the latest
stretch of the stream becomes the whole calibration, so a few hundred missed anomalous points
there (or a stretch that is quiet on some feature) set the new model's scales and threshold.
On smd machine-1-6 (``retrain, no labels`` of the feedback replay) the refit's held-out tail
was the end of the first test half, with 363 anomalous points of 6,986 (the monitor had caught
90 of the half's 481); the new model separated the second half's anomalies from its normal
points well (median scores 21 against 1) but its threshold, POT on that tail, was 29.7
(12.2 on the same tail without those points), so it flagged almost nothing: F1 0.741 -> 0.007.

The rule
--------
The refit holds out ``training.holdout = "blocks"`` (:func:`detector.detector.holdout_runs`):
the same share of points, in blocks of at least ten windows spread evenly over the history,
the last block at its end. The calibration then estimates the score distribution of the whole
span the new model is trained on, so a stretch of missed anomalies is diluted by the rest of
the history instead of being all of it, and a model trained on both an old and a new regime is
calibrated on both. A history whose held-out share is shorter than two such blocks keeps the
tail (one block). Rows
the caller leaves out (event spans, labelled anomalies) stay out of training and calibration
as before; :meth:`Monitor.with_detector <detector.monitor.Monitor.with_detector>` then hands the
stream over unchanged (same open event, threshold fitted on the new model's held-out scores).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .config import DetectorConfig
from .detector import Detector, create_detector
from .training import ProgressCallback

__all__ = ["STREAM_HOLDOUT", "outside_spans", "refit_on_stream", "stream_config"]

#: The ``training.holdout`` layout of a refit on stream history.
STREAM_HOLDOUT = "blocks"


def stream_config(config: DetectorConfig) -> DetectorConfig:
    """``config`` with the held-out layout of a refit on stream history."""
    training = config.training.model_copy(update={"holdout": STREAM_HOLDOUT})
    return config.model_copy(update={"training": training})


def outside_spans(index: pd.Index, spans: Iterable[tuple[Any, Any]]) -> npt.NDArray[np.bool_]:
    """The points of ``index`` outside every ``(start, end)`` span (both ends inclusive):
    what a refit keeps of a stretch the monitor raised those events in."""
    inside = np.zeros(len(index), dtype=bool)
    for start, end in spans:
        inside |= np.asarray((index >= start) & (index <= end))
    return ~inside


def refit_on_stream(
    config: DetectorConfig,
    history: pd.DataFrame,
    keep: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    progress: ProgressCallback | None = None,
) -> Detector:
    """A new model of ``config`` fitted on a stream's history by the rule of this module.

    Parameters
    ----------
    config : DetectorConfig
        The model's config; the refit uses :func:`stream_config` of it.
    history : DataFrame, shape (T, F)
        The stored history, in time order (training data and streamed points).
    keep : array_like of bool, shape (T,), optional
        The rows to use (e.g. :func:`outside_spans` of the monitor's events); default all.
    labels : array_like of int, optional
        Feedback labels per kept row, as :meth:`Detector.fit
        <detector.detector.Detector.fit>` takes them.
    progress : callable, optional
        As for ``fit``.

    Raises
    ------
    As :meth:`Detector.fit <detector.detector.Detector.fit>`.
    """
    rows = history if keep is None else history[np.asarray(keep, dtype=bool)]
    return create_detector(stream_config(config)).fit(rows, progress=progress, labels=labels)
