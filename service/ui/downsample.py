"""Per-pixel-column min/max downsampling and flagged stretches, for charts of long series.

A chart ``width`` pixels wide cannot show more than two values per pixel column: the lowest and
the highest. :func:`minmax` keeps exactly those per column (so every spike stays visible) and
returns the real points when the range holds few enough, which is what makes zooming in show
the stored values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Downsampled", "break_gaps", "minmax", "runs"]


@dataclass
class Downsampled:
    """Chart columns for one range: shared x and one y array per input series."""

    x: np.ndarray  # (P,) float64 seconds
    ys: list[np.ndarray]  # each (P,)
    raw: bool  # True when these are the stored points themselves
    n_points: int  # stored points in the range


def minmax(x: np.ndarray, ys: list[np.ndarray], lo: float, hi: float, width: int) -> Downsampled:
    """Downsample series sharing the sorted x axis ``x`` to two points per pixel column.

    Parameters
    ----------
    x : ndarray, shape (T,)
        Sorted positions (seconds).
    ys : list of ndarray, each shape (T,)
        Values; NaN is a gap and is ignored inside a column that has other values.
    lo, hi : float
        The visible range (inclusive).
    width : int
        Pixel columns of the chart.

    Returns
    -------
    Downsampled
        At most ``2 * width`` points: per non-empty column the first point's x with each
        series' minimum and the last point's x with each series' maximum.
    """
    i0 = int(np.searchsorted(x, lo, side="left"))
    i1 = int(np.searchsorted(x, hi, side="right"))
    n = i1 - i0
    xs = x[i0:i1]
    if n <= 2 * width:
        return Downsampled(xs.copy(), [y[i0:i1].copy() for y in ys], True, n)
    edges = np.linspace(xs[0], xs[-1], width + 1)[:-1]
    starts = np.unique(np.searchsorted(xs, edges, side="left"))  # (C,) first index per column
    ends = np.append(starts[1:], n) - 1  # (C,) last index per column
    out_x = np.empty(2 * len(starts))
    out_x[0::2] = xs[starts]
    out_x[1::2] = xs[ends]
    out_ys = []
    for y in ys:
        part = y[i0:i1]
        column = np.empty(2 * len(starts))
        column[0::2] = np.fmin.reduceat(part, starts)
        column[1::2] = np.fmax.reduceat(part, starts)
        out_ys.append(column)
    return Downsampled(out_x, out_ys, False, n)


def break_gaps(down: Downsampled, gap: float) -> Downsampled:
    """Insert a point with NaN values (a break in the line) wherever two neighbouring points
    lie more than ``gap`` apart, so a chart draws no line across a stretch without data.

    Each break's x is the middle of its gap (charts need x sorted and finite).
    """
    if len(down.x) < 2 or not gap > 0:
        return down
    after = np.flatnonzero(np.diff(down.x) > gap)  # (G,) a gap follows each of these
    if len(after) == 0:
        return down
    mids = (down.x[after] + down.x[after + 1]) / 2
    x = np.insert(down.x, after + 1, mids)
    ys = [np.insert(y.astype(np.float64), after + 1, np.nan) for y in down.ys]
    return Downsampled(x, ys, down.raw, down.n_points)


def runs(flags: np.ndarray) -> np.ndarray:
    """Index ranges of consecutive ``True`` values.

    Parameters
    ----------
    flags : ndarray of bool, shape (T,)

    Returns
    -------
    ndarray of int, shape (R, 2)
        ``[first, last]`` (inclusive) of every run, in order.
    """
    if flags.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    padded = np.concatenate(([False], flags.astype(bool), [False]))
    change = np.flatnonzero(np.diff(padded.astype(np.int8)))
    bounds: np.ndarray = change.reshape(-1, 2) - np.array([0, 1])
    return bounds
