"""``reconad bench --replay``: each entity's test part streamed through the live monitor.

For every entity the detector is fitted on ``train`` (as in ``reconad bench``), then its test
part is fed to :meth:`Detector.monitor <detector.detector.Detector.monitor>` in chunks of
``chunk`` points, exactly as the stream service feeds it: the monitor first takes the last
``window - 1`` training points as context (the service holds the series' history), then the
test points in time order. With ``retrain_every = R`` a new model is fitted every ``R`` test
points on the trailing data (the last ``len(train)`` points seen, minus the points that were
inside an event, so that an anomaly does not become the new normal), by the rule of
:func:`detector.retraining.refit_on_stream` (held-out blocks spread over that history), and
takes the stream over with :meth:`Monitor.with_detector <detector.monitor.Monitor.with_detector>`.

Figures per entity (labels are used for evaluation only): the point precision, recall and F1
of the live decision (``anomalous``), the oracle best-F1 of the same model's batch scores (an
upper bound), their ratio, the range figures of :func:`detector.evaluation.event_metrics`, and
VUS-PR of the causal stream scores and of the batch scores.

Baselines (``baselines``, :mod:`detector.baselines`) are put under the same online threshold:
each is fitted on the first ``1 - validation_fraction`` of the training rows (the split the
detector's own model is fitted on: its network trains on the head and its monitor's threshold
is fitted on the scores of the tail), scores the held-out tail and the test part with that one
model, and the monitor's decision (:func:`detector.monitor.fit_decider`: the same options, the
same detector config's calibration) is fitted on the tail's scores and decides the test scores
point by point in time order, ``chunk`` points a call. A baseline's scores are batch scores
(its windows on both sides of a point; none of them is causal, except trivially ``random``),
so its figures carry VUS-PR batch only (``vus_pr_causal`` NaN) and its decisions do not
depend on ``chunk``; the replay with refits is the detector's only.

With ``models`` (``--models DIR``) each entity's fitted detector is saved under
``DIR/<dataset>/<entity>/model`` (with its batch test scores, ``batch.npy``) and loaded from
there by later runs whose detector config is the same, so that decision rules (monitor options)
can be compared on the same models without refitting; another config refits and replaces it.
The baselines' held-out and test scores are kept there too (``baselines/<name>.npz``, reused
while the window, seed, point rule and validation fraction are the same).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from .bench import bench_baseline, check_methods, list_entities, load_entity, metric_window
from .config import DetectorConfig
from .detector import Detector, create_detector, holdout_cut
from .errors import PersistenceError
from .evaluation import best_f1, event_metrics, pointwise_prf, vus_pr
from .monitor import Decider, fit_decider
from .persistence import load_detector
from .retraining import refit_on_stream

__all__ = [
    "REPLAY_METRICS",
    "ReplayResult",
    "baseline_scores",
    "decide_in_chunks",
    "replay_entity",
    "replay_markdown",
    "run_replay",
]

logger = logging.getLogger(__name__)

REPLAY_METRICS = (
    "f1",
    "best_f1_batch",
    "f1_ratio",
    "precision",
    "recall",
    "event_recall",
    "false_alarm_events_per_10k",
    "composite_f1",
    "median_delay",
    "normal_flag_rate",
    "vus_pr_causal",
    "vus_pr_batch",
)


@dataclass
class ReplayResult:
    """The figures of one replay of one entity."""

    dataset: str
    entity: str
    mode: str  # "static model" or "retrain every R"
    method: str  # the detector's kind or a baseline's name
    n_test: int
    n_anomalous: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def replay_entity(
    det: Detector,
    train: pd.DataFrame,
    test: pd.DataFrame,
    chunk: int,
    options: dict[str, Any] | None = None,
    retrain_every: int | None = None,
    config: DetectorConfig | None = None,
) -> pd.DataFrame:
    """Stream ``test`` through ``det.monitor(**options)`` in chunks; the concatenated outputs.

    ``retrain_every`` (a multiple of ``chunk``) refits ``config`` on the trailing data that
    often and hands the stream to the new model.
    """
    monitor = det.monitor(**(options or {}))
    if det.window_ > 1:
        monitor.update(train.iloc[-(det.window_ - 1) :])
    outs: list[pd.DataFrame] = []
    for lo in range(0, len(test), chunk):
        outs.append(monitor.update(test.iloc[lo : lo + chunk]))
        seen = lo + chunk
        if retrain_every and config is not None and seen % retrain_every == 0 and seen < len(test):
            done = pd.concat(outs)
            normal = test.iloc[:seen][done["event"].isna().to_numpy()]
            history = pd.concat([train, normal]).iloc[-len(train) :]
            new = refit_on_stream(config, history)
            monitor = monitor.with_detector(new)
    return pd.concat(outs)


def baseline_scores(
    name: str, train: pd.DataFrame, test: pd.DataFrame, config: DetectorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline ``name`` (on ``config``'s window, seed, point rule and validation fraction)
    fitted on the head of ``train``: its finite scores of the held-out tail (the last
    ``validation_fraction`` of the rows, scored on their own as the test part is) and its batch
    scores of ``test``."""
    cut = holdout_cut(len(train), config.training.validation_fraction)
    baseline = bench_baseline(name, config).fit(train.iloc[:cut])
    held = baseline.anomaly_score(train.iloc[cut:]).to_numpy()
    return held[np.isfinite(held)], baseline.anomaly_score(test).to_numpy()


