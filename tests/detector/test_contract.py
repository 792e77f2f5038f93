"""One contract suite over every registered model kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from synthetic import ANOMALY_TYPES, normal_series, tiny_config, with_anomalies

from detector import KINDS, DetectorConfig, create_detector, errors, load_detector
from detector.detector import Detector
from detector.models import REGISTRY


def fit(kind: str, train: pd.DataFrame, tiny: Any, **overrides: Any) -> Detector:
    return create_detector(DetectorConfig.model_validate(tiny(kind, **overrides))).fit(train)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    train = normal_series(3000, seed=1)
    test, labels, spans = with_anomalies(normal_series(1500, seed=2, start=3000), seed=3)
    return {"train": train, "test": test, "labels": labels, "spans": spans}


@pytest.fixture(scope="module")
def fitted(data: dict[str, Any]) -> dict[str, Detector]:
    return {kind: fit(kind, data["train"], tiny_config) for kind in KINDS}


def test_every_kind_is_registered() -> None:
    assert set(REGISTRY) == set(KINDS) == {"ae", "vae", "aae", "cvae", "ssaae"}


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_index_alignment(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test = fitted[kind], data["test"]
    scores = det.anomaly_score(test)
    assert isinstance(scores, pd.Series)
    assert scores.index.equals(test.index)
    assert np.isfinite(scores.to_numpy()).all()
    assert (scores >= 0).all()
    flags = det.predict(test)
    assert flags.dtype == bool and flags.index.equals(test.index)
    assert ((scores > det.threshold_) == flags).all()
    contributions = det.explain(test)
    assert list(contributions.columns) == ["f0", "f1", "f2"]
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=1e-9)
    rec = det.reconstruct(test)
    for part in (rec.expected, rec.lower, rec.upper):
        assert part.shape == test.shape and part.index.equals(test.index)
    assert (rec.lower.to_numpy() < rec.upper.to_numpy()).all()
    # expected values track normal data
    normal = data["labels"].to_numpy() == 0
    err = np.abs(rec.expected.to_numpy() - test.to_numpy())[normal].mean()
    assert err < 0.25
    assert det.feature_names_in_ == ["f0", "f1", "f2"] and det.n_features_in_ == 3
    assert det.calibration_["method"] == "pot" and det.calibration_["threshold"] == det.threshold_
    assert det.history_ and {"epoch", "train", "val"} <= set(det.history_[0])


@pytest.mark.parametrize("kind", KINDS)
def test_quality_floor_on_injected_anomalies(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    scores = fitted[kind].anomaly_score(data["test"]).to_numpy()
    labels = data["labels"].to_numpy()
    ratio = labels.mean()
    rng = np.random.default_rng(0)
    random_ap = average_precision_score(labels, rng.random(len(labels)))
    ap = average_precision_score(labels, scores)
    # the floor: far above the anomaly ratio, which is what a random scorer gets
    floor = 0.5
    assert random_ap < floor
    assert ap > floor, f"{kind}: AUC-PR {ap:.3f} (anomaly ratio {ratio:.3f})"
    # every anomaly type on its own is ranked above normal points
    for name in ANOMALY_TYPES:
        lo, hi = data["spans"][name]
        keep = labels == 0
        keep[lo:hi] = True
        auc = roc_auc_score(labels[keep], scores[keep])
        assert auc > 0.9, f"{kind}: {name} AUC-ROC {auc:.3f}"
    # the calibrated threshold flags anomalies and few normal points; a window that holds an
    # anomaly reconstructs its neighbours less well too, so "normal" means a window away
    det = fitted[kind]
    flags = scores > det.threshold_
    anomalous = np.nonzero(labels)[0]
    distance = np.abs(np.arange(len(labels))[:, None] - anomalous[None, :]).min(axis=1)
    assert flags[labels == 1].mean() > 0.3
    assert flags[distance > det.window_].mean() < 0.02


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_scores(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any], tmp_path: Any
) -> None:
    det = fitted[kind]
    det.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
        "state.json",
    ]
    loaded = load_detector(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.anomaly_score(data["test"]).to_numpy(), det.anomaly_score(data["test"]).to_numpy()
    )
    assert loaded.threshold_ == det.threshold_
    assert not loaded.network_.training and not det.network_.training  # scoring needs eval mode
    assert loaded.config == det.config
    # saving again over an existing model replaces it atomically
    det.save(tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("kind", KINDS)
def test_determinism_under_seed(kind: str, data: dict[str, Any], tiny: Any) -> None:
    train = data["train"].iloc[:1200]
    a = fit(kind, train, tiny, training={"max_epochs": 3})
    b = fit(kind, train, tiny, training={"max_epochs": 3})
    c = fit(kind, train, tiny, training={"max_epochs": 3, "seed": 7})
    test = data["test"].iloc[:300]
    np.testing.assert_array_equal(
        a.anomaly_score(test).to_numpy(), b.anomaly_score(test).to_numpy()
    )
    assert not np.array_equal(a.anomaly_score(test).to_numpy(), c.anomaly_score(test).to_numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_denoising_is_a_training_option_of_every_kind(
    kind: str, data: dict[str, Any], tiny: Any
) -> None:
    train = data["train"].iloc[:1200]
    plain = fit(kind, train, tiny, training={"max_epochs": 2})
    noisy = fit(
        kind, train, tiny, training={"max_epochs": 2, "noise_std": 0.3, "mask_probability": 0.1}
    )
    assert plain.history_[0]["train"] < noisy.history_[0]["train"]  # corrupted inputs are harder
    assert np.isfinite(noisy.anomaly_score(data["test"].iloc[:200])).all()


@pytest.mark.parametrize("kind", KINDS)
def test_score_windows_matches_shapes(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det = fitted[kind]
    x = data["test"].to_numpy()[: det.window_ * 3].reshape(3, det.window_, 3)
    if kind == "cvae":
        with pytest.raises(errors.InputError, match="timestamps"):
            det.score_windows(x)
        return
    res = det.score_windows(x, reconstruct=True)
    assert res.scores.shape == (3, det.window_)
    assert res.contributions.shape == (3, det.window_, 3)
    assert res.expected is not None and res.expected.shape == (3, det.window_, 3)
    with pytest.raises(errors.InputError, match="shape"):
        det.score_windows(x[:, :-1])
    with pytest.raises(errors.NonFiniteError):
        det.score_windows(np.full_like(x, np.inf))


# ---------------------------------------------------------------- error cases, every kind
@pytest.mark.parametrize("kind", KINDS)
def test_errors(kind: str, fitted: dict[str, Detector], data: dict[str, Any], tiny: Any) -> None:
    det, train, test = fitted[kind], data["train"], data["test"]
    unfitted = create_detector(DetectorConfig.model_validate(tiny(kind)))
    with pytest.raises(errors.NotFittedError, match="fit"):
        unfitted.anomaly_score(test)
    with pytest.raises(errors.TooShortError, match="points"):
        unfitted.fit(train.iloc[:30])
    with pytest.raises(errors.TooShortError, match="window"):
        det.anomaly_score(test.iloc[:10])
    with pytest.raises(errors.ColumnsError, match="f2"):
        det.anomaly_score(test.drop(columns="f2"))
    with pytest.raises(errors.ColumnsError, match="unexpected"):
        det.anomaly_score(test.assign(extra=1.0))
    with pytest.raises(errors.NonNumericError, match="f1"):
        det.anomaly_score(test.assign(f1="x"))
    with pytest.raises(errors.NonFiniteError, match="infinite"):
        det.anomaly_score(test.assign(f0=np.where(np.arange(len(test)) == 5, np.inf, test["f0"])))
    with pytest.raises(errors.MissingValuesError, match="f1"):
        unfitted.fit(train.assign(f1=np.nan))
    with pytest.raises(errors.InputError, match="DataFrame"):
        det.anomaly_score(test.to_numpy())
    ordered = create_detector(DetectorConfig.model_validate(tiny(kind, timestamp_order="error")))
    with pytest.raises(errors.InputError, match="increasing"):  # sorted unless told not to
        ordered.fit(train.iloc[::-1])
    with pytest.raises(errors.InputError, match="index"):
        det.anomaly_score(test.reset_index(drop=True))
    strict = create_detector(DetectorConfig.model_validate(tiny(kind, missing="error")))
    with pytest.raises(errors.MissingValuesError, match="missing='interpolate'"):
        strict.fit(train.assign(f0=np.where(np.arange(len(train)) == 5, np.nan, train["f0"])))


def test_every_error_is_a_reconad_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ReconADError)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="kind"):
        DetectorConfig.model_validate({"kind": "gan"})
    with pytest.raises(ValueError, match="window"):
        DetectorConfig(window=1)
    with pytest.raises(ValueError, match="key_column"):
        DetectorConfig.model_validate({"kind": "cvae", "condition_on": ["key"]})
    with pytest.raises(ValueError, match="extra"):
        DetectorConfig.model_validate({"kind": "ae", "windw": 3})
