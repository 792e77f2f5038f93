"""Tests of detector.evaluation: toy values, edge cases and VUS against a loop reference."""

from __future__ import annotations

import math
import time

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from detector.errors import ConfigError, InputError, LabelsError
from detector.evaluation import (
    VUS_THRESHOLDS,
    auc_pr,
    auc_roc,
    best_f1,
    evaluate,
    legacy_point_adjusted_f1,
    pointwise_prf,
    vus_pr,
    vus_roc,
)

EVALUATE_KEYS = {
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


# ----------------------------------------------------------------------------------------------
# straightforward reference of VUS (loops, one threshold and one buffer length at a time)
# ----------------------------------------------------------------------------------------------


def _runs(y: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(y):
        if y[i] == 1:
            j = i
            while j + 1 < len(y) and y[j + 1] == 1:
                j += 1
            runs.append((i, j))
            i = j + 1
        else:
            i += 1
    return runs


def reference_vus(
    labels: npt.ArrayLike, scores: npt.ArrayLike, max_buffer: int
) -> tuple[float, float]:
    """(VUS-ROC, VUS-PR) computed literally from the definition in the module docstring."""
    y = [int(v) for v in np.asarray(labels)]
    s = np.asarray(scores, dtype=float)
    n = len(y)
    n_pos = sum(y)
    segments = _runs(y)
    descending = sorted(s.tolist(), reverse=True)
    positions = np.linspace(0, n - 1, VUS_THRESHOLDS).astype(int)
    thresholds = [descending[int(k)] for k in positions]
    rocs, aps = [], []
    for length in range(max_buffer + 1):
        h = length // 2
        soft = np.array(y, dtype=float)
        for a, b in segments:
            for x in range(b + 1, min(b + h + 1, n)):
                soft[x] += math.sqrt(1.0 - (x - b) / length)
            for x in range(max(a - h, 0), a):
                soft[x] += math.sqrt(1.0 - (a - x) / length)
        soft = np.minimum(soft, 1.0)
        ranges: list[tuple[int, int]] = []
        for a, b in segments:
            lo, hi = max(a - h, 0), min(b + h, n - 1)
            if ranges and lo <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], hi)
            else:
                ranges.append((lo, hi))
        tprs, fprs, precisions = [0.0], [0.0], [1.0]
        for t in thresholds:
            pred = (s >= t).astype(float)
            lab = soft.copy()
            hit = 0
            for lo, hi in ranges:
                lab[lo : hi + 1] = soft[lo : hi + 1] * pred[lo : hi + 1]
                hit += int(pred[lo : hi + 1].any())
            lab[np.array(y) == 1] = 1.0
            tp = float(lab @ pred)
            n_pred = float(pred.sum())
            p_new = (n_pos + float(lab.sum())) / 2.0
            tprs.append(min(tp / p_new, 1.0) * hit / len(ranges))
            fprs.append((n_pred - tp) / (n - p_new))
            precisions.append(tp / n_pred)
        tprs.append(1.0)
        fprs.append(1.0)
        rocs.append(
            sum(
                (fprs[k + 1] - fprs[k]) * (tprs[k + 1] + tprs[k]) / 2.0
                for k in range(len(tprs) - 1)
            )
        )
        aps.append(sum((tprs[k] - tprs[k - 1]) * precisions[k] for k in range(1, len(precisions))))
    return float(np.mean(rocs)), float(np.mean(aps))


def _random_case(rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    n = int(rng.integers(20, 160))
    y = np.zeros(n, dtype=np.int64)
    for _ in range(int(rng.integers(1, 6))):
        a = int(rng.integers(0, n))
        y[a : a + int(rng.integers(1, 10))] = 1
    y[int(rng.integers(0, n))] = 0  # at least one normal point
    s = rng.normal(size=n) + 1.5 * y
    if rng.random() < 0.4:
        s = np.round(s, 1)  # ties
    return y, s


@pytest.mark.parametrize("seed", range(12))
def test_vus_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(2):
        y, s = _random_case(rng)
        w = int(rng.integers(0, 14))
        ref_roc, ref_pr = reference_vus(y, s, w)
        assert vus_roc(y, s, w) == pytest.approx(ref_roc, abs=1e-6)
        assert vus_pr(y, s, w) == pytest.approx(ref_pr, abs=1e-6)


def test_vus_matches_reference_at_series_edges_and_close_segments() -> None:
    # segments touching both ends and separated by gaps of 1 and 2 (merging, summed buffers)
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1])
    s = np.random.default_rng(3).random(y.shape[0]) + 0.3 * y
    for w in (0, 1, 2, 3, 4, 7, 10, 25):
        ref_roc, ref_pr = reference_vus(y, s, w)
        assert vus_roc(y, s, w) == pytest.approx(ref_roc, abs=1e-6)
        assert vus_pr(y, s, w) == pytest.approx(ref_pr, abs=1e-6)