def decide_in_chunks(decider: Decider, scores: np.ndarray, chunk: int) -> pd.DataFrame:
    """``scores`` decided in time order, ``chunk`` points a call (the outputs concatenated)."""
    return pd.concat(
        [decider.decide(scores[lo : lo + chunk]) for lo in range(0, len(scores), chunk)]
    )


def replay_metrics(
    labels: np.ndarray,
    out: pd.DataFrame,
    batch_scores: np.ndarray,
    window: int,
    causal_scores: bool = True,
) -> dict[str, float]:
    """The replay figures of one entity (see the module docstring); ``causal_scores=False``:
    ``out`` decided batch scores, so VUS-PR causal is NaN."""
    flags = out["anomalous"].to_numpy()
    precision, recall, f1 = pointwise_prf(labels, flags)
    oracle = best_f1(labels, np.nan_to_num(batch_scores, nan=np.nanmin(batch_scores)))[0]
    causal = out["score"].to_numpy()
    causal = np.where(np.isnan(causal), np.nanmin(causal), causal)
    batch = np.where(np.isnan(batch_scores), np.nanmin(batch_scores), batch_scores)
    vus_causal = vus_pr(labels, causal, window) if causal_scores else math.nan
    return {
        "f1": f1,
        "best_f1_batch": oracle,
        "f1_ratio": f1 / oracle if oracle > 0 else math.nan,
        "precision": precision,
        "recall": recall,
        **event_metrics(labels, flags),
        "vus_pr_causal": vus_causal,
        "vus_pr_batch": vus_pr(labels, batch, window),
    }


def run_replay(
    root: Path,
    datasets: Iterable[str] | None = None,
    kind: str = "ae",
    chunk: int = 100,
    retrain_every: int | None = None,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    on_result: Callable[[ReplayResult], None] | None = None,
    models: Path | None = None,
    baselines: Iterable[str] = (),
) -> list[ReplayResult]:
    """Replay every entity (see the module docstring); one result per entity, mode and method
    (the detector's modes, then each of ``baselines`` under the same online threshold).
    ``models``: the folder of fitted detectors to reuse and fill (see the module docstring).

    Entities without an anomaly in test carry the false-alarm figures only.

    Raises
    ------
    ConfigError
        For an unknown baseline, or a peer baseline whose library is missing.
    """
    config = DetectorConfig.model_validate({**(overrides or {}), "kind": kind})
    baselines = list(baselines)
    check_methods(baselines, kinds=())
    modes: list[int | None] = [None] + ([retrain_every] if retrain_every else [])
    results = []

    def record(result: ReplayResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    for dataset, folder in list_entities(root, datasets, limit):
        train, test, labels = load_entity(folder)
        window = metric_window(train)
        cache = None if models is None else models / dataset / folder.name
        try:
            det, batch = fitted_model(config, train, test, cache)
        except Exception as exc:  # one broken entity must not end a long run
            logger.exception("fit on %s/%s failed", dataset, folder.name)
            for mode in modes:
                record(_failed(dataset, folder.name, _mode_name(mode), kind, test, labels, exc))
        else:
            for mode in modes:
                t0 = time.perf_counter()
                result = ReplayResult(
                    dataset,
                    folder.name,
                    _mode_name(mode),
                    kind,
                    len(test),
                    int(labels.sum()),
                    math.nan,
                )
                try:
                    out = replay_entity(det, train, test, chunk, options, mode, config)
                    result.metrics = replay_metrics(labels, out, batch, window)
                except Exception as exc:
                    logger.exception("replay of %s/%s failed", dataset, folder.name)
                    result.error = f"{type(exc).__name__}: {exc}"
                result.seconds = time.perf_counter() - t0
                record(result)
        for name in baselines:
            record(
                _replay_baseline(
                    name,
                    dataset,
                    folder.name,
                    (train, test, labels, window),
                    config,
                    chunk,
                    options,
                    cache,
                )
            )
    return results


def _replay_baseline(
    name: str,
    dataset: str,
    entity: str,
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, int],
    config: DetectorConfig,
    chunk: int,
    options: dict[str, Any] | None,
    cache: Path | None,
) -> ReplayResult:
    """One baseline's replay of one entity under the monitor's decision (module docstring);
    ``data``: its train and test frames, test labels and metric window."""
    train, test, labels, window = data
    t0 = time.perf_counter()
    result = ReplayResult(
        dataset, entity, _mode_name(None), name, len(test), int(labels.sum()), math.nan
    )
    try:
        held, scores = _baseline_scores_kept(name, train, test, config, cache)
        decider = fit_decider(held, config.calibration, **(options or {}))
        out = decide_in_chunks(decider, scores, chunk)
        result.metrics = replay_metrics(labels, out, scores, window, causal_scores=False)
    except Exception as exc:  # one broken baseline must not end a long run
        logger.exception("replay of %s on %s/%s failed", name, dataset, entity)
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - t0
    return result


