"""The broker Redis: one way to connect to it, one translation of its errors.

Which Redis errors mean "the broker is unavailable" (BrokerUnavailable; the web answers 503
with Retry-After) is decided here, once: it cannot be reached or does not answer in time
(`ConnectionError`, `TimeoutError`, which cover `BusyLoadingError`), or it cannot take writes
right now (`ReadOnlyError` during a failover, `OutOfMemoryError` when the noeviction instance
is full). Any other `RedisError` (a Lua script error, a wrong key type) is a bug in ragq, not
an outage: it propagates, and the web answers 500. A pool whose every connection stayed busy
for BROKER_POOL_TIMEOUT_SECONDS is neither: BrokerBusy (a kind of BrokerUnavailable, so every
caller treats it alike), answered 503 `broker-busy` and counted apart from outages.

`broker_errors()` is a context manager and, like any `contextlib.contextmanager`, a
decorator (httpx's `_exceptions.map_exceptions` is the model):

    with broker_errors("cannot read job"):
        client.hgetall(key)

    @broker_errors()
    def queue_depth(...): ...
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from shared.errors import BrokerBusy, BrokerUnavailable
from shared.settings import BrokerSettings

BROKER_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, redis.OutOfMemoryError,
)
HEALTH_CHECK_SECONDS = 30
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_POOL_SIZE = 256
DEFAULT_POOL_TIMEOUT_SECONDS = 5.0


class PoolExhausted(redis.ConnectionError):
    """No connection of the pool came free within its timeout (the broker itself may be fine)."""


class WaitingPool(redis.BlockingConnectionPool):
    """redis-py's BlockingConnectionPool (a caller waits for a free connection instead of
    failing at once, as ConnectionPool does past its cap of 100), telling an exhausted pool apart
    from a broker that cannot be reached: both are redis.ConnectionError in redis-py."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)
        except redis.ConnectionError as error:
            # redis-py raises "No connection available." from the pool queue's Empty
            if isinstance(error.__context__, queue.Empty):
                raise PoolExhausted(
                    f"all {self.max_connections} broker connections busy for {self.timeout}s"
                ) from error
            raise


def connect(settings: BrokerSettings) -> redis.Redis:
    """The broker client every process uses (replies decoded to str)."""
    return open_client(settings.url, settings.connect_timeout_seconds, settings.pool_size,
                       settings.pool_timeout_seconds)


def open_client(
    url: str,
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_timeout_seconds: float = DEFAULT_POOL_TIMEOUT_SECONDS,
) -> redis.Redis:
    """A broker client for `url` (connect() for settings; scripts and tests hold only a URL)."""
    pool = WaitingPool.from_url(
        url, max_connections=pool_size, timeout=pool_timeout_seconds, decode_responses=True,
        socket_connect_timeout=connect_timeout_seconds,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
    return redis.Redis(connection_pool=pool)


@contextmanager
def broker_errors(
    what: str = "broker Redis unavailable", also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Raise BrokerUnavailable("<what>: <error>") for BROKER_ERRORS (and `also`) inside, and
    its kind BrokerBusy when the process's pool stayed exhausted (the broker may be fine)."""
    try:
        yield
    except PoolExhausted as error:
        raise BrokerBusy(f"{what}: {error}") from error
    except BROKER_ERRORS + also as error:
        raise BrokerUnavailable(f"{what}: {error}") from error


def memory(client: redis.Redis) -> dict[str, Any]:
    """The broker's memory (INFO memory): bytes used, its maxmemory (0: none set) and the share
    used (None without a maxmemory). A noeviction broker refuses writes at its maxmemory."""
    with broker_errors("broker memory unreadable"):
        info = client.info("memory")
    used, limit = int(info["used_memory"]), int(info.get("maxmemory", 0))
    return {"used_bytes": used, "max_bytes": limit,
            "used_ratio": round(used / limit, 4) if limit else None}
