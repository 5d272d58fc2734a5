"""Fixtures shared by the whole suite: real redis-servers on free ports, offline models."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import RedisServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start as many redis-servers as a test needs; all are killed after it."""
    servers: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", *extra_args).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def broker_redis(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A broker-role Redis: nothing may be evicted."""
    return redis_factory("--maxmemory-policy", "noeviction")


@pytest.fixture
def cache_redis(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A cache-role Redis: bounded, least-recently-used entries evicted."""
    return redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
