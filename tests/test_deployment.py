"""The container files, checked without a Docker engine.

docker-compose.yml is parsed and its wiring read; the commands it and the
Dockerfile run are parsed by the real CLI; the api healthcheck runs against
the live test server. Building the image is left to CI with Docker.
"""

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.core import TyperGroup
from typer.main import get_command

from app.cli.main import app
from app.cli.server import GRACEFUL_SHUTDOWN_SECONDS
from tests.fixtures.server import LiveServer, find_free_port

ROOT = Path(__file__).resolve().parents[1]

# The parsed compose file: opaque YAML.
ComposeFile = dict[str, Any]

# Compose's own interpolation: ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}.
# https://docs.docker.com/reference/compose-file/interpolation/
VARIABLE = re.compile(
    r"\$\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}"
)

# What the Dockerfile must copy for `uv sync` and the service to work.
IMAGE_FILES = ["pyproject.toml", "uv.lock", "README.md", "alembic.ini"]
IMAGE_FOLDERS = ["app", "migrations"]

HEALTHCHECK_TIMEOUT_SECONDS = 30.0

LOCAL_ENVIRONMENT = {"POSTGRES_PASSWORD": "0123456789abcdef"}


class MissingVariable(Exception):
    """A required variable (`${NAME:?error}`) has no value."""


