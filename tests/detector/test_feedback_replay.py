"""``reconad bench --replay --feedback``: the simulated operator, the second-half-only rule,
and the command over a generated benchmark folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import (
    config_file,
    normal_series,
    tiny_config,
    with_anomalies,
    write_entity,
)

from detector import DetectorConfig, create_detector
from detector.feedback import label_masks
from detector.feedback_replay import FEEDBACK_MODES, feedback_replay, operator_labels
from service.cli import main  # the `reconad` entry point


def test_the_operator_labels_events_by_overlap_and_brings_the_ranges() -> None:
    index = pd.Index(np.arange(100, 120))
    truth = np.zeros(20, dtype=int)
    truth[3:6] = 1
    truth[15:17] = 1
    given = operator_labels(index, truth, [(104, 108), (110, 111)])
    assert [(lab.start, lab.end, lab.verdict) for lab in given] == [
        (104, 108, "anomaly"),  # overlaps the range 103-105
        (110, 111, "normal"),  # a false alarm
        (103, 105, "anomaly"),
        (115, 116, "anomaly"),
    ]
    masks = label_masks(index, given)
    assert np.flatnonzero(masks.anomaly).tolist() == [3, 4, 5, 6, 7, 8, 15, 16]
    assert np.flatnonzero(masks.normal).tolist() == [10, 11]


@pytest.fixture(scope="module")
def entity() -> dict[str, Any]:
    train = normal_series(1500, seed=1)
    test, labels, _ = with_anomalies(normal_series(1400, seed=2, start=1500), seed=3)
    # a false alarm that comes back: the same bump before and after the middle
    bump = np.zeros(len(test))
    bump[150:160] = bump[950:960] = 1.2
    test["f2"] += bump
    config = DetectorConfig.model_validate(tiny_config("ae", training={"max_epochs": 8}))
    return {
        "train": train,
        "test": test,
        "labels": labels.to_numpy(),
        "config": config,
        "det": create_detector(config).fit(train),
    }


def test_no_second_half_label_reaches_a_model_or_a_threshold(entity: dict[str, Any]) -> None:
    labels = entity["labels"]
    args = (entity["det"], entity["config"], entity["train"], entity["test"])
    mid, outputs, applied = feedback_replay(*args, labels, 100)
    assert mid == 700 and set(outputs) == set(FEEDBACK_MODES)
    assert applied["full feedback"]["anomaly_labels"] > 0
    assert applied["full feedback"]["normal_labels"] > 0
    assert applied["full feedback"]["remembered"] > 0
    poisoned = labels.copy()
    rng = np.random.default_rng(0)
    poisoned[mid:] = rng.permutation(1 - labels[mid:])  # inverted and shuffled
    _, again, applied_again = feedback_replay(*args, poisoned, 100)
    assert applied_again == applied
    for mode in FEEDBACK_MODES:
        a, b = outputs[mode], again[mode]
        assert a.index.equals(entity["test"].index[mid:])
        np.testing.assert_array_equal(a["score"], b["score"])
        np.testing.assert_array_equal(a["threshold"], b["threshold"])
        assert (a["anomalous"] == b["anomalous"]).all()
    # while feedback does act here (the memory stops a flag) and the first half's labels
    # change what it does
    labelled = outputs["threshold + memory"]["anomalous"]
    assert (labelled != outputs["no feedback"]["anomalous"]).any()
    other = labels.copy()
    other[:mid] = 0
    _, _, applied_other = feedback_replay(*args, other, 100, modes=["threshold + memory"])
    assert applied_other["threshold + memory"] != applied["threshold + memory"]


def test_feedback_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_entity(root / "alpha" / "e1", seed=1)
    write_entity(root / "alpha" / "quiet", seed=3, anomalies=False)  # skipped: no labels
    config = config_file(tmp_path, max_epochs=5)
    out = tmp_path / "out"
    argv = ["bench", str(root), "--replay", "--feedback", "--kinds", "ae,ssaae", "--chunk", "50"]
    assert main([*argv, "--config", str(config), "--out", str(out), "-q"]) == 0
    records = json.loads((out / "results.json").read_text())
    assert {(r["kind"], r["mode"]) for r in records} == {
        (k, m) for k in ("ae", "ssaae") for m in FEEDBACK_MODES
    }
    assert {r["entity"] for r in records} == {"e1"} and all(r["error"] is None for r in records)
    summary = (out / "summary.md").read_text()
    assert "ratio to no feedback" in summary and "| ssaae | full feedback |" in summary
    assert "second halves only" in capsys.readouterr().out + summary
