"""Admission control against a real broker-role redis-server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared import keys
from shared.admission import DEFAULT_JOB_SECONDS, Admission, Bounds, record_duration
from shared.errors import QueueFull, QueueRefused
from shared.jobs import JobStore
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def _queue(server: RedisServer, depth: int) -> None:
    server.client().zadd(keys.QUEUED, {f"job-{n}": n for n in range(depth)})


def test_admits_below_the_limit_and_refuses_at_it(broker_redis: RedisServer) -> None:
    _queue(broker_redis, 2)
    admission = Admission(broker_redis.client(), max_depth=3)
    assert admission.check("someone") == 2
    _queue(broker_redis, 3)
    with pytest.raises(QueueFull, match="3 jobs are queued \\(limit 3\\)") as caught:
        admission.check("someone")
    assert caught.value.limit == "queue"


def test_refuses_beyond_the_limit_with_retry_after_from_recent_durations(
    broker_redis: RedisServer,
) -> None:
    client = broker_redis.client()
    for seconds in (2.0, 4.0, 100.0):
        record_duration(client, seconds)
    _queue(broker_redis, 6)
    admission = Admission(client, max_depth=3, workers=lambda: 2)
    with pytest.raises(QueueFull, match="6 jobs are queued \\(limit 3\\)") as caught:
        admission.check("someone")
    assert caught.value.retry_after == 8  # median 4 s x (6 - 3 + 1) jobs / 2 workers


def test_without_history_assumes_a_default_job_time(broker_redis: RedisServer) -> None:
    _queue(broker_redis, 2)
    with pytest.raises(QueueFull) as caught:
        Admission(broker_redis.client(), max_depth=1).check("someone")
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


def _store(server: RedisServer) -> JobStore:
    return JobStore(server.client(), load_settings(broker={"url": server.url}))


def _create_all(store: JobStore, owners: list[str], bounds: Bounds) -> list[str]:
    """Create one job per owner entry, all at once; the limits refused for those refused."""

    def create(owner: str) -> str:
        try:
            store.create_admitted(owner=owner, query="q", top_k=1, request_id="r", bounds=bounds)
        except QueueRefused as refused:
            return refused.limit
        return "admitted"

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(create, owners))


def test_concurrent_creations_never_pass_the_queue_limit(broker_redis: RedisServer) -> None:
    outcomes = _create_all(_store(broker_redis), [f"owner-{n}" for n in range(60)],
                           Bounds(max_depth=10))
    assert outcomes.count("admitted") == 10 and outcomes.count("queue") == 50
    assert broker_redis.client().zcard(keys.QUEUED) == 10


def test_a_keys_queued_jobs_are_bounded_and_others_still_admitted(
    broker_redis: RedisServer,
) -> None:
    store = _store(broker_redis)
    outcomes = _create_all(store, ["busy"] * 20, Bounds(max_depth=100, max_queued_per_key=3))
    assert outcomes.count("admitted") == 3 and outcomes.count("key-queued") == 17
    _, ahead = store.create_admitted(owner="quiet", query="q", top_k=1, request_id="r",
                                     bounds=Bounds(max_depth=100, max_queued_per_key=3))
    assert ahead == 0  # none of its own jobs queued before it
    with pytest.raises(QueueFull, match="3 jobs of this API key are queued") as caught:
        Admission(broker_redis.client(), max_depth=100).check("busy", 3)
    assert caught.value.limit == "key-queued"
