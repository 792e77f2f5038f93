"""Where one fit's time goes: the phases of ``Detector.fit`` timed, a cProfile, PyOD's fit beside.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/profile_fit.py ../shared/data/asd/omi-1 [CONFIG_JSON] \
        [--pyod]

Prints the entity's size, the window ``"auto"`` chose, the train and validation window counts,
the epochs run with the validation curve (so whether the cap or early stopping ended it),
seconds per epoch and per validation pass, the seconds of preprocessing, ``fit_model``,
``_calibrate`` and the held-out stream scores, then the 25 most expensive calls by cumulative
time. ``--pyod`` also fits the ``pyod_ae`` baseline on the same data and prints its window,
window count, epochs and batch. One torch thread; the first fit of a process also pays the
torch optimiser's one-off import, which the profile shows on its own line.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import detector.detector as detector_module
from detector import training
from detector.baselines import PyODAutoEncoder, create_baseline
from detector.bench import load_entity
from detector.detector import Detector, create_detector
from detector.preprocessing import Preprocessor

TIMERS: dict[str, float] = {}
COUNTS: dict[str, int] = {}


def timed(owner: Any, name: str) -> None:
    """Replace ``owner.name`` by a wrapper that adds its seconds to :data:`TIMERS`."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMERS[name] = TIMERS.get(name, 0.0) + time.perf_counter() - started
            COUNTS[name] = COUNTS.get(name, 0) + 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entity", type=Path, help="an entity folder (train.csv, test.csv)")
    parser.add_argument("config", nargs="?", default="{}", help="detector config JSON")
    parser.add_argument("--pyod", action="store_true", help="also fit pyod_ae")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, _, _ = load_entity(args.entity)
    for owner, name in (
        (Detector, "_calibrate"),
        (Detector, "_stream_scores"),
        (training, "_validation_loss"),
        (Preprocessor, "fit"),
        (Preprocessor, "transform"),
    ):
        timed(owner, name)
    sizes: dict[str, int] = {}
    fit_model = training.fit_model  # what detector.detector imported

    def counted(*args: Any, **kwargs: Any) -> Any:
        sizes["train windows"], sizes["validation windows"] = len(args[1]), len(args[2])
        return fit_model(*args, **kwargs)

    setattr(detector_module, "fit_model", counted)  # noqa: B010 (not in its __all__)
    timed(detector_module, "fit_model")
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    det = create_detector(json.loads(args.config)).fit(train)
    profile.disable()
    total = time.perf_counter() - started
    history = det.history_
    best = min(history, key=lambda h: h["val"])
    print(
        f"{args.entity.name}: {len(train)} points x {train.shape[1]} features, "
        f"window {det.window_}, {sizes}, fit {total:.2f} s"
    )
    print({name: f"{s:.3f} s ({COUNTS[name]} calls)" for name, s in TIMERS.items()})
    print(
        f"epochs {len(history)} (cap {det.config.training.max_epochs}), best epoch "
        f"{int(best['epoch'])}, {history[-1]['seconds'] / len(history):.3f} s an epoch, "
        f"{TIMERS['_validation_loss'] / len(history):.3f} s of it validation"
    )
    print("validation curve:", [round(h["val"], 4) for h in history])
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())
    if args.pyod:
        started = time.perf_counter()
        baseline = create_baseline("pyod_ae").fit(train)
        seconds = time.perf_counter() - started
        assert isinstance(baseline, PyODAutoEncoder)
        inner = baseline.model_.detector
        print(
            f"pyod_ae: fit {seconds:.2f} s, window {baseline.window_}, "
            f"{len(train) - baseline.window_ + 1} windows, {inner.epoch_num} epochs, "
            f"batch {inner.batch_size}, hidden {inner.hidden_neuron_list}"
        )


if __name__ == "__main__":
    main()
