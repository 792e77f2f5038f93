"""Live detection: causal scoring, chunking invariance, state, events, online thresholds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import normal_series, tiny_config, with_anomalies

from detector import (
    KINDS,
    DetectorConfig,
    Event,
    Monitor,
    create_detector,
    errors,
    load_detector,
)
from detector.detector import Detector
from detector.monitor import TAIL_POINTS, Points, _OpenEvent, _Recent


def fit(kind: str, train: pd.DataFrame, **overrides: Any) -> Detector:
    return create_detector(DetectorConfig.model_validate(tiny_config(kind, **overrides))).fit(train)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    train = normal_series(2000, seed=1)
    test, labels, spans = with_anomalies(normal_series(900, seed=2, start=2000), seed=3)
    return {"train": train, "test": test, "labels": labels, "spans": spans}


@pytest.fixture(scope="module")
def fitted(data: dict[str, Any]) -> dict[str, Detector]:
    return {kind: fit(kind, data["train"], training={"max_epochs": 8}) for kind in KINDS}


def holey(test: pd.DataFrame) -> pd.DataFrame:
    """The first 420 points with missing cells, a point with nothing observed, a short index
    gap (refilled) and a long one (a new segment)."""
    out = test.iloc[:420].copy()
    out.iloc[60:64, 1] = np.nan
    out.iloc[100, :] = np.nan
    return out.drop(out.index[[130, 131, 132]]).drop(out.index[250:290])


def stream(monitor: Monitor, frame: pd.DataFrame, chunk: int) -> pd.DataFrame:
    parts = [monitor.update(frame.iloc[i : i + chunk]) for i in range(0, len(frame), chunk)]
    return pd.concat(parts)


def assert_same(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-5) -> None:
    assert a.index.equals(b.index)
    for col in ("score", "normalized", "threshold"):
        np.testing.assert_allclose(a[col], b[col], rtol=rtol, atol=1e-9, err_msg=col)
    assert (a["anomalous"] == b["anomalous"]).all()
    assert a["event"].equals(b["event"])


def assert_same_events(a: list[Event], b: list[Event], rtol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.id, x.start, x.end, x.status, x.n_points) == (
            y.id,
            y.start,
            y.end,
            y.status,
            y.n_points,
        )
        assert (x.peak, x.mean, x.severity) == pytest.approx((y.peak, y.mean, y.severity), rel=rtol)
        assert [n for n, _ in x.top_features] == [n for n, _ in y.top_features]


OPTIONS = {"min_duration": 2, "persistence": 3, "merge_gap": 2, "expected": True}


@pytest.mark.parametrize("threshold", ["dspot", "conformal"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunking_does_not_change_results(
    kind: str, threshold: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, frame = fitted[kind], holey(data["test"])
    monitors = {c: det.monitor(**OPTIONS, threshold=threshold) for c in (1, 7, len(frame))}
    runs = {c: stream(m, frame, c) for c, m in monitors.items()}
    whole = runs[len(frame)]
    assert list(whole.columns[:5]) == ["score", "normalized", "threshold", "anomalous", "event"]
    assert [c for c in whole.columns if c.startswith("expected.")] == [
        "expected.f0",
        "expected.f1",
        "expected.f2",
    ]
    assert whole["anomalous"].dtype == bool and str(whole["event"].dtype) == "Int64"
    # the first window - 1 points, those after the long gap and a point with nothing
    # observed have no score; every other point has one
    scored = whole["score"].notna()
    assert scored.sum() == len(frame) - 2 * (det.window_ - 1) - 1
    assert whole["anomalous"].sum() > 0
    for chunk in (1, 7):
        assert_same(runs[chunk], whole)
    events = {c: m.events for c, m in monitors.items()}
    assert events[len(frame)]
    for chunk in (1, 7):
        assert_same_events(events[chunk], events[len(frame)])


def test_score_of_a_point_uses_no_later_data(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test = fitted["ae"], data["test"]
    full = det.monitor().update(test)
    changed = test.copy()
    changed.iloc[400:] += 5.0  # a different future
    head = det.monitor().update(changed)
    np.testing.assert_allclose(full["score"].iloc[:400], head["score"].iloc[:400], rtol=1e-6)
    assert not np.allclose(full["score"].iloc[400:450], head["score"].iloc[400:450])


def test_causal_scores_match_the_last_window_of_batch_scoring(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    """The causal score of a point is the batch score of a series that ends at it."""
    det, test = fitted["vae"], data["test"]
    out = det.monitor().update(test.iloc[:200])
    for end in (det.window_, 120, 200):
        tail = test.iloc[end - det.window_ : end]
        window_scores = det.score_windows(tail.to_numpy()[None], reconstruct=False)
        assert out["score"].iloc[end - 1] == pytest.approx(window_scores.scores[0, -1], rel=1e-5)


@pytest.mark.parametrize("threshold", ["dspot", "conformal"])
def test_state_round_trip_mid_stream(
    threshold: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, frame = fitted["ae"], holey(data["test"])
    never_stopped = det.monitor(**OPTIONS, threshold=threshold)
    reference = never_stopped.update(frame)
    for cut in (det.window_ // 2, 180, 250):  # in the warm-up, mid-stream, at a long gap
        first = det.monitor(**OPTIONS, threshold=threshold)
        head = first.update(frame.iloc[:cut])
        state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        restored = Monitor.from_state(det, state)
        tail = restored.update(frame.iloc[cut:])
        assert_same(pd.concat([head, tail]), reference)
        assert_same_events(restored.events, never_stopped.events)
        # the events' states (kept from their close, or from the restored state) agree too
        closed = never_stopped.state_dict()["events"]
        assert closed and restored.state_dict()["events"] == closed
        assert restored.threshold == pytest.approx(never_stopped.threshold)


@pytest.mark.parametrize("kind", ["ae", "cvae"])
def test_repeated_timestamps_follow_the_library_policy(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, base = fitted[kind], data["test"].iloc[:300]
    other = base.iloc[[150]] + 0.5  # the time of point 150 again, with other values
    parts = [base.iloc[:101], base.iloc[[100]], base.iloc[101:151], other, base.iloc[151:201]]
    frame = pd.concat([*parts, base.iloc[[200, 200]], base.iloc[201:]])
    copies = np.zeros(len(frame), dtype=bool)
    copies[[101, 203, 204]] = True  # the re-sent rows (exact copies of points 100 and 200)

    runs = {c: stream(det.monitor(**OPTIONS), frame, c) for c in (1, 7, 101, len(frame))}
    whole = runs[len(frame)]
    assert whole.index.equals(frame.index)  # every row gets its output, in the caller's order
    for chunk in (1, 7, 101):
        assert_same(runs[chunk], whole)
    # a copy gets its point's outputs and moves nothing on: the stream without the copies
    # gives the other rows the same outputs
    for row, point in ((101, 100), (203, 202), (204, 202)):
        pd.testing.assert_series_equal(whole.iloc[row], whole.iloc[point], check_names=False)
    assert_same(whole[~copies], det.monitor(**OPTIONS).update(frame[~copies]))
    # other values at a repeated time are the next point, with a score of their own
    assert np.isfinite(whole["score"].iloc[152]) and whole["score"].iloc[152] != pytest.approx(
        whole["score"].iloc[151]
    )
    # a stream stopped right before a copy knows the point it repeats
    first = det.monitor(**OPTIONS)
    head = first.update(frame.iloc[:101])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    tail = Monitor.from_state(det, state).update(frame.iloc[101:])
    assert_same(pd.concat([head, tail]), whole)


def test_the_points_kept_for_repeats_are_bounded(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, base = fitted["ae"], data["test"]
    same_time = base.iloc[:100].copy()
    same_time.index = pd.DatetimeIndex([base.index[0]] * 100)  # one time, 100 other values
    for chunk in (1, 100):
        monitor = det.monitor()
        stream(monitor, same_time, chunk)
        tail = monitor.state_dict()["stream"]["tail"]
        assert len(tail["values"]) == len(tail["anomalous"]) == TAIL_POINTS
        np.testing.assert_allclose(tail["values"], same_time.to_numpy()[-TAIL_POINTS:])


def test_state_survives_saving_the_model(
    tmp_path: Path, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test = fitted["ae"], data["test"]
    det.save(tmp_path / "m")
    loaded = load_detector(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.holdout_scores_, det.holdout_scores_)
    assert_same(loaded.monitor().update(test), det.monitor().update(test))


def test_forgotten_closed_events_leave_decisions_and_ids_unchanged(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    """``forget_closed_events`` (the service stores them elsewhere) drops only the kept
    closed events: the outputs, and the ids of later events, are those of a monitor that
    kept them, and the state carries none."""
    det, test = fitted["ae"], data["test"]
    kept, forgetful = det.monitor(merge_gap=5), det.monitor(merge_gap=5)
    cut = len(test) // 2
    first = [kept.update(test.iloc[:cut]), forgetful.update(test.iloc[:cut])]
    assert any(e.status == "closed" for e in forgetful.events)
    forgetful.forget_closed_events()
    assert all(e.status == "open" for e in forgetful.events)
    state = forgetful.state_dict()
    assert state["events"] == []
    restored = Monitor.from_state(det, json.loads(json.dumps(state, allow_nan=False)))
    rest = [kept.update(test.iloc[cut:]), restored.update(test.iloc[cut:])]
    assert_same(pd.concat([first[1], rest[1]]), pd.concat([first[0], rest[0]]))
    later = [e for e in kept.events if e.id >= min((e.id for e in restored.events), default=0)]
    assert restored.events and [e.id for e in restored.events] == [e.id for e in later]


def test_events_find_the_injected_anomalies(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test, labels, spans = fitted["ae"], data["test"], data["labels"], data["spans"]
    monitor = det.monitor(merge_gap=5)
    out = monitor.update(test)
    events = monitor.events
    found = [
        kind
        for kind, (lo, hi) in spans.items()
        if out["anomalous"].iloc[lo : hi + det.window_].any()
    ]
    assert len(found) >= 3, found  # a random flagger at this flag rate finds ~1
    normal = labels.to_numpy() == 0
    flags = out["anomalous"].to_numpy()
    assert flags[normal].mean() < 0.15
    # the window that ends at a point still holds an anomaly that ended less than a window
    # before it; further away, normal points are rarely flagged
    after = np.zeros(len(test), dtype=bool)
    for lo, hi in spans.values():
        after[lo : hi + det.window_] = True
    assert flags[normal & ~after].mean() < 0.03
    for e in events:
        assert e.start <= e.end and e.n_points >= 1
        assert 1.0 <= e.mean <= e.peak and 0.0 <= e.severity <= 1.0
        assert e.status in ("open", "closed")
        assert len(e.top_features) == 3 and sum(s for _, s in e.top_features) <= 1.0 + 1e-9
        flagged = out.loc[e.start : e.end]
        assert (flagged["event"].dropna() == e.id).all()
        assert flagged["anomalous"].sum() == e.n_points
        assert flagged.loc[flagged["anomalous"], "normalized"].max() == pytest.approx(e.peak)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    # the level shift is in f2: the event over it names f2 first
    lo, hi = spans["level_shift"]
    over = [e for e in events if e.start <= test.index[hi - 1] and e.end >= test.index[lo]]
    assert over and over[0].top_features[0][0] == "f2"


def test_persistence_and_merge_gap(fitted: dict[str, Detector], data: dict[str, Any]) -> None:
    det, test = fitted["ae"], data["test"]
    single = det.monitor(sensitivity=90).update(test)
    raw_flags = single["anomalous"]  # min_duration 1: every flag is anomalous
    persistent = det.monitor(sensitivity=90, min_duration=3).update(test)
    assert persistent["anomalous"].sum() < raw_flags.sum()
    assert not (persistent["anomalous"] & ~raw_flags).any()
    merged = det.monitor(sensitivity=90, merge_gap=20)
    merged.update(test)
    separate = det.monitor(sensitivity=90)
    separate.update(test)
    assert 0 < len(merged.events) < len(separate.events)


def test_sensitivity_moves_the_threshold(fitted: dict[str, Detector], data: dict[str, Any]) -> None:
    det, test = fitted["ae"], data["test"]
    counts = [int(det.monitor(sensitivity=s).update(test)["anomalous"].sum()) for s in (0, 50, 100)]
    assert counts[0] < counts[1] < counts[2]
    for method in ("dspot", "static"):
        low, high = det.monitor(sensitivity=25, threshold=method), det.monitor(threshold=method)
        assert low.threshold > high.threshold


def test_bad_input_is_refused_and_changes_nothing(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test = fitted["ae"], data["test"]
    monitor = det.monitor()
    monitor.update(test.iloc[:100])
    before = json.dumps(monitor.state_dict())
    with pytest.raises(errors.InputError, match="before the last point"):
        monitor.update(test.iloc[50:60])
    with pytest.raises(errors.InputError, match="before the last point"):
        monitor.update(test.iloc[98:101])
    with pytest.raises(errors.InputError, match="must be increasing"):
        monitor.update(test.iloc[[100, 102, 101]])
    with pytest.raises(errors.ColumnsError):
        monitor.update(test.iloc[100:110].drop(columns=["f1"]))
    with pytest.raises(errors.InputError, match="indexed by"):
        monitor.update(test.iloc[100:110].reset_index(drop=True))
    assert json.dumps(monitor.state_dict()) == before
    assert monitor.update(test.iloc[:0]).empty
    with pytest.raises(errors.ConfigError, match="sensitivity"):
        det.monitor(sensitivity=101)
    with pytest.raises(errors.ConfigError, match="persistence"):
        det.monitor(min_duration=3, persistence=2)
    with pytest.raises(errors.ConfigError, match="unknown_option"):
        det.monitor(unknown_option=1)
    with pytest.raises(errors.ConfigError, match="version"):
        Monitor.from_state(det, {"version": 99})


def test_keyed_model_follows_one_series() -> None:
    parts = []
    for i, key in enumerate(("a", "b")):
        frame = normal_series(1200, seed=10 + i)
        frame["host"] = key
        parts.append(frame)
    train = pd.concat(parts)
    det = fit(
        "cvae", train, key_column="host", condition_on=["key", "hour"], training={"max_epochs": 3}
    )
    test = normal_series(200, seed=20, start=1200)
    test["host"] = "b"
    monitor = det.monitor()
    out = monitor.update(test)
    assert out["score"].notna().sum() == len(test) - det.window_ + 1
    other = normal_series(10, seed=21, start=1400)
    other["host"] = "a"
    with pytest.raises(errors.InputError, match="follows key 'b'"):
        monitor.update(other)
    unseen = other.assign(host="c")
    with pytest.raises(errors.InputError, match="not seen in training"):
        det.monitor().update(unseen)


def test_with_detector_hands_the_stream_to_a_new_model(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test, spans = fitted["ae"], data["test"], data["spans"]
    lo, hi = spans["level_shift"]
    monitor = det.monitor(merge_gap=5)
    monitor.update(test.iloc[: lo + 10])  # an event is open over the level shift
    assert monitor.events and monitor.events[-1].status == "open"
    open_id = monitor.events[-1].id
    before = monitor.events[-1]
    new = fit("ae", data["train"], training={"max_epochs": 8, "seed": 1})
    switched = monitor.with_detector(new)
    assert switched.detector is new
    out = switched.update(test.iloc[lo + 10 :])
    assert out["score"].notna().all()  # the context carried over: no warm-up
    # the open event goes on under its id: no second alert for the same anomaly
    assert out["event"].iloc[0] == open_id
    continued = next(e for e in switched.events if e.id == open_id)
    assert continued.start == before.start and continued.n_points >= before.n_points
    assert [e.id for e in switched.events][: len(monitor.events)] == [e.id for e in monitor.events]
    # no burst of alerts at the switch: the normal stretch after the shift stays quiet
    quiet = out.iloc[hi - lo + 20 : hi - lo + 80]
    assert quiet["anomalous"].mean() < 0.1
    with pytest.raises(errors.InputError, match="features"):
        monitor.with_detector(
            fit("ae", data["train"].drop(columns=["f2"]), training={"max_epochs": 1})
        )


def test_a_lasting_shift_becomes_the_new_normal(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det = fitted["ae"]
    shifted = normal_series(900, seed=7, start=2000)
    shifted.iloc[300:, 2] += 1.0  # the normal level of f2 moves for good
    stuck = det.monitor(relearn_after=None).update(shifted)
    adapting = det.monitor(relearn_after=50).update(shifted)
    assert stuck["anomalous"].iloc[300:].mean() > 0.5  # never learns: flags for ever
    assert adapting["anomalous"].iloc[300:360].mean() > 0.5  # the change itself is flagged
    # then it is learnt as the new normal: later points are flagged less than by a
    # threshold that never learns (this adaptation is slow: about half are still flagged)
    assert adapting["anomalous"].iloc[600:].mean() < stuck["anomalous"].iloc[600:].mean()


def test_decide_takes_scores_kept_from_a_stream(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test = fitted["ae"], data["test"]
    for options in ({}, {**OPTIONS, "expected": False, "threshold": "conformal"}):
        live = det.monitor(**options).update(test)
        again = det.monitor(**options).decide(live["score"].to_numpy())
        assert again.index.equals(pd.RangeIndex(len(test)))
        for col in ("score", "normalized", "threshold"):
            np.testing.assert_array_equal(again[col], live[col])
        assert (again["anomalous"].to_numpy() == live["anomalous"].to_numpy()).all()
        assert again["event"].reset_index(drop=True).equals(live["event"].reset_index(drop=True))


def test_conformal_flag_rate_on_drifting_normal_data_is_bounded(
    fitted: dict[str, Detector],
) -> None:
    """Normal data whose noise grows sixfold over the stream (the scores' level and spread
    drift up): the conformal threshold keeps its rate, DSPOT (which follows the level, not
    the spread) and the static threshold do not."""
    det = fitted["ae"]
    drift = normal_series(3000, seed=12, start=2000)
    rng = np.random.default_rng(13)
    drift += np.linspace(0.0, 0.3, len(drift))[:, None] * rng.standard_normal(drift.shape)
    rate = {
        t: det.monitor(threshold=t).update(drift)["anomalous"].mean()
        for t in ("static", "dspot", "conformal")
    }
    assert rate["static"] > 0.1 and rate["dspot"] > 0.05, rate
    # the target 1% counts the flags outside events; flags inside them come on top
    assert rate["conformal"] <= 0.02 + 0.01, rate


def test_conformal_finds_the_injected_anomalies(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, test, spans = fitted["ae"], data["test"], data["spans"]
    flags = det.monitor(threshold="conformal").update(test)["anomalous"].to_numpy()
    # an anomaly is still in the window of the points up to a window after it
    near = np.zeros(len(test), dtype=bool)
    for lo, hi in spans.values():
        near[lo : hi + det.window_] = True
    found = [k for k, (lo, hi) in spans.items() if flags[lo : hi + det.window_].any()]
    assert len(found) >= 3, found
    # a random flagger puts a share near.mean() of its flags near an anomaly
    precision = flags[near].sum() / max(flags.sum(), 1)
    assert precision > near.mean() + 0.3, (precision, near.mean())
    assert flags[~near].mean() < 0.03


def _variants(test: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """``n`` different series on one index: the holey test data shifted, scaled and with their
    own missing cells."""
    base = holey(test)
    out = []
    for i in range(n):
        frame = base * (1.0 + 0.1 * i) + 0.05 * i
        if i % 2:
            frame.iloc[20 + i : 24 + i, 0] = np.nan
        out.append(frame)
    return out


def _states_close(a: Any, b: Any, where: str = "state") -> None:
    """Two monitor states alike: the same structure and values, floats to tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for name in a:
            _states_close(a[name], b[name], f"{where}.{name}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _states_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):  # (absolute: excesses over a level are differences of scores)
        assert isinstance(b, float), where
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5, nan_ok=True), where
    else:
        assert a == b, where


