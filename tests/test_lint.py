"""Static checks as tests, so that CI runs them: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", "detector", "service", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", "detector", "service", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize(
    "paths",
    [
        ("detector", "service", "benchmarks"),
        ("tests/detector",),
        ("tests/service", "tests/docker"),
        ("tests/scale",),
    ],
    ids=["packages", "detector-tests", "service-tests", "scale-tests"],
)
def test_mypy_strict(paths: tuple[str, ...]) -> None:
    result = run("mypy", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
