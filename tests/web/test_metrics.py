"""GET /metrics reads the broker-backed gauges on every scrape: queue depth, workers and the cost
breaker's spend and state, which must not stay stale once a window resets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from flask import Flask

from shared import keys
from shared.breaker import Breaker
from shared.settings import BreakerSettings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 2
LIMIT_EUR = 1.0


def _gauge(app: Flask, name: str) -> float:
    for line in app.test_client().get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_breaker_gauges_follow_the_window_on_each_scrape(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url},
                   breaker={"window_seconds": WINDOW_SECONDS, "limit_eur": LIMIT_EUR})
    breaker = Breaker(broker_redis.client(), BreakerSettings(window_seconds=WINDOW_SECONDS))
    time.sleep(WINDOW_SECONDS - time.time() % WINDOW_SECONDS + 0.05)  # a fresh window
    # another process (a worker) spends: nothing in this process has seen it yet
    broker_redis.client().incrbyfloat(keys.breaker_window(breaker.window_start()), LIMIT_EUR)
    assert _gauge(app, "rag_circuit_breaker_cumulative_cost_eur") == pytest.approx(LIMIT_EUR)
    assert _gauge(app, "rag_circuit_breaker_open") == 1.0
    time.sleep(breaker.retry_after() + 0.1)  # the window resets; no request touches the breaker
    assert _gauge(app, "rag_circuit_breaker_cumulative_cost_eur") == 0.0
    assert _gauge(app, "rag_circuit_breaker_open") == 0.0


def test_a_scrape_with_the_broker_down_still_answers_and_says_why(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()  # the broker is a closed port
    logging.getLogger().addHandler(caplog.handler)  # create_app replaced the root's handlers
    with caplog.at_level(logging.WARNING, logger="web.observability"):
        response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert any("broker" in record.getMessage() for record in caplog.records
               if record.name == "web.observability")
