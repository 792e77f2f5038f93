"""Training schedules compared on training data only: each entity's best held-out validation
error, epochs and fit CPU seconds under every schedule given.

Usage::

    python benchmarks/schedule_check.py DATA --datasets smd,asd,msl,smap,nab --kind ae \
        --schedules '{"base": {}, "new": {"learning_rate": 0.002, "max_epochs": 30}}'

Each schedule is a ``training`` mapping applied over the kind's defaults (``{}``: the defaults
themselves). The validation error is the network's own early-stopping figure (the held-out tail
of the training part), so no test data or label is read. One line per entity, then per dataset:
how many entities each schedule fits at or below the first one's validation error, the median
ratio of its error to the first's, and its summed CPU seconds (one torch thread is the steady
setting: ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector import DetectorConfig, create_detector
from detector.bench import list_entities, load_entity


def fit_figures(train: Any, kind: str, training: dict[str, Any]) -> tuple[float, int, float]:
    """Best validation error, epochs run and CPU seconds of one fit."""
    config = DetectorConfig.model_validate({"kind": kind, "training": training})
    started = time.process_time()
    det = create_detector(config).fit(train)
    seconds = time.process_time() - started
    losses = [epoch["val"] for epoch in det.history_]
    return min(losses), len(losses), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--datasets", type=lambda s: s.split(","))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--kind", default="ae")
    parser.add_argument("--schedules", type=json.loads, required=True)
    args = parser.parse_args()
    schedules: dict[str, dict[str, Any]] = args.schedules
    names = list(schedules)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the one-off import, untimed
    per_dataset: dict[str, list[dict[str, tuple[float, int, float]]]] = defaultdict(list)
    for dataset, folder in list_entities(args.root, args.datasets, args.limit):
        train, _, _ = load_entity(folder)
        row = {name: fit_figures(train, args.kind, schedules[name]) for name in names}
        per_dataset[dataset].append(row)
        cells = [f"{n}: val {v:.4g} ep {e} {s:.2f}s" for n, (v, e, s) in row.items()]
        print(" | ".join([dataset, folder.name, *cells]), flush=True)
    first = names[0]
    for dataset, rows in per_dataset.items():
        for name in names:
            ratios = np.array([r[name][0] / r[first][0] for r in rows])
            seconds = sum(r[name][2] for r in rows)
            print(
                f"{dataset} {name}: {len(rows)} entities, val <= {first}'s on "
                f"{int((ratios <= 1).sum())}, median val ratio {np.median(ratios):.4f}, "
                f"CPU {seconds:.1f} s ({seconds / sum(r[first][2] for r in rows):.2f}x)"
            )


if __name__ == "__main__":
    main()
