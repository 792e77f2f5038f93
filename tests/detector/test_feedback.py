"""Feedback labels: the overlap rule, the threshold refit, training data, the normal memory,
promotion on labels and the monitor taking feedback (and keeping it in its state)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import normal_series, tiny_config, with_anomalies

from detector import DetectorConfig, Monitor, create_detector, errors
from detector.decision import DSpot, StaticThreshold
from detector.detector import Detector
from detector.feedback import (
    Label,
    LabelMasks,
    LastingRuns,
    NormalMemory,
    compare_on_labels,
    label_masks,
    labelled_metrics,
    refit_threshold,
    training_mask,
    window_labels,
)
from detector.thresholds import Calibration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(i: int) -> pd.Timestamp:
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=i)


INDEX = pd.date_range("2024-01-01", periods=20, freq="min", tz="UTC")


def test_newest_label_wins_and_unsure_hides_older_verdicts() -> None:
    labels = [
        Label(stamp(2), stamp(9), "anomaly", at(1)),
        Label(stamp(5), stamp(6), "normal", at(2)),  # newer: wins on 5..6
        Label(stamp(8), stamp(8), "unsure", at(3)),  # a point label, newest
        Label(stamp(0), stamp(3), "normal", at(0)),  # oldest: loses 2..3 to the anomaly
    ]
    m = label_masks(INDEX, labels)
    assert np.flatnonzero(m.anomaly).tolist() == [2, 3, 4, 7, 9]
    assert np.flatnonzero(m.normal).tolist() == [0, 1, 5, 6]
    assert np.flatnonzero(m.unsure).tolist() == [8]
    assert m.labelled.sum() == 10
    assert m.n_anomaly_events == 3  # runs 2-4, 7, 9
    assert m.point_labels()[[0, 2, 8, 15]].tolist() == [0, 1, -1, -1]
    # the order of the list does not matter, only `created` does
    assert np.array_equal(label_masks(INDEX, labels[::-1]).anomaly, m.anomaly)


def test_labels_of_another_series_are_skipped_and_integer_indexes_work() -> None:
    labels = [
        Label(3, 5, "anomaly", at(0), series="a"),
        Label(4, 4, "normal", at(1), series="b"),
        Label(10, 11, "anomaly", at(2)),  # every series
    ]
    index = pd.Index(np.arange(15))
    a = label_masks(index, labels, series="a")
    b = label_masks(index, labels, series="b")
    assert np.flatnonzero(a.anomaly).tolist() == [3, 4, 5, 10, 11]
    assert np.flatnonzero(b.anomaly).tolist() == [10, 11] and np.flatnonzero(b.normal) == [4]
    # naive timestamps are taken as UTC, on both sides
    naive = label_masks(INDEX.tz_localize(None), [Label(stamp(1), stamp(2), "anomaly", at(0))])
    assert np.flatnonzero(naive.anomaly).tolist() == [1, 2]


def test_a_bad_label_is_refused_with_a_message() -> None:
    with pytest.raises(errors.InputError, match="before its start"):
        Label(stamp(5), stamp(4), "anomaly", at(0))
    with pytest.raises(errors.InputError, match="verdict"):
        Label(stamp(1), stamp(1), "maybe", at(0))  # type: ignore[arg-type]


def masks_of(anomaly: np.ndarray, normal: np.ndarray) -> LabelMasks:
    return LabelMasks(anomaly, normal, np.zeros_like(anomaly))


def test_refit_picks_the_best_f1_threshold_within_bounds() -> None:
    rng = np.random.default_rng(0)
    n = 400
    scores = rng.uniform(0.2, 1.3, n)  # normal points, some above the current threshold 1
    anomaly = np.zeros(n, dtype=bool)
    for lo in (50, 200, 300):
        anomaly[lo : lo + 10] = True
        scores[lo : lo + 10] = rng.uniform(1.5, 2.5, 10)
    m = masks_of(anomaly, ~anomaly)
    refit = refit_threshold(scores, m, 1.0)
    assert refit is not None
    assert scores[~anomaly].max() <= refit.threshold < 1.5  # above every normal point
    assert refit.scale == pytest.approx(refit.threshold)
    assert refit.f1 == pytest.approx(1.0) and refit.f1_current < 0.9
    assert refit.n_anomaly_events == 3 and refit.n_normal_points == n - 30
    # the bounds stop one label from swinging it: the best cut (about 1.3) is out of reach
    clipped = refit_threshold(scores, m, 0.5, bounds=(0.5, 2.0))
    assert clipped is not None and 0.99 <= clipped.threshold <= 1.0
    assert clipped.scale == pytest.approx(2.0, rel=0.01)


def test_remembered_false_alarms_do_not_raise_the_threshold() -> None:
    rng = np.random.default_rng(1)
    n = 600
    scores = rng.uniform(0.1, 0.9, n)  # quiet normal points
    anomaly = np.zeros(n, dtype=bool)
    for lo in (100, 400):  # anomalies above the threshold
        anomaly[lo : lo + 10] = True
        scores[lo : lo + 10] = rng.uniform(1.1, 2.0, 10)
    false_alarms = np.zeros(n, dtype=bool)
    false_alarms[200:260] = True  # more false alarms labelled normal, in the same range
    scores[false_alarms] = rng.uniform(1.1, 1.6, 60)
    m = masks_of(anomaly, false_alarms)
    counted = refit_threshold(scores, m, 1.0)
    assert counted is not None and counted.scale > 1.5  # raised above the false alarms
    # the memory stops windows like those: left out, they raise nothing
    left_out = refit_threshold(scores, m, 1.0, remembered=false_alarms)
    assert left_out is not None and left_out.scale == pytest.approx(1.0)
    assert left_out.f1 == pytest.approx(1.0) and left_out.n_normal_points == n - 80
    # a labelled anomaly inside a remembered stretch still counts
    assert refit_threshold(scores, m, 1.0, remembered=false_alarms | anomaly) == left_out
    with pytest.raises(errors.InputError, match="remembered"):
        refit_threshold(scores, m, 1.0, remembered=false_alarms[:10])


def test_refit_needs_enough_labels() -> None:
    scores = np.linspace(0, 2, 100)
    anomaly = np.zeros(100, dtype=bool)
    anomaly[90:] = True  # one range only
    assert refit_threshold(scores, masks_of(anomaly, ~anomaly), 1.0) is None
    anomaly[70:75] = True
    assert refit_threshold(scores, masks_of(anomaly, ~anomaly), 1.0) is not None
    few_normal = np.zeros(100, dtype=bool)
    few_normal[:5] = True
    nothing_quiet = np.zeros(100, dtype=bool)
    assert refit_threshold(scores, masks_of(anomaly, few_normal), 1.0, nothing_quiet) is None
    # quiet unlabelled points count as normal (by default those at or below the threshold)
    assert refit_threshold(scores, masks_of(anomaly, few_normal), 1.0) is not None
    # unlabelled alerts take no part: raising their scores changes nothing
    base = refit_threshold(scores, masks_of(anomaly, ~anomaly & (scores < 1)), 1.0)
    other = scores.copy()
    other[(~anomaly) & (scores >= 1)] = 10.0
    again = refit_threshold(other, masks_of(anomaly, ~anomaly & (scores < 1)), 1.0)
    assert base == again


def test_quiet_points_count_as_normal_so_false_alarm_labels_do_not_drag_it_down() -> None:
    """Labelled normals that are all false alarms (above the threshold) make every lower
    threshold look free; the points that raised no alert restore the cost."""
    rng = np.random.default_rng(4)
    n = 2000
    scores = rng.uniform(0.0, 0.9, n)  # quiet normal points
    anomaly = np.zeros(n, dtype=bool)
    for lo in (300, 900, 1500):
        anomaly[lo : lo + 40] = True
        scores[lo : lo + 40] = rng.uniform(0.6, 2.0, 40)  # partly below the threshold 1
    alarms = np.zeros(n, dtype=bool)
    alarms[[100, 101, 600, 1200, 1800]] = True
    scores[alarms] = 1.2  # false alarms, labelled normal
    masks = masks_of(anomaly, alarms)
    biased = refit_threshold(scores, masks, 1.0, np.zeros(n, dtype=bool), min_normal_points=5)
    assert biased is not None and biased.scale == 0.5  # the bound
    quiet = scores <= 1.0  # what raised no alert
    fair = refit_threshold(scores, masks, 1.0, quiet)
    assert refit_threshold(scores, masks, 1.0) == fair  # the default
    assert fair is not None and 0.85 <= fair.threshold <= 1.25
    assert fair.n_normal_points == n - 120  # every point but the anomalies
    # an alert nobody labelled is neither normal nor anomalous
    unlabelled_alert = scores.copy()
    unlabelled_alert[50] = 5.0
    alerted = quiet.copy()
    alerted[50] = False
    again = refit_threshold(unlabelled_alert, masks, 1.0, alerted)
    assert again is not None and (again.threshold, again.f1) == (fair.threshold, fair.f1)
    assert again.n_normal_points == fair.n_normal_points - 1


def test_training_mask_keeps_labelled_normal_inside_dropped_spans() -> None:
    anomaly = np.array([0, 1, 1, 0, 0, 0, 0], dtype=bool)
    normal = np.array([0, 0, 0, 0, 1, 1, 0], dtype=bool)
    drop = np.array([0, 0, 0, 1, 1, 0, 1], dtype=bool)  # event spans the caller leaves out
    keep = training_mask(masks_of(anomaly, normal), drop)
    assert keep.tolist() == [True, False, False, False, True, True, False]
    assert training_mask(masks_of(anomaly, normal)).tolist() == [not a for a in anomaly]


def test_window_labels() -> None:
    lab = np.array([-1, 0, 0, 0, 1, 0, 0, 0, -1])
    assert window_labels(lab, 3).tolist() == [0, 0, 1, 1, 1, 0, -1]


def test_normal_memory_matches_near_windows_at_any_shift_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    stretch = rng.standard_normal((30, 2))
    memory = NormalMemory(noise=[0.01, 0.01], max_stretches=2)  # radius 4
    memory.add(stretch)
    near = stretch[7:17] + 0.1 * rng.standard_normal((10, 2))  # a shifted, noisy copy
    far = stretch[7:17] + 1.0
    scale = np.ones(2)
    assert memory.matches(np.stack([near, far]), scale).tolist() == [True, False]
    # in the model's scaled units: a feature with a large scale makes differences small
    assert memory.matches(far[None], np.array([100.0, 100.0])).tolist() == [True]
    # a window longer than every stretch matches nothing
    assert memory.matches(rng.standard_normal((1, 40, 2)), scale).tolist() == [False]
    restored = NormalMemory.from_state(json.loads(json.dumps(memory.state_dict())))
    assert restored.matches(np.stack([near, far]), scale).tolist() == [True, False]
    for _ in range(3):
        memory.add(stretch + 5)
    assert len(memory) == 2  # bounded: the oldest left
    assert memory.matches(near[None], scale).tolist() == [False]
    with pytest.raises(errors.ConfigError, match="malformed"):
        NormalMemory.from_state({"radius": 1.0})
    with pytest.raises(errors.ConfigError, match="noise"):
        NormalMemory(noise=[0.01, 0.0])
    with pytest.raises(errors.InputError, match="2 features"):
        memory.matches(np.zeros((1, 10, 3)), np.ones(3))


def test_normal_memory_compares_feature_by_feature() -> None:
    rng = np.random.default_rng(2)
    stretch = np.concatenate([rng.standard_normal((30, 1)), np.zeros((30, 24))], axis=1)
    memory = NormalMemory(noise=np.full(25, 0.01))
    memory.add(stretch)
    moved = stretch[5:15].copy()
    moved[:, 0] += 1.0  # one feature of 25 leaves its shape: a mean over all cells is 0.04
    flag = stretch[5:15].copy()
    flag[:, 3] = 1.0  # a flag that never moved flips
    same = stretch[5:15] + 0.05 * rng.standard_normal((10, 25))
    assert memory.matches(np.stack([moved, flag, same]), np.ones(25)).tolist() == [
        False,
        False,
        True,
    ]
    # a feature that is not compared (no weight in the score) may differ
    blind = NormalMemory(noise=np.full(25, 0.01), compared=np.arange(25) != 3)
    blind.add(stretch)
    assert blind.matches(flag[None], np.ones(25)).tolist() == [True]
    # a poorly reconstructed feature (noise near its variance) does not match every window:
    # the bound stays at max_distance (0.5 per step), a quarter of what unrelated windows differ
    rough = NormalMemory(noise=np.full(25, 0.9))
    rough.add(stretch)
    other = stretch[5:15].copy()
    other[:, 0] = rng.standard_normal(10)  # an unrelated stretch of the same feature
    assert rough.matches(np.stack([other, same]), np.ones(25)).tolist() == [False, True]
    # a state written before noise levels reads as the old radius on every feature
    state = {"radius": 0.5, "max_stretches": 4, "max_points": 64, "stretches": [stretch.tolist()]}
    legacy = NormalMemory.from_state(state)
    assert legacy.matches(np.stack([moved, same]), np.ones(25)).tolist() == [False, True]


def test_labelled_metrics_and_the_promotion_rule() -> None:
    rng = np.random.default_rng(2)
    labels = np.zeros(600, dtype=bool)
    labels[100:120] = labels[400:430] = True
    good = rng.random(600) + 2 * labels
    random = rng.random(600)
    m = masks_of(labels, ~labels)
    g, r = labelled_metrics(good, m), labelled_metrics(random, m)
    assert g is not None and r is not None
    assert g["f1"] > 0.9 and g["vus_pr"] > 0.5
    assert r["f1"] < 0.5 and r["vus_pr"] < 0.4
    assert compare_on_labels(g, r) and not compare_on_labels(r, g)
    assert labelled_metrics(good, masks_of(labels & False, ~labels)) is None


def test_thresholds_rescale_to_a_factor_of_themselves() -> None:
    static = StaticThreshold(Calibration(method="pot", threshold=2.0, params={}), scale=1.5)
    static.rescale(0.5)
    assert static.threshold == pytest.approx(1.5)
    rng = np.random.default_rng(3)
    for log in (False, True):
        spot = DSpot(depth=20, log=log).fit(rng.gamma(2.0, 1.0, 500))
        before = spot.threshold
        spot.rescale(1.3)
        assert spot.threshold == pytest.approx(1.3 * before, rel=1e-9)


# ---------------------------------------------------------------------------- the monitor
def fit(train: pd.DataFrame) -> Detector:
    config = tiny_config("ae", training={"max_epochs": 8})
    return create_detector(DetectorConfig.model_validate(config)).fit(train)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    train = normal_series(2000, seed=1)
    test, _, _ = with_anomalies(normal_series(900, seed=2, start=2000), seed=3)
    return {"det": fit(train), "train": train, "test": test}


def test_the_memory_suppresses_a_repeated_false_alarm(setup: dict[str, Any]) -> None:
    det, train, test = setup["det"], setup["train"], setup["test"]
    # a false alarm that repeats: the same bump on f2 at two places of a normal stretch
    frame = test.iloc[:700].copy()
    bump = np.zeros(len(frame))
    bump[100:110] = bump[500:510] = 1.2
    frame["f2"] += bump
    plain = det.monitor().update(frame)
    assert plain["anomalous"].iloc[100:115].any() and plain["anomalous"].iloc[500:515].any()
    # the operator says the first one is normal: its stretch goes into the memory
    memory = NormalMemory.for_detector(det)
    history = pd.concat([train, frame])
    watcher = det.monitor()
    watcher.update(frame.iloc[:300])
    event = next(e for e in watcher.events if e.start >= frame.index[95])
    added = memory.remember(det, history, event.start, event.end)
    assert added >= det.window_ and len(memory) == 1
    monitor = det.monitor()
    monitor.update(frame.iloc[:300])
    monitor.apply_feedback(memory=memory)
    tail = monitor.update(frame.iloc[300:])
    assert not tail["anomalous"].iloc[200:215].any()  # the repeat raises no alert
    # a real anomaly elsewhere still does
    spike = frame.iloc[300:].copy()
    spike.iloc[100:103, 0] += 3.0
    again = det.monitor()
    again.update(frame.iloc[:300])
    again.apply_feedback(memory=memory)
    assert again.update(spike)["anomalous"].iloc[100:110].any()


def test_a_refit_scale_moves_the_live_threshold_and_survives_the_state(
    setup: dict[str, Any],
) -> None:
    det, train, test = setup["det"], setup["train"], setup["test"]
    memory = NormalMemory.for_detector(det)
    assert memory.remember(det, pd.concat([train, test]), test.index[300], test.index[305]) > 0
    never = det.monitor(min_duration=2, persistence=3)
    head = never.update(test.iloc[:400])
    before = never.threshold
    never.apply_feedback(scale=1.4, memory=memory)
    assert never.threshold == pytest.approx(1.4 * before)
    reference = pd.concat([head, never.update(test.iloc[400:])])
    # restored mid-stream, after the feedback, it decides as the one that never stopped
    first = det.monitor(min_duration=2, persistence=3)
    first.update(test.iloc[:400])
    first.apply_feedback(scale=1.4, memory=memory)
    middle = first.update(test.iloc[400:600])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    assert state["feedback"]["factor"] == pytest.approx(1.4)
    restored = Monitor.from_state(det, state)
    tail = restored.update(test.iloc[600:])
    out = pd.concat([head, middle, tail])
    np.testing.assert_allclose(out["threshold"], reference["threshold"], rtol=1e-9)
    assert (out["anomalous"] == reference["anomalous"]).all()
    assert restored.memory is not None and len(restored.memory) == len(memory)
    # a state written before feedback existed still loads
    del state["feedback"]
    assert Monitor.from_state(det, state).memory is None
    # a new model version starts from its own calibration, and keeps the memory
    handed = first.with_detector(det)
    assert handed.threshold == pytest.approx(det.monitor().threshold)
    assert handed.memory is not None and len(handed.memory) == len(memory)


def test_labels_say_when_an_event_must_stay_open() -> None:
    def relearn_after(masks: LabelMasks, events: np.ndarray, after: int | None) -> int | None:
        return LastingRuns.of(masks, events).relearn_after(after)

    def masks(anomaly: slice, normal: slice | None = None) -> LabelMasks:
        a, n = np.zeros(600, dtype=bool), np.zeros(600, dtype=bool)
        a[anomaly] = True
        if normal is not None:
            n[normal] = True
        return LabelMasks(a, n, np.zeros(600, dtype=bool))

    events = np.zeros(600, dtype=bool)
    events[10:130] = events[300:480] = True
    # a confirmed anomaly of 150 points outlasts relearn_after=100: the rule waits for 150
    assert relearn_after(masks(slice(10, 160)), events, 100) == 150
    # not when it is shorter than the rule's horizon; a rule that is off stays off
    assert relearn_after(masks(slice(10, 160)), events, 200) == 200
    assert relearn_after(masks(slice(10, 160)), events, None) is None
    # an event of 180 points labelled normal is a confirmed lasting change: the rule stays
    assert relearn_after(masks(slice(10, 160), slice(300, 480)), events, 100) == 100
    # a long normal label outside events is no evidence of a lasting change
    assert relearn_after(masks(slice(10, 160), slice(500, 600)), events, 100) == 150
    assert LastingRuns.of(masks(slice(10, 160), slice(300, 480)), events) == LastingRuns(150, 180)
    with pytest.raises(errors.InputError, match="event flags"):
        LastingRuns.of(masks(slice(10, 160)), events[:10])


def test_a_longer_wait_is_taken_only_where_the_labelled_history_loses_no_f1() -> None:
    def masks(anomaly: slice) -> LabelMasks:
        a = np.zeros(600, dtype=bool)
        a[anomaly] = True
        return LabelMasks(a, np.zeros(600, dtype=bool), np.zeros(600, dtype=bool))

    def flags(*spans: slice) -> np.ndarray:
        out = np.zeros(600, dtype=bool)
        for span in spans:
            out[span] = True
        return out

    events = flags(slice(10, 110), slice(300, 400))
    runs = LastingRuns.of(masks(slice(10, 160)), events)  # 150 points outlast 100
    labelled = masks(slice(10, 160))
    quiet = ~events
    asked: list[int] = []

    def decider(longer: np.ndarray) -> Any:
        def decide(after: int) -> np.ndarray:
            asked.append(after)
            return longer if after == 150 else events

        return decide

    # the longer wait flags the rest of the confirmed anomaly: taken
    assert runs.refit(100, labelled, quiet, decider(flags(slice(10, 160), slice(300, 400)))) == 150
    assert sorted(asked) == [100, 150]
    # it flags a drift's quiet points for longer and nothing more of the anomaly: not taken
    drift = flags(slice(10, 110), slice(300, 450))
    assert runs.refit(100, labelled, quiet, decider(drift)) == 100
    # no cost and no gain: the labels' evidence decides, it is taken
    assert runs.refit(100, labelled, quiet, decider(events)) == 150
    # nothing to check where the rule would not change (decide is not called)
    asked.clear()
    assert runs.refit(200, labelled, quiet, decider(events)) == 200
    assert runs.refit(None, labelled, quiet, decider(events)) is None
    assert asked == []
    with pytest.raises(errors.InputError, match="600 flags"):
        runs.refit(100, labelled, quiet, lambda after: events[:10])


def test_a_drifting_history_keeps_the_rule_where_a_longer_wait_would_flag_the_drift(
    setup: dict[str, Any],
) -> None:
    det = setup["det"]
    stream = normal_series(1200, seed=8, start=3000)
    stream.iloc[100:115, 2] += 3.0  # a short anomaly, labelled as a wide window below
    stream.iloc[500:, 2] += 1.0  # a lasting change of level, not labelled

    monitor = det.monitor()
    start = monitor.state_dict()
    head = monitor.update(stream)
    raw = head["score"].to_numpy()

    def decide(after: int) -> np.ndarray:
        again = Monitor.from_state(det, start)
        again.apply_feedback(relearn_after=after)
        return again.decide(raw)["anomalous"].to_numpy()

    # decisions made again from the same start are the stream's own
    assert (decide(100) == head["anomalous"].to_numpy()).all()
    quiet = ~head["anomalous"].to_numpy()

    def taken(label: slice) -> int | None:
        given = [Label(stream.index[label.start], stream.index[label.stop - 1], "anomaly", T0)]
        masks = label_masks(stream.index, given)
        runs = LastingRuns.of(masks, head["event"].notna().to_numpy())
        return runs.refit(100, masks, quiet, decide)

    # a wide window around the short anomaly: waiting 200 points would flag the drift longer
    assert taken(slice(90, 290)) == 100
    # the lasting change labelled an anomaly itself: the monitor waits for it
    assert taken(slice(500, 1100)) == 600


def test_a_confirmed_long_anomaly_makes_the_monitor_wait_for_as_long(
    setup: dict[str, Any],
) -> None:
    det = setup["det"]
    stream = normal_series(1400, seed=8, start=3000)
    stream.iloc[700:1200, 2] += 1.0  # a long anomaly: 500 points
    head, tail = stream.iloc[:600], stream.iloc[600:]

    def replay(options: dict[str, Any], after: int | None) -> tuple[Monitor, pd.DataFrame]:
        monitor = det.monitor(**options)
        monitor.update(head)
        monitor.apply_feedback(relearn_after=after)
        return monitor, monitor.update(tail)

    # labels confirmed an anomaly of 600 points (LastingRuns.relearn_after gives 600)
    _, plain = replay({"relearn_after": 50}, None)
    waited, out = replay({"relearn_after": 50}, 600)
    _, reference = replay({"relearn_after": 600}, None)
    assert waited.options.relearn_after == 600
    pd.testing.assert_frame_equal(out, reference)
    late = slice(250, 600)  # the anomaly's points after the old rule would have relearnt
    assert out["anomalous"].iloc[late].mean() > plain["anomalous"].iloc[late].mean() + 0.2
    # the option is in the state, and a new version of the model keeps it
    state = json.loads(json.dumps(waited.state_dict(), allow_nan=False))
    assert Monitor.from_state(det, state).options.relearn_after == 600
    assert waited.with_detector(det).options.relearn_after == 600
