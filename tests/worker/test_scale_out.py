"""Two workers (two processes, as two GPU hosts) on one queue share the jobs; each runs once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from shared import keys
from shared.events import read_events
from shared.jobs import JobStore
from shared.settings import load_settings
from shared.tasks import make_client
from tests.support.celery import WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # noqa: F401 (fixture)
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration

JOBS = 8
TOKENS = 10


def test_two_workers_share_eight_jobs_and_run_each_once(
    broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess]
) -> None:
    env = worker_env(broker_redis.url, PIPELINE_FAKE_TOKENS=str(TOKENS),
                     PIPELINE_FAKE_TOKEN_DELAY="0.05")
    workers = [worker_factory(env, "w1"), worker_factory(env, "w2")]
    for worker in workers:
        worker.wait_ready()
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    celery = make_client(settings)
    jobs = [submit_job(store, celery, owner="o", query=f"q{i}", top_k=1, request_id=f"r{i}")
            for i in range(JOBS)]
    nodes: Counter[str] = Counter()
    for job in jobs:
        events = list(read_events(store.redis, job["id"], idle_timeout=30))
        running = [e for e in events if e["type"] == "status" and e["status"] == "running"]
        assert len(running) == 1 and running[0]["attempt"] == 1
        assert [e["type"] for e in events].count("token") == TOKENS
        assert events[-1]["job"]["status"] == "succeeded"
        nodes[str(store.redis.hget(keys.job(job["id"]), "node"))] += 1
    assert set(nodes) == {worker.node for worker in workers}
    assert sum(nodes.values()) == JOBS
