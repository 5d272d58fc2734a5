"""Admission control against a real broker-role redis-server."""

from __future__ import annotations

import pytest

from shared import keys
from shared.admission import DEFAULT_JOB_SECONDS, Admission, record_duration
from shared.errors import QueueFull
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def _queue(server: RedisServer, depth: int) -> None:
    server.client().zadd(keys.QUEUED, {f"job-{n}": n for n in range(depth)})


def test_admits_up_to_the_limit(broker_redis: RedisServer) -> None:
    _queue(broker_redis, 3)
    assert Admission(broker_redis.client(), max_depth=3).check() == 3


def test_refuses_beyond_the_limit_with_retry_after_from_recent_durations(
    broker_redis: RedisServer,
) -> None:
    client = broker_redis.client()
    for seconds in (2.0, 4.0, 100.0):
        record_duration(client, seconds)
    _queue(broker_redis, 6)
    admission = Admission(client, max_depth=3, workers=lambda: 2)
    with pytest.raises(QueueFull, match="6 jobs are queued \\(limit 3\\)") as caught:
        admission.check()
    assert caught.value.retry_after == 8  # median 4 s x (6 - 3 + 1) jobs / 2 workers


def test_without_history_assumes_a_default_job_time(broker_redis: RedisServer) -> None:
    _queue(broker_redis, 2)
    with pytest.raises(QueueFull) as caught:
        Admission(broker_redis.client(), max_depth=1).check()
    assert caught.value.retry_after == int(DEFAULT_JOB_SECONDS * 2)


def test_history_is_bounded(broker_redis: RedisServer) -> None:
    client = broker_redis.client()
    for n in range(150):
        record_duration(client, float(n))
    assert client.llen(keys.RECENT_DURATIONS) == 100
    assert float(client.lindex(keys.RECENT_DURATIONS, 0)) == 149.0


def test_max_depth_must_be_positive(broker_redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="max_depth must be >= 1, got 0"):
        Admission(broker_redis.client(), max_depth=0)
