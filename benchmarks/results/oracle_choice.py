"""An upper bound from the committed bench tables: mean VUS-PR per folder when, per entity,
the better of the default ``ae`` and kNN (or of every method) is chosen with the labels.

    python benchmarks/results/oracle_choice.py --dataset nab

``ae`` is read from the last full run of the current schedule
(``fitspeed/schedule/results.csv``), the other methods from the top-level run
(``results.csv``; they do not depend on the detector). No selector can do better than these.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nab")
    args = parser.parse_args()
    current = pd.read_csv(HERE / "fitspeed" / "schedule" / "results.csv")
    earlier = pd.read_csv(HERE / "results.csv")

    def table(frame: pd.DataFrame) -> pd.DataFrame:
        part = frame[frame["dataset"] == args.dataset]
        wide: pd.DataFrame = part.pivot(index="entity", columns="method", values="metrics.vus_pr")
        return wide

    ae = table(current)["ae"]
    others = table(earlier).drop(columns=["ae", "random"], errors="ignore")
    both = others.join(ae).dropna()
    print(f"{args.dataset}: {len(both)} entities")
    print(f"  ae {both['ae'].mean():.3f}, knn {both['knn'].mean():.3f}")
    print(f"  better of ae and knn per entity: {both[['ae', 'knn']].max(axis=1).mean():.3f}")
    print(f"  best of every method per entity: {both.max(axis=1).mean():.3f}")


if __name__ == "__main__":
    main()
