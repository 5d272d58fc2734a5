"""A real gunicorn on real redis-servers (no worker: jobs stay queued), with small limits so
a test can pass them; and a second client, on another loopback address, for the bystander."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer

KEY = "hostile-test-key"
AUTH = {"X-API-Key": KEY, "Content-Type": "application/json"}
ORIGIN = "https://app.example.com"
BYSTANDER = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback: another client address
PER_CLIENT = 60
PER_JOB = 5
BODY_TIMEOUT = 2
HEADER_TIMEOUT = 2


class Web:
    """The server, and plain HTTP calls to it from an address of the caller's choice."""

    def __init__(self, server: GunicornServer) -> None:
        self.server = server

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             source: str = BYSTANDER) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30,
                                                source_address=(source, 0))
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=payload, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def new_job(self) -> str:
        """A new queued job (each question is new: an identical one would join the same job)."""
        question = {"query": f"what is ticket {uuid.uuid4().hex}?"}
        status, _, body = self.call("POST", "/v1/jobs", question, AUTH)
        assert status == 202, body
        return str(json.loads(body)["id"])


@contextmanager
def _web(root: Path, **env: str) -> Iterator[Web]:
    broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
    server = GunicornServer(root / "web", env={
        "BROKER_URL": broker.url, "CACHE_ENABLED": "false",
        "AUTH_ENABLED": "true", "AUTH_API_KEYS": KEY, "AUTH_ALLOWED_ORIGINS": ORIGIN,
        "API_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "API_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        # the per-key rate and queue limits are not what these tests are about
        "AUTH_KEY_RATE_PER_SECOND": "0", "AUTH_KEY_MAX_QUEUED": "0",
        "API_MAX_QUEUE_DEPTH": "100000",
        **env,
    }, workers=1, connections=2000)
    try:
        yield Web(server.start(timeout=120))
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """Small per-client and per-job bounds, so a test can pass them."""
    with _web(tmp_path_factory.mktemp("hostile"), API_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
              API_WEBSOCKETS_PER_JOB=str(PER_JOB)) as found:
        yield found


@pytest.fixture(scope="module")
def unbounded_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """No per-client bound: what one client can hold is bounded by API_CONNECTIONS alone."""
    with _web(tmp_path_factory.mktemp("hostile-unbounded"), API_CONNECTIONS_PER_CLIENT="0",
              API_WEBSOCKETS_PER_JOB="1000") as found:
        yield found
