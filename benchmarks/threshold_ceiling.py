"""How far can a fixed threshold rule go? A study of the scores kept by ``reconad bench --scores``.

Usage::

    reconad bench ../shared/data --baselines none --scores SCORES --out OUT
    python benchmarks/threshold_ceiling.py SCORES

For every dataset and detector kind (entities with anomalies in test), it prints:

- ``own F1 / best F1``: mean point-wise F1 at the detector's own threshold (calibrated on
  training data) over the mean oracle best-F1, the ratio that ``reconad bench`` reports;
- ``flagged`` and ``anomalous``: mean fraction of test points above the own threshold, and
  labelled anomalous;
- ``ceiling``: the best ratio that any rule multiplying every entity's own threshold by one
  constant could reach, with the constant chosen on the test labels (an upper bound for rules of
  the form "POT, but stricter" or "looser"), and that constant;
- ``best/own threshold``: quartiles over entities of the ratio of the oracle best-F1 threshold to
  the own threshold. A wide spread means that no rule shared by the entities of a dataset can
  land near every entity's best threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from detector.evaluation import best_f1, pointwise_prf

MULTIPLIERS = np.geomspace(0.02, 50.0, 121)


def study(files: list[Path]) -> dict[str, float]:
    """Figures of one dataset and kind from its per-entity score files."""
    entities = []
    for path in files:
        with np.load(path) as saved:
            scores, labels = saved["scores"], saved["labels"].astype(bool)
            threshold = float(saved["threshold"])
        if labels.any() and not labels.all() and np.isfinite(threshold):
            entities.append((scores, labels, threshold))  # NaN: never above a threshold
    if not entities:
        return {}
    best = [best_f1(labels, scores) for scores, labels, _ in entities]
    best_mean = float(np.mean([f1 for f1, _ in best]))

    def mean_f1(multiplier: float) -> float:
        return float(np.mean([pointwise_prf(y, s > multiplier * t)[2] for s, y, t in entities]))

    ceilings = [mean_f1(m) for m in MULTIPLIERS]
    top = int(np.argmax(ceilings))
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.array([b_t / t for (_, b_t), (_, _, t) in zip(best, entities, strict=True)])
    q25, q50, q75 = np.nanpercentile(spread[spread > 0], [25, 50, 75])
    return {
        "entities": len(entities),
        "own": mean_f1(1.0) / best_mean,
        "flagged": float(np.mean([np.mean(s > t) for s, _, t in entities])),
        "anomalous": float(np.mean([np.mean(y) for _, y, _ in entities])),
        "ceiling": ceilings[top] / best_mean,
        "multiplier": float(MULTIPLIERS[top]),
        "q25": q25,
        "q50": q50,
        "q75": q75,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scores", type=Path, help="the --scores folder of a bench run")
    args = parser.parse_args()
    print(
        "| dataset | kind | entities | own F1 / best F1 | flagged | anomalous "
        "| ceiling (x threshold) | best/own threshold q25 / median / q75 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dataset in sorted(p for p in args.scores.iterdir() if p.is_dir()):
        kinds = sorted({f.stem for f in dataset.glob("*/*.npz")})
        for kind in kinds:
            row = study(sorted(dataset.glob(f"*/{kind}.npz")))
            if not row:
                continue  # a baseline: no threshold of its own
            print(
                f"| {dataset.name} | {kind} | {row['entities']} | {row['own']:.2f} "
                f"| {row['flagged']:.2f} | {row['anomalous']:.2f} "
                f"| {row['ceiling']:.2f} (x{row['multiplier']:.2f}) "
                f"| {row['q25']:.2g} / {row['q50']:.2g} / {row['q75']:.2g} |"
            )


if __name__ == "__main__":
    main()
