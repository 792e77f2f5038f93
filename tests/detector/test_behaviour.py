"""Missing values, gaps, series keys, training controls, windows and persistence safety."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import normal_series, tiny_config, with_anomalies

from detector import DetectorConfig, TrainingProgress, create_detector, errors, load_detector
from detector.baselines import create_baseline
from detector.detector import Detector
from detector.models.cvae import ConditionEncoder
from detector.windows import (
    dominant_period,
    gather_windows,
    period_window,
    resolve_window,
    validation_cap,
    window_block,
)


@pytest.fixture(scope="module")
def ae() -> Detector:
    return create_detector(DetectorConfig.model_validate(tiny_config("ae"))).fit(
        normal_series(3000, seed=1)
    )


def test_nan_cells_are_left_out_not_turned_into_anomalies(ae: Detector) -> None:
    test = normal_series(600, seed=5, start=3000)
    clean = ae.anomaly_score(test)
    holed = test.copy()
    holed.iloc[100:110, 0] = np.nan  # one feature missing for a while
    holed.iloc[300, :] = np.nan  # a point with nothing observed
    scores = ae.anomaly_score(holed)
    assert np.isnan(scores.iloc[300])
    assert not ae.predict(holed).iloc[300]
    assert np.isfinite(scores.drop(scores.index[300])).all()
    # filled cells neither create anomalies nor zeros
    assert not ae.predict(holed).iloc[95:115].any()
    contributions = ae.explain(holed)
    assert (contributions.iloc[100:110]["f0"] == 0).all()
    assert (contributions.iloc[100:110][["f1", "f2"]] > 0).all().all()
    assert abs(scores.iloc[150:250].mean() - clean.iloc[150:250].mean()) < 0.5


def test_timestamp_gaps_are_filled_and_scores_stay_on_the_input_index(ae: Detector) -> None:
    test = normal_series(600, seed=5, start=3000)
    gappy = test.drop(test.index[200:205])  # five missing minutes
    scores = ae.anomaly_score(gappy)
    assert scores.index.equals(gappy.index)
    assert np.isfinite(scores).all()
    # the filled gap raises no flag: every flag is one the same data without the gap has
    # (a normal fluctuation may cross a tight threshold in both)
    clean_flags = ae.predict(test).reindex(gappy.index)
    assert not (ae.predict(gappy) & ~clean_flags).any()
    assert clean_flags.mean() < 0.01
    # a gap longer than a window splits the series instead of being interpolated
    split = pd.concat([test.iloc[:200], test.iloc[400:]])
    assert np.isfinite(ae.anomaly_score(split)).all()


def test_short_segment_between_long_gaps_gets_nan(ae: Detector) -> None:
    test = normal_series(600, seed=5, start=3000)
    parts = pd.concat([test.iloc[:200], test.iloc[300:305], test.iloc[400:]])
    scores = ae.anomaly_score(parts)
    assert scores.iloc[200:205].isna().all()
    assert np.isfinite(scores.iloc[:200]).all()


def test_integer_index_and_series_input(tiny: Any) -> None:
    frame = normal_series(1500, seed=1).reset_index(drop=True)
    det = create_detector(DetectorConfig.model_validate(tiny("ae", training={"max_epochs": 2})))
    det.fit(frame["f0"])
    scores = det.anomaly_score(frame["f0"].iloc[:300])
    assert scores.index.equals(frame.index[:300])
    assert det.feature_names_in_ == ["f0"]


def test_key_column_cvae_serves_several_series(tiny: Any) -> None:
    a = normal_series(1500, seed=1)
    b = normal_series(1500, seed=2) * 3 + 5  # a related series on another scale
    train = pd.concat([a.assign(host="a"), b.assign(host="b")])
    cfg = tiny("cvae", condition_on=["key"], key_column="host", training={"max_epochs": 15})
    det = create_detector(DetectorConfig.model_validate(cfg)).fit(train)
    assert det.feature_names_in_ == ["f0", "f1", "f2"]
    test_a = normal_series(400, seed=3, start=1500).assign(host="a")
    test_b = (normal_series(400, seed=4, start=1500) * 3 + 5).assign(host="b")
    # series b's values under key a are anomalous, under key b they are normal
    normal_b = det.anomaly_score(test_b)
    swapped = det.anomaly_score(test_b.assign(host="a"))
    assert swapped.mean() > 3 * normal_b.mean()
    both = pd.concat([test_a, test_b])
    scores = det.anomaly_score(both)
    assert len(scores) == 800 and np.isfinite(scores).all()
    with pytest.raises(errors.InputError, match="not seen in training"):
        det.anomaly_score(test_a.assign(host="c"))
    with pytest.raises(errors.ColumnsError, match="host"):
        det.anomaly_score(test_a.drop(columns="host"))


def test_calendar_condition_needs_timestamps(tiny: Any) -> None:
    frame = normal_series(1500, seed=1).reset_index(drop=True)
    det = create_detector(DetectorConfig.model_validate(tiny("cvae")))
    with pytest.raises(errors.InputError, match="timestamp index"):
        det.fit(frame)
    # 'auto' conditions on the phase of the dominant period when there are no timestamps
    auto = create_detector(
        DetectorConfig.model_validate(
            tiny("cvae", condition_on=["auto"], training={"max_epochs": 8})
        )
    ).fit(frame)
    encoder = auto.preprocessor_.conditions
    assert isinstance(encoder, ConditionEncoder)
    assert encoder.conditions_ == ["phase"] and encoder.period_ == 200
    test = normal_series(400, seed=3, start=1500).reset_index(drop=True)
    test.index += 1500
    assert np.isfinite(auto.anomaly_score(test)).all()
    timed = create_detector(
        DetectorConfig.model_validate(
            tiny("cvae", condition_on=["auto"], training={"max_epochs": 1})
        )
    ).fit(normal_series(1500, seed=1))
    assert isinstance(timed.preprocessor_.conditions, ConditionEncoder)
    assert timed.preprocessor_.conditions.conditions_ == ["hour", "dayofweek"]


def test_progress_callback_epoch_cap_and_cancel(tiny: Any) -> None:
    train = normal_series(1500, seed=1)
    seen: list[TrainingProgress] = []
    cfg = tiny("vae", training={"max_epochs": 4, "patience": 100})
    det = create_detector(DetectorConfig.model_validate(cfg)).fit(train, progress=seen.append)
    assert [p.epoch for p in seen] == [1, 2, 3, 4]
    assert all(p.max_epochs == 4 and {"train", "val", "kl"} <= set(p.losses) for p in seen)
    assert len(det.history_) == 4
    with pytest.raises(errors.TrainingCancelled, match="epoch 2"):
        create_detector(DetectorConfig.model_validate(cfg)).fit(
            train, progress=lambda p: p.epoch < 2
        )


def test_each_epoch_draws_its_own_windows(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``epoch_windows``: a fresh seeded draw of that many windows per epoch, no repeats within
    one; None takes every window every epoch."""
    from detector.models.base import ReconstructionModel

    seen: list[torch.Tensor] = []
    original = ReconstructionModel.training_step

    def record(self: ReconstructionModel, x_in: torch.Tensor, *args: Any, **kw: Any) -> Any:
        seen.append(x_in[:, 0].detach().clone())  # each window's first point identifies it
        return original(self, x_in, *args, **kw)

    monkeypatch.setattr(ReconstructionModel, "training_step", record)
    train = normal_series(1500, seed=1)
    epochs: list[list[torch.Tensor]] = []

    def fit(epoch_windows: int | None) -> Detector:
        cfg = tiny(
            "ae",
            training={
                "max_epochs": 3,
                "patience": 100,
                "batch_size": 64,
                "epoch_windows": epoch_windows,
            },
        )
        epochs.clear()

        def cut(_: TrainingProgress) -> None:
            epochs.append(seen.copy())
            seen.clear()

        return create_detector(DetectorConfig.model_validate(cfg)).fit(train, progress=cut)

    first = fit(200)
    assert [[len(b) for b in e] for e in epochs] == [[64, 64, 64, 8]] * 3
    drawn = [torch.cat(e) for e in epochs]
    assert all(len(torch.unique(d, dim=0)) == 200 for d in drawn)  # no repeats in an epoch
    assert not torch.equal(drawn[0], drawn[1])  # a new draw every epoch
    again = fit(200)
    assert torch.cat(epochs[0]).equal(drawn[0])  # seeded
    assert [h["val"] for h in again.history_] == [h["val"] for h in first.history_]
    fit(None)
    every = 1200 - 24 + 1  # the windows of the training head (80% of 1500 points)
    assert [sum(len(b) for b in e) for e in epochs] == [every] * 3


