"""API keys: hashing, verification, scopes, revocation, bootstrap, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from svc_helpers import REPO

from service.auth import AuthService, Principal, hash_key
from service.cli import main
from service.db import Database
from service.errors import ForbiddenError, UnauthorizedError
from service.tables import ApiKey


def test_keys_are_stored_hashed_and_verified(db: Database) -> None:
    auth = AuthService(db, cache_ttl_s=0)
    row, key = auth.create("write", "ci")
    assert key.startswith(f"rad_{row.id}_") and len(key) > 40
    with db.session() as session:
        stored = session.get(ApiKey, row.id)
    assert stored is not None and stored.key_hash == hash_key(key) and key not in stored.key_hash
    assert auth.verify(key) == Principal(row.id, "write")
    for bad in (None, "", "nonsense", key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x"):
        with pytest.raises(UnauthorizedError):
            auth.verify(bad)


def test_scopes_are_ordered(db: Database) -> None:
    score = Principal("a", "score")
    admin = Principal("b", "admin")
    assert AuthService.require(admin, "write") is admin
    assert AuthService.require(score, "score") is score
    with pytest.raises(ForbiddenError, match="scope 'write'"):
        AuthService.require(score, "write")
    with pytest.raises(ValueError, match="unknown scope"):
        AuthService(db).create("root")


def test_revocation_and_cache(db: Database) -> None:
    auth = AuthService(db, cache_ttl_s=60)
    row, key = auth.create("score")
    auth.verify(key)
    assert auth.cached(key) is not None
    auth.revoke(row.id)
    assert auth.cached(key) is None
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.verify(key)


def test_bootstrap_only_when_no_key_exists(db: Database) -> None:
    auth = AuthService(db)
    key = auth.bootstrap_admin()
    assert key is not None and auth.verify(key).scope == "admin"
    assert auth.bootstrap_admin() is None


def test_cli_keys_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONAD_DATA_DIR": str(data_dir)}
    created = subprocess.run(  # the real entry point, once
        [
            sys.executable,
            "-m",
            "service",
            "keys",
            "create",
            "--scope",
            "score",
            "--name",
            "grafana",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rad_") and "shown only this once" in created.stderr
    key_id = key.split("_")[1]

    monkeypatch.setenv("RECONAD_DATA_DIR", str(data_dir))
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "grafana" in listed and key not in listed
    assert main(["keys", "revoke", key_id]) == 0
    assert main(["keys", "revoke", "deadbeef"]) == 2
    assert "no API key with id" in capsys.readouterr().err
    db = Database(f"sqlite:///{data_dir / 'reconad.db'}")
    with pytest.raises(UnauthorizedError):
        AuthService(db).verify(key)
    db.dispose()
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for command in ("serve", "keys", "train", "score", "evaluate"):
        assert command in help_text
