"""The web's breaker reservation for a cache miss, against a real broker-role redis-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from shared.breaker import RESERVED_FIELD, WINDOW_FIELD
from shared.cache import CacheLookup
from tests.support.servers import RedisServer
from web.caching import current

pytestmark = pytest.mark.integration


def test_a_disabled_breaker_reserves_nothing_and_gives_nothing_back(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, breaker={"enabled": False})
    sent: list[dict[str, str] | None] = []

    def submit(internal: dict[str, str] | None) -> dict[str, Any]:
        sent.append(internal)
        return {"id": "job"}

    def failing(internal: dict[str, str] | None) -> dict[str, Any]:
        raise RuntimeError("broker refused the task")

    with app.app_context():
        path = current()
        path.reserve_and_submit(CacheLookup(hit=False), submit)
        with pytest.raises(RuntimeError):
            path.reserve_and_submit(CacheLookup(hit=False), failing)
        spend = path.breaker.state()["spend_eur"]
    assert RESERVED_FIELD not in (sent[0] or {}) and WINDOW_FIELD not in (sent[0] or {})
    assert spend == 0.0  # a settlement would take back an estimate that was never added
