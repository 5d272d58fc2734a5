"""The worker runtime in this process (fake pipeline, real redis-server): lease loss, reaper."""

from __future__ import annotations

import threading
import time

import pytest

from shared import keys, metrics
from shared.events import replay
from shared.jobs import JobStore
from shared.settings import Settings, load_settings
from shared.tasks import make_client
from tests.support.servers import RedisServer
from worker.pipeline.fake import FakePipeline
from worker.reaper import STRANDED_AFTER_LEASES
from worker.runtime import Runtime
from worker.tickers import Ticker

pytestmark = pytest.mark.integration

TOKENS = 40


def make_runtime(server: RedisServer, node: str) -> Runtime:
    settings = load_settings(
        broker={"url": server.url}, jobs={"lease_seconds": 0.3},
        pipeline={"backend": "fake", "fake_tokens": TOKENS, "fake_token_delay": 0.02},
    )
    return Runtime(settings, FakePipeline(settings.pipeline), server.client(),
                   make_client(settings), node)


def new_job(settings: Settings, server: RedisServer) -> str:
    store = JobStore(server.client(), settings)
    return str(store.create(owner="o", query="q", top_k=1, request_id="r")["id"])


def test_a_worker_that_loses_its_lease_stops_and_drops_its_result(
    broker_redis: RedisServer,
) -> None:
    first, second = make_runtime(broker_redis, "w1"), make_runtime(broker_redis, "w2")
    job_id = new_job(first.settings, broker_redis)
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(first.run_job(job_id)))
    runner.start()
    while not [e for e in replay(first.redis, job_id) if e["type"] == "token"]:
        time.sleep(0.01)
    first.redis.delete(keys.job_lease(job_id))  # as if w1 had stalled past its lease
    assert second.run_job(job_id) == "succeeded"
    runner.join(timeout=10)
    assert outcome == ["lost"]
    record = second.store.get(job_id)
    assert record["attempt"] == 2 and record["status"] == "succeeded"
    assert record["result"]["answer"].split() == [f"tok{i}" for i in range(TOKENS)]
    assert [e["type"] for e in replay(first.redis, job_id)].count("done") == 1


def test_the_reaper_requeues_and_resends_a_dead_workers_job(broker_redis: RedisServer) -> None:
    runtime = make_runtime(broker_redis, "w1")
    job_id = new_job(runtime.settings, broker_redis)
    assert runtime.store.claim(job_id, "dead-worker").run
    time.sleep(0.4)  # the dead worker's lease (0.3 s) runs out
    runtime.reap()
    record = runtime.store.get(job_id)
    assert record["status"] == "queued" and record["attempt"] == 1
    assert runtime.redis.llen(runtime.settings.broker.queue) == 1  # the task, sent again
    assert runtime.run_job(job_id) == "succeeded"
    assert runtime.store.get(job_id)["attempt"] == 2


def test_a_requeued_job_whose_task_was_not_sent_gets_it_on_a_later_pass(
    broker_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(broker_redis, "w1")
    job_id = new_job(runtime.settings, broker_redis)
    assert runtime.store.claim(job_id, "dead-worker").run
    time.sleep(0.4)  # the dead worker's lease (0.3 s) runs out

    def broker_hiccup(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker hiccup")

    monkeypatch.setattr("worker.reaper.send_generate", broker_hiccup)
    with pytest.raises(ConnectionError):
        runtime.reap()
    assert runtime.store.get(job_id)["status"] == "queued"
    assert runtime.redis.llen(runtime.settings.broker.queue) == 0  # no task: stranded
    monkeypatch.undo()
    runtime.redis.delete(keys.REAPER_LOCK)
    runtime.reap()  # too soon: a requeued job may simply be waiting its turn
    assert runtime.redis.llen(runtime.settings.broker.queue) == 0
    time.sleep(0.3 * STRANDED_AFTER_LEASES + 0.1)
    runtime.redis.delete(keys.REAPER_LOCK)
    runtime.reap()
    assert runtime.redis.llen(runtime.settings.broker.queue) == 1  # the task, sent again
    runtime.redis.delete(keys.REAPER_LOCK)
    runtime.reap()  # once per period, not once per pass
    assert runtime.redis.llen(runtime.settings.broker.queue) == 1
    assert runtime.run_job(job_id) == "succeeded"
    assert runtime.store.get(job_id)["attempt"] == 2


def test_a_ticker_survives_an_unexpected_error() -> None:
    calls: list[float] = []

    def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ValueError("a bad device report")  # not a broker error: the thread lives on

    ticker = Ticker("flaky", 0.05, flaky).start()
    try:
        deadline = time.monotonic() + 2.0
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        ticker.stop()
    assert len(calls) >= 2


def test_a_failure_of_a_job_taken_by_another_worker_is_not_counted(
    broker_redis: RedisServer,
) -> None:
    first, second = make_runtime(broker_redis, "w1"), make_runtime(broker_redis, "w2")
    job_id = new_job(first.settings, broker_redis)
    claim = first.store.claim(job_id, "w1")
    assert claim.run and claim.record is not None
    first.redis.delete(keys.job_lease(job_id))  # w1 stalled past its lease; w2 takes the job
    assert second.store.claim(job_id, "w2").run
    failed = metrics.JOBS_FINISHED.labels(status="failed")
    before = failed._value.get()
    assert first._fail(claim.record, "RuntimeError", "boom") == "lost"
    assert failed._value.get() == before  # w2 will count the job's own end
    assert second.store.get(job_id)["status"] == "running"
