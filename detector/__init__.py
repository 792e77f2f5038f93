"""ReconAD's detector library: windowed reconstruction autoencoders for time-series anomalies.

>>> from detector import DetectorConfig, create_detector, load_detector
>>> det = create_detector({"kind": "vae", "window": 64, "beta": 2}).fit(train_df)  # doctest: +SKIP
>>> scores = det.anomaly_score(test_df)  # doctest: +SKIP
"""

from __future__ import annotations

from . import errors
from .config import KINDS, CalibrationConfig, DetectorConfig, TrainingConfig, stored_config
from .decision import Conformal, DSpot, StaticThreshold, Threshold
from .detector import (
    Detector,
    Reconstruction,
    ScoreDetails,
    WindowScores,
    create_detector,
    split_holdout,
)
from .monitor import Event, Monitor, MonitorOptions
from .persistence import load_detector
from .training import TrainingProgress

__all__ = [
    "KINDS",
    "CalibrationConfig",
    "Conformal",
    "DSpot",
    "Detector",
    "DetectorConfig",
    "Event",
    "Monitor",
    "MonitorOptions",
    "Reconstruction",
    "ScoreDetails",
    "StaticThreshold",
    "Threshold",
    "TrainingConfig",
    "TrainingProgress",
    "WindowScores",
    "create_detector",
    "errors",
    "load_detector",
    "split_holdout",
    "stored_config",
]
