"""``reconad bench``: detectors against simple baselines on labelled benchmark folders.

Folder layout (as in the project's benchmark data)::

    <root>/<dataset>/<entity>/train.csv[.gz]   timestamp + one column per feature
    <root>/<dataset>/<entity>/test.csv[.gz]    the same columns + label (0/1)

For every entity each method is fitted on ``train`` and scores ``test``; the metrics of
:func:`detector.evaluation.evaluate` are computed against ``label`` with one sliding window per
entity (the dominant period of its training data, see
:func:`~detector.windows.period_window`), the same for every method. Detectors report F1 at
their own threshold, calibrated on training data only; best-F1 is an oracle upper bound. Means
are macro averages over the entities of a dataset that have anomalies in test; entities without
any carry the false-alarm rate only.

With ``scores_dir``, every method's test scores are also kept, one NumPy file per method and
entity (``<scores_dir>/<dataset>/<entity>/<method>.npz``: ``scores``, ``labels``, ``threshold``
(NaN for baselines) and the metric ``window``), so that studies of scores and thresholds need no
refit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .baselines import BASELINES, PEER_BASELINES, Baseline, PyODAutoEncoder, create_baseline
from .config import KINDS, DetectorConfig
from .decision import flags
from .detector import create_detector
from .errors import ConfigError
from .evaluation import evaluate
from .io import read_frame
from .preprocessing import Preprocessor
from .windows import period_window

__all__ = [
    "BenchResult",
    "bench_baseline",
    "check_methods",
    "list_entities",
    "load_entity",
    "markdown_report",
    "ratio_table",
    "run_bench",
    "summarise",
]

logger = logging.getLogger(__name__)

#: Every baseline the bench knows: the simple ones and the peer implementations.
ALL_BASELINES: tuple[str, ...] = (*BASELINES, *PEER_BASELINES)
METRICS = ("vus_pr", "auc_pr", "auc_roc", "precision", "recall", "f1", "best_f1_upper_bound")


@dataclass
class BenchResult:
    """The figures of one method on one entity."""

    dataset: str
    entity: str
    method: str
    n_train: int
    n_test: int
    n_anomalous: int
    fit_s: float
    score_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    flagged_fraction: float = math.nan
    error: str | None = None


def list_entities(
    root: Path, datasets: Iterable[str] | None = None, limit: int | None = None
) -> list[tuple[str, Path]]:
    """``(dataset, entity_dir)`` pairs, sorted, at most ``limit`` per dataset."""
    names = (
        sorted(p.name for p in root.iterdir() if p.is_dir()) if datasets is None else list(datasets)
    )
    out: list[tuple[str, Path]] = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no dataset folder {folder}")
        entities = sorted(p for p in folder.iterdir() if p.is_dir() and _table(p, "train"))
        out.extend((name, p) for p in entities[:limit])
    return out


def _table(folder: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".csv.gz", ".parquet"):
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    return None


def load_entity(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Train frame, test frame (without labels) and test labels of an entity folder."""
    train_path, test_path = _table(folder, "train"), _table(folder, "test")
    if train_path is None or test_path is None:
        raise FileNotFoundError(f"{folder} needs train and test tables")
    # Rows stay as the files hold them (repeated or unsorted timestamps included): the
    # detectors' timestamp policy scores every row, so the labels line up row for row.
    train = read_frame(train_path)
    test = read_frame(test_path)
    labels = test.pop("label").to_numpy().astype(int)
    return train.drop(columns=["label"], errors="ignore"), test, labels


def metric_window(train: pd.DataFrame) -> int:
    """Sliding window of the range-aware metrics: the training data's dominant period
    (:func:`~detector.windows.period_window`), whatever window the methods use."""
    pre = Preprocessor(DetectorConfig()).fit(train)
    longest = max(pre.transform(train, max_fill=64), key=len)
    return period_window(longest.values)


def check_methods(methods: Iterable[str], kinds: Iterable[str] = KINDS) -> None:
    """Refuse an unknown method, and a peer baseline whose library is missing, before any fit.

    Raises
    ------
    ConfigError
    """
    kinds = list(kinds)
    methods = list(methods)
    unknown = [m for m in methods if m not in kinds and m not in ALL_BASELINES]
    if unknown:
        choose = f"detector kinds from {kinds} and " if kinds else ""
        raise ConfigError(
            f"unknown method(s) {unknown}; choose {choose}baselines from {list(ALL_BASELINES)}"
        )
    for peer in (m for m in methods if m in PEER_BASELINES):
        create_baseline(peer)  # a missing library is an error before any fit


