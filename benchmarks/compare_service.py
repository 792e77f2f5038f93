"""Compare the scoring hot path of two revisions in one run (not a test; prints, asserts nothing).

Both revisions run side by side on this machine, each with its own code, data dir and a model
trained by its own ``benchmarks/bench_service.py`` seed (window 64, two features), and the
measurements alternate in short rounds A/B/A/B..., so a load change on a shared machine hits
both sides alike. The figure to read is the ratio new/old with its spread over the rounds.

Modes (``--mode``):

``http`` (default)
    Starts ``reconad serve`` (one uvicorn worker) for each side and drives ``POST
    /v1/models/bench/score`` with one 64-point window from 8 keep-alive connections (the
    client of ``bench_service.py``): req/s, p50 and p99 per side and round; then ``GET
    /livez`` the same way (the framework's own cost); then the 1,000,000-point series of
    ``bench_service.py`` part 2 (full answer, and the lean ``fields`` answer where the side
    supports it): seconds end to end, alternating sides.
``inproc``
    Calls ``ScoringService.score(name, body)`` of each side directly, one request at a time
    (``--concurrency``: more in flight, which the micro-batcher batches as it does HTTP
    requests) with no HTTP and no client: microseconds (wall and CPU) per one-window request, so
    parse and encode costs are visible; then the 1,000,000-point series in process.
``both``
    ``inproc`` then ``http``.

The base revision is extracted with ``git archive`` into a temp dir (the repository is not
touched); ``--new`` defaults to this working tree. Run:
``nice -n 10 python benchmarks/compare_service.py [--base 330f6a9] [--new REV] [--mode both]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from serving import cpu_seconds, free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- sides (subprocesses)


def _bench_module(root: Path) -> ModuleType:
    """A revision's ``benchmarks/bench_service.py``, imported with that revision on sys.path."""
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("rev_bench", root / "benchmarks/bench_service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _window_body(bench: ModuleType) -> bytes:
    window = bench._frame(64, seed=1).to_numpy()[None].tolist()  # (1, 64, 2)
    return json.dumps({"windows": window}).encode()


def _series_bodies(bench: ModuleType, points: int) -> dict[str, bytes]:
    import pandas as pd

    big = bench._frame(points, seed=2)
    series = {
        "timestamps": pd.DatetimeIndex(big.index).as_unit("s").asi8.tolist(),
        "values": {c: big[c].round(6).tolist() for c in big.columns},
    }
    lean = {"top_k": 0, "fields": ["anomalous_indices"]}
    return {
        "full": json.dumps(series).encode(),
        "fields": json.dumps({**series, **lean}).encode(),
    }


def _side_seed(root: Path, data_dir: Path) -> int:
    """``--side-seed``: train and register the bench model with this revision; print the key."""
    bench = _bench_module(root)
    key = bench._seed(data_dir)
    sys.stdout.write(json.dumps({"key": key}) + "\n")
    return 0


def _side_inproc(root: Path, data_dir: Path, points: int) -> int:
    """``--side-inproc``: a scoring service of this revision answering timing commands.

    Reads one command a line on stdin (``window SECONDS``, ``series full|fields``, ``quit``)
    and answers one JSON line on stdout.
    """
    bench = _bench_module(root)
    bench._seed(data_dir)
    from service.context import AppContext
    from service.settings import Settings

    ctx = AppContext.build(Settings(data_dir=data_dir, log_level="WARNING"))
    scoring = ctx.scoring
    window = _window_body(bench)
    series: dict[str, bytes] = {}

    async def client(stop_at: float, latencies: list[float]) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await scoring.score("bench", window)
            latencies.append(time.perf_counter() - started)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await scoring.score("bench", window)  # loads the model
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            answer: dict[str, Any]
            if line[0] == "window":
                stop_at = time.perf_counter() + float(line[1])
                latencies: list[float] = []
                cpu = time.process_time()
                await asyncio.gather(*(client(stop_at, latencies) for _ in range(int(line[2]))))
                cpu_us = (time.process_time() - cpu) / len(latencies) * 1e6
                answer = {"latencies": _summary(latencies), "cpu_us": cpu_us}
            else:
                if not series:
                    series.update(_series_bodies(bench, points))
                started = time.perf_counter()
                try:
                    out = await scoring.score("bench", series[line[1]])
                    answer = {"seconds": time.perf_counter() - started, "bytes": len(out)}
                except Exception as exc:  # an older revision may refuse the fields option
                    answer = {"error": f"{type(exc).__name__}: {exc}"[:160]}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    asyncio.run(serve())
    scoring.close()
    return 0


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "mean_us": statistics.fmean(ordered) * 1e6,
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))] * 1e6,
    }


