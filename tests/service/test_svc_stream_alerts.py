"""The alert outbox against real receivers: a server killed (SIGKILL) mid-delivery and
restarted delivers every alert, each key arriving (after the receiver's de-duplication by key)
exactly once; and a real Prometheus Alertmanager receives firing and resolved alerts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from svc_helpers import TINY_CONFIG, ServerProcess, create_key, free_port

from detector import DetectorConfig
from service.context import AppContext
from service.db import Database, upgrade_schema
from service.live.channels import ChannelConfig, queue_alerts
from service.settings import Settings
from service.tables import Alert, AnomalyEvent, Stream, utcnow

HERE = Path(__file__).resolve().parent
SECRET = "s3cret-key-for-tests-0123"


def _events(
    data_dir: Path,
    n: int,
    kind: Literal["webhook", "alertmanager"],
    url: str,
    closed: bool = False,
    **config: Any,
) -> list[int]:
    """A model with one channel and ``n`` events written as the stream path writes them (events
    and their outbox rows in one transaction); returns the event ids."""
    ctx = AppContext.build(Settings(data_dir=data_dir, bootstrap_admin_key=False))
    upgrade_schema(ctx.db)
    model = ctx.registry.create_model("m", DetectorConfig.model_validate(TINY_CONFIG), "", "manual")
    ctx.live.channels.create(
        "m", "out", kind, ChannelConfig.model_validate({"url": url, **config}), 0.0, 10_000, True
    )
    now = utcnow()
    with ctx.db.transaction() as session:
        stream = Stream.start(model.id, "", 1, {}, "{}")
        session.add(stream)
        session.flush()
        events = []
        for i in range(n):
            start = now - timedelta(minutes=10 * (n - i))
            ev = AnomalyEvent(
                model_id=model.id,
                stream_id=stream.id,
                series="",
                seq=i + 1,
                version=1,
                status="open",
                start=start,
                end=start + timedelta(minutes=2),
                peak=3.0,
                mean=2.0,
                severity=0.6,
                n_points=3,
                top_features=[["a", 0.7]],
                created_at=now,
                updated_at=now,
            )
            session.add(ev)
            events.append(ev)
        session.flush()
        queue_alerts(session, model.id, "m", [(ev, False) for ev in events])
        if closed:
            for ev in events:
                ev.status = "closed"
            queue_alerts(session, model.id, "m", [(ev, True) for ev in events])
        ids = [ev.id for ev in events]
    ctx.scoring.close()
    ctx.db.dispose()
    return ids


def test_old_alerts_of_closed_events_are_deleted_the_others_never(tmp_path: Path) -> None:
    """``RECONAD_ALERT_RETENTION_DAYS``: a prune deletes the alerts delivered or given up
    more than the retention ago, of closed events; newer ones, pending ones and those of an
    event still open (its firing row keeps a second firing from being queued) stay."""
    data_dir = tmp_path / "data"
    _events(data_dir, 4, "webhook", "http://127.0.0.1:9/hook", closed=True, secret=SECRET)
    ctx = AppContext.build(Settings(data_dir=data_dir, bootstrap_admin_key=False))
    try:
        now = utcnow()
        with ctx.db.transaction() as session:
            alerts = session.query(Alert).order_by(Alert.id).all()
            assert len(alerts) == 8  # firing and resolved of four events
            statuses = ["delivered", "failed", "pending", "delivered"] * 2
            for i, (alert, status) in enumerate(zip(alerts, statuses, strict=True)):
                alert.status = status
                alert.created_at = now - timedelta(days=40 if i < 4 else 5)
            reopened = session.get(AnomalyEvent, alerts[3].event_id)
            assert reopened is not None
            reopened.status = "open"  # as if still open: its old rows must stay
            kept = {alerts[3].id} | {a.id for a in alerts if a.event_id == reopened.id}
            old = {a.id for a in alerts[:4] if a.status != "pending"} - kept
        dispatcher = ctx.live.dispatcher
        assert dispatcher.retention == timedelta(days=30)
        assert dispatcher.prune(now) == len(old) > 0
        with ctx.db.session() as session:
            left = {a.id: a.status for a in session.query(Alert)}
        assert not old & set(left) and kept <= set(left) and len(left) == 8 - len(old)
        assert sum(status == "pending" for status in left.values()) == 2
        assert dispatcher.prune(now) == 0
    finally:
        ctx.scoring.close()
        ctx.db.dispose()


def _receiver(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / "received.jsonl"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "alert_receiver.py"), str(port), str(log), *args]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/hook", log


def _keys(log: Path) -> list[str]:
    return [
        json.loads(line)["headers"]["x-reconad-idempotency-key"]
        for line in log.read_text().splitlines()
        if line
    ]


def test_sigkill_mid_delivery_loses_no_alert(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, url, log = _receiver(tmp_path, "--delay", "0.4")
    try:
        ids = _events(data_dir, 12, "webhook", url, secret=SECRET, timeout_s=5)
        create_key(data_dir)
        env = {
            "RECONAD_ALERT_BATCH_SIZE": "4",
            "RECONAD_ALERT_CLAIM_S": "1.5",
            "RECONAD_ALERT_POLL_INTERVAL_S": "0.1",
        }
        server = ServerProcess(data_dir, tmp_path / "server.log", **env).start(timeout=240)
        deadline = time.monotonic() + 30
        while len(_keys(log)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # some deliveries were sent, some in flight, most not claimed yet
        before = len(_keys(log))
        assert 0 < before < 12
        server = ServerProcess(data_dir, tmp_path / "server2.log", **env).start(timeout=240)
        expected = {f"{i}:firing" for i in ids}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (
            set(_keys(log)) != expected or _statuses(data_dir) != {"delivered"}
        ):
            time.sleep(0.2)
        server.stop()
    finally:
        proc.kill()
        proc.wait(10)
    keys = _keys(log)
    assert set(keys) == expected  # every alert arrived, nothing unexpected
    # A receiver de-duplicating by key counts each alert exactly once; the redeliveries are
    # at most the deliveries that were in flight when the server was killed.
    assert len(keys) - len(expected) <= 4
    assert _statuses(data_dir) == {"delivered"}


def _statuses(data_dir: Path) -> set[str]:
    db = Database(Settings(data_dir=data_dir).database_url)
    try:
        with db.session() as session:
            return {a.status for a in session.query(Alert)}
    finally:
        db.dispose()


def _alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = _alertmanager_binary()
    if binary is None:
        pytest.skip(
            "Prometheus Alertmanager is not installed "
            "(apt-get install -y prometheus-alertmanager; .ci/run installs it)"
        )
    port, cluster = free_port(), free_port()
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("Alertmanager did not start")
    yield url
    proc.kill()
    proc.wait(10)


def test_alertmanager_gets_firing_then_resolved(tmp_path: Path, alertmanager: str) -> None:
    data_dir = tmp_path / "data"
    ids = _events(data_dir, 1, "alertmanager", alertmanager, labels={"team": "ops"})
    create_key(data_dir)
    env = {"RECONAD_ALERT_POLL_INTERVAL_S": "0.1"}
    server = ServerProcess(data_dir, tmp_path / "server.log", **env).start(timeout=240)
    try:

        def alerts() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = httpx.get(
                f"{alertmanager}/api/v2/alerts", params={"active": "true"}, timeout=2
            ).json()
            return [a for a in got if a["labels"].get("event_id") == str(ids[0])]

        deadline = time.monotonic() + 30
        while not alerts() and time.monotonic() < deadline:
            time.sleep(0.1)
        firing = alerts()
        assert len(firing) == 1
        labels = firing[0]["labels"]
        assert labels["alertname"] == "ReconADAnomaly" and labels["model"] == "m"
        assert labels["team"] == "ops" and labels["severity"] == "warning"
        assert firing[0]["status"]["state"] == "active"
        assert firing[0]["generatorURL"].endswith(f"/v1/events/{ids[0]}")
        assert "peak 3.00" in firing[0]["annotations"]["description"]
        # the event closes: a resolved alert ends it in Alertmanager
        settings = Settings(data_dir=data_dir)
        ctx = AppContext.build(settings)
        with ctx.db.transaction() as session:
            ev = session.get(AnomalyEvent, ids[0])
            assert ev is not None
            ev.status = "closed"
            session.flush()
            assert queue_alerts(session, ev.model_id, "m", [(ev, True)]) == 1
        ctx.scoring.close()
        ctx.db.dispose()
        deadline = time.monotonic() + 30
        while alerts() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alerts() == []  # no longer active: resolved
    finally:
        server.stop()
