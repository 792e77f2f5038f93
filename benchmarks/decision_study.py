"""Decision rules of the live monitor compared on the same models and the same causal scores.

Usage::

    reconad bench DATA --replay --kinds ae --limit 1 --models MODELS --out OUT
    python benchmarks/decision_study.py DATA --models MODELS --limit 1

The replay with ``--models`` leaves every entity's fitted detector (and batch scores) in
MODELS; this script loads them (fitting what is missing), scores each entity's test part
causally once through the monitor (chunks of ``--chunk`` points; kept as ``causal.npy`` next to
the model), then decides those scores with every variant of :data:`VARIANTS`
(:meth:`Monitor.decide <detector.monitor.Monitor.decide>`: the replay's threshold and event
logic, no rescoring). Per dataset and variant it prints the replay figures (F1 of the live
decision over the oracle best-F1 of the batch scores, flag rate on normal points, VUS-PR) and
two label-free figures a deployment also has: ``early flags``, the share of flagged points
in the first fifth of the test stream (all points, labels unused), and ``held-out flags``,
the share flagged when the held-out causal scores themselves are decided (in-sample).

Labels are used for the figures only; no variant is chosen here by them (see the README's
replay section for how the defaults were chosen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detector.bench import list_entities, load_entity, metric_window
from detector.config import DetectorConfig
from detector.replay import fitted_model, replay_entity, replay_metrics

VARIANTS: dict[str, dict[str, Any]] = {
    "dspot floored (default)": {},
    "dspot, no floor (old default)": {"floor": False},
    "dspot floored, risk 1e-4": {"risk": 1e-4},
    "dspot floored, depth 1000": {"depth": 1000},
    "dspot floored, log": {"log": True},
    "dspot floored, 2 of 3": {"min_duration": 2, "persistence": 3},
    "dspot floored, no relearn": {"relearn_after": None},
    "dspot floored, relearn 20": {"relearn_after": 20},
    "static pot": {"threshold": "static"},
    "conformal 0.005": {"threshold": "conformal", "target": 0.005},
    "conformal 0.01": {"threshold": "conformal", "target": 0.01},
    "conformal 0.02": {"threshold": "conformal", "target": 0.02},
    "conformal 0.01, relearn 20": {"threshold": "conformal", "target": 0.01, "relearn_after": 20},
    "conformal 0.01, 2 of 3": {
        "threshold": "conformal",
        "target": 0.01,
        "min_duration": 2,
        "persistence": 3,
    },
}

EARLY = 0.2  # the first fifth of the stream


def entity_rows(
    folder: Path, dataset: str, models: Path, config: DetectorConfig, chunk: int
) -> list[dict[str, Any]]:
    """One row of figures per variant for one entity."""
    train, test, labels = load_entity(folder)
    cache = models / dataset / folder.name
    det, batch = fitted_model(config, train, test, cache)
    causal_path = cache / f"causal-{chunk}.npy"
    if causal_path.exists():
        causal = np.load(causal_path)
    else:
        causal = replay_entity(det, train, test, chunk)["score"].to_numpy()
        np.save(causal_path, causal)
    window = metric_window(train)
    early = int(len(causal) * EARLY)
    rows = []
    for name, options in VARIANTS.items():
        out = det.monitor(**options).decide(causal)
        figures = replay_metrics(labels, out, batch, window) if labels.any() else {}
        normal = labels == 0
        flags = out["anomalous"].to_numpy()
        held = det.monitor(**options).decide(det.holdout_scores_)["anomalous"].to_numpy()
        rows.append(
            {
                "dataset": dataset,
                "entity": folder.name,
                "variant": name,
                "labelled": bool(labels.any()),
                **figures,
                "normal_flag_rate": float(flags[normal].mean()),
                "early_flag_rate": float(flags[:early].mean()),
                "holdout_flag_rate": float(held.mean()),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Means per dataset and variant (label figures over the labelled entities)."""
    frame = pd.DataFrame(rows)
    keys = ["dataset", "variant"]
    labelled = frame[frame["labelled"]]
    out = labelled.groupby(keys, sort=False)[["f1", "best_f1_batch"]].mean()
    out["f1/oracle"] = out["f1"] / out["best_f1_batch"]
    for name in ("vus_pr_causal", "vus_pr_batch"):
        out[name] = labelled.groupby(keys, sort=False)[name].mean()
    for name in ("normal_flag_rate", "early_flag_rate", "holdout_flag_rate"):
        out[name] = frame.groupby(keys, sort=False)[name].mean()
    out["entities"] = frame.groupby(keys, sort=False).size()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--datasets", type=lambda s: s.split(","))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--kind", default="ae")
    parser.add_argument("--out", type=Path, help="also write the rows (JSON lines) here")
    args = parser.parse_args()
    config = DetectorConfig.model_validate({"kind": args.kind})
    rows: list[dict[str, Any]] = []
    for dataset, folder in list_entities(args.root, args.datasets, args.limit):
        rows += entity_rows(folder, dataset, args.models, config, args.chunk)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.set_option("display.width", 250)
    print(table(rows).round(3).to_string())


if __name__ == "__main__":
    main()
