"""Fixtures of the service tests: settings on a temp data dir, in-process apps and real server
processes on free loopback ports (helpers live in ``svc_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_helpers import ServerProcess

from service.app import create_app
from service.context import AppContext
from service.db import Database, upgrade_schema
from service.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a temp data dir; jobs stay queued (no child processes) unless overridden."""
    return Settings(
        data_dir=tmp_path / "data",
        max_concurrent_jobs=0,
        bootstrap_admin_key=False,
        log_json=True,
        log_level="WARNING",
        scheduler_interval_s=3600,
    )


@pytest.fixture
def context(settings: Settings) -> Iterator[AppContext]:
    """Built and migrated services (no background loops)."""
    ctx = AppContext.build(settings)
    upgrade_schema(ctx.db)
    yield ctx
    ctx.scoring.close()
    ctx.db.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database in a temp folder."""
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    upgrade_schema(database)
    yield database
    database.dispose()


@pytest.fixture
def app_client(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """An in-process app (lifespan running) and admin headers."""
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        ctx: AppContext = app.state.context
        _, key = ctx.auth.create("admin", "tests")
        yield client, {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers on ``tmp_path/data``; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / "data", tmp_path / "server.log", **env)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()
