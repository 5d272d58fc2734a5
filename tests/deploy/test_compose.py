"""compose/docker-compose.yml: valid against the compose specification, healthy-ordered, sealed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.settings import GROUPS, env_name, load_settings
from tests.deploy.files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    env_example,
    referenced_variables,
    tool,
)

SERVICES = {
    "web", "worker", "ingest", "redis-broker", "redis-cache", "flower", "prometheus", "grafana",
    "proxy",
}
OUR_IMAGES = {"web", "worker", "ingest", "flower"}
PUBLISHED_PORTS = {"8000", "9090", "3000", "5555"}
NAMED_VOLUMES = {
    "model-cache", "collections", "redis-broker", "redis-cache", "prometheus", "grafana",
}
SETTINGS = {env_name(cls, field) for cls in GROUPS.values() for field in cls.model_fields}
# Variables read by third-party code, each documented by its owner.
THIRD_PARTY = {
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",  # Hugging Face
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus_client multiprocess mode
    "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES",  # NVIDIA container toolkit
    "REDISCLI_AUTH",  # redis-cli; the Redis services also pass it to --requirepass
}
GRAFANA_PREFIX = "GF_"  # Grafana reads every ini option as GF_<SECTION>_<KEY>
VALIDATE_HINT = "pip install check-jsonschema (the dev extra)"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    checker = tool("check-jsonschema", VALIDATE_HINT)
    return subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def test_validates_against_the_compose_spec() -> None:
    result = _validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    healthcheck:", "    healthcheckk:", 1))
    assert _validate(broken).returncode != 0


def test_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_a_healthcheck_and_memory_limit(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["healthcheck"]["test"], name
    assert not service["healthcheck"].get("disable", False)
    assert service["deploy"]["resources"]["limits"]["memory"]


def test_depends_on_waits_for_healthy(compose: dict[str, Any]) -> None:
    edges = 0
    for name, service in compose["services"].items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert dependency in compose["services"]
            edges += 1
    assert edges >= 5


def test_only_the_public_ports_are_published(compose: dict[str, Any]) -> None:
    published = set()
    for service in compose["services"].values():
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            assert host == container, mapping
            published.add(host)
    assert published == PUBLISHED_PORTS


def test_worker_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_worker_environment_chooses_the_gpu_profile(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["worker"])
    assert env["PIPELINE_GENERATOR_MODEL"] == "Qwen/Qwen2.5-3B-Instruct"
    assert env["PIPELINE_LOAD_IN_4BIT"] == "true"
    assert env["PIPELINE_DEVICE"] == "cuda"
    assert env["PIPELINE_RERANKER"]
    assert env["HF_HUB_OFFLINE"] == "1"
    mounts = {volume.split(":")[1] for volume in compose["services"]["worker"]["volumes"]}
    assert any(env["PIPELINE_MODEL_CACHE_DIR"].startswith(mount) for mount in mounts)


@pytest.mark.parametrize("name", sorted(OUR_IMAGES))
def test_every_variable_is_a_real_setting(compose: dict[str, Any], name: str) -> None:
    unknown = set(_environment(compose["services"][name])) - SETTINGS - THIRD_PARTY
    assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(OUR_IMAGES))
def test_every_value_is_a_valid_setting(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in _environment(compose["services"][name]).items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    if name == "worker":
        assert settings.pipeline.load_in_4bit is True
        assert settings.worker.metrics_port == 9101


def test_third_party_services_set_only_their_own_variables(compose: dict[str, Any]) -> None:
    for name in SERVICES - OUR_IMAGES:
        for variable in _environment(compose["services"][name]):
            grafana_option = name == "grafana" and variable.startswith(GRAFANA_PREFIX)
            assert variable in THIRD_PARTY or grafana_option, f"{name}: {variable}"


def _redis_command(compose: dict[str, Any], name: str) -> str:
    return " ".join(compose["services"][name]["command"])


def test_broker_redis_never_evicts_and_keeps_an_aof(compose: dict[str, Any]) -> None:
    command = _redis_command(compose, "redis-broker")
    assert "--maxmemory 1536mb" in command  # below the container's 2 GB; RagqBrokerMemoryHigh
    assert "--maxmemory-policy noeviction" in command
    assert "--appendonly yes" in command
    assert '--requirepass "$REDISCLI_AUTH"' in command


def test_cache_redis_is_bounded_lru(compose: dict[str, Any]) -> None:
    command = _redis_command(compose, "redis-cache")
    assert "--maxmemory 256mb" in command
    assert "--maxmemory-policy allkeys-lru" in command
    assert '--requirepass "$REDISCLI_AUTH"' in command


def test_roles_use_separate_passworded_instances(compose: dict[str, Any]) -> None:
    web = _environment(compose["services"]["web"])
    secrets = env_example()
    assert f":{secrets['REDIS_BROKER_PASSWORD']}@redis-broker:" in web["BROKER_URL"]
    assert f":{secrets['REDIS_CACHE_PASSWORD']}@redis-cache:" in web["CACHE_REDIS_URL"]


def test_named_volumes_are_declared_and_mounted(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) >= NAMED_VOLUMES
    mounted = {
        str(volume).split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    assert mounted >= NAMED_VOLUMES


def test_flower_requires_a_password(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["flower"])
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    assert user and password == env_example()["FLOWER_PASSWORD"]


def test_env_example_covers_every_secret_and_nothing_else() -> None:
    text = COMPOSE_FILE.read_text()
    required = referenced_variables(text)
    assert set(env_example()) == required, ENV_EXAMPLE
    secrets = [name for name in required if name.endswith(("PASSWORD", "API_KEYS"))]
    assert len(secrets) == 5
    for name in secrets:
        assert f"${{{name}:?" in text, f"{name} must be required, not defaulted"
