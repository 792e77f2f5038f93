"""Real services of the scale-out tests on this machine's loopback: PostgreSQL, Redis, an
S3-compatible server (moto) and Celery workers; each probe gives a clear reason to skip."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "RECONAD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("RECONAD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def postgres_reason() -> str | None:
    """Why PostgreSQL tests cannot run here (None: they can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[scale]')"
    if not port_open("127.0.0.1", 5432):
        return "no PostgreSQL server on 127.0.0.1:5432"
    return None


def redis_reason() -> str | None:
    """Why Redis/Celery tests cannot run here (None: they can)."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "celery[redis] is not installed (pip install -e '.[scale]')"
    if not port_open("127.0.0.1", 6379):
        return "no Redis server on 127.0.0.1:6379"
    return None


def s3_reason() -> str | None:
    """Why S3 tests cannot run here (None: they can)."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError:
        return "s3fs, moto or flask is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def temp_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its URL; drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"reconad_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port with bucket ``reconad``; yield its endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="reconad"
        )
        yield endpoint
    finally:
        server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class WorkerProcess:
    """A ``reconad worker`` subprocess (its own process group, so it can be SIGKILLed whole)."""

    def __init__(self, env: dict[str, str], log_path: Path, queues: str = "cpu") -> None:
        self.env = env
        self.log_path = log_path
        self.queues = queues
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "worker", "--queues", self.queues],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a lost machine)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then kill what is left."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_for(predicate: object, timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``predicate()`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
