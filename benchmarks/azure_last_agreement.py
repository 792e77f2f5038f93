"""Whether last-point detection agrees with entire detection on the last point, on NAB.

    OMP_NUM_THREADS=1 python benchmarks/azure_last_agreement.py ../shared/data --cuts 8

Each NAB series of at most 8,640 points (the API's limit), whole (train, then test), is cut at
``--cuts`` positions spread evenly over its test part; each prefix goes through
:func:`service.azure.univariate.detect_series` twice, as ``timeseries/last/detect`` and as
``timeseries/entire/detect`` answer it, and the last point's flags are compared. Prints the
cuts where they agree, and how many of the points entire detection flags last detection
flags too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from bench_azure import N_POINTS, nab_series

from service.azure.univariate import detect_series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--cuts", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agree = cuts = flagged = both = 0
    for series in nab_series(args.root):
        values = series.values
        if len(values) > N_POINTS:  # beyond the API's limit
            continue
        first = series.test.start
        ends = np.linspace(first + 1, len(values), args.cuts).round().astype(int)
        for end in ends:
            last = bool(detect_series(values[:end], last_only=True).is_anomaly[-1])
            entire = bool(detect_series(values[:end]).is_anomaly[-1])
            cuts += 1
            agree += last == entire
            flagged += entire
            both += last and entire
    print(f"{cuts} cuts: the last point's flag agrees on {agree}")
    print(f"entire detection flags {flagged} of them; last detection flags {both} of those too")


if __name__ == "__main__":
    main()
