"""The console in a real browser: Debian's chromium through Playwright against a real
``reconad serve`` on loopback.

One walk through the console as an operator (sign in, upload by drag and drop, train and watch
the loss curve, see the scored series with the injected anomaly flagged, move the sensitivity,
promote and roll back, schedule), then the same pages with a score-scoped key, which sees
everything and can change nothing. A screenshot of every page goes to
``tests/artifacts/screenshots/`` (kept out of git).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from svc_helpers import REPO, TINY_CONFIG, ServerProcess, create_key, make_frame, rows_of

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "tests" / "artifacts" / "screenshots"

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)",
    ),
]

CONFIG: dict[str, Any] = {
    **TINY_CONFIG,
    "training": {"max_epochs": 6, "max_seconds": 60, "patience": 6},
}


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.reset_index().to_csv(index=False).encode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str, pd.DataFrame]]:
    """A real server with an admin key, a score key and an empty model 'plant'."""
    data_dir = tmp_path / "data"
    admin = create_key(data_dir, "admin")
    score = create_key(data_dir, "score")
    server = ServerProcess(data_dir, tmp_path / "server.log", RECONAD_LOG_LEVEL="WARNING")
    server.start(timeout=240)  # a busy machine starts slowly
    try:
        api = server.client(admin)
        r = api.post(
            "/v1/models",
            json={"name": "plant", "config": CONFIG, "description": "two sensors"},
        )
        assert r.status_code == 201, r.text
        frame = make_frame(4000, seed=5, end=pd.Timestamp("2026-11-30", tz="UTC"))
        frame.iloc[3500:3520, 0] += 4.0  # the anomaly the console must show
        yield server, admin, score, frame
    finally:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield instance
        instance.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _stretches_over(rows: Any, start: float, end: float) -> list[int]:
    """The rows of the flagged-stretch table that overlap ``[start, end]`` (epoch seconds)."""
    return [
        i
        for i in range(rows.count())
        if float(rows.nth(i).get_attribute("data-start") or 0) <= end
        and float(rows.nth(i).get_attribute("data-end") or 0) >= start
    ]


def _wait_text(page: Any, selector: str, text: str) -> None:
    """Wait until the element's text contains ``text``."""
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel).textContent.includes(text)",
        arg=[selector, text],
    )


def _sign_in(page: Any, base: str, key: str) -> None:
    page.goto(f"{base}/ui/models")
    assert "/ui/login" in page.url  # no session: the sign-in form
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/ui/models")


def _drop(page: Any, name: str, content: bytes) -> None:
    """Drop a file on the drop zone as a user dragging it from the desktop does."""
    page.evaluate(
        """([name, bytes]) => {
            const file = new File([new Uint8Array(bytes)], name, {type: "text/csv"});
            const dt = new DataTransfer();
            dt.items.add(file);
            const zone = document.querySelector("#drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true}));
            }
        }""",
        [name, list(content)],
    )


def _train(page: Any, base: str, promote: str) -> str:
    page.goto(f"{base}/ui/models/plant")
    page.select_option("#train-form select[name=promote]", promote)
    page.click("#train")
    page.wait_for_url(f"{base}/ui/jobs/*")
    # The loss curve grows while the job runs, then the job ends.
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart').dataset.epochs || 0) >= 1",
        timeout=120_000,
    )
    page.wait_for_selector("#job-view[data-final]", timeout=120_000)
    assert page.get_attribute("#job-view", "data-final") == "succeeded"
    epochs = int(page.get_attribute("#loss-chart", "data-epochs") or 0)
    assert epochs >= 2
    assert page.locator("#loss-chart canvas").count() == 1
    return str(page.url.rsplit("/", 1)[-1])