def test_an_epoch_holds_every_window_labelled_anomalous() -> None:
    from detector.training import _epoch_draw

    labels = torch.zeros(5000, dtype=torch.int64)
    labels[[7, 900, 4999]] = 1  # rare: a random draw of 100 would miss them
    labels[:1000] = torch.where(labels[:1000] == 1, 1, -1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(5000, generator=generator)
        drawn = _epoch_draw(order, labels, 100, generator)
        assert len(drawn) == 100 and len(torch.unique(drawn)) == 100
        assert {7, 900, 4999} <= set(drawn.tolist())
    many = torch.ones(5000, dtype=torch.int64)  # more anomalous windows than an epoch
    assert len(_epoch_draw(torch.randperm(5000, generator=generator), many, 100, generator)) == (
        5000
    )
    assert torch.equal(_epoch_draw(order, None, 100, generator), order[:100])


def test_wall_time_cap(tiny: Any) -> None:
    cfg = tiny("ae", training={"max_epochs": 10_000, "patience": 10_000, "max_seconds": 1.0})
    det = create_detector(DetectorConfig.model_validate(cfg)).fit(normal_series(3000, seed=1))
    assert det.history_[-1]["seconds"] < 5.0
    assert len(det.history_) < 10_000


def test_early_stopping_restores_best_epoch(tiny: Any) -> None:
    cfg = tiny("ae", training={"max_epochs": 200, "patience": 2})
    det = create_detector(DetectorConfig.model_validate(cfg)).fit(normal_series(2000, seed=1))
    vals = [h["val"] for h in det.history_]
    assert len(vals) < 200
    assert det.validation_score_ == pytest.approx(min(vals))


def test_cuda_request_without_gpu_is_a_config_error(tiny: Any) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU-only error cannot happen")
    cfg = tiny("ae", training={"device": "cuda"})
    with pytest.raises(errors.ConfigError, match="CUDA"):
        create_detector(DetectorConfig.model_validate(cfg)).fit(normal_series(1500, seed=1))


def test_auto_window_is_the_longest_the_rules_allow(tiny: Any) -> None:
    t = np.arange(4000)
    assert dominant_period(np.sin(2 * np.pi * t / 50)[:, None]) == 50
    noise = np.random.default_rng(0).standard_normal((4000, 1))
    assert resolve_window("auto", noise) == 256  # univariate: 256 points
    # what short data can hold: both 80% for training and 20% for validation
    assert resolve_window("auto", noise[:605], 0.2) == validation_cap(605, 0.2) == 120
    assert resolve_window("auto", noise[:605], 0.5) == 256  # 301 fit in each half: 256 binds
    assert resolve_window("auto", noise[:10], 0.2) == 4  # never below 4 points
    assert resolve_window("auto", np.zeros((10, 64))) == 32  # at most 2,048 values per window
    assert resolve_window("auto", np.zeros((10, 500))) == 16  # but never below 16 points
    assert resolve_window(40, noise) == 40
    # the metrics' window still follows the period
    assert period_window(np.sin(2 * np.pi * t / 50)[:, None]) == 50
    assert period_window(noise) == 64
    assert period_window(np.tile(np.sin(2 * np.pi * t / 50)[:, None], (1, 64))) == 32
    series = normal_series(1000, seed=1)
    det = create_detector(
        DetectorConfig.model_validate(tiny("ae", window="auto", training={"max_epochs": 2}))
    ).fit(series)
    assert det.window_ == validation_cap(1000, 0.2) == 199  # capped by the validation split
    # a baseline on the same data, with the same split, gets the same window: like for like
    assert create_baseline("knn", "auto").fit(series).window_ == det.window_


def test_interrupted_save_never_loads(ae: Detector, tmp_path: Path) -> None:
    ae.save(tmp_path / "m")
    state = json.loads((tmp_path / "m" / "state.json").read_text())
    # a weights file that does not match the recorded checksum (a torn write) is refused
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(errors.PersistenceError, match="checksum"):
        load_detector(tmp_path / "m")
    # a directory without its state file (written last) is refused
    ae.save(tmp_path / "n")
    (tmp_path / "n" / "state.json").unlink()
    with pytest.raises(errors.PersistenceError, match=r"state\.json"):
        load_detector(tmp_path / "n")
    with pytest.raises(errors.PersistenceError):
        load_detector(tmp_path / "missing")
    assert state["format_version"] == 2 and "torch" in state["versions"]


def test_save_failure_leaves_the_old_model(ae: Detector, tmp_path: Path, monkeypatch: Any) -> None:
    ae.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("detector.persistence.save_file", boom)
    with pytest.raises(errors.PersistenceError, match="disk full"):
        ae.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind
    load_detector(tmp_path / "m")


def test_no_pickle_in_saved_files(ae: Detector, tmp_path: Path) -> None:
    ae.save(tmp_path / "m")
    for path in (tmp_path / "m").iterdir():
        assert b"\x80\x04\x95" not in path.read_bytes()[:64]  # pickle protocol 4 header


def test_reduction_max_and_smoothing(tiny: Any) -> None:
    train = normal_series(2000, seed=1)
    test, labels, _ = with_anomalies(normal_series(1500, seed=2, start=2000), seed=3)
    cfg = tiny("ae", score_reduction="max", smoothing=5, training={"max_epochs": 10})
    det = create_detector(DetectorConfig.model_validate(cfg)).fit(train)
    scores = det.anomaly_score(test)
    np.testing.assert_allclose(det.explain(test).sum(axis=1), scores)
    assert scores[labels == 1].mean() > 3 * scores[labels == 0].median()


def test_recalibration_with_labels_and_holdout_error(ae: Detector, tiny: Any) -> None:
    from detector import CalibrationConfig

    test, labels, _ = with_anomalies(normal_series(1500, seed=2, start=3000), seed=3)
    det = create_detector(DetectorConfig.model_validate(tiny("ae")))
    det.__dict__.update(ae.__dict__)  # the same fitted state, recalibrated below
    det.calibrate(test, labels, CalibrationConfig(method="best_f1"))
    assert det.calibration_["method"] == "best_f1"
    flags = det.predict(test).to_numpy()
    from sklearn.metrics import f1_score

    assert f1_score(labels, flags) > 0.5
    with pytest.raises(errors.LabelsError, match="labels"):
        det.calibrate(test, None, CalibrationConfig(method="best_f1"))
    with pytest.raises(errors.ConfigError, match="best_f1"):
        create_detector(
            DetectorConfig.model_validate(tiny("ae", calibration={"method": "best_f1"}))
        ).fit(normal_series(1500, seed=1))
    normal = normal_series(600, seed=9, start=3000)
    assert ae.holdout_error(normal) < ae.holdout_error(test)
    # a barely trained model fits the same held-out data worse: versions can be compared
    weak = create_detector(
        DetectorConfig.model_validate(tiny("ae", training={"max_epochs": 1, "seed": 3}))
    ).fit(normal_series(600, seed=1))
    assert weak.holdout_error(normal) > 1.5 * ae.holdout_error(normal)


def test_window_weight_auto_follows_continuous_features_and_is_saved(
    tiny: Any, tmp_path: Path
) -> None:
    train = normal_series(1500, seed=1)
    train["flag"] = (np.arange(len(train)) % 200 == 0).astype(float)  # binary: not continuous
    det = create_detector(DetectorConfig.model_validate(tiny("ae"))).fit(train)
    assert det.window_weight_ == pytest.approx(1 / 3)  # f0, f1, f2
    det.save(tmp_path / "m")
    assert load_detector(tmp_path / "m").window_weight_ == pytest.approx(1 / 3)
    uni = create_detector(DetectorConfig.model_validate(tiny("ae"))).fit(train["f0"])
    assert uni.window_weight_ == 1.0
    with pytest.raises(ValueError, match="window_weight"):
        DetectorConfig(window_weight=1.5)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_window_weight_spreads_a_windows_error_over_its_points(tiny: Any, weight: float) -> None:
    train = normal_series(1500, seed=1)
    det = create_detector(
        DetectorConfig.model_validate(tiny("ae", window_weight=weight, training={"max_epochs": 3}))
    ).fit(train)
    windows = normal_series(24 * 4, seed=5).to_numpy().copy().reshape(4, 24, 3)
    windows[0, 10, 0] += 5.0  # one bad cell
    result = det.score_windows(windows)
    first = result.contributions[0, :, 0]  # feature f0 along the first window
    if weight == 1.0:  # every point carries the window's mean error
        np.testing.assert_allclose(first, first[0], rtol=1e-5)
    else:  # the bad cell stands out from its neighbours
        assert first[10] > 10 * np.median(first)
    # either way the window with the bad cell scores above the clean ones
    assert result.scores[0].mean() > result.scores[1:].mean(axis=1).max()


def test_error_floor_bounds_the_weight_of_features_that_never_vary(tiny: Any) -> None:
    train = normal_series(1500, seed=1)
    train["const"] = 0.0  # predicted perfectly on normal data
    test = normal_series(300, seed=2, start=1500)
    test["const"] = 0.0
    test.loc[test.index[150:160], "const"] = 1.0
    shares, scales = {}, {}
    for floor in (1e-3, 1.0):
        cfg = tiny("ae", error_floor=floor, two_valued_weight=1.0, training={"max_epochs": 10})
        det = create_detector(DetectorConfig.model_validate(cfg)).fit(train)
        shares[floor] = float(det.explain(test)["const"].iloc[150:160].mean())
        scales[floor] = det.error_scale_
    # the same network (the floor does not touch training): floor 1 lifts the constant's scale
    # from its own held-out error to the mean error over features, and its share falls with it
    assert scales[1e-3][-1] < scales[1e-3].mean() / 5  # predicted far better than the rest
    assert scales[1.0][-1] == pytest.approx(scales[1e-3].mean(), rel=1e-3)
    assert shares[1e-3] / shares[1.0] == pytest.approx(scales[1.0][-1] / scales[1e-3][-1])
    assert shares[1.0] < shares[1e-3] / 5
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="error_floor"):
            DetectorConfig(error_floor=bad)