def bench_baseline(method: str, cfg: DetectorConfig) -> Baseline | PyODAutoEncoder:
    """The unfitted baseline ``method`` on the detectors' window, seed, point rule
    (``score_reduction``) and validation fraction of ``cfg``: a comparison measures the models
    only."""
    return create_baseline(
        method,
        cfg.window,
        cfg.training.seed,
        cfg.score_reduction,
        cfg.training.validation_fraction,
    )


def _run_one(
    method: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    labels: np.ndarray,
    window: int,
    cfg: DetectorConfig,
    scores_file: Path | None = None,
) -> tuple[float, float, dict[str, float], float]:
    t0 = time.perf_counter()
    if method in ALL_BASELINES:
        baseline = bench_baseline(method, cfg).fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = baseline.anomaly_score(test).to_numpy()
        threshold = math.nan
    else:
        det = create_detector(cfg).fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.anomaly_score(test).to_numpy()
        threshold = det.threshold_
    score_s = time.perf_counter() - t0
    if scores_file is not None:
        scores_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            scores_file, scores=scores, labels=labels, threshold=threshold, window=window
        )
    metrics = evaluate(labels, scores, threshold if math.isfinite(threshold) else np.inf, window)
    if not math.isfinite(threshold):
        for key in ("precision", "recall", "f1"):
            metrics[key] = math.nan
    flagged = float(np.mean(flags(scores, threshold))) if math.isfinite(threshold) else math.nan
    return fit_s, score_s, metrics, flagged


def _warm_up() -> None:
    """Pay the process's one-off costs before any fit is timed: the first torch optimiser a
    process builds imports ``torch._dynamo`` (3-4 s on this machine), which would otherwise be
    charged to whichever method is fitted first."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def run_bench(
    root: Path,
    datasets: Iterable[str] | None = None,
    methods: Iterable[str] = (*KINDS, *BASELINES),
    limit: int | None = None,
    time_budget_s: float | None = None,
    overrides: dict[str, Any] | None = None,
    on_result: Callable[[BenchResult], None] | None = None,
    scores_dir: Path | None = None,
) -> list[BenchResult]:
    """Fit and score every method on every entity; see the module docstring.

    Entities not started within ``time_budget_s`` are skipped (logged). ``overrides`` are
    validated for every method before anything is fitted (pydantic ``ValidationError``); each
    baseline takes the window, seed, ``score_reduction`` and validation fraction (which caps
    the ``"auto"`` window) they set.
    """
    started = time.monotonic()
    results: list[BenchResult] = []
    methods = list(methods)
    check_methods(methods)
    configs = {
        m: DetectorConfig.model_validate(
            {**(overrides or {}), **({"kind": m} if m in KINDS else {})}
        )
        for m in methods
    }
    _warm_up()
    for dataset, folder in list_entities(root, datasets, limit):
        if time_budget_s is not None and time.monotonic() - started > time_budget_s:
            logger.warning("time budget spent: skipping %s/%s", dataset, folder.name)
            continue
        train, test, labels = load_entity(folder)
        window = metric_window(train)
        for method in methods:
            result = BenchResult(
                dataset,
                folder.name,
                method,
                len(train),
                len(test),
                int(labels.sum()),
                math.nan,
                math.nan,
            )
            scores_file = (
                None if scores_dir is None else scores_dir / dataset / folder.name / f"{method}.npz"
            )
            try:
                result.fit_s, result.score_s, result.metrics, result.flagged_fraction = _run_one(
                    method, train, test, labels, window, configs[method], scores_file
                )
            except Exception as exc:  # one broken entity must not end a long run
                logger.exception("%s on %s/%s failed", method, dataset, folder.name)
                result.error = f"{type(exc).__name__}: {exc}"
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def summarise(results: list[BenchResult]) -> pd.DataFrame:
    """Macro means per dataset and method over entities with anomalies in test."""
    rows = []
    for r in results:
        rows.append(
            {
                "dataset": r.dataset,
                "method": r.method,
                "entity": r.entity,
                "has_anomalies": r.n_anomalous > 0,
                "fit_s": r.fit_s,
                "score_s": r.score_s,
                "failed": r.error is not None,
                **r.metrics,
            }
        )
    frame = pd.DataFrame(rows)
    labelled = frame[frame["has_anomalies"]]
    table = labelled.groupby(["dataset", "method"])[[m for m in METRICS if m in labelled]].mean()
    table["entities"] = labelled.groupby(["dataset", "method"]).size()
    table["failed"] = frame.groupby(["dataset", "method"])["failed"].sum()
    table["fit_s"] = frame.groupby(["dataset", "method"])["fit_s"].mean()
    table["fit_s_total"] = frame.groupby(["dataset", "method"])["fit_s"].sum()
    return table


def ratio_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each detector kind's mean VUS-PR over the best baseline's (random excluded), per dataset."""
    out = {}
    for dataset, sub in table.groupby(level="dataset"):
        per_method = sub["vus_pr"].droplevel("dataset")
        baselines = per_method[
            [m for m in per_method.index if m in ALL_BASELINES and m != "random"]
        ]
        if baselines.empty:
            continue
        best = baselines.idxmax()
        row = {"best_baseline": best, "best_baseline_vus_pr": baselines.max()}
        per_kind = sub.droplevel("dataset")
        for kind in per_method.index:
            if kind not in ALL_BASELINES:
                row[f"{kind}_ratio"] = per_method[kind] / baselines.max()
                f1 = float(per_kind.at[kind, "f1"])  # type: ignore[arg-type]
                row[f"{kind}_f1_over_best_f1"] = f1 / float(
                    per_kind.at[kind, "best_f1_upper_bound"]  # type: ignore[arg-type]
                )
        out[dataset] = row
    return pd.DataFrame(out).T