def _segments_labels(n: int, seed: int) -> npt.NDArray[np.bool_]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.bool_)
    for a in rng.choice(n - 60, n // 1000, replace=False):
        y[a : a + 50] = True
    return y


def test_vus_perfect_binary_scorer_is_one() -> None:
    y = _segments_labels(20_000, 0)
    for w in (0, 10, 100):
        assert vus_pr(y, y.astype(float), w) == pytest.approx(1.0)
        assert vus_roc(y, y.astype(float), w) == pytest.approx(1.0)


def test_vus_random_scorer_near_ratio_and_below_good_scorer() -> None:
    y = _segments_labels(20_000, 0)
    ratio = float(y.mean())
    rng = np.random.default_rng(1)
    random_pr = vus_pr(y, rng.random(y.shape[0]), 10)
    good_pr = vus_pr(y, y + 0.8 * rng.random(y.shape[0]), 10)
    assert 0.8 * ratio < random_pr < 1.5 * ratio
    assert good_pr > 0.95
    assert vus_roc(y, rng.random(y.shape[0]), 10) == pytest.approx(0.5, abs=0.05)


def test_vus_fast_on_300k_points() -> None:
    n = 300_000
    rng = np.random.default_rng(2)
    y = np.zeros(n, dtype=np.bool_)
    for a in rng.integers(0, n - 200, 300):
        y[a : a + int(rng.integers(5, 200))] = True
    s = rng.normal(size=n) + y
    start = time.perf_counter()
    value = vus_pr(y, s, 100)
    assert time.perf_counter() - start < 3.0
    assert 0.0 < value < 1.0


def test_vus_undefined_without_both_classes() -> None:
    s = np.arange(30.0)
    assert math.isnan(vus_pr(np.zeros(30), s, 5))
    assert math.isnan(vus_roc(np.ones(30), s, 5))


def test_vus_rejects_bad_window() -> None:
    y, s = np.array([0, 1, 0, 0]), np.array([0.1, 0.9, 0.2, 0.3])
    with pytest.raises(ConfigError):
        vus_pr(y, s, -1)
    with pytest.raises(ConfigError):
        vus_pr(y, s, 2.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# point-wise metrics
# ----------------------------------------------------------------------------------------------


def test_auc_toy_values() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3; ROC = 3 of 4 pairs
    assert auc_pr(y, s) == pytest.approx(0.5 + 1.0 / 3.0)
    assert auc_roc(y, s) == pytest.approx(0.75)


def test_auc_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        y = (rng.random(400) < 0.2).astype(int)
        s = np.round(rng.normal(size=400) + y, 1)
        assert auc_pr(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert auc_roc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_pointwise_prf_toy() -> None:
    p, r, f = pointwise_prf([1, 1, 0, 0, 1], [True, False, True, False, True])
    assert (p, r, f) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert pointwise_prf([1, 0, 0], [0, 0, 0]) == (0.0, 0.0, 0.0)
    p, r, f = pointwise_prf([0, 0, 0], [1, 0, 0])
    assert p == 0.0 and math.isnan(r) and math.isnan(f)


def test_best_f1_is_oracle_over_all_thresholds() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.1).astype(int)
    s = np.round(rng.normal(size=300) + 2 * y, 2)
    f1, thr = best_f1(y, s)
    brute = max(pointwise_prf(y, s > t)[2] for t in np.unique(s) - 1e-9)
    assert f1 == pytest.approx(brute)
    assert pointwise_prf(y, s > thr)[2] == pytest.approx(f1)


def test_best_f1_finds_planted_perfect_threshold() -> None:
    rng = np.random.default_rng(6)
    y = np.r_[np.zeros(200), np.ones(20)]
    s = np.r_[rng.random(200), 2.0 + rng.random(20)]
    f1, thr = best_f1(y, s)
    assert f1 == 1.0
    assert s[y == 0].max() < thr < s[y == 1].min()


def test_legacy_point_adjusted_f1_toy_and_inflation() -> None:
    y = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0])
    flags = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1])
    # segment 1 is hit -> adjusted flags 0 1 1 1 0 0 0 0 1: TP 3, FP 1, FN 2
    assert legacy_point_adjusted_f1(y, flags) == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert legacy_point_adjusted_f1(y, flags) > pointwise_prf(y, flags)[2]
    # a segment that ends the series
    assert legacy_point_adjusted_f1([0, 0, 1, 1], [0, 0, 0, 1]) == 1.0


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def test_evaluate_keys_and_values() -> None:
    y = _segments_labels(5_000, 7)
    rng = np.random.default_rng(7)
    s = y + 0.7 * rng.random(y.shape[0])
    out = evaluate(y, s, threshold=0.9, sliding_window=20)
    assert set(out) == EVALUATE_KEYS
    assert all(isinstance(v, float) for v in out.values())
    assert out["auc_roc"] == pytest.approx(1.0)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["f1"] == 1.0
    assert out["best_f1_upper_bound"] == 1.0
    assert out["vus_pr"] == pytest.approx(vus_pr(y, s, 20))


def test_evaluate_nan_scores_count_as_minimum() -> None:
    rng = np.random.default_rng(8)
    y = (rng.random(500) < 0.1).astype(int)
    s = rng.normal(size=500) + y
    s_nan = s.copy()
    s_nan[::17] = np.nan
    filled = np.where(np.isnan(s_nan), np.nanmin(s_nan), s_nan)
    assert evaluate(y, s_nan, 0.5, 10) == evaluate(y, filled, 0.5, 10)


def test_evaluate_without_both_classes_is_nan() -> None:
    s = np.linspace(0, 1, 50)
    for labels in (np.zeros(50), np.ones(50)):
        out = evaluate(labels, s, 0.5, 5)
        assert set(out) == EVALUATE_KEYS
        assert all(math.isnan(v) for v in out.values())


def test_evaluate_input_errors() -> None:
    s = np.linspace(0, 1, 50)
    y = (s > 0.9).astype(int)
    with pytest.raises(LabelsError, match="50"):
        evaluate(y[:-1], s, 0.5, 5)
    with pytest.raises(LabelsError):
        evaluate(np.where(y == 1, 2, 0), s, 0.5, 5)
    with pytest.raises(InputError):
        evaluate(y, np.r_[s[:-1], np.inf], 0.5, 5)
    with pytest.raises(InputError):
        evaluate([], [], 0.5, 5)
    with pytest.raises(ConfigError):
        evaluate(y, s, math.nan, 5)
