"""The broker client's pool: callers wait for a free connection, and an exhausted pool is told
apart from a broker that cannot be reached."""

from __future__ import annotations

import threading

import pytest
import redis

from shared.broker import broker_errors, open_client
from shared.errors import BrokerBusy, BrokerUnavailable
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.integration


def _hold(client: redis.Redis, holders: int, seconds: float) -> list[threading.Thread]:
    """`holders` threads each keep one pooled connection busy for `seconds` (a BLPOP)."""
    threads = [threading.Thread(target=client.blpop, args=([f"nothing-{n}"], seconds))
               for n in range(holders)]
    for thread in threads:
        thread.start()
    return threads


def test_callers_past_the_pool_size_wait_for_a_connection(broker_redis: RedisServer) -> None:
    client = open_client(broker_redis.url, pool_size=4, pool_timeout_seconds=10.0)
    answers: list[object] = []
    errors: list[Exception] = []

    def call() -> None:
        try:
            answers.append(client.blpop(["nothing"], 0.3))
        except Exception as error:  # collected: the assertion names it
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert answers == [None] * 12
    assert len(client.connection_pool._connections) <= 4  # type: ignore[attr-defined]


def test_an_exhausted_pool_is_busy_not_down(broker_redis: RedisServer) -> None:
    client = open_client(broker_redis.url, pool_size=2, pool_timeout_seconds=0.2)
    holders = _hold(client, 2, 2.0)
    try:
        with pytest.raises(BrokerBusy, match="busy"), broker_errors("cannot read"):
            client.get("anything")
    finally:
        for thread in holders:
            thread.join()
    with broker_errors("cannot read"):
        assert client.get("anything") is None


def test_a_broker_that_cannot_be_reached_is_unavailable_not_busy() -> None:
    client = open_client(f"redis://127.0.0.1:{free_port()}/0", 0.2, pool_size=2)
    with pytest.raises(BrokerUnavailable) as raised, broker_errors("cannot read"):
        client.get("anything")
    assert not isinstance(raised.value, BrokerBusy)