def _baseline_scores_kept(
    name: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    config: DetectorConfig,
    cache: Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`baseline_scores`, loaded from ``cache`` when kept there for the same settings."""
    key = np.array(
        [
            name,
            str(config.window),
            str(config.training.seed),
            config.score_reduction,
            repr(config.training.validation_fraction),
        ]
    )
    path = None if cache is None else cache / "baselines" / f"{name}.npz"
    if path is not None and path.exists():
        kept = np.load(path)
        if np.array_equal(kept["key"], key) and kept["test"].shape == (len(test),):
            return kept["held"], kept["test"]
    held, scores = baseline_scores(name, train, test, config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=key, held=held, test=scores)
    return held, scores


def fitted_model(
    config: DetectorConfig, train: pd.DataFrame, test: pd.DataFrame, cache: Path | None = None
) -> tuple[Detector, np.ndarray]:
    """A detector of ``config`` fitted on ``train`` and its batch scores of ``test``: loaded
    from ``cache`` when it holds a model of the same config, else fitted (and saved there)."""
    if cache is not None and (cache / "batch.npy").exists():
        try:
            det = load_detector(cache / "model", device="cpu")
        except PersistenceError:
            logger.warning("the cached model in %s is unreadable; refitting", cache)
        else:
            batch = np.load(cache / "batch.npy")
            if det.config == config and batch.shape == (len(test),):
                return det, batch
    det = create_detector(config).fit(train)
    batch = det.anomaly_score(test).to_numpy()
    if cache is not None:
        det.save(cache / "model")
        np.save(cache / "batch.npy", batch)
    return det, batch


def _mode_name(retrain_every: int | None) -> str:
    return "static model" if not retrain_every else f"retrain every {retrain_every}"


def _failed(
    dataset: str,
    entity: str,
    mode: str,
    method: str,
    test: pd.DataFrame,
    labels: np.ndarray,
    exc: Exception,
) -> ReplayResult:
    return ReplayResult(
        dataset,
        entity,
        mode,
        method,
        len(test),
        int(labels.sum()),
        math.nan,
        error=f"{type(exc).__name__}: {exc}",
    )


def replay_table(results: list[ReplayResult]) -> pd.DataFrame:
    """Macro means per dataset, mode and method (the detector first, then the baselines in the
    order they ran); label-based figures over entities with anomalies, the false-alarm figures
    over every entity."""
    rows = [
        {
            "dataset": r.dataset,
            "mode": r.mode,
            "method": r.method,
            "labelled": r.n_anomalous > 0,
            **r.metrics,
        }
        for r in results
        if r.error is None
    ]
    frame = pd.DataFrame(rows)
    keys = ["dataset", "mode", "method"]
    labelled = frame[frame["labelled"]]
    table = labelled.groupby(keys)[[m for m in REPLAY_METRICS if m in labelled]].mean()
    for name in ("false_alarm_events_per_10k", "normal_flag_rate"):
        table[name] = frame.groupby(keys)[name].mean()
    table["ratio_of_means"] = table["f1"] / table["best_f1_batch"]
    table["entities"] = labelled.groupby(keys).size()
    table["failed"] = sum(r.error is not None for r in results)
    rank = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in results))}
    order = sorted(table.index, key=lambda k: (k[0], k[1] != "static model", k[1], rank[k[2]]))
    return table.loc[order]


def replay_markdown(table: pd.DataFrame) -> str:
    """The replay table in Markdown (n/a: not computed, e.g. VUS-PR causal of a baseline)."""
    head = (
        "| dataset | mode | method | entities | F1 live | best-F1 batch (oracle) | F1 / oracle | "
        "event recall | false alarm events / 10k normal | composite F1 | median delay | "
        "flag rate on normal | VUS-PR causal | VUS-PR batch |"
    )
    formats = (
        ("f1", "{:.3f}"),
        ("best_f1_batch", "{:.3f}"),
        ("ratio_of_means", "{:.2f}"),
        ("event_recall", "{:.3f}"),
        ("false_alarm_events_per_10k", "{:.1f}"),
        ("composite_f1", "{:.3f}"),
        ("median_delay", "{:.0f}"),
        ("normal_flag_rate", "{:.2%}"),
        ("vus_pr_causal", "{:.3f}"),
        ("vus_pr_batch", "{:.3f}"),
    )
    lines = [head, "|---|---|---|" + "---|" * 11]
    for key, row in table.iterrows():
        dataset, mode, method = (str(k) for k in cast(tuple[str, str, str], key))
        cells = [f"{int(row['entities'])}"] + [
            "n/a" if not math.isfinite(float(row[name])) else fmt.format(float(row[name]))
            for name, fmt in formats
        ]
        lines.append(f"| {dataset} | {mode} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
