"""The web's breaker reservation for a cache miss, against a real broker-role redis-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.support.servers import RedisServer
from web.resources import resources
from web.submit import Reservation
from web.tenants import ANONYMOUS_TENANT

pytestmark = pytest.mark.integration


def test_a_disabled_breaker_reserves_nothing_and_gives_nothing_back(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, breaker={"enabled": False})
    with app.app_context():
        found = resources()
        reservation = Reservation.make(found.breaker, found.settings, ANONYMOUS_TENANT)
        spend = found.breaker.state()["spend_eur"]
    assert reservation is None  # no RESERVED_FIELD / WINDOW_FIELD for the job to settle
    assert spend == 0.0  # a settlement would take back an estimate that was never added
