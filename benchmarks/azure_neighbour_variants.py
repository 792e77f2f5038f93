"""The Azure-compatible shape score from the nearest, the second nearest or the guarded neighbour
distance.

    OMP_NUM_THREADS=1 python benchmarks/azure_neighbour_variants.py ../shared/data

A window's discord distance in :mod:`service.azure.univariate` was its distance to the nearest
non-overlapping window (``nearest``). An anomaly that occurs twice is the nearest neighbour of
its twin, so neither stands out ("twin freaks"). The distance to the second nearest window
(``second``: skipping the nearest one and the windows overlapping it) does not have that blind
spot, but it asks every normal shape to occur at least three times. ``guarded``, the method's
score now, takes the larger of the nearest distance and the smaller of the window's and its
nearest neighbour's second distances (see :func:`service.azure.univariate.discord_distances`).
This prints, for each:

- on generated hourly series (a daily cycle and noise) with the same small level shift (3 noise
  sd, a day long) twice, at hours 300 and 1,100, the share of the shifts' points flagged;
- on generated hourly series without anomalies (daily and weekly cycles, a slow trend: the
  series of ``tests/service/test_svc_azure_sdk.py``), the share of points flagged;
- on every NAB entity (whole series in, as ``bench_azure.py`` sends it), VUS-PR on the test
  part from ``severity``, and the share flagged on the series without anomalies in test.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from bench_azure import nab_series, print_means

from detector.evaluation import vus_pr
from service.azure import univariate as u

Distances = Callable[..., npt.NDArray[np.float64]]


def _alone(pick: int) -> Distances:
    """A discord distance from the window's own neighbours only: the nearest (``pick`` 0) or
    the second nearest (2), as :func:`service.azure.univariate._nearest_two` gives them."""

    def distances(
        scaled: npt.NDArray[np.float64], window: int, queries: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.float64]:
        x = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))
        reference = u._paa(x.unfold(0, window, 1))
        starts = torch.arange(reference.shape[0]) if queries is None else torch.from_numpy(queries)
        best = u._nearest_two(reference, starts, window)[pick]
        return torch.where(torch.isfinite(best), best, 0.0).numpy().astype(np.float64)

    return distances


VARIANTS: dict[str, Distances] = {
    "nearest": _alone(0),
    "second": _alone(2),
    "guarded": u.discord_distances,
}


def generated(n: int, seed: int) -> npt.NDArray[np.float64]:
    """Hourly: daily and weekly cycles, a slow trend and noise (no anomaly)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.asarray(
        100
        + 0.02 * t
        + 15 * np.sin(2 * np.pi * t / 24)
        + 5 * np.sin(2 * np.pi * t / (24 * 7))
        + rng.normal(0, 1.0, n),
        dtype=np.float64,
    )


def detect(values: npt.NDArray[np.float64], name: str, period: int | None) -> u.UnivariateResult:
    with patch.object(u, "discord_distances", VARIANTS[name]):
        return u.detect_series(values, period=period)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    twins: list[dict[str, Any]] = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        v = 100 + 10 * np.sin(2 * np.pi * np.arange(1440) / 24) + rng.normal(0, 1.0, 1440)
        spans = [(300, 324), (1100, 1124)]
        for a, b in spans:
            v[a:b] += 3.0
        for k in VARIANTS:
            flags = detect(v, k, 24).is_anomaly
            twins += [{"variant": k, "covered": flags[a:b].mean()} for a, b in spans]
    print("share of the twin shifts' points flagged (6 series, 12 shifts):")
    print(pd.DataFrame(twins).groupby("variant")["covered"].mean().round(3).to_string())
    gen: list[dict[str, Any]] = []
    for n in (720, 1440, 2880, 4320, 8640):
        for seed in range(3):
            v = generated(n, seed)
            gen.append({"points": n} | {k: detect(v, k, 24).is_anomaly.mean() for k in VARIANTS})
    print("share flagged on generated series without anomalies (3 seeds each):")
    print(pd.DataFrame(gen).groupby("points").mean().round(3).to_string())
    rows: list[dict[str, Any]] = []
    clean: list[dict[str, Any]] = []
    for series in nab_series(args.root):
        results = {k: detect(series.values, k, None) for k in VARIANTS}
        if series.clean:
            clean.append({k: r.is_anomaly.mean() for k, r in results.items()})
            continue
        rows.append(
            {
                k: vus_pr(series.labels, r.severity[series.test], series.window)
                for k, r in results.items()
            }
        )
    print_means(rows, clean)


if __name__ == "__main__":
    main()