# --------------------------------------------------------------------------- driver


def _revision_root(rev: str | None, tmp: Path, label: str) -> Path:
    """The source tree of ``rev`` (``None``: this working tree)."""
    if rev is None:
        return REPO
    root = tmp / label
    root.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def _env(root: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "RECONAD_DATA_DIR": str(data_dir),
        "RECONAD_BOOTSTRAP_ADMIN_KEY": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
    }


def _side_args(mode: str, root: Path, data_dir: Path, points: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        mode,
        "--root",
        str(root),
        "--data-dir",
        str(data_dir),
        "--points",
        str(points),
    ]


def _ratio_line(name: str, new: list[float], old: list[float]) -> str:
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    return (
        f"{name}: new/old {sum(new) / sum(old):.3f} overall; per round median "
        f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
        f"({len(ratios)} rounds: {' '.join(f'{r:.3f}' for r in ratios)})"
    )


class _InProc:
    """One side of ``inproc``: a ``--side-inproc`` subprocess and its command pipe."""

    def __init__(self, root: Path, data_dir: Path, points: int) -> None:
        self.proc = subprocess.Popen(
            _side_args("--side-inproc", root, data_dir, points),
            cwd=root,
            env=_env(root, data_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a side exited (status {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _inproc(roots: dict[str, Path], tmp: Path, args: argparse.Namespace) -> None:
    sides = {
        label: _InProc(root, tmp / f"inproc-{label}", args.points) for label, root in roots.items()
    }
    try:
        for side in sides.values():
            side.ask("")  # wait for "ready"
        figures: dict[str, dict[str, list[float]]] = {
            label: {"mean": [], "p50": [], "cpu": []} for label in sides
        }
        print(
            f"in process: ScoringService.score, one 64-point window, {args.concurrency} "
            f"request(s) at a time, {args.rounds} rounds of {args.round_seconds:g} s per side"
        )
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for label in order:
                answer = sides[label].ask(f"window {args.round_seconds} {args.concurrency}")
                s = answer["latencies"]
                for name, value in (
                    ("mean", s["mean_us"]),
                    ("p50", s["p50_us"]),
                    ("cpu", answer["cpu_us"]),
                ):
                    figures[label][name].append(value)
                print(
                    f"  round {r + 1} {label:<3} mean {s['mean_us']:7.1f} us   p50 "
                    f"{s['p50_us']:7.1f} us   p99 {s['p99_us']:7.1f} us   CPU "
                    f"{answer['cpu_us']:7.1f} us/request   ({s['n']:.0f} calls)"
                )
        for label in sides:
            f = figures[label]
            print(
                f"  {label:<3} over rounds: mean {statistics.fmean(f['mean']):7.1f} us, p50 "
                f"{statistics.fmean(f['p50']):7.1f} us, CPU {statistics.fmean(f['cpu']):7.1f} "
                "us/request"
            )
        # speeds: old time / new time (> 1: new is faster)
        for name, what in (("mean", "wall mean"), ("p50", "wall p50"), ("cpu", "CPU")):
            print(
                "  "
                + _ratio_line(
                    f"in-process speed ({what})", figures["old"][name], figures["new"][name]
                )
            )
        if args.points:
            _series_rounds(
                lambda label, kind: sides[label].ask(f"series {kind}"), list(sides), args
            )
    finally:
        for side in sides.values():
            side.close()


def _series_rounds(
    ask: Callable[[str, str], dict[str, Any]], labels: list[str], args: argparse.Namespace
) -> None:
    for kind in ("full", "fields"):
        for rep in range(args.series_repeats):
            order = labels if rep % 2 == 0 else list(reversed(labels))
            for label in order:
                a = ask(label, kind)
                what = (
                    f"{a['seconds']:.2f} s ({a['bytes'] / 1e6:.1f} MB response)"
                    if "seconds" in a
                    else f"refused: {a['error']}"
                )
                print(f"  {args.points:,}-point series, {kind:<6} {label:<3} {what}")


def _http(roots: dict[str, Path], tmp: Path, args: argparse.Namespace) -> None:
    import httpx

    bench = _bench_module(REPO)  # the client (same for both sides)
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    keys: dict[str, str] = {}
    logs = []
    try:
        for label, root in roots.items():
            data_dir = tmp / f"http-{label}"
            seeded = subprocess.run(
                _side_args("--side-seed", root, data_dir, 0),
                cwd=root,
                env=_env(root, data_dir),
                check=True,
                capture_output=True,
                text=True,
            )
            keys[label] = json.loads(seeded.stdout.strip().splitlines()[-1])["key"]
            ports[label] = free_port()
            log = open(tmp / f"server-{label}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            servers[label] = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(ports[label])],
                cwd=root,
                env=_env(root, data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for label in roots:
            wait_ready(f"http://127.0.0.1:{ports[label]}", servers[label])
        window = _window_body(bench)

        def payload(label: str, route: str) -> bytes:
            if route == "score":
                request = bench._request("POST", "/v1/models/bench/score", keys[label], window)
            else:
                request = bench._request("GET", "/livez", keys[label])
            return bytes(request)

        for label in roots:  # warm up: loads the model, fills caches
            asyncio.run(bench._load(ports[label], payload(label, "score"), 2.0, args.connections))
            asyncio.run(bench._load(ports[label], payload(label, "livez"), 1.0, args.connections))
        print(
            f"HTTP: one uvicorn worker per side, {args.connections} connections, {os.cpu_count()} "
            f"CPU cores, rounds of {args.round_seconds:g} s alternating sides"
        )
        for route, rounds in (("score", args.rounds), ("livez", max(2, args.rounds // 3))):
            name = "POST score 1x64-point window" if route == "score" else "GET /livez"
            rps: dict[str, list[float]] = {label: [] for label in roots}
            cpu: dict[str, list[float]] = {label: [] for label in roots}
            for r in range(rounds):
                order = list(roots) if r % 2 == 0 else list(reversed(roots))
                for label in order:
                    pid = servers[label].pid
                    before = cpu_seconds(pid)
                    res = asyncio.run(
                        bench._load(
                            ports[label],
                            payload(label, route),
                            args.round_seconds,
                            args.connections,
                        )
                    )
                    cpu_us = (cpu_seconds(pid) - before) / max(res["requests"], 1) * 1e6
                    rps[label].append(res["rps"])
                    cpu[label].append(cpu_us)
                    print(
                        f"  {name} round {r + 1} {label:<3} {res['rps']:7.0f} req/s   p50 "
                        f"{res['p50_ms']:6.2f} ms   p99 {res['p99_ms']:6.2f} ms   server CPU "
                        f"{cpu_us:6.0f} us/request   ({res['requests']:.0f} requests, "
                        f"{res['errors']:.0f} non-200)"
                    )
            for label in roots:
                print(
                    f"  {name} {label:<3} mean {statistics.fmean(rps[label]):7.0f} req/s, server "
                    f"CPU {statistics.fmean(cpu[label]):6.0f} us/request"
                )
            print("  " + _ratio_line(f"{name} req/s", rps["new"], rps["old"]))
            # server CPU per request: old / new (> 1: new costs less)
            print("  " + _ratio_line(f"{name} server CPU speed", cpu["old"], cpu["new"]))
        if args.points:
            bodies = _series_bodies(bench, args.points)

            def post(label: str, kind: str) -> dict[str, Any]:
                started = time.perf_counter()
                response = httpx.post(
                    f"http://127.0.0.1:{ports[label]}/v1/models/bench/score",
                    content=bodies[kind],
                    headers={
                        "Authorization": f"Bearer {keys[label]}",
                        "content-type": "application/json",
                    },
                    timeout=600,
                )
                seconds = time.perf_counter() - started
                if response.status_code != 200:
                    return {"error": f"status {response.status_code}: {response.text[:120]}"}
                return {"seconds": seconds, "bytes": len(response.content)}

            _series_rounds(post, list(roots), args)
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        for log in logs:
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="330f6a9", help="the old revision (default 330f6a9)")
    parser.add_argument("--new", default=None, help="the new revision (default: the working tree)")
    parser.add_argument("--mode", choices=("http", "inproc", "both"), default="http")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side")
    parser.add_argument("--round-seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8, help="HTTP connections")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="in-process requests in flight at once"
    )
    parser.add_argument(
        "--points", type=int, default=1_000_000, help="the big series (0: leave it out)"
    )
    parser.add_argument("--series-repeats", type=int, default=1)
    # the sides (run by this script in subprocesses)
    parser.add_argument("--side-seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side-inproc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side_seed:
        return _side_seed(args.root, args.data_dir)
    if args.side_inproc:
        return _side_inproc(args.root, args.data_dir, args.points)

    with tempfile.TemporaryDirectory(prefix="reconad-compare-") as name:
        tmp = Path(name)
        roots = {
            "old": _revision_root(args.base, tmp, "old"),
            "new": _revision_root(args.new, tmp, "new"),
        }
        print(
            f"old: {args.base} ({roots['old']}); new: {args.new or 'working tree'} ({roots['new']})"
        )
        if args.mode in ("inproc", "both"):
            _inproc(roots, tmp, args)
        if args.mode in ("http", "both"):
            _http(roots, tmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