def test_two_valued_features_are_context_not_score_by_default(tiny: Any, tmp_path: Path) -> None:
    train = normal_series(1500, seed=1)
    train["flag"] = (np.arange(len(train)) % 300 == 0).astype(float)  # a rarely flipping flag
    test = normal_series(300, seed=2, start=1500)
    test["flag"] = 0.0
    test.loc[test.index[100:110], "flag"] = 1.0  # a normal run of the flag
    test.loc[test.index[200:205], "f0"] += 4.0  # an anomaly in a measurement
    flag_run, anomaly = slice(100, 110), slice(200, 205)
    dets = {
        w: create_detector(
            DetectorConfig.model_validate(
                tiny("ae", two_valued_weight=w, training={"max_epochs": 3})
            )
        ).fit(train)
        for w in (0.0, 1.0)
    }
    default = dets[0.0]
    np.testing.assert_array_equal(default.feature_weight_, [1.0, 1.0, 1.0, 0.0])
    contrib, scores = default.explain(test), default.anomaly_score(test)
    np.testing.assert_allclose(contrib.sum(axis=1), scores, rtol=1e-9)
    assert (contrib["flag"] == 0).all()
    assert scores.iloc[anomaly].max() > scores.iloc[flag_run].max()
    windows = test.to_numpy()[None, 90:114]  # one window over the flag run
    assert (default.score_windows(windows).contributions[..., 3] == 0).all()
    # counted in full, the flag flip dominates the score of normal points
    full = dets[1.0].explain(test)
    assert (
        full["flag"].iloc[flag_run].mean()
        > full.drop(columns="flag").iloc[flag_run].sum(axis=1).mean()
    )
    assert dets[1.0].anomaly_score(test).iloc[flag_run].max() > scores.iloc[flag_run].max()
    default.save(tmp_path / "m")
    np.testing.assert_array_equal(load_detector(tmp_path / "m").feature_weight_, [1, 1, 1, 0])
    # with no continuous feature every feature counts
    only_flags = create_detector(DetectorConfig.model_validate(tiny("ae"))).fit(train[["flag"]])
    np.testing.assert_array_equal(only_flags.feature_weight_, [1.0])
    assert only_flags.anomaly_score(test[["flag"]]).notna().all()
    with pytest.raises(ValueError, match="two_valued_weight"):
        DetectorConfig(two_valued_weight=2.0)


