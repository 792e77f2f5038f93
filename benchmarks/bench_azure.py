"""Speed and quality of the Azure-compatible univariate detection.

Speed: an entire-series and a last-point request of 8,640 points (the old service's maximum)
through :class:`service.azure.service.AzureService` (validation, imputation, the method and the
response model; no HTTP), median of ``--repeats`` runs. Run it on one core::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_azure.py --data ../shared/data

Quality (with ``--data``): on every NAB entity with anomalies in test, the whole series (train
then test, as a client would send it) goes through the method once per sensitivity; VUS-PR on
the test part from ``severity`` (0 on points not flagged, as the API defines it) and from the
method's continuous score, next to the kNN baseline of ``reconad bench`` (fitted on train,
scoring test) in the same run, with the same metric window. Series longer than 8,640 points
(the service refuses them) are passed to the method directly. The NAB series without anomalies
in test give the share of points each sensitivity flags where there is nothing to find (a
false-alarm rate): ``severity`` is 0 on points not flagged, so its VUS-PR grows with the share
flagged, and this column shows what that share costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from detector import DetectorConfig
from detector.baselines import create_baseline
from detector.bench import list_entities, load_entity, metric_window
from detector.evaluation import vus_pr
from service.azure import schemas as az
from service.azure.service import AzureService
from service.azure.univariate import DEFAULT_SENSITIVITY, detect_series
from service.settings import Settings

N_POINTS = 8640


def _series(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 100 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, n)
    values[n // 2] += 30
    stamps = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    return [
        {"timestamp": s.isoformat(), "value": float(v)} for s, v in zip(stamps, values, strict=True)
    ]


def speed(repeats: int) -> dict[str, float]:
    """Median seconds of an entire and a last-point request of 8,640 points."""
    service = AzureService(Settings(), None, None, None, None, None, None)  # type: ignore[arg-type]
    body = {"series": _series(N_POINTS), "granularity": "minutely", "customInterval": 5}
    out: dict[str, float] = {}
    for name, call in (("entire_s", service.detect_entire), ("last_s", service.detect_last)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call(az.UnivariateDetectionOptions.model_validate(body))
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


SENSITIVITIES = (80, 90, 95, 99)


@dataclass(frozen=True)
class NabSeries:
    """One NAB entity as a client of the API sends it: the whole series (train, then test,
    gaps interpolated) in ``values``; ``labels`` and VUS-PR's ``window`` are the test part's,
    ``test`` where it starts in ``values``."""

    name: str
    train: pd.DataFrame
    test_frame: pd.DataFrame
    values: np.ndarray
    labels: np.ndarray
    test: slice
    window: int

    @property
    def clean(self) -> bool:
        """No anomaly in the test part."""
        return not self.labels.any()


def nab_series(root: Path) -> Iterator[NabSeries]:
    """Every NAB entity of the benchmark data under ``root``."""
    for _, folder in list_entities(root, ["nab"], None):
        train, test, labels = load_entity(folder)
        whole = pd.concat([train, test])["value"].interpolate(limit_direction="both")
        yield NabSeries(
            folder.name,
            train,
            test,
            whole.to_numpy(dtype=np.float64),
            np.asarray(labels),
            slice(len(train), None),
            metric_window(train),
        )


def print_means(rows: list[dict[str, Any]], clean: list[dict[str, Any]]) -> None:
    """The exploration scripts' summary: mean VUS-PR per variant over the entities with
    anomalies, and the mean share flagged on the series without."""
    print(f"NAB, {len(rows)} entities with anomalies, mean VUS-PR from severity:")
    print(pd.DataFrame(rows).mean().round(3).to_string())
    print(f"share flagged on the {len(clean)} NAB series without anomalies:")
    print(pd.DataFrame(clean).mean().round(4).to_string())


def quality(root: Path, sensitivities: tuple[int, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-entity VUS-PR of the method and of kNN on NAB, and the share of points flagged on
    the NAB series without anomalies in test."""
    rows = []
    clean_rows = []
    cfg = DetectorConfig()
    for series in nab_series(root):
        values, labels, part, window = series.values, series.labels, series.test, series.window
        if series.clean:
            clean: dict[str, Any] = {"entity": series.name, "points": len(values)}
            for s in sensitivities:
                clean[f"flagged_{s}"] = float(
                    detect_series(values, sensitivity=s).is_anomaly.mean()
                )
            clean_rows.append(clean)
            print(json.dumps(clean), flush=True)
            continue
        row: dict[str, Any] = {"entity": series.name, "points": len(values)}
        for s in sensitivities:
            t0 = time.perf_counter()
            r = detect_series(values, sensitivity=s)
            row[f"seconds_{s}"] = time.perf_counter() - t0
            row[f"severity_{s}"] = vus_pr(labels, r.severity[part], window)
            row[f"flagged_{s}"] = float(r.is_anomaly[part].mean())
            row["score"] = vus_pr(labels, r.score[part], window)
        knn = create_baseline(
            "knn",
            cfg.window,
            cfg.training.seed,
            cfg.score_reduction,
            cfg.training.validation_fraction,
        ).fit(series.train)
        row["knn"] = vus_pr(labels, knn.anomaly_score(series.test_frame).to_numpy(), window)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return pd.DataFrame(rows), pd.DataFrame(clean_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="benchmark data folder (with nab/)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the per-entity table here (CSV)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures = speed(args.repeats)
    print(
        f"8,640 points, one thread: entire {figures['entire_s']:.3f} s, "
        f"last {figures['last_s']:.3f} s (median of {args.repeats})"
    )
    if args.data is None:
        return
    table, clean = quality(args.data, SENSITIVITIES)
    if args.out is not None:
        table.to_csv(args.out, index=False)
        clean.to_csv(args.out.with_name(args.out.stem + "_clean.csv"), index=False)
    means = table.drop(columns=["entity"]).mean()
    clean_means = clean.drop(columns=["entity"]).mean()
    print(f"NAB, {len(table)} entities with anomalies in test, mean VUS-PR:")
    for s in SENSITIVITIES:
        default = " (the default)" if s == DEFAULT_SENSITIVITY else ""
        print(
            f"  severity at sensitivity {s}{default}: {means[f'severity_{s}']:.3f} "
            f"(flags {means[f'flagged_{s}']:.1%} of test points; "
            f"{clean_means[f'flagged_{s}']:.1%} of the {len(clean)} series without anomalies)"
        )
    print(f"  continuous score: {means['score']:.3f}")
    print(f"  kNN baseline (reconad bench, fitted on train): {means['knn']:.3f}")


if __name__ == "__main__":
    main()
