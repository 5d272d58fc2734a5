"""The broker Redis: one way to connect to it, one translation of its errors.

Which Redis errors mean "the broker is unavailable" (BrokerUnavailable; the web answers 503
with Retry-After) is decided here, once: it cannot be reached or does not answer in time
(`ConnectionError`, `TimeoutError`, which cover `BusyLoadingError`), or it cannot take writes
right now (`ReadOnlyError` during a failover, `OutOfMemoryError` when the noeviction instance
is full). Any other `RedisError` (a Lua script error, a wrong key type) is a bug in ragq, not
an outage: it propagates, and the web answers 500.

`broker_errors()` is a context manager and, like any `contextlib.contextmanager`, a
decorator (httpx's `_exceptions.map_exceptions` is the model):

    with broker_errors("cannot read job"):
        client.hgetall(key)

    @broker_errors()
    def queue_depth(...): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared.errors import BrokerUnavailable
from shared.settings import BrokerSettings

BROKER_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, redis.OutOfMemoryError,
)
HEALTH_CHECK_SECONDS = 30
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0


def connect(settings: BrokerSettings) -> redis.Redis:
    """The broker client every process uses (replies decoded to str)."""
    return open_client(settings.url, settings.connect_timeout_seconds)


def open_client(
    url: str, connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
) -> redis.Redis:
    """A broker client for `url` (connect() for settings; scripts and tests hold only a URL)."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=connect_timeout_seconds,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )


@contextmanager
def broker_errors(
    what: str = "broker Redis unavailable", also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Raise BrokerUnavailable("<what>: <error>") for BROKER_ERRORS (and `also`) inside."""
    try:
        yield
    except BROKER_ERRORS + also as error:
        raise BrokerUnavailable(f"{what}: {error}") from error
