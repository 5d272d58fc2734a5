"""The ingest reaper in this process, on a real redis-server: ingest jobs whose worker died, or
whose task never reached a worker, are queued again and sent again, or fail once attempts are
spent; a duplicate task never runs a job another worker holds."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from shared import keys
from shared.events import replay
from shared.ingest_jobs import Action, IngestJobs, Upload
from shared.settings import Settings, load_settings
from shared.tasks import make_client
from tests.support.servers import RedisServer
from worker.reaper import STRANDED_AFTER_LEASES, IngestReaper

pytestmark = pytest.mark.integration

LEASE_SECONDS = 0.3


def make(server: RedisServer, **jobs: object) -> tuple[Settings, IngestJobs, IngestReaper]:
    settings = load_settings(broker={"url": server.url},
                             jobs={"lease_seconds": LEASE_SECONDS, **jobs})
    client = server.client()
    store = IngestJobs(client, settings.jobs)
    return settings, store, IngestReaper(settings.jobs, store, client, make_client(settings), "w1")


def new_job(store: IngestJobs) -> str:
    upload = Upload("guide.md", "text/markdown", b"# Guide\n\nThe broker listens on 6390.")
    job = store.create(owner="o", collection="team", action=Action.ADD,
                       documents=[upload.name], request_id="r", uploads=[upload])
    return job["id"]


def sent(server: RedisServer, settings: Settings) -> int:
    """Ingest tasks waiting in the ingest queue."""
    return int(server.client().llen(settings.collections.queue))


def reap(reaper: IngestReaper) -> None:
    reaper.redis.delete(keys.INGEST_REAPER_LOCK)  # one pass per call, not one per interval
    reaper.reap()


def failed_count() -> float:
    return REGISTRY.get_sample_value("rag_ingest_jobs_total", {"status": "failed"}) or 0.0


def test_a_dead_workers_ingest_job_is_queued_again_and_its_task_sent(
        broker_redis: RedisServer) -> None:
    settings, store, reaper = make(broker_redis)
    job_id = new_job(store)
    assert store.claim(job_id, "dead-worker") is not None
    reap(reaper)
    assert store.get(job_id)["status"] == "running"  # its lease is still live
    time.sleep(LEASE_SECONDS + 0.1)  # the dead worker never renews it
    reap(reaper)
    record = store.get(job_id)
    assert record["status"] == "queued" and record["attempt"] == 1
    assert sent(broker_redis, settings) == 1
    requeued = [e for e in replay(store.redis, job_id) if e.get("status") == "queued"][-1]
    assert requeued["reason"] == "worker lost"
    again = store.claim(job_id, "w1")
    assert again is not None and again["attempt"] == 2
    assert store.uploads(job_id)[0].name == "guide.md"  # still there to run again


def test_an_ingest_job_that_keeps_losing_its_worker_fails_with_a_clear_error_and_is_counted(
        broker_redis: RedisServer) -> None:
    settings, store, reaper = make(broker_redis, max_attempts=2)
    job_id = new_job(store)
    before = failed_count()
    for attempt in (1, 2):
        claimed = store.claim(job_id, f"dead-{attempt}")
        assert claimed is not None and claimed["attempt"] == attempt
        time.sleep(LEASE_SECONDS + 0.1)
        reap(reaper)
    record = store.get(job_id)
    assert record["status"] == "failed"
    assert record["error"] is not None and record["error"]["type"] == "WorkerLost"
    assert "killed its worker 2 times" in record["error"]["message"]
    assert replay(store.redis, job_id)[-1]["type"] == "error"
    assert failed_count() == before + 1
    assert sent(broker_redis, settings) == 1  # after the first death only
    assert store.redis.zcard(keys.INGEST_RUNNING) == 0
    assert store.redis.zcard(keys.INGEST_QUEUED) == 0


def test_a_queued_ingest_job_whose_task_never_came_gets_it_once_per_period(
        broker_redis: RedisServer) -> None:
    settings, store, reaper = make(broker_redis)
    job_id = new_job(store)  # created, its task never sent (the broker failed the send)
    reap(reaper)
    assert sent(broker_redis, settings) == 0  # too soon: it may simply be waiting its turn
    time.sleep(LEASE_SECONDS * STRANDED_AFTER_LEASES + 0.1)
    reap(reaper)
    assert sent(broker_redis, settings) == 1
    reap(reaper)
    assert sent(broker_redis, settings) == 1  # once per period, not once per pass
    claimed = store.claim(job_id, "w1")
    assert claimed is not None and claimed["attempt"] == 1
    assert store.redis.zcard(keys.INGEST_QUEUED) == 0


def test_a_duplicate_task_never_runs_a_job_that_a_live_worker_holds(
        broker_redis: RedisServer) -> None:
    _, store, _ = make(broker_redis)
    job_id = new_job(store)
    assert store.claim(job_id, "w1") is not None
    assert store.claim(job_id, "w2") is None
    record = store.get(job_id)
    assert record["status"] == "running" and record["attempt"] == 1
    assert store.leases.renew(job_id, "w1", 1)
    assert not store.leases.renew(job_id, "w2", 1)
