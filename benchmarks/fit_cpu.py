"""Fit seconds of the default detector and of PyOD's AutoEncoder in CPU time as well as wall time.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fit_cpu.py ../shared/data --datasets asd,smap,msl \
        --limit 2 --methods ae,pyod_ae --out OUT.csv

``reconad bench`` times fits by the wall clock, which on a machine shared with other jobs
depends on how busy it is at the moment each fit runs. This fits the same entities with one
torch thread and records the process's CPU seconds too (``time.process_time``), which counts
only the time the fit itself was on a core: the steadier figure for a ratio between methods
fitted minutes apart. With ``--config`` the detector takes that config (JSON), as in the bench.
One line per fit: dataset, entity, method, wall seconds, CPU seconds, epochs (detectors).
Run it with another checkout on ``PYTHONPATH`` to time that revision's defaults.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from detector.baselines import create_baseline
from detector.bench import list_entities, load_entity
from detector.detector import create_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of <dataset>/<entity>/{train,test}.csv")
    parser.add_argument("--datasets", type=lambda s: s.split(","), required=True)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--methods", default="ae,pyod_ae", help="a detector kind and baselines")
    parser.add_argument("--config", type=Path, help="detector config JSON")
    parser.add_argument("--label", default="", help="a name for this run's detector rows")
    parser.add_argument("--out", type=Path, required=True, help="CSV to append the rows to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # one-off import, outside timings
    config: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    new_file = not args.out.exists()
    with args.out.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(["dataset", "entity", "method", "wall_s", "cpu_s", "epochs"])
        for dataset, folder in list_entities(args.root, args.datasets, args.limit):
            train, _, _ = load_entity(folder)
            for method in args.methods.split(","):
                wall, cpu = time.perf_counter(), time.process_time()
                epochs: int | str = ""
                if method == "pyod_ae":
                    create_baseline(method).fit(train)
                else:
                    det = create_detector({**config, "kind": method}).fit(train)
                    epochs = len(det.history_)
                row = [
                    dataset,
                    folder.name,
                    f"{method}{args.label}" if method != "pyod_ae" else method,
                    f"{time.perf_counter() - wall:.2f}",
                    f"{time.process_time() - cpu:.2f}",
                    epochs,
                ]
                writer.writerow(row)
                handle.flush()
                print(",".join(map(str, row)), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
