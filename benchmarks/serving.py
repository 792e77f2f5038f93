"""A ``reconad serve`` process for a benchmark (not a test): a free loopback port, a data dir
and settings as ``RECONAD_*`` variables; ready once ``/livez`` answers; stopped on exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Server:
    """A started server: its base URL, port and process id."""

    url: str
    port: int
    pid: int


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Wait until ``url``/livez answers 200 (a loaded machine starts slowly).

    Raises
    ------
    SystemExit
        When the process ends first or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/livez", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the server at {url} did not start")
        time.sleep(0.2)


@contextmanager
def served(
    data_dir: Path,
    settings: Mapping[str, str] | None = None,
    log: Path | None = None,
    code: Path | None = None,
) -> Iterator[Server]:
    """Run ``reconad serve`` on ``data_dir`` with ``settings`` (``{"MAX_POINTS_PER_REQUEST":
    "2000000"}`` becomes ``RECONAD_MAX_POINTS_PER_REQUEST``), no bootstrap key, output to
    ``log`` (default: this process's); SIGTERM on exit, then kill after 30 s. ``code``: the
    checkout whose code the server runs (default this one), to compare revisions."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code or REPO),
        "RECONAD_DATA_DIR": str(data_dir),
        "RECONAD_BOOTSTRAP_ADMIN_KEY": "false",
        **{f"RECONAD_{name}": value for name, value in (settings or {}).items()},
    }
    with ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log is not None else None
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process)
            yield Server(url, port, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
