"""Would the default ``ae`` gain from averaging with the kNN baseline? Batch VUS-PR per entity.

    python benchmarks/ensemble_check.py ../shared/data --dataset nab

Per entity with an anomaly: ``ae`` (default detector, fitted on the whole training part),
``knn`` (the bench's kNN baseline fitted on its first 80%), and two combinations of the two
test scores, each scaled by its own held-out scores (the last 20% of the training part: its
median, and the distance from it to the 99th percentile): their ``mean``, their ``max`` and
their ``min`` (a point is as anomalous as the less alarmed of the two: badly reconstructed
*and* unlike every training window).
Then the means over entities.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from detector import DetectorConfig, create_detector
from detector.baselines import create_baseline
from detector.bench import list_entities, load_entity, metric_window
from detector.evaluation import vus_pr


def scaled(scores: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    ref = held_out[np.isfinite(held_out)]
    median = float(np.median(ref))
    spread = float(np.quantile(ref, 0.99)) - median
    out: np.ndarray = (scores - median) / (spread if spread > 0 else 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--dataset", default="nab")
    args = parser.parse_args()
    rows: list[dict[str, float]] = []
    for _, folder in list_entities(args.root, [args.dataset], None):
        train, test, labels = load_entity(folder)
        if labels.sum() == 0:
            continue
        cut = int(len(train) * 0.8)
        det = create_detector(DetectorConfig(kind="ae")).fit(train)
        knn = create_baseline("knn").fit(train.iloc[:cut])
        a, k = (m.anomaly_score(test).to_numpy() for m in (det, knn))
        a_held, k_held = (m.anomaly_score(train).to_numpy()[cut:] for m in (det, knn))
        both = np.vstack([scaled(a, a_held), scaled(k, k_held)])
        window = metric_window(train)
        row = {
            name: vus_pr(labels, s, window)
            for name, s in (
                ("ae", a),
                ("knn", k),
                ("mean", np.nanmean(both, axis=0)),
                ("max", np.fmax(both[0], both[1])),
                ("min", np.fmin(both[0], both[1])),
            )
        }
        rows.append(row)
        print(json.dumps({"entity": folder.name, **{n: round(v, 3) for n, v in row.items()}}))
    means = {n: round(float(np.mean([r[n] for r in rows])), 3) for n in rows[0]}
    print(json.dumps({"dataset": args.dataset, "entities": len(rows), **means}))


if __name__ == "__main__":
    main()