@pytest.mark.parametrize("kind", [*KINDS, "vae-sampled"])
def test_update_many_matches_update_of_each(
    kind: str, fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    if kind == "vae-sampled":  # a kind that samples while scoring: scored block by block
        det = fit("vae", data["train"], score_samples=3, training={"max_epochs": 2})
    else:
        det = fitted[kind]
    frames = _variants(data["test"], 4)
    alone = [det.monitor(**OPTIONS) for _ in frames]
    together = [det.monitor(**OPTIONS) for _ in frames]
    arrays = [det.monitor(**OPTIONS) for _ in frames]
    sizes = [1, 3, 7, 1]  # chunk sizes per series; a series may send nothing in a round
    cursor = [0] * len(frames)
    got: list[list[pd.DataFrame]] = [[] for _ in frames]
    want: list[list[pd.DataFrame]] = [[] for _ in frames]
    rounds = 0
    while any(c < len(f) for c, f in zip(cursor, frames, strict=True)):
        rounds += 1
        chunks = []
        for i, frame in enumerate(frames):
            size = 0 if (rounds + i) % 5 == 0 else sizes[i]
            chunks.append(frame.iloc[cursor[i] : cursor[i] + size])
            cursor[i] += size
        singles = [m.update(c) for m, c in zip(alone, chunks, strict=True)]
        many = Monitor.update_many(together, chunks)
        names = det.feature_names_in_
        points = [Points(c[names].to_numpy(), c.index) for c in chunks]
        for i, scored in enumerate(Monitor.update_points(arrays, points)):
            out = many[i]
            assert len(out) == len(scored.score) == len(chunks[i])
            if not len(out):
                assert singles[i].empty and list(out.columns) == list(singles[i].columns)
                continue
            want[i].append(singles[i])
            got[i].append(out)
            np.testing.assert_allclose(scored.score, out["score"], rtol=1e-12)  # same batches
            assert (scored.event == out["event"].fillna(-1).to_numpy()).all()
            assert scored.expected is not None
            np.testing.assert_allclose(
                scored.expected, out[[f"expected.{f}" for f in names]], rtol=1e-12
            )
    for i in range(len(frames)):
        a, b = pd.concat(want[i]), pd.concat(got[i])
        # float32 products over batches of other shapes (the windows of several series):
        # about 1e-5 apart, where chunking alone stays within 1e-5
        assert_same(b, a, rtol=1e-4)
        expected = [c for c in a.columns if c.startswith("expected.")]
        np.testing.assert_allclose(b[expected], a[expected], rtol=1e-4, atol=1e-6)
        assert_same_events(together[i].events, alone[i].events, rtol=1e-4)
        _states_close(together[i].state_dict(), alone[i].state_dict())
        _states_close(arrays[i].state_dict(), alone[i].state_dict())
    assert sum(len(m.events) for m in alone) > 0  # the comparison covers events
    first_scores = pd.concat(want[0])["score"]
    assert first_scores.isna().sum() > det.window_  # and the gaps that restart a segment


def test_update_many_refuses_bad_input_and_changes_nothing(
    fitted: dict[str, Detector], data: dict[str, Any]
) -> None:
    det, other = fitted["ae"], fitted["vae"]
    test = data["test"]
    monitors = [det.monitor(), det.monitor(), other.monitor()]
    first = Monitor.update_many(monitors, [test.iloc[:50]] * 3)
    before = [json.dumps(m.state_dict()) for m in monitors]
    late = test.iloc[40:60]  # starts before the last point seen
    with pytest.raises(errors.InputError, match="before the last point"):
        Monitor.update_many(monitors, [test.iloc[50:60], late, test.iloc[50:60]])
    with pytest.raises(errors.InputError, match="listed twice"):
        Monitor.update_many([monitors[0], monitors[0]], [test.iloc[50:60]] * 2)
    with pytest.raises(errors.InputError, match="2 chunks"):
        Monitor.update_many(monitors, [test.iloc[50:60]] * 2)
    bad = test.iloc[50:60].to_numpy().copy()
    bad[3, 1] = np.inf
    with pytest.raises(errors.NonFiniteError):
        Monitor.update_points(monitors[:1], [Points(bad, test.index[50:60])])
    with pytest.raises(errors.InputError, match="shape"):
        Monitor.update_points(monitors[:1], [Points(bad[:, :2], test.index[50:60])])
    with pytest.raises(errors.InputError, match="no key column"):
        good = test.iloc[50:60].to_numpy()
        Monitor.update_points(monitors[:1], [Points(good, test.index[50:60], key="a")])
    assert [json.dumps(m.state_dict()) for m in monitors] == before
    # two models in one call: each scored with its own network, as alone
    again = Monitor.update_many(monitors, [test.iloc[50:80]] * 3)
    solo = other.monitor()
    solo.update(test.iloc[:50])
    assert_same(again[2], solo.update(test.iloc[50:80]))
    assert first[0]["score"].notna().sum() == 50 - det.window_ + 1


def test_the_hand_built_states_equal_the_generic_ones() -> None:
    """The open event's and recent points' states, built field by field for speed, hold what
    ``dataclasses.asdict`` gives (a field added later must be added there too)."""
    op = _OpenEvent(3, 10, 14, 2.5, 7.0, 4, [0.5, 1.5], quiet=1, age=5)
    recent = _Recent(12, True, 1.7, [0.25, 0.75])
    assert op.state() == dataclasses.asdict(op)
    assert recent.state() == dataclasses.asdict(recent)


def test_a_stream_is_handed_over_from_its_state_alone() -> None:
    """``Monitor.handed_over(new, state)`` continues the stream exactly as
    ``with_detector(new)`` of the restored monitor does, without the model that wrote the
    state, and leaves the state unchanged."""
    frame = normal_series(900, seed=3)
    old = fit("ae", frame.iloc[:600])
    new = fit("ae", frame.iloc[:600], window=16, training={"seed": 1})
    monitor = old.monitor()
    monitor.update(frame.iloc[600:750])
    state = monitor.state_dict()
    kept = json.dumps(state, sort_keys=True)
    via_old = monitor.with_detector(new).update(frame.iloc[750:])
    alone = Monitor.handed_over(new, state).update(frame.iloc[750:])
    pd.testing.assert_frame_equal(alone, via_old)
    assert json.dumps(state, sort_keys=True) == kept
    assert alone["score"].notna().all()
