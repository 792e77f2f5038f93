"""The ``reconad`` command: ``serve``, ``worker``, ``keys create|list|revoke``, and the
library's ``train``, ``score`` and ``evaluate``.

Settings come from ``RECONAD_*`` environment variables (``RECONAD_DATA_DIR`` first of all); the
key commands work on the same database as the server, with or without the server running.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detector import cli as detector_cli

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

_DATA_DIR_HELP = (
    "the server's data folder (default: RECONAD_DATA_DIR, else ./reconad-data in the current "
    "folder)"
)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = _settings(args)
    print(f"ReconAD data dir: {settings.data_dir}", file=sys.stderr)
    app = create_app(settings)
    if settings.gc_freeze_interval_s > 0:
        from service.gc_policy import GcPolicy

        GcPolicy(settings.gc_freeze_interval_s, settings.gc_full_interval_s).start()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from service.jobs.celery_backend import QUEUES, create_celery
    from service.observability import configure_logging
    from service.settings import Settings

    settings = Settings()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        print(f"error: --queues takes {', '.join(QUEUES)} (comma-separated)", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    app = create_celery(settings)
    argv = ["worker", "--queues", ",".join(queues), "--concurrency", str(args.concurrency)]
    argv += ["--loglevel", settings.log_level, "--without-gossip", "--without-mingle"]
    app.worker_main(argv)
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from service.settings import Settings

    data_dir = getattr(args, "data_dir", None)
    return Settings(data_dir=data_dir) if data_dir else Settings()


def _auth(args: argparse.Namespace) -> Any:
    """The key service on the server's database; never invents an empty one by accident.

    Run elsewhere than the server, the default ``./reconad-data`` is another folder, and a key
    made in a fresh database there would be refused by the server: so say which database is
    used, and stop when it does not exist unless the data dir (or database) was named
    explicitly (``--data-dir``, ``RECONAD_DATA_DIR``, ``RECONAD_DATABASE_URL``), as when keys
    are provisioned before the first start.
    """
    from service.auth import AuthService
    from service.db import Database, upgrade_schema

    settings = _settings(args)
    url = settings.database_url
    shown = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    print(f"using the database {shown} (data dir {settings.data_dir})", file=sys.stderr)
    explicit = bool(getattr(args, "data_dir", None)) or any(
        name in os.environ for name in ("RECONAD_DATA_DIR", "RECONAD_DATABASE_URL")
    )
    path = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite:///") and not path.exists() and not explicit:
        print(
            f"error: no ReconAD database at {path}: run this in the folder where `reconad serve` "
            "runs, or pass --data-dir (or RECONAD_DATA_DIR) with the server's data dir (a named "
            "data dir without a database gets a new one)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if url.startswith("sqlite:///") and not path.exists():
        print(f"creating a new database at {path}", file=sys.stderr)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url)
    upgrade_schema(db)
    return AuthService(db, cache_ttl_s=0)


def _keys_create(args: argparse.Namespace) -> int:
    row, plain = _auth(args).create(args.scope, args.name or "")
    print(plain)
    print(
        f"created key {row.id} with scope '{row.scope}'; it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    rows = _auth(args).list_keys()
    print(f"{'ID':<10} {'SCOPE':<6} {'CREATED (UTC)':<20} {'REVOKED (UTC)':<20} NAME")
    for row in rows:
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if row.revoked_at else "-"
        created = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{row.id:<10} {row.scope:<6} {created:<20} {revoked:<20} {row.name}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from service.errors import NotFoundError

    try:
        row = _auth(args).revoke(args.id)
    except NotFoundError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"revoked key {row.id}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full ``reconad`` parser."""
    parser = argparse.ArgumentParser(
        prog="reconad",
        description="ReconAD: time-series anomaly detection service and library. Settings "
        "come from RECONAD_* environment variables (e.g. RECONAD_DATA_DIR).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", help=_DATA_DIR_HELP)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser(
        "worker", help="run a Celery training worker (RECONAD_JOB_BACKEND=celery)"
    )
    worker.add_argument(
        "--queues",
        default="cpu",
        help="queues to take jobs from: cpu, gpu or cpu,gpu (default cpu)",
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="trainings at once (default 1; one per GPU)"
    )
    worker.set_defaults(func=_worker)

    keys = sub.add_parser("keys", help="manage API keys")
    keys.add_argument("--data-dir", help=_DATA_DIR_HELP)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument(
        "--scope",
        required=True,
        choices=["score", "write", "admin"],
        help="score: scoring and reads; write: also models, data, jobs, schedules; "
        "admin: everything",
    )
    create.add_argument("--name", default="", help="a label for the key")
    create.set_defaults(func=_keys_create)
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.set_defaults(func=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", help="the key id shown by `keys list`")
    revoke.set_defaults(func=_keys_revoke)

    detector_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``reconad`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