def markdown_report(table: pd.DataFrame) -> str:
    """Markdown tables of a :func:`summarise` table: mean VUS-PR and AUC-PR per dataset and
    method, then each detector kind's F1 at its own threshold against the oracle best-F1."""
    lines = []
    for metric, title in (("vus_pr", "mean VUS-PR"), ("auc_pr", "mean AUC-PR")):
        wide = table[metric].unstack("method")
        methods = [m for m in (*KINDS, *ALL_BASELINES) if m in wide.columns]
        lines += [f"**{title}** (entities with anomalies in test)", ""]
        lines.append(
            "| dataset | entities | " + " | ".join(methods) + " | best kind / best baseline |"
        )
        lines.append("|---|---|" + "---|" * (len(methods) + 1))
        for dataset, row in wide.iterrows():
            kinds = row[[m for m in methods if m in KINDS]]
            bases = row[[m for m in methods if m in ALL_BASELINES and m != "random"]]
            ratio = (
                f"{kinds.max() / bases.max():.2f} ({kinds.idxmax()} / {bases.idxmax()})"
                if len(kinds) and len(bases)
                else "-"
            )
            counts = table["entities"].xs(dataset, level="dataset")
            count = int(counts.max())
            cells = " | ".join(f"{row[m]:.3f}" for m in methods)
            lines.append(f"| {dataset} | {count} | {cells} | {ratio} |")
        lines.append("")
    lines += _fit_seconds_table(table)
    kinds_present = [k for k in KINDS if k in table.index.get_level_values("method")]
    if kinds_present:
        lines += ["**F1 at the detector's own threshold / oracle best-F1**", ""]
        lines.append("| dataset | " + " | ".join(kinds_present) + " |")
        lines.append("|---|" + "---|" * len(kinds_present))
        for dataset, sub in table.groupby(level="dataset"):
            per = sub.droplevel("dataset")
            f1, best = per["f1"], per["best_f1_upper_bound"]
            cells = " | ".join(f"{float(f1[k]):.3f} / {float(best[k]):.3f}" for k in kinds_present)
            lines.append(f"| {dataset} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def _fit_seconds_table(table: pd.DataFrame) -> list[str]:
    """Markdown lines: fit seconds summed over each dataset's entities, per method, and each
    detector kind's total over the PyOD AutoEncoder's when it ran."""
    wide = table["fit_s_total"].unstack("method")
    methods = [m for m in (*KINDS, *ALL_BASELINES) if m in wide.columns]
    kinds = [k for k in KINDS if k in wide.columns]
    peer = "pyod_ae" in wide.columns
    head = "| dataset | " + " | ".join(methods) + " |"
    head += "".join(f" {k} / pyod_ae |" for k in kinds) if peer else ""
    lines = ["**fit seconds** (sum over all entities of the dataset)", "", head]
    lines.append("|---|" + "---|" * (len(methods) + (len(kinds) if peer else 0)))
    for dataset, row in wide.iterrows():
        cells = " | ".join(f"{row[m]:.0f}" for m in methods)
        ratios = "".join(f" {row[k] / row['pyod_ae']:.2f} |" for k in kinds) if peer else ""
        lines.append(f"| {dataset} | {cells} |{ratios}")
    return [*lines, ""]