def test_a_flag_leaving_its_training_values_counts_in_full(tiny: Any, tmp_path: Path) -> None:
    """Flips between known values stay damped; a value never seen in training is evidence."""
    train = normal_series(1500, seed=1)
    train["flag"] = (np.arange(len(train)) % 300 == 0).astype(float)  # flips now and then
    train["stuck"] = 1.0  # never moves in training
    test = normal_series(300, seed=2, start=1500)
    test["flag"] = 0.0
    test["stuck"] = 1.0
    test.loc[test.index[100:110], "flag"] = 1.0  # a normal run of the flag: a known value
    test.loc[test.index[200:210], "stuck"] = 0.0  # the stuck feature moves: a new value
    test.loc[test.index[250:255], "flag"] = 2.0  # the flag takes a third value
    dets = {
        w: create_detector(
            DetectorConfig.model_validate(
                tiny("ae", new_value_weight=w, training={"max_epochs": 3})
            )
        ).fit(train)
        for w in (0.0, 1.0)
    }
    counted, hidden = dets[1.0], dets[0.0]
    scores, contrib = counted.anomaly_score(test), counted.explain(test)
    np.testing.assert_allclose(contrib.sum(axis=1), scores, rtol=1e-9)
    assert (contrib["flag"].iloc[100:110] == 0).all()  # known values: damped as before
    quiet = scores.drop(test.index[190:265]).quantile(0.99)
    assert scores.iloc[200:210].min() > quiet  # the move of a stuck feature is flagged
    assert scores.iloc[250:255].min() > quiet
    assert (hidden.explain(test)[["flag", "stuck"]] == 0).all().all()  # weight 0: hidden
    windows = test.to_numpy()[None, 195:219]
    assert (counted.score_windows(windows).contributions[0, 5:15, 4] > 0).all()
    counted.save(tmp_path / "m")
    np.testing.assert_allclose(load_detector(tmp_path / "m").anomaly_score(test), scores)
    with pytest.raises(ValueError, match="new_value_weight"):
        DetectorConfig(new_value_weight=1.5)


