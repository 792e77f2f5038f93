"""What each label rule of ``threshold + memory`` does, entity by entity (the default ``ae``).

    python benchmarks/feedback_diagnosis.py ../shared/data --datasets nab,smd [--limit N]

For every entity with an anomaly range in each half of its test part (the feedback replay's
selection, :mod:`detector.feedback_replay`), one JSON line:

- ``relearn_after``: the monitor's rule and what :meth:`LastingRuns.relearn_after
  <detector.feedback.LastingRuns.relearn_after>` asks for; ``first_f1``: point F1 of the
  labelled first half, decided again under each (what :meth:`LastingRuns.refit
  <detector.feedback.LastingRuns.refit>` compares) and ``taken``, its choice;
- ``scale`` and ``scale_counted``: the threshold refit with the false alarms the memory holds
  left out (the rule) and counted (before it);
- second-half point F1: ``none`` (no feedback), ``tm`` (threshold + memory as the replay
  applies it), ``tm_counted`` (the same with the counted refit), ``tm_no_scale`` (memory and
  ``relearn_after`` only).

Then the means per dataset. Labels of the second half are read only to score it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detector import DetectorConfig, Monitor, create_detector
from detector.bench import list_entities, load_entity
from detector.evaluation import pointwise_prf
from detector.feedback import LastingRuns, NormalMemory, label_masks, refit_threshold
from detector.feedback_replay import _has_both_halves, _stream, operator_labels
from detector.retraining import outside_spans

CHUNK = 100


def f1(labels: np.ndarray, flags: np.ndarray) -> float:
    return float(pointwise_prf(labels.astype(np.int8), flags)[2])


def diagnose(train: pd.DataFrame, test: pd.DataFrame, labels: np.ndarray) -> dict[str, Any]:
    det = create_detector(DetectorConfig(kind="ae")).fit(train)
    mid = (len(test) // 2) // CHUNK * CHUNK
    first, second = test.iloc[:mid], test.iloc[mid:]
    monitor = det.monitor()
    if det.window_ > 1:
        monitor.update(train.iloc[-(det.window_ - 1) :])
    start = monitor.state_dict()
    head = _stream(monitor, first, CHUNK)
    state = monitor.state_dict()
    spans = [(e.start, e.end) for e in monitor.events if e.start <= first.index[-1]]
    given = operator_labels(first.index, labels[:mid], spans)
    masks = label_masks(first.index, given)
    quiet = ~head["anomalous"].to_numpy()
    normal_spans = [(lab.start, lab.end) for lab in given if lab.verdict == "normal"]
    remembered = ~outside_spans(first.index, normal_spans)
    normalized = head["normalized"].to_numpy()
    refits = {
        "rule": refit_threshold(normalized, masks, 1.0, quiet, remembered),
        "counted": refit_threshold(normalized, masks, 1.0, quiet),
    }
    raw = head["score"].to_numpy()

    def decide(after: int) -> np.ndarray:
        again = Monitor.from_state(det, start)
        again.apply_feedback(relearn_after=after)
        return np.asarray(again.decide(raw)["anomalous"].to_numpy(), dtype=bool)

    lasting = LastingRuns.of(masks, head["event"].notna().to_numpy())
    current = monitor.options.relearn_after
    asked = lasting.relearn_after(current)
    taken = lasting.refit(current, masks, quiet, decide)
    labelled = masks.anomaly | masks.normal | (quiet & ~masks.labelled)
    first_f1 = {
        str(r): f1(masks.anomaly[labelled], decide(r)[labelled])
        for r in {current, asked}
        if r is not None
    }
    history = pd.concat([train, first])
    truth = labels[mid:]

    def second_f1(scale: float | None, memory: bool, after: int | None) -> float:
        live = Monitor.from_state(det, state)
        held = None
        if memory:
            held = NormalMemory.for_detector(det)
            for lo, hi in normal_spans:
                held.remember(det, history, lo, hi)
        live.apply_feedback(scale=scale, memory=held, relearn_after=after)
        return f1(truth, _stream(live, second, CHUNK)["anomalous"].to_numpy())

    scales = {k: None if r is None else r.scale for k, r in refits.items()}
    return {
        "relearn_after": [current, asked],
        "first_f1": first_f1,
        "taken": taken,
        "scale": scales["rule"],
        "scale_counted": scales["counted"],
        "none": second_f1(None, False, None),
        "tm": second_f1(scales["rule"], True, taken),
        "tm_counted": second_f1(scales["counted"], True, taken),
        "tm_no_scale": second_f1(None, True, taken),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--datasets", default="smd,nab,msl,smap,asd")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for dataset, folder in list_entities(args.root, args.datasets.split(","), None):
        train, test, labels = load_entity(folder)
        full = args.limit is not None and len(per[dataset]) >= args.limit
        if full or not _has_both_halves(labels):
            continue
        record = {"dataset": dataset, "entity": folder.name, **diagnose(train, test, labels)}
        per[dataset].append(record)
        print(json.dumps(record), flush=True)
    for dataset, records in per.items():
        means = {
            key: round(float(np.mean([r[key] for r in records])), 3)
            for key in ("none", "tm", "tm_counted", "tm_no_scale")
        }
        print(json.dumps({"dataset": dataset, "entities": len(records), **means}))


if __name__ == "__main__":
    main()
