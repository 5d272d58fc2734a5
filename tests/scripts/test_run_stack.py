"""`make run`'s preflight (scripts/run_stack.py env): which Redis it starts, and a port in use
named with its process before anything starts."""

from __future__ import annotations

import os
import socket

import pytest

from scripts.run_stack import PortConflict, stack_env
from shared.settings import Settings, load_settings
from tests.support.servers import RedisServer, free_port


def settings_on_free_ports(**overrides: dict[str, object]) -> Settings:
    groups: dict[str, dict[str, object]] = {
        "api": {"port": free_port()},
        "flower": {"port": free_port()},
        "worker": {"metrics_port": 0},
        "collections": {"metrics_port": 0},
        "broker": {"url": f"redis://127.0.0.1:{free_port()}/0"},
        "cache": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"},
    }
    for group, values in overrides.items():
        groups[group] |= values
    return load_settings(**groups)


def test_a_port_in_use_is_named_with_its_setting_and_process() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = settings_on_free_ports(api={"port": port})
        with pytest.raises(PortConflict, match=rf"port {port} \(API_PORT\) is in use by pid "
                                               rf"{os.getpid()} \(.*python"):
            stack_env(settings)


def test_a_port_where_redis_should_start_but_something_else_listens_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = settings_on_free_ports(cache={"redis_url": f"redis://127.0.0.1:{port}/0"})
        with pytest.raises(PortConflict, match=rf"port {port} \(CACHE_REDIS_URL\) is in use"):
            stack_env(settings)


@pytest.mark.integration
def test_a_reachable_redis_of_no_make_run_is_used_and_a_missing_one_started(
        broker_redis: RedisServer) -> None:
    settings = settings_on_free_ports(broker={"url": broker_redis.url})
    env = stack_env(settings)
    assert env["RAGQ_START_BROKER"] == "false"
    assert env["RAGQ_START_CACHE"] == "true"
    assert env["RAGQ_CACHE_PORT"] == settings.cache.redis_url.rsplit(":", 1)[1].split("/")[0]