def test_holdout_is_the_fit_split_per_segment(tiny: Any) -> None:
    # two series of different lengths in one frame: each holds out its own last 20%
    a, b = normal_series(1500, seed=1), normal_series(1000, seed=2)
    train = pd.concat([a.assign(host="a"), b.assign(host="b")])
    det = create_detector(
        DetectorConfig.model_validate(tiny("ae", key_column="host", training={"max_epochs": 1}))
    ).fit(train)
    held = det.holdout(train)
    assert held.groupby("host").size().to_dict() == {"a": 300, "b": 200}
    assert held[held["host"] == "a"].index.equals(a.index[-300:])
    assert held[held["host"] == "b"].index.equals(b.index[-200:])
    # the old whole-frame tail would have been series b only
    tail = train.iloc[len(train) - round(len(train) * 0.2) :]
    assert set(tail["host"]) == {"b"}


@pytest.mark.parametrize(("first", "count"), [(0, 1), (0, 185), (37, 64), (184, 1)])
def test_a_window_block_is_the_gathered_windows(first: int, count: int) -> None:
    values = torch.randn(200, 3)
    starts = torch.arange(first, first + count)
    block = window_block(values, first, count, 16)
    assert block.is_contiguous() and block.shape == (count, 16, 3)
    assert torch.equal(block, gather_windows(values, starts, 16))
