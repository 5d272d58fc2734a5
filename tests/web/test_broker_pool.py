"""A web process whose broker connections are all busy answers 503 broker-busy, counted apart
from broker outages (which stay 503 broker-unavailable)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.servers import RedisServer
from tests.web.conftest import AUTH, KEY, problem_of
from web.resources import EXTENSION

pytestmark = pytest.mark.integration


def _errors(client: FlaskClient, kind: str) -> float:
    """rag_errors_total{type=kind} as /metrics shows it (the registry is process-wide)."""
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf'^rag_errors_total{{type="{kind}"}} (\S+)$', text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_an_exhausted_pool_is_503_broker_busy(make_app: Callable[..., Flask],
                                             broker_redis: RedisServer) -> None:
    app = make_app(broker={"url": broker_redis.url, "pool_size": 2, "pool_timeout_seconds": 0.2},
                   auth={"enabled": True, "api_keys": [KEY]})
    client = app.test_client()
    assert client.get("/v1/jobs", headers=AUTH).status_code == 200
    busy_before = _errors(client, "broker-busy")
    down_before = _errors(client, "broker-unavailable")
    redis_client = app.extensions[EXTENSION].redis
    holders = [threading.Thread(target=redis_client.blpop, args=([f"held-{n}"], 2.0))
               for n in range(2)]
    for thread in holders:
        thread.start()
    try:
        response = client.get("/v1/jobs", headers=AUTH)
    finally:
        for thread in holders:
            thread.join()
    body = problem_of(response, 503)
    assert body["type"] == "/problems/broker-busy"
    assert response.headers["Retry-After"] == "1"
    assert _errors(client, "broker-busy") == busy_before + 1
    assert _errors(client, "broker-unavailable") == down_before
    assert client.get("/v1/jobs", headers=AUTH).status_code == 200
