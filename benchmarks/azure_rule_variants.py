"""Variants of the Azure-compatible univariate flag rule, on NAB (exploration, none adopted).

    OMP_NUM_THREADS=1 python benchmarks/azure_rule_variants.py ../shared/data

Every NAB entity goes in whole (train then test), as ``bench_azure.py`` sends it; VUS-PR on the
test part from ``severity`` (0 on points not flagged) under:

- ``base``: the rule of :mod:`service.azure.univariate`;
- ``joint``: one hysteresis over both scores (a residual spike inside a shape excursion flags
  the whole excursion);
- ``peak``: every point of an event gets the event's peak severity;
- ``mix``: the mean of a point's own and its event's peak severity;

and, on the series without anomalies in test, the share of points each flags (``joint`` is the
only one that changes the flags). Then, for the series over 8,640 points (the API's limit),
the whole series against two requests of half of it each, as a client would have to send.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from bench_azure import N_POINTS, nab_series, print_means

from detector.evaluation import vus_pr
from service.azure import univariate as u

Flags = Callable[
    [npt.NDArray[np.float64], npt.NDArray[np.float64], float, float], npt.NDArray[np.bool_]
]


def joint(
    shape_z: npt.NDArray[np.float64],
    res_score: npt.NDArray[np.float64],
    shape_bar: float,
    res_bar: float,
) -> npt.NDArray[np.bool_]:
    shape = np.nan_to_num(shape_z, nan=-np.inf)
    high = (shape > shape_bar) | (res_score > res_bar)
    by_shape = u._events(high, shape > u._CONTINUATION)
    by_level = u._events(res_score > res_bar, res_score > res_bar / u._RESIDUAL_RATIO)
    return by_shape | by_level


def event_peak(flags: npt.NDArray[np.bool_], norm: npt.NDArray[np.float64]) -> np.ndarray:
    """Each flagged run's peak normalised score over the run."""
    out = np.zeros(len(flags))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        out[a:b] = norm[a:b].max()
    return out


def detect(values: np.ndarray, flags: Flags) -> u.UnivariateResult:
    with patch.object(u, "_flags", flags):
        return u.detect_series(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    clean: list[dict[str, Any]] = []
    split: list[dict[str, Any]] = []
    for series in nab_series(args.root):
        values, labels, part, window = series.values, series.labels, series.test, series.window
        base, both = detect(values, u._flags), detect(values, joint)
        if series.clean:
            clean.append({"base": base.is_anomaly.mean(), "joint": both.is_anomaly.mean()})
            continue
        peak = event_peak(base.is_anomaly, base.score)
        by_peak = np.where(base.is_anomaly, peak / (peak + 1.0), 0.0)
        variants = {
            "base": base.severity,
            "joint": both.severity,
            "peak": by_peak,
            "mix": np.where(base.is_anomaly, (by_peak + base.severity) / 2, 0.0),
        }
        rows.append({k: vus_pr(labels, v[part], window) for k, v in variants.items()})
        if len(values) > N_POINTS:
            parts = -(-len(values) // N_POINTS)
            edges = np.linspace(0, len(values), parts + 1).round().astype(int)
            halves = [u.detect_series(values[a:b]).severity for a, b in pairwise(edges)]
            split.append(
                {
                    "whole": rows[-1]["base"],
                    "split": vus_pr(labels, np.concatenate(halves)[part], window),
                }
            )
    print_means(rows, clean)
    print(f"{len(split)} series over 8,640 points, whole against split requests:")
    print(pd.DataFrame(split).mean().round(3).to_string())


if __name__ == "__main__":
    main()
