"""A picture of a scored series: the features on top, the anomaly score below.

Rendering uses matplotlib's Agg canvas directly (no pyplot, no global backend switch, no
screen), and matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PLOT_SUFFIXES", "plot_scores", "runs"]

logger = logging.getLogger(__name__)

#: File name endings :func:`plot_scores` can write.
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

_FLAG_COLOR = "tab:red"
_LABEL_COLOR = "tab:green"
_SERIES_COLOR = "tab:blue"
_SCORE_COLOR = "black"
#: Labelled anomalies: a strip along the bottom 6% of every panel.
_STRIP: dict[str, Any] = {"color": _LABEL_COLOR, "alpha": 0.85, "height": 0.06, "zorder": 1.0}


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True.

    Parameters
    ----------
    mask : ndarray of bool, shape (T,)

    Returns
    -------
    list of (start, stop)
        Half-open position ranges ``[start, stop)``, in order.
    """
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plot_scores(
    data: pd.DataFrame,
    scores: pd.Series,
    threshold: float,
    path: str | Path,
    flags: pd.Series | None = None,
    labels: pd.Series | None = None,
    max_features: int = 4,
    *,
    expected: pd.DataFrame | None = None,
    title: str | None = None,
) -> None:
    """Draw a scored series and save it as an image.

    One panel per feature (the first ``max_features`` columns of ``data``) above a panel of
    the anomaly score with the threshold as a dashed horizontal line. Flagged points are shaded
    red across every panel (one span per contiguous run); labelled anomalies, when given, are
    drawn as a green strip along the bottom of every panel, so a detected anomaly is a red span
    standing on a green strip and a missed one is a strip alone. The score axis is logarithmic when
    every score is positive and the largest is more than 50 times the threshold, so the
    threshold stays visible next to tall peaks.

    Parameters
    ----------
    data : DataFrame, shape (T, F)
        The series, indexed by time (timestamps or integers); non-numeric columns are skipped.
    scores : Series, shape (T,)
        Anomaly scores on the same index (NaN is drawn as a gap).
    threshold : float
        The detector's threshold.
    path : str or Path
        Output file ending in ``.png``, ``.svg`` or ``.pdf``; parent directories are created.
    flags : Series of bool, shape (T,), optional
        Flagged points (NaN counts as not flagged).
    labels : Series of 0/1 or bool, shape (T,), optional
        True anomalies.
    max_features : int
        Most feature panels to draw (at least 1).
    expected : DataFrame, shape (T, F), optional
        The detector's reconstruction, drawn dashed over the features it has.
    title : str, optional
        Figure title.

    Raises
    ------
    InputError
        Unsupported file name, empty data, no numeric feature column, or ``scores`` / ``flags`` /
        ``labels`` of a different length than ``data``.
    OSError
        The file could not be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    target = Path(path)
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(
            f"cannot write a plot to {str(target)!r}; use a file name ending in "
            f"{', '.join(PLOT_SUFFIXES)}"
        )
    if max_features < 1:
        raise InputError(f"max_features must be at least 1, got {max_features}")
    numeric = [c for c in data.columns if _is_plottable(data[c])]
    if not numeric:
        raise InputError("the data has no numeric column to plot")
    n = len(data)
    if n == 0:
        raise InputError("the data is empty; there is nothing to plot")
    for name, series in (("scores", scores), ("flags", flags), ("labels", labels)):
        if series is not None and len(series) != n:
            raise InputError(f"{name} have {len(series)} points but the data has {n}")

    shown = numeric[:max_features]
    x = _plot_index(data.index)
    left, right = _span_edges(x)
    score_values = np.asarray(scores, dtype=np.float64)
    flag_mask = _as_mask(flags)
    label_mask = _as_mask(labels)
    flag_runs = runs(flag_mask) if flag_mask is not None else []
    label_runs = runs(label_mask) if label_mask is not None else []

    fig = Figure(figsize=(12.0, 1.9 * len(shown) + 2.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        len(shown) + 1, 1, sharex=True, height_ratios=[1.0] * len(shown) + [1.4], squeeze=False
    )[:, 0]

    for ax, column in zip(axes[:-1], shown, strict=False):
        values = pd.to_numeric(data[column], errors="coerce").to_numpy(dtype=np.float64)
        ax.plot(x, values, color=_SERIES_COLOR, linewidth=0.9, label=str(column))
        if expected is not None and column in expected.columns:
            ax.plot(
                x,
                expected[column].to_numpy(dtype=np.float64),
                color="tab:orange",
                linewidth=0.9,
                linestyle="--",
                label="expected",
            )
        ax.set_ylabel(_short(str(column)), rotation=0, ha="right", va="center")
        _shade(ax, flag_runs, left, right, None, color=_FLAG_COLOR, alpha=0.22)
        _shade(ax, label_runs, left, right, None, **_STRIP)
        ax.grid(True, alpha=0.3)
        if expected is not None and column in expected.columns:
            ax.legend(loc="upper right", fontsize="small")

    ax = axes[-1]
    ax.plot(x, score_values, color=_SCORE_COLOR, linewidth=0.9, label="anomaly score")
    if np.isfinite(threshold):
        ax.axhline(
            threshold,
            color=_FLAG_COLOR,
            linestyle="--",
            linewidth=1.2,
            label=f"threshold {threshold:.4g}",
        )
    _shade(ax, flag_runs, left, right, "flagged", color=_FLAG_COLOR, alpha=0.22)
    _shade(ax, label_runs, left, right, "labelled anomaly", **_STRIP)
    finite = score_values[np.isfinite(score_values)]
    if finite.size and finite.min() > 0 and threshold > 0 and finite.max() > 50 * threshold:
        ax.set_yscale("log")
    ax.set_ylabel("score", rotation=0, ha="right", va="center")
    ax.set_xlabel(str(data.index.name) if data.index.name is not None else "row")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", ncols=4)

    if x.dtype.kind == "M":
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]

    parts = [f"{n} points"]
    if flag_mask is not None:
        parts.append(f"{int(flag_mask.sum())} flagged in {_plural(len(flag_runs), 'span')}")
    if label_mask is not None:
        parts.append(f"{int(label_mask.sum())} labelled in {_plural(len(label_runs), 'span')}")
    if len(numeric) > len(shown):
        parts.append(f"first {len(shown)} of {len(numeric)} features shown")
    heading = title if title is not None else "anomaly scores"
    fig.suptitle(f"{heading}: {', '.join(parts)}")

    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    logger.info("wrote a plot of %d points to %s", n, target)


def _is_plottable(column: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(column))


def _plot_index(index: pd.Index) -> np.ndarray:
    """x positions: naive datetime64 (wall time) for timestamps, float otherwise."""
    if isinstance(index, pd.DatetimeIndex):
        if index.tz is not None:
            index = index.tz_localize(None)
        return np.asarray(index.to_numpy(dtype="datetime64[ns]"))
    if pd.api.types.is_numeric_dtype(index.dtype):
        return np.asarray(index, dtype=np.float64)
    return np.arange(len(index), dtype=np.float64)


def _span_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right edge of each point's cell: halfway to its neighbours."""
    if len(x) < 2:
        half = np.timedelta64(0, "ns") if x.dtype.kind == "M" else 0.5
        return x - half, x + half
    half_gaps = (x[1:] - x[:-1]) / 2
    mid = x[:-1] + half_gaps
    left = np.concatenate([[x[0] - half_gaps[0]], mid])
    right = np.concatenate([mid, [x[-1] + half_gaps[-1]]])
    return left, right


