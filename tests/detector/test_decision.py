"""The decision layer: the one flag rule, static and online thresholds, their state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector import CalibrationConfig, Conformal, DSpot, StaticThreshold, errors
from detector.decision import flags, normalize, threshold_from_state


def test_the_flag_rule_and_normalisation() -> None:
    scores = np.array([0.5, 1.0, 1.5, np.nan])
    np.testing.assert_array_equal(flags(scores, 1.0), [False, False, True, False])
    np.testing.assert_allclose(normalize(scores, 2.0), [0.25, 0.5, 0.75, np.nan])
    np.testing.assert_array_equal(normalize(np.array([0.0, 1.0]), 0.0), [0.0, np.inf])
    # one threshold per point (online thresholds)
    np.testing.assert_array_equal(flags(scores, [0.1, 2.0, 1.0, 0.0]), [True, False, True, False])
    assert ((normalize(scores[:3], 1.2) > 1) == flags(scores[:3], 1.2)).all()


def test_static_threshold_wraps_calibration_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    held_out = rng.exponential(size=5000)
    for method in ("quantile", "mad", "pot"):
        th = StaticThreshold.fit(held_out, CalibrationConfig(method=method))
        assert 0.0 < th.flags(rng.exponential(size=20_000)).mean() < 0.05
        again = threshold_from_state(json.loads(json.dumps(th.state_dict())))
        assert isinstance(again, StaticThreshold)
        assert again.threshold == th.threshold and again.calibration == th.calibration
        th.update(1e9)  # a static threshold never moves
        assert th.threshold == again.threshold
    scaled = StaticThreshold(th.calibration, scale=2.0)
    assert scaled.threshold == pytest.approx(2 * th.threshold)


def drifting(n: int, seed: int) -> np.ndarray:
    """Exponential scores whose level rises from 1 to 4 over the stream."""
    rng = np.random.default_rng(seed)
    return np.linspace(1.0, 4.0, n) * rng.exponential(size=n)


def test_dspot_follows_drift_a_static_threshold_does_not() -> None:
    rng = np.random.default_rng(1)
    held_out = rng.exponential(size=3000)
    stream = drifting(20_000, seed=2) + np.linspace(0, 6, 20_000)  # level and spread rise
    static = StaticThreshold.fit(held_out, CalibrationConfig(method="pot", risk=1e-2))
    dspot = DSpot(risk=1e-2, depth=200, log=True).fit(held_out)
    online = np.array([dspot.step(float(s))[1] for s in stream])
    assert static.flags(stream).mean() > 0.5  # the static threshold flags most of the drift
    assert online.mean() < 0.05
    # and the online one still catches a clear spike late in the stream
    assert dspot.step(float(stream[-1000:].max() * 3))[1]
    # an additive drift of the level is followed on the scores themselves
    level = rng.exponential(size=10_000) + np.linspace(0, 6, 10_000)
    additive = DSpot(risk=1e-2, depth=200).fit(held_out)
    assert np.mean([additive.step(float(s))[1] for s in level]) < 0.05
    assert static.flags(level).mean() > 0.3


def test_dspot_alarms_and_unlearned_points_do_not_move_it() -> None:
    dspot = DSpot(risk=1e-2, depth=50).fit(np.random.default_rng(3).exponential(size=1000))
    before = dspot.state_dict()
    thr, flagged = dspot.step(1e6)  # an alarm
    assert flagged and thr < 1e6 and dspot.state_dict() == before
    dspot.update(0.5, learn=False)  # a point inside an event
    assert dspot.state_dict() == before
    dspot.update(0.5)
    assert dspot.state_dict() != before


def test_dspot_state_round_trip_gives_the_same_decisions() -> None:
    held_out = np.random.default_rng(4).exponential(size=2000)
    stream = drifting(6000, seed=5)
    one = DSpot(risk=1e-3, depth=100, max_peaks=100, log=True).fit(held_out)
    first = [one.step(float(s)) for s in stream[:3000]]
    two = threshold_from_state(json.loads(json.dumps(one.state_dict(), allow_nan=False)))
    rest_one = [one.step(float(s)) for s in stream[3000:]]
    rest_two = [two.step(float(s)) for s in stream[3000:]]
    assert rest_one == rest_two and len(first) == 3000
    assert len(one.state_dict()["peaks"]) <= 100  # bounded state


def test_dspot_floor_stops_the_level_ratchet_on_cyclic_scores() -> None:
    """Smooth scores with a cycle longer than the depth: the level follows the low phase, the
    high phase is flagged and never learnt; the floor (the held-out POT threshold) keeps the
    threshold where normal held-out scores do not reach."""
    rng = np.random.default_rng(12)

    def cyclic(n: int, start: int) -> np.ndarray:
        t = np.arange(start, start + n)
        return 1 + 0.5 * np.sin(2 * np.pi * t / 300) + 0.01 * rng.standard_normal(n)

    held_out, stream = cyclic(600, 0), cyclic(6000, 600)
    pot = StaticThreshold.fit(held_out, CalibrationConfig()).threshold
    free = DSpot(depth=100).fit(held_out)
    floored = DSpot(depth=100, floor=pot).fit(held_out)
    assert np.mean([free.step(float(s))[1] for s in stream]) > 0.1
    assert np.mean([floored.step(float(s))[1] for s in stream]) < 0.01
    assert floored.threshold >= pot and floored.step(3 * pot)[1]  # a spike still flags
    again = threshold_from_state(json.loads(json.dumps(floored.state_dict(), allow_nan=False)))
    assert isinstance(again, DSpot) and again.floor == pot
    assert again.threshold == floored.threshold
    assert floored.threshold == pot  # the floor is the threshold here
    before = floored.state_dict()
    floored.rescale(1.0)  # a refit that keeps the threshold changes nothing
    assert floored.state_dict() == before
    floored.rescale(2.0)  # labels re-fit: the floor moves with the threshold
    assert floored.floor == pytest.approx(2 * pot)
    assert floored.threshold == pytest.approx(2 * again.threshold)


def test_conformal_holds_its_target_rate_under_drift() -> None:
    rng = np.random.default_rng(6)
    held_out = rng.exponential(size=2000)
    stream = drifting(20_000, seed=7) + np.linspace(0, 6, 20_000)  # level and spread rise
    static = StaticThreshold.fit(held_out, CalibrationConfig(method="pot", risk=1e-2))
    conformal = Conformal(target=0.01).fit(held_out)
    online = np.array([conformal.step(float(s))[1] for s in stream])
    assert static.flags(stream).mean() > 0.5
    assert 0.005 < online.mean() < 0.015
    assert online[10_000:].mean() < 0.02  # not only on average: the second half too
    # a clear spike late in the stream is still flagged
    assert conformal.step(float(stream[-1000:].max() * 3))[1]
    # a larger target flags more
    loose = Conformal(target=0.05).fit(held_out)
    assert np.mean([loose.step(float(s))[1] for s in stream]) > 2 * online.mean()


def test_conformal_learns_from_learnt_points_only() -> None:
    conformal = Conformal(target=0.01, size=500).fit(np.random.default_rng(8).exponential(size=800))
    assert len(conformal.state_dict()["window"]) == 500  # the last `size` held-out scores
    before = conformal.state_dict()
    conformal.update(0.5, learn=False)  # inside an event: nothing changes
    _, flagged = conformal.step(1e6, learn=False)
    assert flagged and conformal.state_dict() == before
    conformal.step(1e6)  # a learnt alarm: alpha falls (the bar rises), the score stays out
    after = conformal.state_dict()
    assert after["alpha"] < before["alpha"] and after["window"] == before["window"]
    conformal.step(0.1)  # a learnt normal point joins the reference, alpha rises
    assert conformal.state_dict()["window"][-1] == 0.1
    assert conformal.state_dict()["alpha"] > after["alpha"]
    # a threshold that cannot be reached with n scores flags nothing; alpha >= 1 flags all
    conformal.alpha = 1e-4
    assert conformal.threshold == np.inf and not conformal.step(1e300)[1]
    conformal.alpha = 1.0
    assert conformal.step(0.0)[1]


def test_conformal_state_round_trip_gives_the_same_decisions() -> None:
    held_out = np.random.default_rng(9).exponential(size=1000)
    stream = drifting(6000, seed=10)
    one = Conformal(target=0.02, gamma=0.01, size=300, scale=1.5).fit(held_out)
    learn = np.random.default_rng(11).random(6000) > 0.1  # some points inside events
    for s, ok in zip(stream[:3000], learn[:3000], strict=True):
        one.step(float(s), learn=bool(ok))
    two = threshold_from_state(json.loads(json.dumps(one.state_dict(), allow_nan=False)))
    assert isinstance(two, Conformal)
    rest = list(zip(stream[3000:], learn[3000:], strict=True))
    assert [one.step(float(s), bool(ok)) for s, ok in rest] == [
        two.step(float(s), bool(ok)) for s, ok in rest
    ]
    assert len(one.state_dict()["window"]) == 300  # bounded state


def test_bad_threshold_input() -> None:
    with pytest.raises(errors.ConfigError, match="target"):
        Conformal(target=0.0)
    with pytest.raises(errors.ConfigError, match="size"):
        Conformal(size=5)
    with pytest.raises(errors.InputError):
        Conformal().fit(np.ones(3))
    with pytest.raises(errors.InputError, match="depth"):
        DSpot(depth=500).fit(np.ones(100))
    with pytest.raises(errors.ConfigError):
        DSpot(risk=2.0)
    with pytest.raises(errors.ConfigError, match="unknown threshold"):
        threshold_from_state({"method": "nope"})
    with pytest.raises(errors.ConfigError, match="malformed"):
        threshold_from_state({"method": "dspot"})
