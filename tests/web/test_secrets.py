"""Secrets stay off display: no API key in make run's banner, no Flower password on a command
line, no hosts, pids, models or spend on the health routes without API_HEALTH_DETAIL, and no
client-chosen Host in the stream links once API_PUBLIC_URL is set."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from shared.settings import load_settings
from shared.workers import write_heartbeat
from tests.support.servers import RedisServer
from tests.web.conftest import AUTH, KEY

REPO = Path(__file__).resolve().parents[2]
REPORT = {"node": "secret-host", "pid": 4242, "pipeline_loaded": True, "model_id": "some-model",
          "device": {"device": "cpu", "cuda_available": False, "model_on_device": "some-model",
                     "vram_used_gb": 0.0, "vram_total_gb": 0.0}}


def _run_stack() -> Any:
    spec = importlib.util.spec_from_file_location("run_stack", REPO / "scripts" / "run_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ready_banner_names_no_api_key() -> None:
    settings = load_settings(auth={"enabled": True, "api_keys": ["very-secret-key"]})
    banner = _run_stack()._banner("http://127.0.0.1:8000", settings)
    assert "very-secret-key" not in banner
    assert "X-API-Key: $RAGQ_API_KEY" in banner


def test_flower_reads_its_password_from_the_environment_not_its_command_line() -> None:
    programs = (REPO / "scripts" / "supervisord.conf").read_text().split("[program:")
    flower = next(p for p in programs if p.startswith("flower]")).split("command=")[1]
    flower = flower.splitlines()[0]
    assert "basic-auth" not in flower and "FLOWER_BASIC_AUTH" not in flower


@pytest.fixture
def health_app(make_app: Callable[..., Flask], broker_redis: RedisServer) -> Callable[..., Flask]:
    """An app on a real broker with one worker's heartbeat in it."""
    write_heartbeat(redis.Redis.from_url(broker_redis.url, decode_responses=True), REPORT, 30.0)

    def make(**overrides: dict[str, Any]) -> Flask:
        return make_app(broker={"url": broker_redis.url}, cache={"enabled": False}, **overrides)

    return make


@pytest.mark.integration
def test_health_shows_no_detail_without_a_key_when_auth_is_on(
        health_app: Callable[..., Flask]) -> None:
    client = health_app(auth={"enabled": True, "api_keys": [KEY]}).test_client()
    stats = client.get("/health/stats").get_json()
    assert stats["workers"] == 1
    assert stats["breaker"] == {"enabled": True, "state": "closed"}
    gpu = client.get("/health/gpu").get_json()
    assert gpu["workers"] == [{"role": "generation", "pipeline_loaded": True, "device": "cpu",
                               "cuda_available": False, "vram_used_gb": 0.0,
                               "vram_total_gb": 0.0}]
    shown = str(stats) + str(gpu)
    for secret in ("secret-host", "4242", "some-model", "spend"):
        assert secret not in shown


@pytest.mark.integration
@pytest.mark.parametrize(("auth", "detail"), [({"enabled": False}, None),
                                              ({"enabled": True, "api_keys": [KEY]}, True)])
def test_health_shows_detail_with_auth_off_or_when_asked(
        health_app: Callable[..., Flask], auth: dict[str, Any], detail: bool | None) -> None:
    client = health_app(auth=auth, api={"health_detail": detail}).test_client()
    stats = client.get("/health/stats").get_json()
    assert stats["workers"][0]["node"] == "secret-host"
    assert "spend_eur" in stats["breaker"]
    assert client.get("/health/gpu").get_json()["workers"][0]["pid"] == 4242


@pytest.mark.integration
def test_stream_links_use_the_public_url_not_the_request_host(
        make_app: Callable[..., Flask], broker_redis: RedisServer) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False},
                   auth={"enabled": True, "api_keys": [KEY]},
                   api={"public_url": "https://ragq.example.com/api/"})
    response = app.test_client().post("/v1/jobs", json={"query": "what is a ticket?"},
                                      headers={**AUTH, "Host": "evil.example.net"})
    stream = response.get_json()["links"]["stream"]
    assert stream.startswith("wss://ragq.example.com/api/v1/jobs/")
    assert "evil" not in stream


def test_a_public_url_must_be_http() -> None:
    with pytest.raises(Exception, match="API_PUBLIC_URL"):
        load_settings(api={"public_url": "javascript:alert(1)"})
