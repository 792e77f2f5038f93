"""Tests of detector.thresholds: each calibration method, SPOT and the calibrate dispatcher."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from detector.config import CalibrationConfig
from detector.errors import ConfigError, InputError, LabelsError, NotFittedError
from detector.thresholds import (
    Calibration,
    Spot,
    _fit_gpd,
    best_f1_threshold,
    calibrate,
    mad_threshold,
    pot_threshold,
    quantile_threshold,
)


def _cfg(**fields: Any) -> CalibrationConfig:
    return CalibrationConfig.model_validate(fields)


# ----------------------------------------------------------------------------------------------
# quantile / MAD
# ----------------------------------------------------------------------------------------------


def test_quantile_threshold_hits_target_fpr_on_new_normal_data() -> None:
    rng = np.random.default_rng(0)
    held_out = rng.normal(size=20_000)
    thr = quantile_threshold(held_out, 0.01)
    assert np.mean(held_out > thr) == pytest.approx(0.01, abs=1 / 20_000)
    fresh = rng.normal(size=200_000)
    assert np.mean(fresh > thr) == pytest.approx(0.01, abs=0.002)


def test_mad_threshold_hand_computed() -> None:
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100], dtype=float)
    # median 6, absolute deviations 5 4 3 2 1 0 1 2 3 4 94 -> MAD 3
    assert mad_threshold(x, 2.0) == pytest.approx(6 + 2 * 1.4826 * 3)


def test_mad_threshold_on_constant_data_is_just_above() -> None:
    x = np.full(50, 3.0)
    thr = mad_threshold(x, 5.0)
    assert thr > 3.0
    assert thr - 3.0 < 1e-6
    assert not np.any(x > thr)


def test_mad_threshold_zero_mad_uses_mean_absolute_deviation() -> None:
    x = np.r_[np.ones(20), 5.0]  # MAD 0, mean absolute deviation 4 / 21
    thr = mad_threshold(x, 3.0)
    assert thr == pytest.approx(1.0 + 3.0 * math.sqrt(math.pi / 2) * 4 / 21)
    assert 1.0 < thr < 5.0


# ----------------------------------------------------------------------------------------------
# POT / SPOT
# ----------------------------------------------------------------------------------------------


def test_pot_threshold_on_exponential_matches_analytic_quantile() -> None:
    rng = np.random.default_rng(1)
    scale, risk = 2.0, 1e-4
    x = rng.exponential(scale, 100_000)
    thr, params = pot_threshold(x, risk, 0.98)
    assert thr == pytest.approx(-scale * math.log(risk), rel=0.07)
    assert set(params) == {"t", "gamma", "sigma", "n_peaks", "n"}
    assert params["n"] == 100_000 and params["n_peaks"] == pytest.approx(2_000, abs=2)
    assert abs(params["gamma"]) < 0.1
    assert params["sigma"] == pytest.approx(scale, rel=0.1)
    assert thr >= params["t"]


@pytest.mark.parametrize("shape", [0.3, -0.3])
def test_pot_fit_recovers_gpd_shape_at_least_as_well_as_scipy(shape: float) -> None:
    # scores whose excesses over the 0.9 quantile follow a GPD exactly
    rng = np.random.default_rng(2)
    body = rng.random(18_000)
    tail = 1.0 + stats.genpareto.rvs(shape, scale=1.5, size=2_000, random_state=rng)
    x = np.r_[body, tail]
    _, params = pot_threshold(x, 1e-3, 0.9)
    assert params["gamma"] == pytest.approx(shape, abs=0.07)
    excess = x[x > params["t"]] - params["t"]
    ours = stats.genpareto.logpdf(excess, params["gamma"], scale=params["sigma"]).sum()
    c, _, s = stats.genpareto.fit(excess, floc=0)
    assert ours >= stats.genpareto.logpdf(excess, c, scale=s).sum() - 1e-6


@pytest.mark.parametrize("n_peaks", [12, 40, 300])
@pytest.mark.parametrize("shape", [0.4, 0.0, -0.4])
def test_gpd_fit_of_few_peaks_is_the_maximum_likelihood(n_peaks: int, shape: float) -> None:
    # the sizes a live DSPOT refits on: its likelihood is at least scipy's optimum, and no
    # nearby shape does better (the refining grid found the peak, not a grid point near it)
    rng = np.random.default_rng(n_peaks)
    excess = stats.genpareto.rvs(shape, scale=1.0, size=n_peaks, random_state=rng) + 1e-9
    gamma, sigma = _fit_gpd(excess)

    def loglik(g: float, s: float) -> float:
        return float(stats.genpareto.logpdf(excess, g, scale=s).sum())

    ours = loglik(gamma, sigma)
    c, _, s = stats.genpareto.fit(excess, floc=0)
    assert ours >= loglik(c, s) - 1e-6
    for dg in (-1e-3, 1e-3):  # the profile's optimum: sigma re-solved at a nudged shape
        assert ours >= loglik(gamma + dg, sigma) - 1e-9
    assert ours >= loglik(gamma, sigma * 1.001) - 1e-9 and ours >= loglik(gamma, sigma / 1.001)


def test_pot_falls_back_with_few_or_no_peaks() -> None:
    thr, params = pot_threshold(np.full(40, 2.0), 1e-3, 0.98)
    assert params["n_peaks"] == 0 and thr == params["t"] == 2.0
    x = np.arange(20.0)  # one peak above the 0.98 quantile: exponential tail
    thr, params = pot_threshold(x, 1e-3, 0.98)
    assert params["n_peaks"] == 1 and params["gamma"] == 0.0
    assert thr > params["t"]


def test_pot_threshold_never_below_t() -> None:
    x = np.random.default_rng(3).normal(size=1_000)
    thr, params = pot_threshold(x, 0.2, 0.98)  # risk above the tail fraction
    assert thr == params["t"]


def test_spot_alarms_on_spikes_not_on_normal_data() -> None:
    rng = np.random.default_rng(4)
    spot = Spot(risk=1e-3, init_level=0.98).fit(rng.normal(size=5_000))
    z0, peaks0 = spot.threshold, spot.params["n_peaks"]
    stream = rng.normal(size=3_000)
    spikes = rng.choice(3_000, 20, replace=False)
    stream[spikes] = 8.0
    alarms = np.array([spot.step(v) for v in stream])
    assert alarms[spikes].all()
    assert np.count_nonzero(alarms) - 20 <= 12
    assert spot.params["n_peaks"] > peaks0  # normal peaks joined the tail
    assert spot.params["n"] == 5_000 + 3_000 - np.count_nonzero(alarms)  # alarms left out
    assert spot.threshold == pytest.approx(z0, rel=0.2)


def test_spot_errors() -> None:
    with pytest.raises(NotFittedError):
        Spot().step(1.0)
    with pytest.raises(NotFittedError):
        _ = Spot().threshold
    with pytest.raises(ConfigError):
        Spot(risk=1.5)
    spot = Spot().fit(np.random.default_rng(5).normal(size=200))
    with pytest.raises(InputError):
        spot.step(math.nan)


# ----------------------------------------------------------------------------------------------
# best F1
# ----------------------------------------------------------------------------------------------


def test_best_f1_threshold_finds_planted_perfect_threshold() -> None:
    rng = np.random.default_rng(6)
    labels = np.r_[np.zeros(300, dtype=int), np.ones(30, dtype=int)]
    scores = np.r_[rng.random(300), 2.0 + rng.random(30)]
    perm = rng.permutation(scores.shape[0])
    thr, f1 = best_f1_threshold(scores[perm], labels[perm])
    assert f1 == 1.0
    assert np.array_equal(scores[perm] > thr, labels[perm] == 1)


def test_best_f1_threshold_errors() -> None:
    x = np.arange(20.0)
    with pytest.raises(LabelsError):
        best_f1_threshold(x, np.zeros(20))
    with pytest.raises(LabelsError):
        best_f1_threshold(x, np.zeros(19))


# ----------------------------------------------------------------------------------------------
# calibrate and Calibration
# ----------------------------------------------------------------------------------------------


def _held_out() -> npt.NDArray[np.float64]:
    return np.random.default_rng(7).gamma(2.0, 1.0, size=5_000)


@pytest.mark.parametrize("method", ["quantile", "mad", "pot"])
def test_calibrate_unsupervised_methods(method: str) -> None:
    x = _held_out()
    cal = calibrate(x, _cfg(method=method))
    assert cal.method == method
    assert math.isfinite(cal.threshold)
    assert np.median(x) < cal.threshold
    assert np.mean(x > cal.threshold) < 0.05


def test_calibrate_uses_config_parameters() -> None:
    x = _held_out()
    cfg = _cfg(method="quantile", fpr=0.02)
    assert calibrate(x, cfg).threshold == quantile_threshold(x, 0.02)
    cfg = _cfg(method="mad", k=4.0)
    assert calibrate(x, cfg).threshold == mad_threshold(x, 4.0)
    cfg = _cfg(method="pot", risk=1e-2, init_level=0.95)
    cal = calibrate(x, cfg)
    thr, params = pot_threshold(x, 1e-2, 0.95)
    assert cal.threshold == thr
    assert cal.params == {"risk": 1e-2, "init_level": 0.95, **params}


def test_calibrate_best_f1_with_and_without_labels() -> None:
    x = np.r_[np.linspace(0, 1, 100), [5.0, 6.0]]
    labels = np.r_[np.zeros(100), [1, 1]]
    cal = calibrate(x, _cfg(method="best_f1"), labels=labels)
    assert 1.0 < cal.threshold < 5.0 and cal.params["f1"] == 1.0
    with pytest.raises(LabelsError, match="labels"):
        calibrate(x, _cfg(method="best_f1"))
    with pytest.raises(LabelsError):
        calibrate(x, _cfg(method="best_f1"), labels=labels[:-1])


def test_calibrate_drops_nan_and_checks_counts() -> None:
    x = _held_out()
    with_nan = np.r_[x, [np.nan] * 10]
    cfg = _cfg(method="pot")
    assert calibrate(with_nan, cfg) == calibrate(x, cfg)
    with pytest.raises(InputError, match="more held-out data"):
        calibrate(np.r_[np.arange(9.0), [np.nan] * 50], cfg)
    with pytest.raises(InputError):
        calibrate(np.r_[x, np.inf], cfg)
    with pytest.raises(InputError):
        calibrate(np.r_[x, -np.inf], cfg)


def test_calibration_round_trips_through_json() -> None:
    cal = calibrate(_held_out(), _cfg(method="pot"))
    d = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(d) == cal
    assert d["method"] == "pot" and set(d) == {"method", "params", "threshold"}


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "pot", "params": {}},
        {"method": "pot", "params": {}, "threshold": "1.0"},
        {"method": "pot", "params": {"t": None}, "threshold": 1.0},
        {"method": "pot", "params": {}, "threshold": math.inf},
        {"method": 3, "params": {}, "threshold": 1.0},
        {"method": "pot", "params": {}, "threshold": 1.0, "extra": 1},
    ],
)
def test_calibration_from_dict_rejects_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Calibration.from_dict(bad)


def test_parameter_errors() -> None:
    x = _held_out()
    with pytest.raises(ConfigError):
        quantile_threshold(x, 0.0)
    with pytest.raises(ConfigError):
        mad_threshold(x, -1.0)
    with pytest.raises(ConfigError):
        pot_threshold(x, 1e-3, 1.0)
