"""End-to-end tests of ``detector.cli``: train -> score -> evaluate on small CSV/Parquet files."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.cli import add_commands, main

WINDOW = 16
N_TRAIN, N_TEST = 800, 400
SPIKE = slice(200, 215)  # rows of the test series with an injected level shift on feature "a"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {
    "vus_pr",
    "vus_roc",
    "auc_pr",
    "auc_roc",
    "precision",
    "recall",
    "f1",
    "best_f1_upper_bound",
    "best_f1_threshold",
}


def _series(n: int, start: int, seed: int) -> pd.DataFrame:
    """Two noisy sines of period 50 on a one-minute grid, with an all-zero label column."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=N_TRAIN + N_TEST, freq="min")[
                start : start + n
            ],
            "a": np.sin(2 * np.pi * t / 50) + 0.1 * rng.standard_normal(n),
            "b": np.cos(2 * np.pi * t / 50) + 0.1 * rng.standard_normal(n),
            "label": np.zeros(n, dtype=np.int64),
        }
    )


@pytest.fixture(autouse=True)
def _restore_log_level() -> Iterator[None]:
    """The commands set the package logger's level, as a CLI process may; undo it."""
    package = logging.getLogger("detector")
    level = package.level
    yield
    package.setLevel(level)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Training CSV, labelled test CSV and Parquet, and a tiny model config."""
    root = tmp_path_factory.mktemp("cli-data")
    train = _series(N_TRAIN, 0, seed=1)
    test = _series(N_TEST, N_TRAIN, seed=2)
    rows = test.index[SPIKE]
    test.loc[rows, "a"] += 3.0
    test.loc[rows, "label"] = 1
    paths = {
        "train": root / "train.csv",
        "test": root / "test.csv",
        "test_parquet": root / "test.parquet",
        "config": root / "config.json",
    }
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    test.to_parquet(paths["test_parquet"], index=False)
    paths["config"].write_text(json.dumps({"hidden_dims": [16], "latent_dim": 4}))
    return paths


def _train_args(files: dict[str, Path], out: Path) -> list[str]:
    return [
        "train", str(files["train"]), "--out", str(out), "--config", str(files["config"]),
        "--window", str(WINDOW), "--epochs", "3", "--seed", "0", "--device", "cpu",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-model") / "model"
    assert main([*_train_args(files, out), "--quiet"]) == 0
    return out


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1024


# ----------------------------------------------------------------------------------- train
def test_train_saves_model_and_prints_summary(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    out = tmp_path / "model"

    assert main(_train_args(files, out)) == 0

    captured = capsys.readouterr()
    summary = captured.out.strip()
    assert summary.count("\n") == 0
    for part in ("trained ae model", f"window={WINDOW}", "threshold=", "epochs=", "seconds="):
        assert part in summary
    # The tqdm bar over epochs, its postfix showing the losses.
    assert "training" in captured.err
    assert "train=" in captured.err and "val=" in captured.err
    assert "'label'" in caplog.text  # the label column was dropped, and said so
    config = json.loads((out / "config.json").read_text())
    assert config["window"] == WINDOW
    assert config["hidden_dims"] == [16] and config["latent_dim"] == 4
    assert config["training"]["max_epochs"] == 3
    assert config["features"] is None
    state = json.loads((out / "state.json").read_text())
    assert state["preprocessor"]["feature_names"] == ["a", "b"]
    assert state["preprocessor"]["index_kind"] == "datetime"


def test_train_quiet_has_no_progress_bar(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_train_args(files, tmp_path / "m"), "--epochs", "1", "--features", "a", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "train=" not in captured.err
    assert "epochs=1" in captured.out
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["features"] == ["a"]


# ----------------------------------------------------------------------------------- score
def test_score_writes_scores_reconstruction_and_plot(
    files: dict[str, Path], model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "scores.csv", tmp_path / "plot.png"
    args = ["score", str(model_dir), str(files["test"]), "--out", str(out), "--plot", str(plot)]

    assert main([*args, "--reconstruct"]) == 0

    assert "flagged" in capsys.readouterr().out
    scores = pd.read_csv(out, parse_dates=["timestamp"])
    assert list(scores.columns) == ["timestamp", "score", "anomaly", "expected_a", "expected_b"]
    assert len(scores) == N_TEST
    assert scores["anomaly"].dtype == bool
    test = pd.read_csv(files["test"], parse_dates=["timestamp"])
    pd.testing.assert_series_equal(scores["timestamp"], test["timestamp"])
    assert scores["score"].notna().all()
    spike = scores["score"].iloc[SPIKE]
    # Points within a window of the shift share its windows' error: "far" excludes them.
    far = scores.index[
        (scores.index < SPIKE.start - WINDOW) | (scores.index >= SPIKE.stop + WINDOW)
    ]
    assert spike.mean() > 3 * scores["score"].loc[far].mean()
    # The threshold flags most of the shift and few points far from it.
    assert scores["anomaly"].iloc[SPIKE].mean() > 0.5
    assert scores["anomaly"].loc[far].mean() < 0.05
    _assert_png(plot)


def test_parquet_in_and_out_matches_csv(
    files: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    csv_out, pq_out = tmp_path / "s.csv.gz", tmp_path / "s.parquet"
    assert main(["score", str(model_dir), str(files["test"]), "--out", str(csv_out)]) == 0
    assert main(["score", str(model_dir), str(files["test_parquet"]), "--out", str(pq_out)]) == 0

    from_csv = pd.read_csv(csv_out, parse_dates=["timestamp"])
    from_pq = pd.read_parquet(pq_out)
    assert list(from_pq.columns) == ["timestamp", "score", "anomaly"]
    assert pd.api.types.is_datetime64_any_dtype(from_pq["timestamp"])
    np.testing.assert_allclose(from_pq["score"], from_csv["score"], rtol=1e-9)
    np.testing.assert_array_equal(from_pq["anomaly"], from_csv["anomaly"])


# ----------------------------------------------------------------------------------- evaluate
def test_evaluate_finds_the_spike(
    files: dict[str, Path], model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path, plot = tmp_path / "out" / "metrics.json", tmp_path / "eval.png"
    args = ["evaluate", str(model_dir), str(files["test_parquet"]), "--json", str(report_path)]

    assert main([*args, "--plot", str(plot)]) == 0

    printed = capsys.readouterr().out
    assert "VUS-PR" in printed and "AUC-ROC" in printed
    assert "oracle upper bound" in printed
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    assert set(metrics) == METRIC_KEYS
    assert report["sliding_window"] == WINDOW
    n_spike = SPIKE.stop - SPIKE.start
    assert report["n_points"] == N_TEST and report["n_labelled_anomalies"] == n_spike
    ratio = n_spike / N_TEST
    assert metrics["auc_pr"] > max(0.5, 5 * ratio)
    assert metrics["auc_roc"] > 0.9
    assert metrics["vus_pr"] > 0.5
    assert metrics["best_f1_upper_bound"] >= metrics["f1"]
    _assert_png(plot)


def test_evaluate_without_positives_reports_nan_as_null(
    files: dict[str, Path], model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, report_path = tmp_path / "normal.csv", tmp_path / "m.json"
    pd.read_csv(files["train"]).iloc[:200].to_csv(data, index=False)

    assert main(["evaluate", str(model_dir), str(data), "--json", str(report_path)]) == 0

    assert "undefined" in capsys.readouterr().out
    metrics = json.loads(report_path.read_text())["metrics"]
    assert set(metrics) == METRIC_KEYS
    assert all(value is None for value in metrics.values())


# ----------------------------------------------------------------------------------- errors
def _drop_column(source: Path, target: Path, column: str) -> Path:
    pd.read_csv(source).drop(columns=[column]).to_csv(target, index=False)
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_data", "no such file"),
        ("missing_model", "not a complete saved model"),
        ("missing_time_column", "time column 'ts' not found"),
        ("missing_label_column", "label column 'label' not found"),
        ("missing_feature_column", "missing feature column(s) ['b']"),
        ("integer_index", "has no 'timestamp' column; name its time column with --time-column"),
        ("bad_extension", ".csv"),
        ("bad_plot_extension", ".png"),
        ("bad_window", "window must be between 2 and 4096"),
        ("bad_config", "not valid JSON"),
        ("unknown_config_field", "hiden_dims"),
        ("bad_labels", "only 0 (normal) and 1 (anomalous)"),
        ("unreadable_data", "could not read"),
        ("bad_timestamp", "row 1 holds 'soon'"),
    ],
)
def test_errors_exit_2_with_a_message(
    case: str,
    message: str,
    files: dict[str, Path],
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, test, out = str(model_dir), str(files["test"]), str(tmp_path / "s.csv")
    if case == "missing_data":
        args = ["train", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m")]
    elif case == "missing_model":
        args = ["score", str(tmp_path / "no-model"), test, "--out", out]
    elif case == "missing_time_column":
        args = ["score", model, test, "--out", out, "--time-column", "ts"]
    elif case == "missing_label_column":
        data = _drop_column(files["test"], tmp_path / "unlabelled.csv", "label")
        args = ["evaluate", model, str(data)]
    elif case == "missing_feature_column":
        data = _drop_column(files["test"], tmp_path / "no_b.csv", "b")
        args = ["score", model, str(data), "--out", out]
    elif case == "integer_index":  # model fitted on timestamps, data indexed by row number
        data = _drop_column(files["test"], tmp_path / "no_time.csv", "timestamp")
        args = ["score", model, str(data), "--out", out]
    elif case == "bad_extension":
        args = ["score", model, test, "--out", str(tmp_path / "s.txt")]
    elif case == "bad_plot_extension":
        args = ["evaluate", model, test, "--plot", str(tmp_path / "p.gif")]
    elif case == "bad_window":
        args = [*_train_args(files, tmp_path / "m"), "--window", "1"]
    elif case == "bad_config":
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        args = ["train", str(files["train"]), "--out", str(tmp_path / "m"), "--config", str(bad)]
    elif case == "unknown_config_field":
        bad = tmp_path / "typo.json"
        bad.write_text(json.dumps({"hiden_dims": [8]}))
        args = ["train", str(files["train"]), "--out", str(tmp_path / "m"), "--config", str(bad)]
    elif case == "bad_labels":
        frame = pd.read_csv(files["test"])
        frame.loc[0, "label"] = 2
        data = tmp_path / "bad_labels.csv"
        frame.to_csv(data, index=False)
        args = ["evaluate", model, str(data)]
    elif case == "bad_timestamp":
        data = tmp_path / "bad_time.csv"
        data.write_text("timestamp,a,b\n2024-01-01 00:00:00,1,2\nsoon,1,2\n")
        args = ["score", model, str(data), "--out", out]
    else:  # unreadable_data: a Parquet name on a text file
        data = tmp_path / "fake.parquet"
        data.write_text("timestamp,a,b\n")
        args = ["score", model, str(data), "--out", out]

    assert main(args) == 2

    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") or "\nerror: " in captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "m").exists()
    assert not Path(out).exists()


def test_bad_argument_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "data.csv", "--out", "m", "--window", "wide"])
    assert excinfo.value.code == 2
    assert "'auto'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- wiring
def test_add_commands_wires_into_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="reconad")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("serve")
    add_commands(subparsers)

    for argv in (
        ["train", "d.csv", "--out", "m"],
        ["score", "m", "d.csv", "--out", "s.parquet", "--reconstruct"],
        ["evaluate", "m", "d.csv", "--json", "r.json"],
    ):
        args = parser.parse_args(argv)
        assert args.command == argv[0]
        assert callable(args.func)


def test_module_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "detector.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=600,  # importing torch and pandas on a loaded machine can take minutes
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "score", "evaluate", "bench"):
        assert command in result.stdout