def interpolate(value: str, environment: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, operator = match["name"], match["operator"] or ""
        given = environment.get(name)
        is_set = given is not None and (given != "" or not operator.startswith(":"))
        if is_set:
            return str(given)
        if operator.endswith("?"):
            raise MissingVariable(f"{name}: {match['argument']}")
        return str(match["argument"] or "")

    return VARIABLE.sub(substitute, value)


def interpolate_all(node: Any, environment: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environment)
    if isinstance(node, dict):
        return {key: interpolate_all(item, environment) for key, item in node.items()}
    if isinstance(node, list):
        return [interpolate_all(item, environment) for item in node]
    return node


def load_compose(environment: Mapping[str, str] = LOCAL_ENVIRONMENT) -> ComposeFile:
    text = (ROOT / "docker-compose.yml").read_text()
    compose: ComposeFile = interpolate_all(yaml.safe_load(text), environment)
    return compose


def read_dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments gone."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    return [
        " ".join(line.split())
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def read_console_script() -> tuple[str, str]:
    """The one console script in pyproject.toml: its name and entry point."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [(name, entry_point)] = project["scripts"].items()
    return name, entry_point


def parse_cli(arguments: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a command line as the console script would, without running it."""
    group = get_command(app)
    assert isinstance(group, TyperGroup)
    root = group.context_class(group, info_name=read_console_script()[0])
    command = group.get_command(root, arguments[0])
    assert command is not None, f"no command {arguments[0]!r}"
    context = command.make_context(arguments[0], arguments[1:], parent=root)
    return arguments[0], context.params


def seconds(duration: str) -> float:
    """A compose duration such as `30s`, `1m30s` or `500ms`, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_defines_postgres_migrate_and_api() -> None:
    compose = load_compose()

    assert set(compose["services"]) == {"postgres", "migrate", "api", "api2", "proxy"}
    assert compose["volumes"] == {"postgres-data": None}


def test_compose_pins_postgres_minor_and_checks_it_with_pg_isready() -> None:
    postgres = load_compose()["services"]["postgres"]

    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", postgres["image"])
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "--host=127.0.0.1" in postgres["healthcheck"]["test"]


def test_compose_runs_migrate_once_after_postgres_is_healthy() -> None:
    migrate = load_compose()["services"]["migrate"]

    assert migrate["command"] == ["selftune-events", "migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"


def test_compose_starts_api_after_migration_and_healthy_postgres() -> None:
    api = load_compose()["services"]["api"]

    assert api["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
    }
    assert api["ports"] == ["8000:8000"]


def test_compose_runs_one_image_for_migrate_and_api() -> None:
    services = load_compose()["services"]

    assert services["migrate"]["image"] == services["api"]["image"]
    assert services["migrate"]["build"] == services["api"]["build"] == "."


def test_compose_commands_are_commands_of_console_script() -> None:
    services = load_compose()["services"]
    script, entry_point = read_console_script()

    migrate = parse_cli(services["migrate"]["command"][1:])
    serve = parse_cli(services["api"]["command"][1:])

    assert entry_point == "app.cli.main:main"
    assert services["migrate"]["command"][0] == script
    assert services["api"]["command"][0] == script
    assert migrate == ("migrate", {})
    assert serve == ("serve", {"host": "0.0.0.0", "port": 8000, "workers": 1})


def test_compose_requires_postgres_password() -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        load_compose(environment={})


def test_compose_gives_migrate_and_api_url_of_postgres_service() -> None:
    services = load_compose()["services"]
    postgres = services["postgres"]["environment"]

    urls = {
        name: make_url(services[name]["environment"]["DATABASE_URL"])
        for name in ("migrate", "api")
    }

    for url in urls.values():
        assert url.drivername == "postgresql"
        assert (url.host, url.port) == ("postgres", 5432)
        assert url.username == postgres["POSTGRES_USER"]
        assert url.password == LOCAL_ENVIRONMENT["POSTGRES_PASSWORD"]
        assert url.database == postgres["POSTGRES_DB"]


def test_compose_grace_period_outlasts_uvicorn_drain() -> None:
    api = load_compose()["services"]["api"]

    assert seconds(api["stop_grace_period"]) > GRACEFUL_SHUTDOWN_SECONDS


def test_compose_api_healthcheck_passes_against_running_service(
    live_server: LiveServer,
) -> None:
    test = load_compose()["services"]["api"]["healthcheck"]["test"]
    address = live_server.base_url.removeprefix("http://")

    result = subprocess.run(
        [sys.executable, "-c", test[3].replace("127.0.0.1:8000", address)],
        capture_output=True,
        timeout=HEALTHCHECK_TIMEOUT_SECONDS,
        check=False,
    )

    assert test[:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:8000/healthz" in test[3]
    assert result.returncode == 0, result.stderr.decode()


def test_compose_api_healthcheck_fails_without_service() -> None:
    test = load_compose()["services"]["api"]["healthcheck"]["test"]
    code = test[3].replace("127.0.0.1:8000", f"127.0.0.1:{find_free_port()}")

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=HEALTHCHECK_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode != 0


def test_dockerfile_pins_python_and_uv() -> None:
    instructions = read_dockerfile()

    [base] = [line for line in instructions if line.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", base)
    assert [line for line in instructions if line.startswith("FROM")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE} AS runtime",
    ]
    assert any(re.search(r"pip install .*\buv==\d+\.\d+\.\d+", x) for x in instructions)


def test_dockerfile_syncs_frozen_without_dev_using_cache_mounts() -> None:
    syncs = [line for line in read_dockerfile() if "uv sync" in line]

    assert len(syncs) == 2
    for line in syncs:
        assert "--frozen" in line
        assert "--no-dev" in line
        assert "--mount=type=cache,target=/root/.cache/uv" in line


def test_dockerfile_runs_console_script_as_non_root_on_port_8000() -> None:
    instructions = read_dockerfile()
    api = load_compose()["services"]["api"]

    [cmd] = [line for line in instructions if line.startswith("CMD ")]
    [user] = [line for line in instructions if line.startswith("USER ")]

    assert json.loads(cmd.removeprefix("CMD ")) == api["command"]
    # Numeric, so that runAsNonRoot-style checks can verify it without a passwd.
    assert re.fullmatch(r"USER [1-9]\d*(:[1-9]\d*)?", user)
    assert "EXPOSE 8000" in instructions


def test_dockerfile_copies_what_dockerignore_lets_through() -> None:
    """Every file the image needs is copied, and none is ignored on the way."""
    copies = " ".join(line for line in read_dockerfile() if line.startswith("COPY "))
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    for name in [*IMAGE_FILES, *IMAGE_FOLDERS]:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", copies), name
        assert (ROOT / name).exists(), name
        assert not any(fnmatch(name, pattern) for pattern in ignored), name
    for pattern in ["tests", ".venv", ".git", ".selftune"]:
        assert pattern in ignored


def test_compose_proxy_profile_puts_nginx_in_front_of_two_replicas() -> None:
    services = load_compose()["services"]
    proxy = services["proxy"]
    script = " ".join(proxy["command"])

    assert proxy["profiles"] == ["proxy"] == services["api2"]["profiles"]
    assert "profiles" not in services["api"]
    assert set(proxy["depends_on"]) == {"api", "api2"}
    assert "./deploy/nginx.conf:/deploy/nginx.conf:ro" in proxy["volumes"]
    assert "s/127.0.0.1:8001/api:8000/" in script
    assert "s/127.0.0.1:8002/api2:8000/" in script
    assert services["api2"]["command"] == services["api"]["command"]
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "127.0.0.1:8001" in config
    assert "127.0.0.1:8002" in config
