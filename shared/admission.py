"""Admission control: refuse new cache misses while the queue is deeper than the service drains.

Retry-After is an estimate of how long the queue ahead takes to drain: the median of the
recent job durations the workers record (`keys.RECENT_DURATIONS`) times the queue depth,
divided by the workers serving it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import redis

from shared import keys
from shared.broker import broker_errors
from shared.errors import QueueFull

RECENT_DURATIONS_KEPT = 100
DEFAULT_JOB_SECONDS = 10.0
MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 3600


def record_duration(client: redis.Redis, seconds: float) -> None:
    """Remember how long a finished job took (the worker calls this after each job)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.RECENT_DURATIONS, f"{seconds:.3f}")
        pipe.ltrim(keys.RECENT_DURATIONS, 0, RECENT_DURATIONS_KEPT - 1)
        pipe.execute()


class Admission:
    """Raises QueueFull when more than `max_depth` jobs wait; see the module docstring."""

    def __init__(
        self, client: redis.Redis, max_depth: int, workers: Callable[[], int] = lambda: 1
    ) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth!r}")
        self.redis = client
        self.max_depth = max_depth
        self._workers = workers

    def check(self) -> int:
        """Return the queue depth, or raise QueueFull with an estimated retry_after."""
        pipe = self.redis.pipeline(transaction=False)
        with broker_errors("queue depth unreadable"), pipe:
            pipe.zcard(keys.QUEUED)
            pipe.lrange(keys.RECENT_DURATIONS, 0, -1)
            depth, durations = pipe.execute()
        if int(depth) <= self.max_depth:
            return int(depth)
        raise QueueFull(
            f"{depth} jobs are queued (limit {self.max_depth}); try again later",
            retry_after=self.retry_after(int(depth), [float(d) for d in durations]),
        )

    def retry_after(self, depth: int, durations: list[float]) -> int:
        """Seconds until the queue has drained below the limit, from recent job durations."""
        typical = statistics.median(durations) if durations else DEFAULT_JOB_SECONDS
        workers = max(1, self._workers())
        estimate = math.ceil(typical * (depth - self.max_depth + 1) / workers)
        return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, estimate))
