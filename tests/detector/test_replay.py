"""``reconad bench --replay``: the live monitor over generated benchmark folders; event metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import (
    config_file,
    write_entity,
)

from detector.evaluation import event_metrics
from service.cli import main  # the `reconad` entry point


def test_event_metrics_by_hand() -> None:
    labels = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    flags = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    m = event_metrics(labels, flags)
    assert m["event_recall"] == 0.5 and m["n_ranges"] == 2
    assert m["median_delay"] == 1.0
    # two flag runs touch no range: (4, 5) and (11,), over 7 normal points
    assert m["false_alarm_events_per_10k"] == pytest.approx(2 * 1e4 / 7)
    assert m["normal_flag_rate"] == pytest.approx(3 / 7)
    precision = 1 / 4
    assert m["composite_f1"] == pytest.approx(2 * precision * 0.5 / (precision + 0.5))
    quiet = event_metrics(np.zeros(5, dtype=int), np.zeros(5, dtype=bool))
    assert np.isnan(quiet["event_recall"]) and quiet["false_alarm_events_per_10k"] == 0


def test_replay_command_with_and_without_retraining(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    write_entity(root / "alpha" / "e1", seed=1)
    write_entity(root / "alpha" / "quiet", seed=3, anomalies=False)
    config = config_file(tmp_path, max_epochs=10)
    monitor = tmp_path / "monitor.json"
    monitor.write_text(json.dumps({"merge_gap": 5}))
    out = tmp_path / "out"
    argv = ["bench", str(root), "--replay", "--kinds", "ae", "--chunk", "50"]
    argv += ["--retrain-every", "400", "--config", str(config), "--monitor", str(monitor)]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    assert "4 replays" in capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())
    assert not [r for r in records if r["error"]]
    assert {r["mode"] for r in records} == {"static model", "retrain every 400"}
    summary = pd.read_csv(out / "summary.csv")
    for mode in ("static model", "retrain every 400"):
        row = summary[(summary["dataset"] == "alpha") & (summary["mode"] == mode)].iloc[0]
        assert row["entities"] == 1
        # five injected anomalies: a random flagger at this flag rate finds about one
        assert row["event_recall"] >= 0.6
        assert row["normal_flag_rate"] < 0.05
        assert row["f1"] > 0 and row["best_f1_batch"] > 0.3
        assert row["vus_pr_causal"] > 0.2 and row["vus_pr_batch"] > 0.2
    assert (out / "summary.md").read_text().startswith("Command: `reconad bench ")
    with pytest.raises(SystemExit):
        main(["bench", str(root), "--replay", "--chunk", "0"])
    assert main(["bench", str(root), "--replay", "--chunk", "50", "--retrain-every", "75"]) == 2


def test_replay_reuses_the_models_it_kept(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_entity(root / "alpha" / "e1", seed=5)
    config = config_file(tmp_path, max_epochs=3)
    models = tmp_path / "models"
    argv = ["bench", str(root), "--replay", "--kinds", "ae", "--config", str(config), "-q"]
    argv += ["--models", str(models)]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    weights = models / "alpha" / "e1" / "model" / "model.safetensors"
    assert weights.exists() and (models / "alpha" / "e1" / "batch.npy").exists()
    kept = models / "alpha" / "e1" / "baselines" / "pca.npz"  # a baseline's scores, reused
    assert kept.exists()
    stamp, kept_stamp = weights.stat().st_mtime_ns, kept.stat().st_mtime_ns
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    assert weights.stat().st_mtime_ns == stamp  # loaded, not refitted
    assert kept.stat().st_mtime_ns == kept_stamp
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert [r["metrics"] for r in one] == [r["metrics"] for r in two]
    assert "reused from" in (tmp_path / "two" / "summary.md").read_text()
    # another detector config refits and replaces the kept model
    config_file(tmp_path, max_epochs=2)
    assert main([*argv, "--out", str(tmp_path / "three")]) == 0
    assert weights.stat().st_mtime_ns != stamp
