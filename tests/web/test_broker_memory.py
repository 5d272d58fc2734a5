"""The broker's memory where operators look: /health/stats and the metrics Prometheus alerts on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def test_stats_and_metrics_show_the_brokers_memory(
    make_app: Callable[..., Flask], redis_factory: Callable[..., RedisServer]
) -> None:
    broker = redis_factory("--maxmemory", "32mb", "--maxmemory-policy", "noeviction")
    client = make_app(broker={"url": broker.url}, cache={"enabled": False}).test_client()
    memory = client.get("/health/stats").get_json()["broker_memory"]
    assert memory["max_bytes"] == 32 * 1024 * 1024 and 0 < memory["used_ratio"] < 1
    scraped = dict(line.rsplit(" ", 1) for line in
                   client.get("/metrics").get_data(as_text=True).splitlines()
                   if line.startswith("rag_broker_memory"))
    assert float(scraped["rag_broker_memory_max_bytes"]) == 32 * 1024 * 1024
    assert float(scraped["rag_broker_memory_used_bytes"]) > 0
