"""The timestamp policy: unsorted, repeated and duplicated timestamps (generated data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import normal_series, tiny_config, with_anomalies

from detector import DetectorConfig, create_detector, errors
from detector.baselines import create_baseline
from detector.cli import main
from detector.detector import Detector


@pytest.fixture(scope="module")
def det() -> Detector:
    cfg = DetectorConfig.model_validate(tiny_config("ae"))
    return create_detector(cfg).fit(normal_series(2000, seed=1))


@pytest.fixture(scope="module")
def test_data() -> tuple[pd.DataFrame, pd.Series]:
    test, labels, _ = with_anomalies(normal_series(600, seed=2, start=2000), seed=3)
    return test, labels


def test_shuffled_rows_get_the_scores_of_the_sorted_rows(
    det: Detector, test_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    test, _ = test_data
    sorted_scores = det.anomaly_score(test)
    order = np.random.default_rng(0).permutation(len(test))
    shuffled = det.anomaly_score(test.iloc[order])
    assert shuffled.index.equals(test.index[order])  # the caller's row order
    np.testing.assert_allclose(shuffled.to_numpy(), sorted_scores.to_numpy()[order], rtol=1e-5)
    assert sorted_scores.notna().sum() > 0.9 * len(test)


def test_exact_duplicates_share_one_score(
    det: Detector, test_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    test, _ = test_data
    repeat = np.sort(np.random.default_rng(1).choice(len(test), 40, replace=False))
    doubled = pd.concat([test, test.iloc[repeat]]).sort_index(kind="stable")
    scores = det.anomaly_score(doubled)
    assert len(scores) == len(doubled)
    plain = det.anomaly_score(test)
    # merged: every copy scores exactly like the row it repeats, and the series is unchanged
    np.testing.assert_allclose(
        scores.groupby(level=0).first().to_numpy(), plain.to_numpy(), rtol=1e-5
    )
    np.testing.assert_array_equal(scores.groupby(level=0).nunique(dropna=False).to_numpy().max(), 1)


def test_repeated_timestamps_with_new_values_are_consecutive_points(
    det: Detector, test_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    """A clock change: an hour of timestamps comes twice with different values."""
    test, _ = test_data
    again = test.iloc[300:360].copy()
    again.index = test.index[240:300]  # values of 300-359 under the stamps of 240-299
    data = pd.concat([test.iloc[:300], again, test.iloc[360:]])
    assert data.index.has_duplicates and not data.index.is_monotonic_increasing
    scores = det.anomaly_score(data)
    assert scores.notna().all()
    assert scores.index.equals(data.index)
    repeated = scores.iloc[300:360].to_numpy()
    first = scores.iloc[240:300].to_numpy()
    assert not np.allclose(repeated, first)  # different values: scored on their own

    with pytest.raises(errors.InputError, match="row 300"):
        strict = create_detector(
            DetectorConfig.model_validate(tiny_config("ae", timestamp_order="error"))
        )
        strict.fit(normal_series(600, seed=1)).anomaly_score(data)


def test_fit_accepts_repeats_and_keeps_the_step(test_data: tuple[pd.DataFrame, pd.Series]) -> None:
    train = normal_series(1500, seed=4)
    messy = pd.concat([train, train.iloc[100:112]]).iloc[::-1]  # reversed, 12 exact repeats
    cfg = DetectorConfig.model_validate(tiny_config("ae", training={"max_epochs": 2}))
    det = create_detector(cfg).fit(messy)
    assert det.preprocessor_.step_ == 60 * 10**9  # one minute, repeats do not shrink it
    test, _ = test_data
    assert det.anomaly_score(test.iloc[::-1]).notna().mean() > 0.9


def test_keyed_series_sort_within_each_key() -> None:
    a = normal_series(800, seed=5).assign(site="a")
    b = normal_series(800, seed=6).assign(site="b")
    cfg = DetectorConfig.model_validate(
        tiny_config("ae", key_column="site", training={"max_epochs": 2})
    )
    det = create_detector(cfg).fit(pd.concat([a, b]))
    both = pd.concat([a, b])
    mixed = both.iloc[np.random.default_rng(2).permutation(len(both))]
    np.testing.assert_allclose(
        det.anomaly_score(mixed).to_numpy(),
        _by_row(det.anomaly_score(both), both, mixed),
        rtol=1e-5,
    )


def _by_row(scores: pd.Series, frame: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Scores of ``frame``'s rows looked up for ``target``'s rows, by (time, site)."""
    keyed = pd.Series(scores.to_numpy(), index=pd.MultiIndex.from_arrays([frame.index, frame.site]))
    return keyed.loc[list(zip(target.index, target.site, strict=True))].to_numpy()


