"""The semi-supervised AAE and the labels seam of ``Detector.fit``.

The contract suite (test_contract.py, test_monitor.py) runs over every kind, ssaae included;
this file checks what labels add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import normal_series, tiny_config, with_anomalies

from detector import DetectorConfig, create_detector, errors, load_detector
from detector.detector import Detector
from detector.evaluation import best_f1, vus_pr


def fit(kind: str, data: pd.DataFrame, labels: Any = None, **overrides: Any) -> Detector:
    config = tiny_config(kind, training={"max_epochs": 10}, **overrides)
    return create_detector(DetectorConfig.model_validate(config)).fit(data, labels=labels)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    train = normal_series(3000, seed=1)
    seen, seen_labels, _ = with_anomalies(normal_series(1500, seed=2, start=3000), seed=3)
    test, test_labels, _ = with_anomalies(normal_series(1500, seed=5, start=4500), seed=7)
    history = pd.concat([train, seen])
    labels = np.concatenate([np.full(len(train), -1), seen_labels.to_numpy()])
    return {
        "train": train,
        "history": history,
        "labels": labels,
        "test": test,
        "test_labels": test_labels.to_numpy(),
    }


@pytest.fixture(scope="module")
def supervised(data: dict[str, Any]) -> Detector:
    return fit("ssaae", data["history"], data["labels"])


def test_labels_train_y_and_the_score_beats_a_random_one(
    supervised: Detector, data: dict[str, Any]
) -> None:
    det = supervised
    assert float(det.network_.supervised[0]) == 1.0  # type: ignore[index]
    assert det.history_[-1]["labels"] >= 0
    y = data["test_labels"]
    scores = det.anomaly_score(data["test"]).to_numpy()
    random = np.random.default_rng(0).random(len(y))
    assert vus_pr(y, random, 24) < 0.3 and best_f1(y, random)[0] < 0.3
    assert vus_pr(y, scores, 24) > 0.7
    assert best_f1(y, scores)[0] > 0.6
    # p(anomalous) on fresh data: higher inside the anomalies than outside
    windows = np.lib.stride_tricks.sliding_window_view(data["test"].to_numpy(), (det.window_, 3))[
        :, 0
    ]
    scaled = (windows - det.preprocessor_.center_) / det.preprocessor_.scale_
    with torch.inference_mode():
        logits, _ = det.network_.encode(torch.from_numpy(scaled.astype(np.float32)))  # type: ignore[operator]
    p = torch.softmax(logits, dim=1)[:, 1].numpy()
    last = y[det.window_ - 1 :]
    assert p[last == 1].mean() > p[last == 0].mean() + 0.2


def test_without_labels_it_trains_and_scores_by_reconstruction(data: dict[str, Any]) -> None:
    det = fit("ssaae", data["train"])
    assert float(det.network_.supervised[0]) == 0.0  # type: ignore[index]
    scores = det.anomaly_score(data["test"]).to_numpy()
    assert vus_pr(data["test_labels"], scores, 24) > 0.5


def test_the_supervised_model_round_trips(
    tmp_path: Path, supervised: Detector, data: dict[str, Any]
) -> None:
    supervised.save(tmp_path / "m")
    loaded = load_detector(tmp_path / "m", device="cpu")
    assert float(loaded.network_.supervised[0]) == 1.0  # type: ignore[index]
    np.testing.assert_allclose(
        loaded.anomaly_score(data["test"]), supervised.anomaly_score(data["test"]), rtol=1e-6
    )


def test_labelled_anomalies_stay_out_of_calibration_and_training(data: dict[str, Any]) -> None:
    """An ae fitted on normal data with a labelled anomaly in its held-out tail calibrates
    without it; unlabelled, the anomaly inflates the held-out errors and scores."""
    history = data["train"].copy()
    lo = len(history) - 200
    history.iloc[lo : lo + 60, 0] += 4.0  # a long anomaly in the validation tail
    labels = np.full(len(history), -1)
    labels[lo : lo + 60] = 1
    blind = fit("ae", history)
    told = fit("ae", history, labels)
    assert told.error_scale_[0] < blind.error_scale_[0] / 5
    assert told.holdout_scores_.max() < 0.5 * blind.holdout_scores_.max()


def test_bad_labels_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(errors.InputError, match="one entry per row"):
        fit("ssaae", data["train"], np.zeros(10))
    with pytest.raises(errors.InputError, match="-1 \\(unknown\\)"):
        fit("ssaae", data["train"], np.full(len(data["train"]), 2))
