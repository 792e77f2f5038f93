"""Every route against the one scope table (``service/scopes.py``) and the README's copy of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from service.app import create_app
from service.auth import SCOPES
from service.context import AppContext
from service.scopes import ROUTE_SCOPES
from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
#: Values for path parameters: none of them names an existing resource, so a request that gets
#: past the key check fails with 404/422 and changes nothing.
_PARAMS = {
    "name": "no-such-model",
    "version": "1",
    "job_id": "no-such-job",
    "schedule_id": "no-such-schedule",
    "key_id": "0000abcd",
    "asset": "favicon.png",
    "series": "no-such-series",
    "event_id": "999999",
    "channel_id": "no-such-channel",
    "label_id": "999999",
}


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, also inside included routers (FastAPI >= 0.165 keeps them nested)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _flat(route.effective_candidates())
        else:
            yield route


def _app_routes(settings: Settings) -> list[tuple[str, str]]:
    app = create_app(settings)
    found = []
    for route in _flat(app.routes):
        if isinstance(route, Mount):
            continue
        if isinstance(route, Route) or getattr(route, "methods", None):
            found += [(m, route.path) for m in sorted(route.methods) if m != "HEAD"]
    assert len(found) > 40, f"found only {found}: the route walk misses routes"
    return found


@pytest.fixture
def keyed_client(settings: Settings) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        ctx: AppContext = app.state.context
        keys: dict[str, dict[str, str]] = {}
        for scope in SCOPES:
            _, plain = ctx.auth.create(scope, f"scope-test-{scope}")
            keys[scope] = {"Authorization": f"Bearer {plain}"}
        yield client, keys


def test_every_route_is_in_the_scope_table(settings: Settings) -> None:
    routes = _app_routes(settings)
    missing = [r for r in routes if r not in ROUTE_SCOPES]
    assert not missing, (
        f"routes {missing} are not in service/scopes.py ROUTE_SCOPES: add each with the scope "
        "it needs (None for no key), and the same row to the README's 'Routes and scopes' table"
    )
    stale = sorted(set(ROUTE_SCOPES) - set(routes))
    assert not stale, f"service/scopes.py lists routes the app does not have: {stale}"


def test_every_route_needs_exactly_its_scope(
    keyed_client: tuple[TestClient, dict[str, dict[str, str]]], settings: Settings
) -> None:
    client, keys = keyed_client
    wrong: list[str] = []
    for method, path in _app_routes(settings):
        if path.startswith("/ui"):
            continue  # console routes take a session, not a key: test_svc_ui.py checks them
        needed = ROUTE_SCOPES[(method, path)]
        url = path.format(**{k: v for k, v in _PARAMS.items() if "{" + k + "}" in path})
        body: dict[str, Any] | None = {} if method in ("POST", "PATCH", "PUT") else None

        def status(
            headers: dict[str, str] | None,
            m: str = method,
            u: str = url,
            b: dict[str, Any] | None = body,
        ) -> int:
            return client.request(m, u, headers=headers, json=b).status_code

        if needed is None:
            if status(None) in (401, 403):
                wrong.append(f"{method} {path} needs a key, the table says none")
            continue
        if status(None) != 401:
            wrong.append(f"{method} {path} answers without a key")
        rank = SCOPES.index(needed)
        if rank > 0 and status(keys[SCOPES[rank - 1]]) != 403:
            wrong.append(f"{method} {path} accepts scope {SCOPES[rank - 1]}; table: {needed}")
        if status(keys[needed]) in (401, 403):
            wrong.append(f"{method} {path} refuses scope {needed}, which the table gives it")
    assert not wrong, wrong


def test_readme_shows_the_same_table() -> None:
    rows = re.findall(
        r"^\| `(GET|POST|PATCH|PUT|DELETE)` \| `([^`]+)` \| (\w+) \|", README.read_text(), re.M
    )
    shown = {(m, p): (None if s == "none" else s) for m, p, s in rows}
    assert shown == ROUTE_SCOPES, (
        "README's 'Routes and scopes' table differs from service/scopes.py: "
        f"only in README {sorted(set(shown.items()) - set(ROUTE_SCOPES.items()))}, "
        f"only in scopes.py {sorted(set(ROUTE_SCOPES.items()) - set(shown.items()))}"
    )
