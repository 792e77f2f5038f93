"""Retraining on stream history (``detector.retraining``): a stretch of anomalies the monitor
let through must not set the new model's calibration, and the held-out blocks layout."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import normal_series, tiny_config, with_anomalies

from detector import DetectorConfig, create_detector
from detector.detector import holdout_runs
from detector.evaluation import pointwise_prf
from detector.retraining import outside_spans, refit_on_stream, stream_config

CONFIG = DetectorConfig.model_validate(tiny_config("ae", training={"max_epochs": 10}))


def test_blocks_spread_the_held_out_share_and_end_at_the_segment_end() -> None:
    tail = holdout_runs(6000, 24, 0.2, "tail")
    assert tail == [(4800, 6000)]
    blocks = holdout_runs(6000, 24, 0.2, "blocks")
    assert len(blocks) == 5 and blocks[-1][1] == 6000
    assert sum(hi - lo for lo, hi in blocks) == 1200  # the same share as the tail
    assert all(hi - lo >= 10 * 24 for lo, hi in blocks)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(blocks))
    assert blocks[0][1] <= 1200  # the first block lies in the first fifth
    # too short for two blocks of ten windows: the tail
    assert holdout_runs(2000, 24, 0.2, "blocks") == [(1600, 2000)]
    assert stream_config(CONFIG).training.holdout == "blocks"
    assert CONFIG.training.holdout == "tail"  # a first fit is unchanged


def test_outside_spans() -> None:
    index = pd.Index(np.arange(10, 20))
    keep = outside_spans(index, [(12, 13), (19, 25)])
    assert np.flatnonzero(~keep).tolist() == [2, 3, 9]


@pytest.fixture(scope="module")
def stream() -> dict[str, Any]:
    """Training data, then a stretch of stream the monitor let through (no events) that holds
    a burst of unlabelled anomalous noise in its recent part, then later injected anomalies."""
    train = normal_series(3000, seed=1)
    seen = normal_series(3000, seed=2, start=3000)
    rng = np.random.default_rng(5)
    burst = slice(2000, 2150)  # history rows 5000-5149: in the last fifth, before its end
    seen.iloc[burst, :2] += 0.6 * rng.standard_normal((150, 2))
    later, labels, _ = with_anomalies(normal_series(1400, seed=3, start=6000), seed=4)
    det = create_detector(CONFIG).fit(train)
    return {"train": train, "seen": seen, "later": later, "labels": labels, "det": det}


def _f1_after_handover(stream: dict[str, Any], new: Any) -> float:
    monitor = stream["det"].monitor()
    monitor.update(stream["seen"])
    out = monitor.with_detector(new).update(stream["later"])
    return float(pointwise_prf(stream["labels"].to_numpy(), out["anomalous"].to_numpy())[2])


def test_a_refit_on_stream_history_keeps_detecting(stream: dict[str, Any]) -> None:
    history = pd.concat([stream["train"], stream["seen"]])
    new = refit_on_stream(CONFIG, history)
    plain = create_detector(CONFIG).fit(history)  # the tail rule: the burst is its calibration
    assert new.config.training.holdout == "blocks"
    f1_new, f1_plain = _f1_after_handover(stream, new), _f1_after_handover(stream, plain)
    # random flags at the anomaly share reach an F1 of about that share (~0.1)
    assert f1_new > 0.4, (f1_new, f1_plain)
    assert plain.threshold_ > 2 * new.threshold_
    assert f1_new > f1_plain + 0.15
    # the rows a caller leaves out stay out
    keep = np.ones(len(history), dtype=bool)
    keep[-500:] = False
    short = refit_on_stream(CONFIG, history, keep=keep)
    assert short.holdout(history.iloc[:-500]).index[-1] == history.index[-501]
