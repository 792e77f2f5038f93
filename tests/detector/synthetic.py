"""Generated series with injected anomalies for the detector tests (no external data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

ANOMALY_TYPES = ("spike", "level_shift", "frequency", "flatline", "correlation")


def normal_series(n: int, seed: int, start: int = 0, n_features: int = 3) -> pd.DataFrame:
    """Periodic, correlated features with noise: f1 follows f0, f2 has its own period."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n)
    base = np.sin(2 * np.pi * t / 40)
    cols = {
        "f0": base + 0.05 * rng.standard_normal(n),
        "f1": 0.8 * base + 0.2 + 0.05 * rng.standard_normal(n),
        "f2": 0.5 * np.cos(2 * np.pi * t / 25) + 0.05 * rng.standard_normal(n),
    }
    for j in range(3, n_features):
        cols[f"f{j}"] = np.sin(2 * np.pi * t / (30 + 7 * j)) + 0.05 * rng.standard_normal(n)
    index = pd.date_range("2024-01-01", periods=start + n, freq="min")[start:]
    return pd.DataFrame(cols, index=index)


def with_anomalies(
    frame: pd.DataFrame, seed: int, length: int = 30
) -> tuple[pd.DataFrame, pd.Series, dict[str, tuple[int, int]]]:
    """Inject one segment of every anomaly type; returns data, 0/1 labels, segment positions."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(out)
    labels = np.zeros(n, dtype=int)
    spans: dict[str, tuple[int, int]] = {}
    gap = n // (len(ANOMALY_TYPES) + 1)
    t = np.arange(length)
    for i, kind in enumerate(ANOMALY_TYPES):
        lo = gap * (i + 1) + int(rng.integers(-5, 5))
        hi = lo + length
        if kind == "spike":
            hi = lo + 3
            out.iloc[lo:hi, 0] += 3.0
        elif kind == "level_shift":
            out.iloc[lo:hi, 2] += 1.5
        elif kind == "frequency":
            out.iloc[lo:hi, 0] = np.sin(2 * np.pi * t / 9) + 0.05 * rng.standard_normal(length)
        elif kind == "flatline":
            out.iloc[lo:hi, 2] = out["f2"].to_numpy()[lo]
        else:  # broken correlation: f1 moves against f0
            out.iloc[lo:hi, 1] = -0.8 * out.iloc[lo:hi, 0].to_numpy() + 0.2
        labels[lo:hi] = 1
        spans[kind] = (lo, hi)
    return out, pd.Series(labels, index=out.index, name="label"), spans


def tiny_config(kind: str, **overrides: Any) -> dict[str, Any]:
    """A small, fast configuration of ``kind`` for tests."""
    cfg: dict[str, Any] = {
        "kind": kind,
        "window": 24,
        "hidden_dims": [64],
        "latent_dim": 8,
        # bounded by epochs only: a wall-time cap would make the model depend on machine load
        "training": {"max_epochs": 25, "max_seconds": None, "patience": 4, "seed": 0},
    }
    if kind == "cvae":
        cfg["condition_on"] = ["hour"]  # the generated data spans two days
    training = overrides.pop("training", {})
    cfg.update(overrides)
    cfg["training"] = {**cfg["training"], **training}
    return cfg


def bench_entity(
    seed: int, anomalies: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, npt.NDArray[np.int64]]:
    """A benchmark entity's train (1,500 normal points) and test part (1,200 points that
    continue it, with injected anomalies unless ``anomalies`` is False) and the test labels."""
    train = normal_series(1500, seed=seed)
    test = normal_series(1200, seed=seed + 100, start=1500)
    if not anomalies:
        return train, test, np.zeros(len(test), dtype=np.int64)
    test, labels, _ = with_anomalies(test, seed=seed)
    return train, test, labels.to_numpy().astype(np.int64)


def write_entity(folder: Path, seed: int, anomalies: bool = True) -> None:
    """:func:`bench_entity` in the benchmark data layout (``train.csv``, ``test.csv`` with a
    ``label`` column, integer timestamps that continue from train into test)."""
    folder.mkdir(parents=True)
    train, test, labels = bench_entity(seed, anomalies)
    for frame, name in ((train, "train"), (test.assign(label=labels), "test")):
        out = frame.reset_index(drop=True)
        out.insert(0, "timestamp", np.arange(len(out)) + (1500 if name == "test" else 0))
        out.to_csv(folder / f"{name}.csv", index=False)


def config_file(folder: Path, **training: Any) -> Path:
    """``folder/config.json``: :func:`tiny_config` without its kind (``bench --config``
    applies it to every kind), with these training options."""
    cfg = tiny_config("ae", training=training)
    del cfg["kind"]
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    return path
