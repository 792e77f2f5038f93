"""Helpers of the service tests: data, trained versions, real server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from detector import DetectorConfig, create_detector
from service.auth import AuthService
from service.context import AppContext
from service.db import Database, upgrade_schema
from service.registry import NewVersion
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]

TINY_CONFIG: dict[str, Any] = {
    "kind": "ae",
    "window": 16,
    "hidden_dims": [16],
    "latent_dim": 4,
    # the schedule the service tests were written for (every window an epoch, batches of
    # 256): their generated streams and thresholds were set against models trained so little
    "training": {
        "max_epochs": 2,
        "max_seconds": 10,
        "patience": 2,
        "batch_size": 256,
        "epoch_windows": None,
    },
    "calibration": {"method": "quantile", "fpr": 0.01},
}


def make_frame(
    n: int = 1200, seed: int = 0, end: pd.Timestamp | None = None, freq: str = "min"
) -> pd.DataFrame:
    """Two smooth periodic features with a little noise on a UTC minute index ending ``end``."""
    rng = np.random.default_rng(seed)
    end = end if end is not None else pd.Timestamp.now(tz="UTC").floor("min")
    index = pd.date_range(end=end, periods=n, freq=freq, name="timestamp")
    t = np.arange(n)
    return pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 60) + 0.05 * rng.standard_normal(n),
            "b": np.cos(2 * np.pi * t / 45) + 0.05 * rng.standard_normal(n),
        },
        index=index,
    )


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows of a frame (timestamps as ISO strings)."""
    return [
        {"timestamp": ts.isoformat(), **{str(c): float(v) for c, v in row.items()}}
        for ts, row in zip(frame.index, frame.to_dict("records"), strict=True)
    ]


def windows_of(frame: pd.DataFrame, count: int = 2, window: int = 16) -> list[Any]:
    """``count`` consecutive windows of ``frame`` as nested lists (count, window, features)."""
    values = frame.to_numpy()
    return [values[i : i + window].tolist() for i in range(count)]


def register_trained_version(
    ctx: AppContext,
    model_name: str,
    frame: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    promote: bool | None = None,
) -> int:
    """Fit a tiny detector in-process and register it as a version of ``model_name``."""
    cfg = DetectorConfig.model_validate(config or TINY_CONFIG)
    frame = frame if frame is not None else make_frame()
    det = create_detector(cfg).fit(frame)
    model = ctx.registry.get_model(model_name)
    key = f"{model.id}/{os.urandom(8).hex()}"
    with ctx.artifacts.staging() as tmp:
        det.save(tmp / "model")
        ctx.artifacts.publish(tmp / "model", key)
    version, _, _ = ctx.registry.register_version(
        model.id,
        NewVersion.from_detector(det, key, frame, float(det.validation_score_)),
        force_promote=promote,
    )
    return version.version


def add_event(
    ctx: AppContext, model: str, series: str, start: pd.Timestamp, end: pd.Timestamp
) -> int:
    """A closed anomaly event row over ``[start, end]`` of a series (its stream row made if
    missing), as a stream's monitor writes it; its id."""
    from service.tables import AnomalyEvent, Stream, utcnow

    model_id = ctx.registry.get_model(model).id
    now = utcnow()
    with ctx.db.transaction() as session:
        stream = session.query(Stream).filter_by(model_id=model_id, series=series).one_or_none()
        if stream is None:
            stream = Stream.start(model_id, series, 1, {}, "{}")
            session.add(stream)
            session.flush()
        ev = AnomalyEvent(
            model_id=model_id,
            stream_id=stream.id,
            series=series,
            seq=session.query(AnomalyEvent).filter_by(stream_id=stream.id).count() + 1,
            version=1,
            status="closed",
            start=start.to_pydatetime(),
            end=end.to_pydatetime(),
            peak=3.0,
            mean=2.0,
            severity=0.7,
            n_points=1,
            top_features=[["a", 0.8]],
            created_at=now,
            updated_at=now,
        )
        session.add(ev)
        session.flush()
        return int(ev.id)


# --------------------------------------------------------------------------- real servers


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m service serve`` on a free port, with its log in ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RECONAD_DATA_DIR": str(data_dir),
            "RECONAD_SCHEDULER_INTERVAL_S": "0.5",
            "RECONAD_LOG_LEVEL": "INFO",
            "RECONAD_BOOTSTRAP_ADMIN_KEY": "false",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._clients: list[httpx.Client] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir.parent),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/livez", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def client(self, key: str, timeout: float = 60.0) -> httpx.Client:
        client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )
        self._clients.append(client)
        return client

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._close_clients()

    def stop(self) -> None:
        """SIGTERM and wait (graceful shutdown)."""
        self._close_clients()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def create_key(data_dir: Path, scope: str = "admin") -> str:
    """Create an API key directly in the data dir's database."""
    settings = Settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    upgrade_schema(database)
    _, key = AuthService(database).create(scope, "tests")
    database.dispose()
    return key


def wait_job(client: httpx.Client, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Poll a job until it reaches a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
