"""The replay's baselines under the monitor's online threshold (``bench --replay --baselines``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import (
    bench_entity,
    config_file,
    tiny_config,
    write_entity,
)

from detector.config import DetectorConfig
from detector.errors import ConfigError, InputError
from detector.evaluation import event_metrics, pointwise_prf
from detector.monitor import fit_decider
from detector.replay import baseline_scores, decide_in_chunks, run_replay
from service.cli import main  # the `reconad` entry point


def _live(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the live flags of baseline ``name`` under the default online threshold."""
    train, test, labels = bench_entity(seed)
    config = DetectorConfig(window=24)
    held, scores = baseline_scores(name, train, test, config)
    out = decide_in_chunks(fit_decider(held, config.calibration), scores, 100)
    return labels, out["anomalous"].to_numpy()


@pytest.mark.parametrize(("name", "seed"), [("knn", 1), ("knn", 2), ("pca", 1)])
def test_a_baseline_under_the_online_threshold_finds_injected_anomalies(
    name: str, seed: int
) -> None:
    labels, flags = _live(name, seed)
    # five injected anomalies of 30 points in 1,200: found by the baseline's live decision
    assert event_metrics(labels, flags)["event_recall"] >= 0.8
    assert pointwise_prf(labels, flags)[2] > 0.3
    # batch scores spread an anomaly over the windows that hold it: count false flags a window
    # (24) away from every anomaly
    far = np.convolve(labels, np.ones(2 * 24 + 1), mode="same") == 0
    assert flags[far].mean() < 0.01
    # a random scorer under the same threshold: F1 below the floor (at the baseline's flag
    # rate, about 25%, a random flagger's F1 is about 0.17)
    labels, flags = _live("random", seed)
    assert pointwise_prf(labels, flags)[2] < 0.3


def test_baseline_decisions_do_not_depend_on_the_chunk_size(tmp_path: Path) -> None:
    train, test, _ = bench_entity(4)
    config = DetectorConfig(window=24)
    held, scores = baseline_scores("pca", train, test, config)
    outs = [
        decide_in_chunks(fit_decider(held, config.calibration, merge_gap=3), scores, chunk)
        for chunk in (1, 37, len(scores))
    ]
    assert outs[0]["anomalous"].any()
    for out in outs[1:]:
        pd.testing.assert_frame_equal(out, outs[0])
    # and through the whole replay: the same figures with two chunk sizes
    root = tmp_path / "data"
    write_entity(root / "alpha" / "e1", seed=4)
    cfg = tiny_config("ae", training={"max_epochs": 2})
    del cfg["kind"]
    runs = [
        run_replay(root, kind="ae", chunk=chunk, overrides=cfg, baselines=["pca", "knn"])
        for chunk in (37, 100)
    ]
    for one, two in zip(*runs, strict=True):
        assert one.method == two.method and one.error is None
        if one.method != "ae":  # the detector's own chunk independence is test_monitor's
            assert one.metrics == two.metrics
    assert [r.method for r in runs[0]] == ["ae", "pca", "knn"]


def test_too_few_held_out_scores_are_refused() -> None:
    with pytest.raises(InputError, match="too few"):
        fit_decider(np.ones(3))
    with pytest.raises(ConfigError, match="invalid monitor options"):
        fit_decider(np.random.default_rng(0).random(200), sensitivity=200)


def test_replay_command_reports_baselines_next_to_the_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    write_entity(root / "alpha" / "e1", seed=6)
    config = config_file(tmp_path, max_epochs=5)
    out = tmp_path / "out"
    argv = ["bench", str(root), "--replay", "--kinds", "ae", "--config", str(config)]
    assert main([*argv, "--baselines", "random,pca", "--out", str(out), "-q"]) == 0
    assert "1 replays of ae and 2 of baselines" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert summary["method"].tolist() == ["ae", "random", "pca"]
    assert summary["mode"].eq("static model").all()
    baselines = summary[summary["method"] != "ae"]
    assert baselines["vus_pr_causal"].isna().all() and baselines["vus_pr_batch"].notna().all()
    f1 = dict(zip(summary["method"], summary["f1"], strict=True))
    causal = dict(zip(summary["method"], summary["vus_pr_causal"], strict=True))
    assert causal["ae"] > 0
    # the baseline that models the data beats the random one under the same threshold
    assert f1["pca"] > f1["random"]
    text = (out / "summary.md").read_text()
    assert "| dataset | mode | method | entities |" in text
    assert "| alpha | static model | pca | 1 |" in text and "| n/a |" in text
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["ae", "random", "pca"]
    assert main([*argv, "--baselines", "bogus", "--out", str(out), "-q"]) == 2
    assert "unknown method" in capsys.readouterr().err
