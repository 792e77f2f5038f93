"""Fixtures of the scale-out tests: a fresh PostgreSQL database and an S3 server per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from scale_infra import postgres_reason, s3_reason, s3_server, temp_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    with temp_database() as url:
        yield url


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """Endpoint of an S3-compatible server on loopback with the bucket ``reconad``."""
    reason = s3_reason()
    if reason:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(key, value)
        with s3_server() as endpoint:
            yield endpoint
