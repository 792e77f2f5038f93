"""The Events page's small plots: a series around an anomaly event, the event shaded, as SVG.

Rendered on the server (no chart library, no JSON): one feature (the event's top contributor)
from the stored history and the streamed points not yet flushed to it
(:meth:`StreamService.series_values`), in a window of the event's length on either side (at
least :data:`CONTEXT_POINTS` points), min/max-downsampled to the plot's width
(:func:`service.ui.downsample.minmax`). The page loads each plot as a lazy ``<img>``, so only
the rows in view cost a request.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from html import escape

import numpy as np
import pandas as pd

from service.errors import ConflictError, NotFoundError
from service.live.events import EventService
from service.live.streams import StreamService
from service.registry import ModelRegistry
from service.tables import AnomalyEvent
from service.ui.downsample import minmax

__all__ = ["CONTEXT_POINTS", "event_plot", "sparkline"]

#: Points of context at least on each side of an event (at the event's own point spacing).
CONTEXT_POINTS = 20

#: Seconds between points assumed for a one-point event (its spacing is unknown).
ONE_POINT_STEP_S = 60.0

WIDTH, HEIGHT = 240, 48


def event_plot(
    events: EventService, registry: ModelRegistry, streams: StreamService, event_id: int
) -> str:
    """The SVG plot of event ``event_id``'s series around it.

    Raises
    ------
    service.errors.NotFoundError
        For an unknown event.
    """
    ev, model = events.get(event_id)
    try:
        _, row = registry.get_version(model, ev.version)
    except NotFoundError:  # the version was deleted: read the features of the active one
        try:
            _, row = registry.get_version(model, None)
        except (NotFoundError, ConflictError):
            return _message(f"event #{ev.id}: no version of {model!r} to read its features")
    features = [str(f) for f in row.features]
    top = [str(name) for name, _share in ev.top_features or []]
    feature = next((f for f in top if f in features), features[0])
    lo, hi = _window(ev)
    frame = streams.series_values(
        ev.model_id, (row.config or {}).get("key_column"), features, ev.series, lo, hi
    )
    if frame.empty:
        return _message(f"event #{ev.id}: no stored points around it")
    x = pd.DatetimeIndex(frame.index).as_unit("us").asi8.astype(np.float64) / 1e6
    return sparkline(
        x,
        frame[feature].to_numpy(dtype=np.float64),
        (ev.start.timestamp(), ev.end.timestamp()),
        (lo.timestamp(), hi.timestamp()),
        open_=ev.status == "open",
        title=f"{feature} around event #{ev.id} ({model}{' · ' + ev.series if ev.series else ''})",
        label=feature,
    )


def _window(ev: AnomalyEvent) -> tuple[datetime, datetime]:
    """``[lo, hi)`` around the event: its length on each side, at least CONTEXT_POINTS points."""
    length = (ev.end - ev.start).total_seconds()
    step = length / (ev.n_points - 1) if ev.n_points > 1 and length > 0 else ONE_POINT_STEP_S
    pad = timedelta(seconds=max(length, CONTEXT_POINTS * step))
    return ev.start - pad, ev.end + pad + timedelta(microseconds=1)


def sparkline(
    x: np.ndarray,
    y: np.ndarray,
    shade: tuple[float, float],
    span: tuple[float, float],
    *,
    open_: bool = False,
    title: str = "",
    label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An SVG line of ``y`` over ``x`` (seconds) across ``span``, ``shade`` shaded.

    NaN values break the line. The y axis spans the finite values in ``span``; the plot has no
    axes, only ``label`` (the feature) in a corner; its ``<title>`` says what it shows.
    """
    lo, hi = span
    down = minmax(x, [y], lo, hi, width)
    xs, ys = down.x, down.ys[0]
    finite = np.isfinite(ys)
    if not finite.any():
        return _message(title + ": no values", width, height)
    y_lo, y_hi = float(ys[finite].min()), float(ys[finite].max())
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 1.0, y_hi + 1.0
    scale_x = (width - 2) / (hi - lo) if hi > lo else 0.0

    def px(t: float) -> float:
        return 1 + (t - lo) * scale_x

    def py(v: float) -> float:
        return 2 + (height - 4) * (1 - (v - y_lo) / (y_hi - y_lo))

    path: list[str] = []
    pen = "M"
    for t, v in zip(xs.tolist(), ys.tolist(), strict=True):
        if not math.isfinite(v):
            pen = "M"
            continue
        path.append(f"{pen}{px(t):.1f} {py(v):.1f}")
        pen = "L"
    left, right = px(max(shade[0], lo)), px(min(shade[1], hi))
    fill = "rgba(234,88,12,0.35)" if open_ else "rgba(234,88,12,0.22)"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
        f"<title>{escape(title)}</title>"
        f'<rect x="{left:.1f}" y="0" width="{max(right - left, 1.5):.1f}" height="{height}" '
        f'fill="{fill}" class="event"/>'
        f'<path d="{" ".join(path)}" fill="none" stroke="#2563eb" stroke-width="1" '
        'stroke-linejoin="round"/>'
        f'<text x="{width - 3}" y="10" font-size="9" text-anchor="end" fill="#6b7280" '
        f'font-family="sans-serif">{escape(label[:40])}</text></svg>'
    )


def _message(text: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    """A plot-sized SVG that says why there is no plot."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(text)}</title>'
        f'<text x="4" y="{height // 2 + 4}" font-size="10" fill="#6b7280">'
        f"{escape(text[:60])}</text></svg>"
    )
