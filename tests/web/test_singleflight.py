"""Single-flight against a real broker-role redis-server, under concurrent submissions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from shared import keys
from shared.cache import Scope
from shared.errors import JobNotFound
from tests.support.servers import RedisServer
from web.singleflight import SingleFlight, fingerprint

pytestmark = pytest.mark.integration

SCOPE = Scope("idx-1", "smollm2", "v1", 5)


class Jobs:
    """A minimal job table in Redis; counts how many jobs were created."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.created = 0
        self._lock = threading.Lock()

    def create(self) -> dict[str, Any]:
        job_id = str(uuid.uuid4())
        self.client.hset(keys.job(job_id), mapping={"id": job_id, "status": "queued"})
        with self._lock:
            self.created += 1
        return {"id": job_id, "status": "queued"}

    def load(self, job_id: str) -> dict[str, Any]:
        record = self.client.hgetall(keys.job(job_id))
        if not record:
            raise JobNotFound(job_id)
        return record


def claim_or_make(flight: SingleFlight, key: str, jobs: Jobs,
                  create: Callable[[], dict[str, Any]] | None = None,
                  ) -> tuple[dict[str, Any], bool]:
    """Claim, attach or make and bind, as web/submit.py does: (the job, whether attached)."""
    while True:
        claim = flight.claim(key)
        if claim.holder is None:
            break
        try:
            record: dict[str, Any] | None = jobs.load(claim.holder)
        except JobNotFound:
            record = None
        if flight.attach(claim, record):
            assert record is not None
            return record, True
    try:
        made = (create or jobs.create)()
    except BaseException:
        flight.release(claim)
        raise
    flight.bind(claim, made["id"])
    return made, False


def test_fingerprint_ignores_case_and_spacing_but_not_owner_or_scope() -> None:
    base = fingerprint("Who built it?", SCOPE, "alice")
    assert fingerprint("  who BUILT it ", SCOPE, "alice") == base
    assert fingerprint("Who built it?", SCOPE, "bob") != base
    assert fingerprint("Who built it?", Scope("idx-2", "smollm2", "v1", 5), "alice") != base


def test_twenty_concurrent_identical_submissions_make_one_job(broker_redis: RedisServer) -> None:
    jobs = Jobs(broker_redis.client())
    flight = SingleFlight(broker_redis.client(), ttl_seconds=60)
    key = fingerprint("Who built the bridge?", SCOPE, "alice")
    barrier = threading.Barrier(20)

    def submit() -> tuple[str, bool]:
        barrier.wait()
        record, attached = claim_or_make(flight, key, jobs)
        return record["id"], attached

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: submit(), range(20)))
    assert jobs.created == 1
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(attached for _, attached in results) == [False] + [True] * 19


def test_a_final_job_is_not_attached_to(broker_redis: RedisServer) -> None:
    client = broker_redis.client()
    jobs = Jobs(client)
    flight = SingleFlight(client, ttl_seconds=60)
    key = fingerprint("Who built the bridge?", SCOPE, "alice")
    first, _ = claim_or_make(flight, key, jobs)
    client.hset(keys.job(first["id"]), "status", "succeeded")
    second, attached = claim_or_make(flight, key, jobs)
    assert not attached and second["id"] != first["id"] and jobs.created == 2
    assert client.get(keys.inflight(key)) == second["id"]


def test_failed_create_releases_the_claim(broker_redis: RedisServer) -> None:
    client = broker_redis.client()
    flight = SingleFlight(client, ttl_seconds=60)
    key = fingerprint("Who built the bridge?", SCOPE, "alice")

    def broken() -> dict[str, Any]:
        raise RuntimeError("broker refused the task")

    with pytest.raises(RuntimeError, match="broker refused"):
        claim_or_make(flight, key, Jobs(client), broken)
    assert client.get(keys.inflight(key)) is None
