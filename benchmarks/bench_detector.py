"""Detector speed: training time and scoring throughput for every kind, with default settings.

Usage::

    python benchmarks/bench_detector.py [--kinds ae,vae,aae,cvae] [--device cpu|cuda|auto]

Data is generated (periodic signals plus noise, timestamp-indexed so that the cvae has calendar
context): a 20,000-point univariate series and a 25,000 x 38 multivariate one. Training uses
the default configuration (window "auto", caps of 40 epochs and 300 s). Scoring throughput is
windows per second over a long series (stride 1, batched, ``torch.inference_mode``). With a GPU,
``--compare-cpu`` also checks that CPU and GPU scores agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from detector import KINDS, DetectorConfig, create_detector


def series(n: int, n_features: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    periods = rng.uniform(20, 200, n_features)
    phases = rng.uniform(0, 2 * np.pi, n_features)
    values = np.sin(2 * np.pi * t[:, None] / periods + phases) + 0.1 * rng.standard_normal(
        (n, n_features)
    )
    index = pd.date_range("2024-01-01", periods=n, freq="min")
    return pd.DataFrame(values, index=index, columns=[f"f{j}" for j in range(n_features)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare-cpu", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    cases = {
        "univariate 20,000 x 1": (series(20_000, 1, 0), series(400_000, 1, 1)),
        "multivariate 25,000 x 38": (series(25_000, 38, 2), series(40_000, 38, 3)),
    }
    print(f"{'case':<26} {'kind':<5} {'window':>6} {'epochs':>6} {'fit s':>7} {'windows/s':>11}")
    for name, (train, test) in cases.items():
        for kind in args.kinds.split(","):
            cfg = DetectorConfig(kind=kind, training={"device": args.device})
            t0 = time.perf_counter()
            det = create_detector(cfg).fit(train)
            fit_s = time.perf_counter() - t0
            det.anomaly_score(test.iloc[:5000])  # warm-up
            t0 = time.perf_counter()
            scores = det.anomaly_score(test)
            score_s = time.perf_counter() - t0
            n_windows = len(test) - det.window_ + 1
            print(
                f"{name:<26} {kind:<5} {det.window_:>6} {len(det.history_):>6} {fit_s:>7.1f} "
                f"{n_windows / score_s:>11,.0f}",
                flush=True,
            )
            if args.compare_cpu and det.device_ != "cpu":
                cpu = det.to("cpu").anomaly_score(test)
                diff = np.nanmax(np.abs(cpu.to_numpy() - scores.to_numpy()) / (1 + np.abs(cpu)))
                print(f"    cpu vs {det.device_}: max relative difference {diff:.2e}")


if __name__ == "__main__":
    main()
