"""docker-compose.yml, checked without a Docker engine: its settings are the app's, its parts fit together."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest
import yaml

from stack.cluster import PROJECT_ROOT
from streams.config import PREFIX, Settings, variables

COMPOSE = PROJECT_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The compose file's services, anchors and merges resolved by the YAML loader."""
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def settings_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's PROMPT_STREAMS_* environment, as strings (as Docker passes them)."""
    return {name: str(value) for name, value in service.get("environment", {}).items() if name.startswith(PREFIX)}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running `faust -A streams.app worker`."""
    return {name: s for name, s in services.items() if s.get("command", [])[:4] == ["faust", "-A", "streams.app",
                                                                                       "worker"]}


def test_every_setting_is_a_real_setting_with_a_valid_value(services: dict[str, dict[str, Any]]) -> None:
    """Each PROMPT_STREAMS_* variable names a Settings field, and the values load (types and checks)."""
    known = {variable.name for variable in variables()}
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name, service in services.items():
        env = settings_of(service)
        assert not set(env) - known, f"{name}: not settings: {sorted(set(env) - known)}"
        loaded = Settings.from_env(env).to_env()
        for variable, value in env.items():
            assert loaded[variable] == value
            assert variable in readme, f"{variable} (service {name}) is not in the README"


def test_kafka_is_kraft_and_clients_use_its_listener(services: dict[str, dict[str, Any]]) -> None:
    """One KRaft node; every client's bootstrap is its advertised in-network listener; the registry likewise."""
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller" and "zookeeper" not in services
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics must have their declared partitions"
    advertised = dict(re.findall(r"(\w+)://([\w.]+:\d+)", kafka["KAFKA_ADVERTISED_LISTENERS"]))
    internal = advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    registry_port = services["registry"]["ports"][0].rsplit(":", 1)[1]
    clients = {name: settings_of(s) for name, s in services.items() if settings_of(s)}
    assert set(clients) >= {*workers(services), "sal-bridge"}
    for name, env in clients.items():
        assert env[f"{PREFIX}BOOTSTRAP"] == internal, name
        assert env[f"{PREFIX}REGISTRY_URL"] == f"http://registry:{registry_port}/apis/ccompat/v7", name
        for variable, value in env.items():  # the SAL bridge's Chile cluster is this one too
            if variable.endswith("_BOOTSTRAP"):
                assert value == internal, f"{name}: {variable}"
            if variable.endswith("_REGISTRY_URL"):
                assert value == f"http://registry:{registry_port}/apis/ccompat/v7", f"{name}: {variable}"
    assert settings_of(services["sal-bridge"])[f"{PREFIX}CHILE_BOOTSTRAP"], "the bridge needs a target cluster"
    assert advertised["HOST"] == Settings().cluster.bootstrap, "the README's kcat recipes reach it from the host"


def test_workers_have_their_own_names_and_state(services: dict[str, dict[str, Any]]) -> None:
    """At least two workers, each with a stable name (its transactional id) and its own data volume."""
    found = workers(services)
    assert len(found) >= 2
    names = [settings_of(s)[f"{PREFIX}WORKER_NAME"] for s in found.values()]
    data = [next(v for v in s["volumes"] if v.endswith(":" + settings_of(s)[f"{PREFIX}DATA_DIR"]))
            for s in found.values()]
    assert len(set(names)) == len(names) and len(set(data)) == len(data)
    hosts = [settings_of(s)[f"{PREFIX}WEB_HOST"] for s in found.values()]
    assert hosts == list(found), "each worker announces its own service name to the others"
    assert all(settings_of(s)[f"{PREFIX}WEB_BIND"] == "0.0.0.0" for s in found.values())
    for name, service in found.items():
        assert set(service["depends_on"]) >= {"kafka", "registry"}, name


def test_images_and_commands_are_coherent(services: dict[str, dict[str, Any]]) -> None:
    """Our services build the Dockerfile, which builds the wheel from every package and installs it (not the
    source tree); each `python -m` module exists."""
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for package in ("streams", "topology", "connectors", "stack", "schemas"):
        assert f"COPY {package} {package}" in dockerfile
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile
    assert "-e ." not in dockerfile
    ours = {name: s for name, s in services.items() if s.get("build") == "."}
    assert set(ours) == {*workers(services), "sal-bridge"}
    assert len({s["image"] for s in ours.values()}) == 1
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), name
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, f"{name}: no module {command[2]}"