def _as_mask(series: pd.Series | None) -> np.ndarray | None:
    if series is None:
        return None
    values = pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(dtype=np.float64)
    return np.asarray(np.nan_to_num(values, nan=0.0) > 0, dtype=bool)


def _shade(
    ax: Axes,
    spans: list[tuple[int, int]],
    left: np.ndarray,
    right: np.ndarray,
    label: str | None,
    *,
    color: str,
    alpha: float,
    height: float = 1.0,
    zorder: float = 0.0,
) -> None:
    """Shade each run of points from the bottom of the panel up to ``height`` (axes fraction).

    The runs are drawn as one collection of rectangles (the same shapes ``axvspan`` draws, one
    per run) so that a long series with thousands of runs still renders in about a second.
    """
    from matplotlib.collections import PolyCollection

    if not spans:
        return
    starts = np.array([a for a, _ in spans])
    stops = np.array([b - 1 for _, b in spans])
    # Data units to axis numbers (days for timestamps); matplotlib leaves this untyped.
    x0 = np.asarray(ax.convert_xunits(left[starts]), dtype=np.float64)  # type: ignore[no-untyped-call]
    x1 = np.asarray(ax.convert_xunits(right[stops]), dtype=np.float64)  # type: ignore[no-untyped-call]
    verts = [[(a, 0.0), (b, 0.0), (b, height), (a, height)] for a, b in zip(x0, x1, strict=True)]
    ax.add_collection(
        PolyCollection(
            verts,
            transform=ax.get_xaxis_transform(),  # x in data units, y in axes fraction
            facecolors=color,
            alpha=alpha,
            linewidths=0,
            zorder=zorder,
            label=label,
        ),
        autolim=False,
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