def test_operator_walk_through_and_a_score_key(served: Any, browser: Any) -> None:
    server, admin, score, frame = served
    base = server.url
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    _sign_in(page, base, admin)
    assert page.inner_text("tr[data-model='plant'] .last-scored") == "never"
    _shot(page, "01-models-empty-data")

    # Data: a refused file says why and stores nothing; a good one is previewed, then stored.
    page.goto(f"{base}/ui/models/plant/data")
    _drop(page, "bad.csv", b"time,a,b\n2026-01-01,1,2\n")
    page.wait_for_selector("#upload-error")
    assert "no 'timestamp' column" in page.inner_text("#upload-error")
    _shot(page, "02-data-refused")
    _drop(page, "plant.csv", _csv(frame))
    page.wait_for_selector("#preview-summary")
    assert "4,000 rows" in page.inner_text("#preview-summary")
    _shot(page, "03-data-preview")
    page.click("#store")
    _wait_text(page, "#data-points", "4,000")
    _shot(page, "04-data-stored")

    # Train two versions: the first promoted, the second not; watch the loss curve.
    first_job = _train(page, base, "true")
    _shot(page, "05-job-loss-curve")
    _train(page, base, "false")

    # The model page: series, band, score, flagged stretch at the injected anomaly.
    page.goto(f"{base}/ui/models/plant")
    page.wait_for_selector("#charts[data-loaded]")  # the stored values first
    assert page.get_attribute("#charts", "data-loaded") == "4000"
    page.wait_for_selector("#charts[data-scored='true']")  # then the scores, band and flags
    assert page.locator("#charts .chart canvas").count() == 3  # features a, b and the score
    start = frame.index[3500].timestamp()
    end = frame.index[3519].timestamp()
    rows = page.locator("#stretches tbody tr")
    assert rows.count() >= 1
    hits = _stretches_over(rows, start, end)
    assert hits, "the injected anomaly is not among the flagged stretches"
    flagged = int(page.get_attribute("#charts", "data-flagged") or 0)
    _shot(page, "06-model-series")
    # Sensitivity up: more flags, no retraining.
    # A modest step (the threshold times 2 ** (-10 / 25), 0.76): at 95 (0.29 times) a well
    # trained model's ordinary scores are above it and the whole series is one stretch.
    page.fill("#sensitivity", "60")
    page.dispatch_event("#sensitivity", "input")
    page.wait_for_function(
        "(n) => Number(document.querySelector('#charts').dataset.flagged) > n", arg=flagged
    )
    # Zoom to the stretch that holds the anomaly now: the stored points come back.
    hits = _stretches_over(rows, start, end)
    assert hits, "the injected anomaly is not among the flagged stretches at sensitivity 60"
    rows.nth(hits[0]).click()
    _wait_text(page, "#series-status", "every point shown")
    box = page.locator("#charts .chart").last.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#point-detail table")
    _shot(page, "07-model-zoomed-point")
    # Pan by half the view, then zoom out: the view moves and widens, inside the stored range.
    lo, hi = (float(page.get_attribute("#charts", f"data-{e}") or 0) for e in ("lo", "hi"))
    page.click("#pan-left")
    page.wait_for_function(
        "(lo) => Number(document.querySelector('#charts').dataset.lo) < lo", arg=lo
    )
    moved = float(page.get_attribute("#charts", "data-hi") or 0)
    assert moved == pytest.approx(hi - (hi - lo) / 2)
    page.click("#zoom-out")
    page.wait_for_function(
        "(w) => { const d = document.querySelector('#charts').dataset; return d.hi - d.lo > w; }",
        arg=1.5 * (hi - lo),
    )

    # Versions: v1 active, v2 not; promote v2, roll back to v1; compare side by side.
    page.goto(f"{base}/ui/models/plant/versions")
    assert "active" in page.inner_text("tr[data-version='1']")
    page.click("tr[data-version='2'] button:has-text('Promote')")
    page.wait_for_selector("tr[data-version='2'].active")
    page.click("button:has-text('Roll back')")
    page.wait_for_selector("tr[data-version='1'].active")
    assert any("v2" in message for message in dialogs)
    page.click("#cmp-go")
    page.wait_for_function("() => document.querySelectorAll('#cmp-charts canvas').length === 2")
    _shot(page, "08-versions")

    # Events: a live stream with an anomaly opens an event; acknowledge it from the console.
    live = make_frame(600, seed=11, end=pd.Timestamp("2031-01-01", tz="UTC"))
    live.iloc[400:415, 0] += 8.0
    live.iloc[400:415, 1] -= 8.0
    body = {
        "timestamps": [ts.isoformat() for ts in live.index],
        "values": {c: [float(v) for v in live[c]] for c in ("a", "b")},
    }
    assert server.client(admin).post("/v1/models/plant/stream", json=body).status_code == 200
    page.goto(f"{base}/ui/events")
    assert page.locator("#events tbody tr").count() >= 1
    page.click("#events tbody tr >> nth=0 >> button:has-text('Acknowledge')")
    page.wait_for_selector("#events tbody tr >> nth=0 >> text=acknowledged")
    # Label it "not an anomaly" with a note, through the labels API's service.
    first_event = page.get_attribute("#events tbody tr >> nth=0", "data-event")
    page.fill(f"#note-{first_event}", "a planned restart")
    page.click("#events tbody tr >> nth=0 >> button:has-text('Not an anomaly')")
    page.wait_for_selector("#events tbody tr >> nth=0 >> text=labelled: not an anomaly")
    # Each event's plot (a lazy SVG image) has loaded.
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#events img.spark')];"
        " return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }"
    )
    _shot(page, "09-events")
    labels = server.client(admin).get("/v1/models/plant/labels").json()["data"]
    assert [(x["event_id"], x["verdict"], x["note"]) for x in labels] == [
        (int(first_event or 0), "normal", "a planned restart")
    ]

    # Models: the stream request scored, so the model shows its last scoring time.
    page.goto(f"{base}/ui/models")
    assert "UTC" in page.inner_text("tr[data-model='plant'] .last-scored")
    _shot(page, "09b-models-last-scored")

    # Jobs: both succeeded; retry is offered only for ended-unsuccessfully jobs.
    page.goto(f"{base}/ui/jobs")
    assert page.locator("#jobs tbody tr").count() == 2
    assert page.locator(f"tr[data-job='{first_job}'] .state").inner_text() == "succeeded"
    _shot(page, "10-jobs")

    # Schedules: the next runs show before saving; create, pause, resume, run now.
    page.goto(f"{base}/ui/schedules")
    page.select_option("#schedule-form select[name=kind]", "cron")
    page.fill("#schedule-form input[name=when]", "0 3 * * *")
    _wait_text(page, "#next-runs", "03:00:00")
    page.fill("#schedule-form input[name=when]", "not cron")
    _wait_text(page, "#next-runs", "invalid cron")
    page.fill("#schedule-form input[name=when]", "0 3 * * *")
    _wait_text(page, "#next-runs", "03:00:00")
    _shot(page, "11-schedule-preview")
    page.click("#schedule-create")
    page.wait_for_selector("#schedules tbody tr")
    page.click("#schedules button:has-text('Pause')")
    page.wait_for_selector("#schedules button:has-text('Resume')")
    page.click("#schedules button:has-text('Resume')")
    page.wait_for_selector("#schedules button:has-text('Pause')")
    page.click("#schedules button:has-text('Run now')")
    page.wait_for_url(f"{base}/ui/jobs/*")
    # The run trains (and may promote) a version: let it end, so that what the score-scoped
    # key below may not change is fixed before it tries.
    page.wait_for_selector("#job-view[data-final]", timeout=120_000)
    page.goto(f"{base}/ui/schedules")
    _shot(page, "12-schedules")

    # A state change without the CSRF token is refused, even from the signed-in page.
    status = page.evaluate(
        "fetch('/ui/api/models/plant/rollback', {method: 'POST'}).then(r => r.status)"
    )
    assert status == 403

    page.click("#sign-out")
    page.wait_for_url(f"{base}/ui/login")
    page.goto(f"{base}/ui/models")
    assert "/ui/login" in page.url
    assert not errors, errors

    # A score key: sees every page, every action is disabled with the reason, and the server
    # refuses the action even when the browser sends it with a valid CSRF token.
    api = server.client(admin)
    active = api.get("/v1/models/plant").json()["active_version"]
    promotions = api.get("/v1/models/plant/promotions").json()["count"]
    viewer = browser.new_page(viewport={"width": 1400, "height": 900})
    _sign_in(viewer, base, score)
    assert "score" in viewer.inner_text("#scope-notice")
    _shot(viewer, "13-score-key-models")
    viewer.goto(f"{base}/ui/models/plant")
    viewer.wait_for_selector("#charts[data-loaded]")
    # The page keeps polling for live events and new data; unchanged, a bodiless 304.
    with viewer.expect_response(
        lambda r: "/live?" in r.url and r.status == 304, timeout=30_000
    ) as polled:
        viewer.wait_for_selector("#charts[data-unchanged]", timeout=20_000)
    assert polled.value.headers.get("etag")
    # Data stored meanwhile: the page offers it (the poll scores nothing); "Show it" charts it.
    more = make_frame(50, seed=12, end=pd.Timestamp("2031-01-02", tz="UTC"))
    r = server.client(admin).post("/v1/models/plant/data", json={"rows": rows_of(more)})
    assert r.status_code == 200, r.text
    before = int(viewer.get_attribute("#charts", "data-loaded") or 0)
    viewer.wait_for_selector("#series-new:not([hidden])", timeout=30_000)
    viewer.click("#series-refresh")
    viewer.wait_for_function(
        "(n) => Number(document.querySelector('#charts').dataset.loaded) === n",
        arg=before + len(more),
    )
    assert viewer.is_disabled("#train")
    assert "needs a key with scope 'write'" in (viewer.get_attribute("#train", "title") or "")
    _shot(viewer, "14-score-key-model")
    viewer.goto(f"{base}/ui/models/plant/versions")
    assert viewer.is_disabled("tr[data-version='2'] button:has-text('Promote')")
    assert viewer.is_disabled("tr[data-version='2'] button:has-text('Delete')")
    assert viewer.is_disabled("button:has-text('Roll back')")
    _shot(viewer, "15-score-key-versions")
    viewer.goto(f"{base}/ui/models/plant/data")
    assert "needs a key with scope 'write'" in viewer.inner_text("#drop")
    refused = viewer.evaluate(
        """async () => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch('/ui/api/models/plant/versions/2/promote',
                                  {method: 'POST', headers: {'X-CSRF-Token': csrf}});
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert refused[0] == 403 and "scope 'write'" in refused[1]
    viewer.goto(f"{base}/ui/events")
    for label in ("Real anomaly", "Not an anomaly"):
        button = f"#events tbody tr >> nth=0 >> button:has-text('{label}')"
        assert viewer.is_disabled(button)
        assert "needs a key with scope 'write'" in (viewer.get_attribute(button, "title") or "")
    assert viewer.is_disabled(f"#note-{first_event}")
    _shot(viewer, "16-score-key-events")
    viewer.goto(f"{base}/ui/schedules")
    assert viewer.is_disabled("#schedule-create")
    assert viewer.is_disabled("#schedules button:has-text('Pause')")
    _shot(viewer, "17-score-key-schedules")
    assert api.get("/v1/models/plant").json()["active_version"] == active
    assert api.get("/v1/models/plant/promotions").json()["count"] == promotions
