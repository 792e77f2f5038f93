"""Where does one method win and another lose? Per-entity VUS-PR of two methods of a bench run.

Usage::

    reconad bench ../shared/data --datasets nab --out OUT
    python benchmarks/compare_entities.py OUT/results.csv nab ae knn

Prints one line per entity with anomalies in test, sorted by the difference ``a - b``, then the
number of entities each method wins, the sum of what ``a`` gains where it wins and loses where it
loses, both means, and the mean of the better of the two on each entity: an upper bound, read off
the labels, for any rule that picks one of them per entity. A mean ratio near 1 can hide large
wins and losses on a few entities; this shows them, so that a change can be aimed at the
entities that decide the mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def compare(results: pd.DataFrame, dataset: str, a: str, b: str) -> pd.DataFrame:
    """Per-entity VUS-PR of methods ``a`` and ``b`` and their difference, sorted by it."""
    rows = results[(results["dataset"] == dataset) & (results["n_anomalous"] > 0)]
    wide = rows.pivot_table(index="entity", columns="method", values="metrics.vus_pr")
    missing = [m for m in (a, b) if m not in wide.columns]
    if missing:
        raise SystemExit(f"no {dataset} results for {missing}; methods: {sorted(wide.columns)}")
    table = wide[[a, b]].dropna()
    if table.empty:
        raise SystemExit(f"{a} and {b} have no {dataset} entity with a VUS-PR in common")
    table["diff"] = table[a] - table[b]
    return table.sort_values("diff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.csv of a reconad bench run")
    parser.add_argument("dataset")
    parser.add_argument("a", help="first method, e.g. ae")
    parser.add_argument("b", help="second method, e.g. knn")
    args = parser.parse_args()
    table = compare(pd.read_csv(args.results), args.dataset, args.a, args.b)
    width = max(len(str(e)) for e in table.index)
    for entity, row in table.iterrows():
        print(f"{entity:{width}s}  {row[args.a]:.3f}  {row[args.b]:.3f}  {row['diff']:+.3f}")
    wins, losses = table["diff"] > 0, table["diff"] < 0
    print(
        f"\n{args.a} wins {int(wins.sum())}, {args.b} wins {int(losses.sum())} of {len(table)}; "
        f"gains {table['diff'][wins].sum():+.2f}, losses {table['diff'][losses].sum():+.2f}; "
        f"mean {args.a} {table[args.a].mean():.4f}, {args.b} {table[args.b].mean():.4f}"
    )
    oracle = table[[args.a, args.b]].max(axis=1).mean()
    print(
        f"the better of the two on each entity (an oracle: it reads the labels): {oracle:.4f}, "
        f"{oracle / table[args.b].mean():.3f} x {args.b}"
    )


if __name__ == "__main__":
    main()
