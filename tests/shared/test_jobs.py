"""Job records against a real redis-server: state machine, owners, cancel, expiry, claims."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from shared import keys
from shared.errors import BrokerUnavailable, InvalidTransition, JobNotFound
from shared.events import replay
from shared.jobs import FINAL, JobStore, Status
from shared.settings import load_settings
from shared.tasks import make_client
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration


def make_store(server: RedisServer, **jobs: object) -> JobStore:
    settings = load_settings(broker={"url": server.url}, jobs={"lease_seconds": 0.5, **jobs})
    return JobStore(server.client(), settings)


@pytest.fixture
def store(broker_redis: RedisServer) -> Iterator[JobStore]:
    yield make_store(broker_redis)


def new_job(store: JobStore, owner: str = "alice", query: str = "what is ragq?") -> dict:
    return store.create(owner=owner, query=query, top_k=3, request_id="req-1")


def test_create_returns_a_queued_record_with_its_position(store: JobStore) -> None:
    first, second = new_job(store), new_job(store)
    assert first["status"] == "queued" and first["attempt"] == 0
    assert (first["queue_position"], second["queue_position"]) == (1, 2)
    assert first["request_id"] == "req-1" and "owner" not in first
    assert set(first["metrics"]) >= {"queue_wait_s", "ttft_s", "cost_eur"}
    assert store.queue_depth() == 2


def test_unknown_and_foreign_jobs_are_not_found(store: JobStore) -> None:
    job = new_job(store, owner="alice")
    with pytest.raises(JobNotFound):
        store.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(JobNotFound):
        store.get("not-a-uuid")
    with pytest.raises(JobNotFound):
        store.get(job["id"], owner="mallory")
    with pytest.raises(JobNotFound):
        store.cancel(job["id"], owner="mallory")
    assert store.get(job["id"], owner="alice")["id"] == job["id"]


@pytest.mark.parametrize(
    ("path", "rejected"),
    [
        ([Status.RUNNING, Status.SUCCEEDED], Status.RUNNING),
        ([Status.RUNNING, Status.FAILED], Status.QUEUED),
        ([Status.CANCELLED], Status.RUNNING),
        ([Status.EXPIRED], Status.SUCCEEDED),
        ([], Status.SUCCEEDED),
        ([], Status.FAILED),
        ([Status.RUNNING, Status.QUEUED], Status.SUCCEEDED),
    ],
)
def test_state_machine_allows_only_its_transitions(
    store: JobStore, path: list[Status], rejected: Status
) -> None:
    job = new_job(store)
    for status in path:
        record = store.transition(job["id"], status, {})
        assert record["status"] == status
    with pytest.raises(InvalidTransition, match="not allowed"):
        store.transition(job["id"], rejected, {})
    assert store.get(job["id"])["status"] == (path[-1] if path else Status.QUEUED)


def test_transition_checks_the_attempt(store: JobStore) -> None:
    job = new_job(store)
    claim = store.claim(job["id"], "w1")
    assert claim.run and claim.record is not None and claim.record["attempt"] == 1
    with pytest.raises(InvalidTransition, match="attempt"):
        store.finish(job["id"], Status.SUCCEEDED, attempt=2)
    assert store.finish(job["id"], Status.SUCCEEDED, attempt=1)["status"] == "succeeded"


def test_final_transition_emits_done_with_the_record_and_counts(store: JobStore) -> None:
    job = new_job(store)
    store.claim(job["id"], "w1")
    store.finish(job["id"], Status.SUCCEEDED, attempt=1, result={"answer": "42", "sources": []},
                 metrics={"cost_eur": 0.001})
    events = replay(store.redis, job["id"])
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["type"] for e in events] == ["status", "status", "done"]
    done = events[-1]["job"]
    assert done["status"] == "succeeded" and done["result"]["answer"] == "42"
    assert done["metrics"]["cost_eur"] == 0.001 and done["metrics"]["queue_wait_s"] >= 0
    assert store.status_counts()["succeeded"] == 1
    assert store.redis.ttl(keys.job(job["id"])) > 0


def test_cancel_queued_never_runs_and_twice_is_harmless(store: JobStore) -> None:
    job = new_job(store)
    first = store.cancel(job["id"], "alice")
    second = store.cancel(job["id"], "alice")
    assert first["status"] == second["status"] == "cancelled"
    assert first["finished_at"] == second["finished_at"]
    assert store.claim(job["id"], "w1").outcome == "drop"
    assert store.queue_depth() == 0
    assert replay(store.redis, job["id"])[-1]["type"] == "done"


def test_cancel_running_sets_the_flag_and_keeps_running(store: JobStore) -> None:
    job = new_job(store)
    store.claim(job["id"], "w1")
    assert not store.cancel_requested(job["id"])
    assert store.cancel(job["id"], "alice")["status"] == "running"
    assert store.cancel_requested(job["id"])
    store.finish(job["id"], Status.CANCELLED, attempt=1)
    assert store.cancel(job["id"], "alice")["status"] == "cancelled"


def test_queued_job_past_its_deadline_expires_on_read(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis, queue_deadline_seconds=0.2)
    job = new_job(store)
    time.sleep(0.3)
    record = store.get(job["id"])
    assert record["status"] == "expired" and record["started_at"] is None
    assert "deadline" in record["error"]["message"]
    assert replay(store.redis, job["id"])[-1]["type"] == "error"


def test_a_listing_expires_a_queued_job_past_its_deadline(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis, queue_deadline_seconds=0.2)
    job = new_job(store)
    time.sleep(0.3)
    jobs, total = store.list_for("alice")
    assert total == 1 and jobs[0]["status"] == "expired"  # as GET /v1/jobs/<id> says
    assert jobs[0]["queue_position"] is None and store.queue_depth() == 0
    assert store.get(job["id"])["status"] == "expired"


def test_claim_past_deadline_expires_without_running(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis, queue_deadline_seconds=0.2)
    job = new_job(store)
    time.sleep(0.3)
    claim = store.claim(job["id"], "w1")
    assert claim.outcome == "expired" and claim.record is not None
    assert claim.record["attempt"] == 0


def test_a_task_for_a_job_gone_from_redis_leaves_no_queued_entry(store: JobStore) -> None:
    job = new_job(store)
    store.redis.delete(keys.job(job["id"]))  # its record lapsed (retention) before a worker came
    assert store.claim(job["id"], "w1").outcome == "drop"
    assert store.queue_depth() == 0  # admission control counts what is left here


def test_a_redelivered_job_never_expires(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis, queue_deadline_seconds=0.2)
    job = new_job(store)
    assert store.claim(job["id"], "w1").run
    time.sleep(0.6)  # the deadline and w1's lease (0.5 s) pass
    claim = store.claim(job["id"], "w2")
    assert claim.run and claim.record is not None and claim.record["attempt"] == 2


def test_live_lease_blocks_a_second_worker_and_expired_lease_redelivers(store: JobStore) -> None:
    job = new_job(store)
    assert store.claim(job["id"], "w1").run
    assert store.claim(job["id"], "w2").outcome == "drop"
    time.sleep(0.6)  # the lease (0.5 s) of the dead w1 expires
    assert store.leases.lost() == [(job["id"], 1)]
    claim = store.claim(job["id"], "w2")
    assert claim.run and claim.record is not None and claim.record["attempt"] == 2
    statuses = [e for e in replay(store.redis, job["id"]) if e["type"] == "status"]
    assert statuses[-2]["status"] == "queued" and statuses[-2]["reason"] == "worker lost"
    assert statuses[-1]["attempt"] == 2 and statuses[-1]["redelivered"] is True
    assert not store.leases.renew(job["id"], "w1", 1)
    assert store.leases.renew(job["id"], "w2", 2)


def test_attempts_are_bounded(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis, max_attempts=2)
    job = new_job(store)
    assert store.claim(job["id"], "w1").run
    assert store.claim(job["id"], "w1").run  # same node: its previous child died
    claim = store.claim(job["id"], "w1")
    assert claim.outcome == "failed" and claim.record is not None
    assert claim.record["error"]["message"] == "job killed its worker 2 times"


def test_concurrent_claims_run_a_job_once(store: JobStore) -> None:
    job = new_job(store)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim(node: str) -> None:
        barrier.wait()
        outcomes.append(store.claim(job["id"], node).outcome)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["drop"] * 7 + ["run"]


def test_list_for_owner_newest_first(store: JobStore) -> None:
    ids = [new_job(store, owner="alice", query=f"q{i}")["id"] for i in range(5)]
    new_job(store, owner="bob")
    page, total = store.list_for("alice", offset=1, limit=2)
    assert total == 5
    assert [record["id"] for record in page] == [ids[3], ids[2]]


def test_wait_final_wakes_on_the_terminal_event(store: JobStore) -> None:
    job = new_job(store)
    store.claim(job["id"], "w1")
    timer = threading.Timer(0.3, store.finish, args=(job["id"], Status.FAILED, 1),
                            kwargs={"error": {"type": "X", "message": "boom"}})
    timer.start()
    started = time.monotonic()
    record = store.wait_final(job["id"], timeout=5.0)
    assert record is not None and record["status"] in FINAL
    assert record["error"] == {"type": "X", "message": "boom"}
    assert time.monotonic() - started < 3.0
    assert store.wait_final(new_job(store)["id"], timeout=0.2) is None


def test_broker_down_is_broker_unavailable(broker_redis: RedisServer) -> None:
    store = make_store(broker_redis)
    broker_redis.stop()
    with pytest.raises(BrokerUnavailable):
        new_job(store)
    with pytest.raises(BrokerUnavailable):
        store.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(BrokerUnavailable):  # the worker's end of a job, metrics merged first
        store.finish("00000000-0000-4000-8000-000000000000", Status.FAILED, 1, metrics={})


def test_records_hold_json_fields_as_json(store: JobStore) -> None:
    job = new_job(store)
    store.claim(job["id"], "w1")
    store.finish(job["id"], Status.SUCCEEDED, attempt=1, result={"answer": "a", "sources": []})
    stored = store.redis.hget(keys.job(job["id"]), "result")
    assert stored is not None and json.loads(stored) == {"answer": "a", "sources": []}
    assert isinstance(store.redis, redis.Redis)


def test_submit_with_the_broker_down_is_broker_unavailable(broker_redis: RedisServer) -> None:
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    broker_redis.stop()
    with pytest.raises(BrokerUnavailable, match="broker Redis unavailable"):
        submit_job(store, make_client(settings), owner="o", query="q", top_k=1, request_id="r")


def test_a_create_whose_queued_event_fails_leaves_nothing_behind(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_gone(*args: object, **kwargs: object) -> int:
        raise BrokerUnavailable("cannot emit status event")

    monkeypatch.setattr(store.events, "emit", broker_gone)
    with pytest.raises(BrokerUnavailable):
        new_job(store)
    assert store.queue_depth() == 0  # no task was sent: nothing would ever take it off
    assert store.list_for("alice") == ([], 0)


def test_submit_discards_the_record_when_the_task_cannot_be_sent(
    broker_redis: RedisServer, redis_factory: Callable[..., RedisServer]
) -> None:
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    down = redis_factory()
    down.stop()
    celery = make_client(load_settings(broker={"url": down.url}))
    with pytest.raises(BrokerUnavailable, match="cannot queue job"):
        submit_job(store, celery, owner="o", query="q", top_k=1, request_id="r")
    assert store.list_for("o") == ([], 0) and store.queue_depth() == 0


def test_internal_fields_reach_the_hash_but_never_the_record(store: JobStore) -> None:
    job = new_job(store)
    store.set_internal(job["id"], {"cache_embedding": "AAAA"})
    assert store.redis.hget(keys.job(job["id"]), "cache_embedding") == "AAAA"
    assert "cache_embedding" not in store.get(job["id"])
    assert store.get(job["id"]) == {**job, "queue_position": 1}


def test_a_cache_answered_job_is_a_finished_record_with_its_events(store: JobStore) -> None:
    result = {"answer": "42", "sources": []}
    metrics = {"cached": True, "cache_similarity": 0.93, "cost_eur": 0.0}
    cache = {"similarity": 0.93, "question": "What is the answer?", "path": "semantic"}
    job = store.create_answered(owner="alice", query="what's the answer?", top_k=3,
                                request_id="req-9", result=result, metrics=metrics, cache=cache)
    assert store.get(job["id"], owner="alice") == job
    assert (job["status"], job["result"], job["request_id"]) == ("succeeded", result, "req-9")
    assert (job["cached"], job["similarity"], job["cached_question"], job["cache_path"]) == (
        True, 0.93, "What is the answer?", "semantic")
    assert job["metrics"]["cached"] is True and job["metrics"]["cost_eur"] == 0.0
    with pytest.raises(JobNotFound):
        store.get(job["id"], owner="mallory")
    assert [listed["id"] for listed in store.list_for("alice")[0]] == [job["id"]]
    stored = replay(store.redis, job["id"])
    assert [(event["seq"], event["type"]) for event in stored] == [(1, "status"), (2, "done")]
    assert stored[0]["status"] == "succeeded" and stored[1]["job"] == job
    assert store.status_counts()["succeeded"] == 1 and store.queue_depth() == 0
    assert 0 < store.redis.ttl(keys.job(job["id"])) <= store.jobs.retention_seconds
    assert "cached" not in new_job(store)  # only cache-answered records carry the cache fields