def test_baselines_follow_the_same_policy(test_data: tuple[pd.DataFrame, pd.Series]) -> None:
    base = create_baseline("pca", window=16).fit(normal_series(800, seed=7))
    test, _ = test_data
    order = np.random.default_rng(3).permutation(len(test))
    np.testing.assert_allclose(
        base.anomaly_score(test.iloc[order]).to_numpy(),
        base.anomaly_score(test).to_numpy()[order],
        rtol=1e-5,
    )


def test_cli_scores_a_file_with_repeated_and_unsorted_timestamps(
    tmp_path: Path, capsys: Any
) -> None:
    def table(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.rename_axis("timestamp").reset_index()

    train = normal_series(1200, seed=8)
    table(pd.concat([train, train.iloc[50:62]])).to_csv(tmp_path / "train.csv", index=False)
    test = normal_series(300, seed=9, start=1200)
    messy = pd.concat([test.iloc[150:], test.iloc[:150], test.iloc[10:14]])
    table(messy).to_csv(tmp_path / "test.csv", index=False)
    config = tmp_path / "config.json"
    config.write_text(DetectorConfig.model_validate(tiny_config("ae")).model_dump_json())
    model = tmp_path / "model"
    assert main(["train", str(tmp_path / "train.csv"), "--config", str(config), "--out",
                 str(model), "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(tmp_path / "test.csv"), "--out", str(out)]) == 0
    scored = pd.read_csv(out)
    assert len(scored) == len(messy)
    assert scored["timestamp"].tolist() == table(messy)["timestamp"].astype(str).tolist()
    assert scored["score"].notna().all()


def test_cli_trains_and_scores_a_raw_nab_file(tmp_path: Path) -> None:
    """A file as NAB ships it: ``timestamp,value`` with naive 'YYYY-MM-DD HH:MM:SS' times, five
    minutes apart, and a clock set back an hour (twelve timestamps repeat with new values)."""
    rng = np.random.default_rng(0)
    stamps = list(pd.date_range("2014-03-07 03:41:00", periods=1500, freq="5min"))
    stamps[900:912] = stamps[888:900]
    values = 45 + 5 * np.sin(np.arange(1500) * 2 * np.pi / 288) + rng.standard_normal(1500)
    raw = pd.DataFrame(
        {"timestamp": [t.strftime("%Y-%m-%d %H:%M:%S") for t in stamps], "value": values.round(3)}
    )
    raw.to_csv(tmp_path / "nab.csv", index=False)
    config = tmp_path / "config.json"
    config.write_text(DetectorConfig.model_validate(tiny_config("ae")).model_dump_json())
    model = tmp_path / "model"
    assert main(["train", str(tmp_path / "nab.csv"), "--config", str(config), "--out",
                 str(model), "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(tmp_path / "nab.csv"), "--out", str(out)]) == 0
    scored = pd.read_csv(out)
    assert len(scored) == len(raw) and scored["score"].notna().all()
    assert pd.to_datetime(scored["timestamp"]).tolist() == pd.to_datetime(raw["timestamp"]).tolist()
