"""What the broker keeps, and for how long, against a real noeviction redis-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared import keys
from shared.broker import memory
from shared.jobs import JobStore
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def _store(server: RedisServer, **jobs: object) -> JobStore:
    return JobStore(server.client(), load_settings(broker={"url": server.url}, jobs=jobs))


def _hit(store: JobStore, owner: str = "alice") -> str:
    record = store.create_answered(owner=owner, query="what is ragq?", top_k=3, request_id="r",
                                   result={"answer": "a job system", "sources": []},
                                   metrics={"cost_eur": 0.0},
                                   cache={"similarity": 1.0, "question": None, "path": "exact"})
    return record["id"]


def test_a_cache_hit_is_kept_for_its_own_short_retention(broker_redis: RedisServer) -> None:
    store = _store(broker_redis, retention_seconds=86400, cached_retention_seconds=60)
    client = broker_redis.client()
    hit = _hit(store)
    ran = store.create(owner="alice", query="q", top_k=3, request_id="r")["id"]
    assert 0 < client.ttl(keys.job(hit)) <= 60 and not client.exists(keys.job_events(hit))
    assert client.ttl(keys.job(ran)) > 86000
    assert store.get(hit, owner="alice")["cached"] is True  # still readable meanwhile
    assert client.ttl(keys.owner_jobs("alice")) > 86000  # the listing outlives the hit


def test_a_keys_listing_keeps_its_newest_jobs_only(broker_redis: RedisServer) -> None:
    store = _store(broker_redis, listed_max=100)
    hits = [_hit(store) for _ in range(120)]
    listed, total = store.list_for("alice", limit=200)
    assert total == 100 and [job["id"] for job in listed] == hits[:-101:-1]
    assert store.get(hits[0], owner="alice")["id"] == hits[0]  # readable by id until it expires


def test_broker_memory_reports_its_maxmemory(
    redis_factory: Callable[..., RedisServer],
) -> None:
    bounded = redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    report = memory(bounded.client())
    assert report["max_bytes"] == 64 * 1024 * 1024 and report["used_bytes"] > 0
    assert report["used_ratio"] == round(report["used_bytes"] / report["max_bytes"], 4)
    assert memory(redis_factory().client())["used_ratio"] is None  # no maxmemory set
