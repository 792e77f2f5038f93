"""Smoke test of a running ReconAD API, with the standard library only.

Used by docker/verify.sh against the engine-less container, and usable against a real stack:

    python3 docker/smoke_api.py --url http://localhost:8000 --key "$KEY" --walkthrough
    docker compose -f docker/compose.yaml logs api > api.log
    python3 docker/smoke_api.py --url http://localhost:8000 --log api.log --walkthrough

Steps: wait for GET /livez = 200; take the admin key (``--key``, or the first-start banner in
``--log``); GET /readyz = 200 with it; with ``--walkthrough`` also create a model, upload a CSV,
train it (a job on the configured backend), and score two windows. One PASS/FAIL line per step;
the exit status is the number of failed steps (0: all passed).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "kind": "ae",
    "window": 16,
    "hidden_dims": [16],
    "latent_dim": 4,
    "training": {"max_epochs": 2, "max_seconds": 20, "patience": 2},
    "calibration": {"method": "quantile", "fpr": 0.01},
}

_BANNER_KEY = re.compile(r"shown only this once:\s*\n\s*\n?\s*(\S+)\s*\n")


class Smoke:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.key = ""
        self.failures = 0

    def report(self, ok: bool, name: str, detail: str, started: float) -> bool:
        status = "PASS" if ok else "FAIL"
        _say(f"{status}  {name}: {detail} ({time.monotonic() - started:.1f}s)")
        if not ok:
            self.failures += 1
        return ok

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            status = exc.code
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def wait_live(self) -> bool:
        started = time.monotonic()
        last = ""
        while time.monotonic() - started < self.timeout:
            try:
                status, body = self.request("GET", "/livez")
                if status == 200:
                    return self.report(True, "GET /livez", f"200 {body}", started)
                last = f"status {status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        return self.report(
            False, "GET /livez", f"no 200 within {self.timeout:.0f}s ({last})", started
        )

    def key_from_log(self, path: str) -> bool:
        started = time.monotonic()
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        match = _BANNER_KEY.search(text)
        if match is None:
            return self.report(False, "admin key banner", f"not found in {path}", started)
        self.key = match.group(1)
        return self.report(True, "admin key banner", "printed once on the first start", started)

    def readyz(self) -> bool:
        started = time.monotonic()
        status, body = self.request("GET", "/readyz")
        return self.report(status == 200, "GET /readyz (with the key)", f"{status} {body}", started)

    def walkthrough(self) -> bool:
        name = f"smoke-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        status, body = self.request(
            "POST",
            "/v1/models",
            {"name": name, "config": TINY_CONFIG, "promotion_policy": "always"},
        )
        if not self.report(status == 201, "create model", f"{status} {name}", started):
            _say(f"      {body}")
            return False

        started = time.monotonic()
        csv, rows = _csv(1500)
        boundary = uuid.uuid4().hex
        form = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{name}.csv"\r\nContent-Type: text/csv\r\n\r\n'
            ).encode()
            + csv
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, body = self.request(
            "POST",
            f"/v1/models/{name}/data/upload",
            raw=form,
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        if not self.report(status == 200, "upload CSV", f"{status} 1500 rows", started):
            _say(f"      {body}")
            return False

        started = time.monotonic()
        status, job = self.request("POST", f"/v1/models/{name}/jobs", {"last": "7d"})
        if status != 202:
            return self.report(False, "train", f"{status} {job}", started)
        deadline = time.monotonic() + self.timeout
        while job.get("status") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(1)
            _, job = self.request("GET", f"/v1/jobs/{job['id']}")
        ok = job.get("status") == "succeeded"
        detail = f"job {job.get('status')}, version {job.get('version')}"
        if not self.report(ok, "train (job)", detail, started):
            _say(f"      {job}")
            return False

        started = time.monotonic()
        windows = [rows[i : i + 16] for i in range(2)]
        status, body = self.request("POST", f"/v1/models/{name}/score", {"windows": windows})
        ok = status == 200 and isinstance(body, dict) and body.get("version") == job.get("version")
        detail = f"{status} version {body.get('version') if isinstance(body, dict) else body}"
        self.report(ok, "score two windows", detail, started)

        status, _ = self.request("DELETE", f"/v1/models/{name}")
        return ok and status == 204


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _csv(n: int) -> tuple[bytes, list[list[float]]]:
    """Two smooth periodic features on a minute index ending now (as the service tests use)."""
    rnd = random.Random(0)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    out = io.StringIO()
    out.write("timestamp,a,b\n")
    rows: list[list[float]] = []
    for t in range(n):
        a = math.sin(2 * math.pi * t / 60) + 0.05 * rnd.gauss(0, 1)
        b = math.cos(2 * math.pi * t / 45) + 0.05 * rnd.gauss(0, 1)
        ts = end - timedelta(minutes=n - 1 - t)
        out.write(f"{ts.isoformat()},{a:.6f},{b:.6f}\n")
        rows.append([a, b])
    return out.getvalue().encode(), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default="", help="an API key (admin or write scope)")
    parser.add_argument("--log", default="", help="a server log holding the admin key banner")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
    parser.add_argument("--walkthrough", action="store_true", help="create, upload, train, score")
    args = parser.parse_args(argv)

    smoke = Smoke(args.url, args.timeout)
    smoke.key = args.key
    if smoke.wait_live():
        if not smoke.key and args.log:
            smoke.key_from_log(args.log)
        if smoke.key:
            smoke.readyz()
            if args.walkthrough:
                smoke.walkthrough()
    return smoke.failures


if __name__ == "__main__":
    sys.exit(main())
