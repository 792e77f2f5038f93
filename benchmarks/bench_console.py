"""Benchmark of the console's model page in a real browser (not a test).

Seeds a temp data dir with one trained model (two features, window 64) holding a series of
``--points`` stored points (default 1,000,000, one per minute, with a few injected anomalies),
starts ``reconad serve`` and drives Debian's chromium through Playwright:

1. cold: sign in, open the model page and wait until the charts show every stored point's
   min/max columns (the series shown: the server reads the stored values at once and scores
   them in the background on this first view), then until the scores, band and flags are drawn
   (the page asks again until the server has scored the series);
2. warm: reload the page (the scored series is cached: values and scores come together),
   with the browser's cache off, then on (it then revalidates the chart JSON: a 304);
3. zoom: zoom into a flagged stretch (the server sends the stored points in view).

For each: seconds from navigation (or the zoom click) to charts drawn, and bytes the browser
received on the wire (headers and bodies, every request of the step, the chart JSON and the
page's polls after the load event included; the browser's cache is off except where the row
says so). Target: the model page shows the series in under 2 s. ``--detail`` lists every
request.

Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_console.py [--points 1000000]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from serving import served

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG: dict[str, Any] = {
    "kind": "ae",
    "window": 64,
    "training": {"max_epochs": 3, "max_seconds": 120},
    "calibration": {"method": "quantile", "fpr": 0.005},
}


def _frame(n: int, seed: int, end: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if end is None:
        index = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC", name="timestamp")
    else:
        index = pd.date_range(end=end, periods=n, freq="min", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 300) + 0.05 * rng.standard_normal(n),
            "b": np.cos(2 * np.pi * t / 200) + 0.05 * rng.standard_normal(n),
        },
        index=index,
    )


def _seed(data_dir: Path, points: int) -> tuple[str, float]:
    """One trained model holding ``points`` stored points; return a key and the seconds taken."""
    from detector import DetectorConfig, create_detector
    from service.context import AppContext
    from service.db import upgrade_schema
    from service.registry import NewVersion
    from service.settings import Settings

    started = time.perf_counter()
    ctx = AppContext.build(Settings(data_dir=data_dir, log_level="WARNING"))
    upgrade_schema(ctx.db)
    cfg = DetectorConfig.model_validate(CONFIG)
    model = ctx.registry.create_model("bench", cfg, "benchmark", "always")
    train = _frame(20_000, seed=0)
    det = create_detector(cfg).fit(train)
    key = f"{model.id}/v1"
    with ctx.artifacts.staging() as tmp:
        det.save(tmp / "m")
        ctx.artifacts.publish(tmp / "m", key)
    ctx.registry.register_version(
        model.id, NewVersion.from_detector(det, key, train, float(det.validation_score_))
    )
    stored = _frame(points, seed=1, end="2026-11-30")
    rng = np.random.default_rng(2)
    for at in rng.integers(1000, points - 1000, size=5):
        stored.iloc[at : at + 30, 0] += 3.0
    ctx.history.append(model.id, stored)
    _, api_key = ctx.auth.create("admin", "bench")
    ctx.scoring.close()
    ctx.db.dispose()
    return api_key, time.perf_counter() - started


class _Bytes:
    """Bytes the page received over the network, per step, from the browser's own counts.

    Chromium's DevTools protocol reports, per request, the bytes it received on the wire
    (headers and body, encoded: ``Network.loadingFinished``'s ``encodedDataLength``; for a 304
    it reports 0 there, so the response's header bytes count; a request served from the
    browser's cache counts 0). A step's figure is every request started before :meth:`take`
    was called, the ones still in flight included: ``take`` waits until each has finished
    (requests made after the page's load event, such as the chart's JSON and its polls, count
    as fully as the document does).
    """

    def __init__(self, page: Any, detail: bool = False) -> None:
        self.page = page
        self.detail = detail
        self.started: list[str] = []  # since the last take, in order
        self.received: dict[str, int] = {}  # finished (or failed) requests: their bytes
        self.headers: dict[str, int] = {}  # bytes received when the response's headers came
        self.cached: set[str] = set()
        self.seen: dict[str, str] = {}  # request id -> "status path", for --detail
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Network.requestWillBeSent", self._started)
        self.cdp.on("Network.requestServedFromCache", self._cached)
        self.cdp.on("Network.responseReceived", self._response)
        self.cdp.on("Network.responseReceivedExtraInfo", self._raw_headers)
        self.cdp.on("Network.loadingFinished", self._finished)
        self.cdp.on("Network.loadingFailed", self._failed)
        self.cdp.send("Network.enable")

    def cache(self, enabled: bool) -> None:
        """Let the browser use its cache (a later visit) or not (a first visit)."""
        self.cdp.send("Network.setCacheDisabled", {"cacheDisabled": not enabled})

    def _started(self, event: dict[str, Any]) -> None:
        if event["requestId"] not in self.started:  # a redirect reuses the id
            self.started.append(event["requestId"])

    def _cached(self, event: dict[str, Any]) -> None:
        self.cached.add(event["requestId"])

    def _response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        rid = event["requestId"]
        self.headers[rid] = max(
            self.headers.get(rid, 0), int(response.get("encodedDataLength") or 0)
        )
        path = response["url"].split("/", 3)[-1][:70]
        self.seen[event["requestId"]] = f"{response['status']} /{path}"

    def _raw_headers(self, event: dict[str, Any]) -> None:
        text = event.get("headersText")
        if text:  # the status line and headers as received
            rid = event["requestId"]
            self.headers[rid] = max(self.headers.get(rid, 0), len(text.encode()))

    def _finished(self, event: dict[str, Any]) -> None:
        self.received[event["requestId"]] = int(event["encodedDataLength"])

    def _size(self, rid: str) -> int:
        size = self.received.get(rid, 0)
        if size == 0 and rid not in self.cached:
            size = self.headers.get(rid, 0)  # a 304: its headers (reported apart, maybe later)
        return size

    def _failed(self, event: dict[str, Any]) -> None:
        self.received[event["requestId"]] = 0

    def take(self, timeout_s: float = 120) -> tuple[int, int]:
        """Bytes and requests of every request started since the last ``take``."""
        self.page.wait_for_timeout(50)  # let the protocol's events already sent arrive
        mine = list(self.started)
        deadline = time.perf_counter() + timeout_s
        while any(i not in self.received for i in mine) and time.perf_counter() < deadline:
            self.page.wait_for_timeout(50)
        self.started = self.started[len(mine) :]
        self.page.wait_for_timeout(50)  # and the header reports that follow a finish
        sizes = [self._size(i) for i in mine]
        if self.detail:
            for i, size in zip(mine, sizes, strict=True):
                where = " (browser cache)" if i in self.cached else ""
                print(f"    {size:>10,}  {self.seen.get(i, '?')}{where}")
        for i in mine:
            for table in (self.seen, self.headers, self.received):
                table.pop(i, None)
            self.cached.discard(i)
        return sum(sizes), len(mine)


def _drawn(page: Any, points: int, scored: bool, timeout_ms: float = 600_000) -> None:
    """Wait until the charts show ``points`` stored points (and their scores when ``scored``)."""
    page.wait_for_function(
        "([n, scored]) => document.querySelector('#charts') && "
        "document.querySelector('#charts').dataset.loaded === String(n) && "
        "(!scored || document.querySelector('#charts').dataset.scored === 'true') && "
        "document.querySelectorAll('#charts canvas').length === 3",
        arg=[points, scored],
        timeout=timeout_ms,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--detail", action="store_true", help="print every request's bytes")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key, seed_s = _seed(data_dir, args.points)
        print(f"seeded {args.points:,} stored points and one trained version in {seed_s:.1f} s")
        most = str(max(args.points, 2_000_000))
        settings = {"LOG_LEVEL": "WARNING", "MAX_POINTS_PER_REQUEST": most, "UI_MAX_POINTS": most}
        with served(data_dir, settings) as server:
            base = server.url
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=args.chromium, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}/ui/login?next=/ui/models")
                page.fill("#key", key)
                page.click("#sign-in")
                page.wait_for_url(f"{base}/ui/models")
                meter = _Bytes(page, args.detail)
                rows = []
                meter.take()
                meter.cache(False)  # the first view: nothing cached (scripts and styles count)
                started = time.perf_counter()
                page.goto(f"{base}/ui/models/bench")
                _drawn(page, args.points, scored=False)
                seconds = time.perf_counter() - started
                rows.append(("cold: the series shown", seconds, *meter.take()))
                print(f"  cold, series: {page.inner_text('#series-status')}")
                _drawn(page, args.points, scored=True)
                seconds = time.perf_counter() - started
                page.wait_for_timeout(300)
                rows.append(("cold: scores, band and flags shown", seconds, *meter.take()))
                print(f"  cold, scored: {page.inner_text('#series-status')}")
                for label, cached in (("", False), (", browser cache on", True)):
                    # The server has the scored series; the browser holds nothing, or what its
                    # cache kept from the last view (it revalidates the chart JSON: a 304).
                    meter.cache(cached)
                    started = time.perf_counter()
                    page.reload()
                    _drawn(page, args.points, scored=True)
                    seconds = time.perf_counter() - started
                    page.wait_for_timeout(300)
                    rows.append((f"warm (reload{label}): all shown", seconds, *meter.take()))
                    print(f"  warm{label}: {page.inner_text('#series-status')}")
                meter.cache(False)
                drawn = int(page.get_attribute("#charts", "data-drawn") or 0)
                meter.take()
                started = time.perf_counter()
                page.click("#stretches tbody tr >> nth=0")
                page.wait_for_function(
                    "() => document.querySelector('#series-status').textContent"
                    ".includes('every point')"
                )
                seconds = time.perf_counter() - started
                page.wait_for_timeout(300)
                rows.append(("zoom to a flagged stretch (stored points)", seconds, *meter.take()))
                print(f"  zoom: {page.inner_text('#series-status')}")
                zoomed = page.get_attribute("#charts", "data-loaded")
                browser.close()
    print(f"model page, {args.points:,} stored points, chart {drawn:,} points drawn per series")
    print(f"{'step':<46} {'seconds':>8} {'bytes':>12} {'requests':>9}")
    for label, seconds, size, count in rows:
        print(f"{label:<46} {seconds:>8.2f} {size:>12,} {count:>9}")
    print(f"zoomed view: {zoomed} stored points; target: the series shown in under 2 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
