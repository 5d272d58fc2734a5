"""The cost breaker against a real broker-role redis-server, from several processes, and the
settlement of a job's reservation by its final status."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

import pytest
import redis

from shared import keys
from shared.breaker import CLOSED, OPEN, RESERVED_FIELD, WINDOW_FIELD, Breaker
from shared.errors import BudgetExceeded, InvalidTransition
from shared.jobs import JobStore, Status
from shared.settings import BreakerSettings, load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def _breaker(server: RedisServer, **overrides: object) -> Breaker:
    return Breaker(server.client(), BreakerSettings(**overrides))


def _wait_for_window_start(breaker: Breaker) -> None:
    """Start right after a window boundary so a short window does not end mid-test."""
    window = breaker.settings.window_seconds
    time.sleep(window - time.time() % window + 0.05)


def test_opens_at_the_limit_with_retry_after_to_the_window_end(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=1.0, window_seconds=2)
    _wait_for_window_start(breaker)
    assert breaker.check() == 0.0
    assert breaker.charge(0.6) == pytest.approx(0.6)
    assert breaker.state()["state"] == CLOSED
    breaker.charge(0.4)
    with pytest.raises(BudgetExceeded, match="cost limit of 1.00 EUR per 2 s reached") as caught:
        breaker.check()
    end = breaker.window_start() + 2
    assert caught.value.retry_after == max(1, int(end - time.time() + 0.999))
    assert 1 <= caught.value.retry_after <= 2
    state = breaker.state()
    assert (state["state"], state["spend_eur"], state["limit_eur"]) == (OPEN, 1.0, 1.0)


def test_window_resets_on_its_own(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=0.5, window_seconds=2)
    _wait_for_window_start(breaker)
    breaker.charge(0.5)
    with pytest.raises(BudgetExceeded):
        breaker.check()
    time.sleep(breaker.retry_after() + 0.1)
    assert breaker.check() == 0.0
    assert breaker.state()["state"] == CLOSED
    assert broker_redis.client().ttl(next(iter(broker_redis.client().keys("*")))) <= 2 + 5


def test_reservation_is_refused_once_open(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=0.3, window_seconds=60)
    assert breaker.check(reserve_eur=0.2) == pytest.approx(0.2)
    assert breaker.check(reserve_eur=0.2) == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded):
        breaker.check(reserve_eur=0.2)
    assert breaker.state()["spend_eur"] == pytest.approx(0.4)


def test_disabled_breaker_never_refuses(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=0.1, enabled=False)
    breaker.charge(5.0)
    assert breaker.check() == 0.0
    assert breaker.state()["state"] == CLOSED


def test_negative_charge_is_refused(broker_redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="a charge must be >= 0 EUR"):
        _breaker(broker_redis).charge(-1.0)


def _spend(url: str, charges: int, amount: float) -> None:
    breaker = Breaker(
        redis.Redis.from_url(url, decode_responses=True), BreakerSettings(limit_eur=1e9)
    )
    for _ in range(charges):
        breaker.charge(amount)


def test_concurrent_spend_from_several_processes_is_exact(broker_redis: RedisServer) -> None:
    processes, charges, amount = 4, 100, 0.0125
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_spend, args=(broker_redis.url, charges, amount))
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    spend = _breaker(broker_redis, limit_eur=1e9).state()["spend_eur"]
    assert spend == pytest.approx(processes * charges * amount, abs=1e-6)


def test_a_reservation_is_settled_by_the_charge_in_its_window(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=1.0, window_seconds=3600)
    window = breaker.window_start()
    assert breaker.check(reserve_eur=0.5) == pytest.approx(0.5)
    assert breaker.charge(0.2, reserved_eur=0.5, reserved_window=window) == pytest.approx(0.2)
    assert breaker.charge(0.2, reserved_eur=0.5, reserved_window=window - 3600) == pytest.approx(
        0.4
    )


# --- reservations settled by a job's final status (shared/jobs.py's transition) -----------------
RESERVED = 0.5


def _reserved_job(server: RedisServer, **jobs: object) -> tuple[JobStore, Breaker, str]:
    """A queued job whose estimate the breaker holds, as the web leaves it."""
    settings = load_settings(broker={"url": server.url}, breaker={"window_seconds": 3600},
                             jobs={"lease_seconds": 0.5, **jobs})
    store, breaker = JobStore(server.client(), settings), Breaker(server.client(), settings.breaker)
    window = breaker.window_start()
    breaker.check(reserve_eur=RESERVED, owner="alice")
    job = store.create(owner="alice", query="what is ragq?", top_k=3, request_id="req-1")
    store.set_internal(job["id"], {RESERVED_FIELD: repr(RESERVED), WINDOW_FIELD: str(window)})
    assert breaker.state()["spend_eur"] == breaker.owner_spend("alice") == pytest.approx(RESERVED)
    return store, breaker, job["id"]


def _claimed(store: JobStore, job_id: str) -> int:
    claim = store.claim(job_id, "w1")
    assert claim.run and claim.record is not None
    return int(claim.record["attempt"])


def _cancel_queued(store: JobStore, job_id: str) -> None:
    assert store.cancel(job_id, "alice")["status"] == "cancelled"


def _fail_running(store: JobStore, job_id: str) -> None:
    store.finish(job_id, Status.FAILED, _claimed(store, job_id),
                 error={"type": "RuntimeError", "message": "boom"})


def _fail_after_worker_deaths(store: JobStore, job_id: str) -> None:
    assert store.requeue_lost(job_id, _claimed(store, job_id))["status"] == "failed"


@pytest.mark.parametrize("end", [_cancel_queued, _fail_running, _fail_after_worker_deaths])
def test_a_job_that_ends_without_an_answer_releases_its_reservation(
    broker_redis: RedisServer, end: Callable[[JobStore, str], None]
) -> None:
    store, breaker, job_id = _reserved_job(broker_redis, max_attempts=1)
    end(store, job_id)
    assert breaker.state()["spend_eur"] == pytest.approx(0.0, abs=1e-9)
    assert breaker.owner_spend("alice") == pytest.approx(0.0, abs=1e-9)  # the key's share too
    assert broker_redis.client().hget(keys.job(job_id), RESERVED_FIELD) is None


def test_an_expired_job_releases_its_reservation(broker_redis: RedisServer) -> None:
    store, breaker, job_id = _reserved_job(broker_redis, queue_deadline_seconds=0.05)
    time.sleep(0.1)
    assert store.get(job_id)["status"] == "expired"
    assert breaker.state()["spend_eur"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.SUCCEEDED])
def test_an_answered_job_is_charged_its_actual_cost_once(
    broker_redis: RedisServer, status: Status
) -> None:
    store, breaker, job_id = _reserved_job(broker_redis)
    attempt = _claimed(store, job_id)
    store.finish(job_id, status, attempt, charge_eur=0.0123,
                 result={"answer": "partial", "sources": []})
    assert breaker.state()["spend_eur"] == pytest.approx(0.0123)
    assert breaker.owner_spend("alice") == pytest.approx(0.0123)
    with pytest.raises(InvalidTransition):  # a final job cannot be settled again
        store.finish(job_id, Status.FAILED, attempt, charge_eur=1.0)
    assert breaker.state()["spend_eur"] == pytest.approx(0.0123)


def test_a_reservation_of_an_earlier_window_is_not_taken_back(broker_redis: RedisServer) -> None:
    store, breaker, job_id = _reserved_job(broker_redis)
    earlier = str(breaker.window_start() - 3600)
    broker_redis.client().hset(keys.job(job_id), WINDOW_FIELD, earlier)
    store.finish(job_id, Status.SUCCEEDED, _claimed(store, job_id), charge_eur=0.01)
    assert breaker.state()["spend_eur"] == pytest.approx(RESERVED + 0.01)


def test_a_keys_budget_refuses_it_alone(broker_redis: RedisServer) -> None:
    breaker = _breaker(broker_redis, limit_eur=10.0)
    assert breaker.check(reserve_eur=0.3, owner="alice", owner_limit_eur=0.25)
    with pytest.raises(BudgetExceeded, match="this API key's cost limit of 0.25 EUR") as caught:
        breaker.check(reserve_eur=0.3, owner="alice", owner_limit_eur=0.25)
    assert caught.value.limit == "key-budget" and caught.value.retry_after >= 1
    assert breaker.check(reserve_eur=0.3, owner="bob", owner_limit_eur=0.25)
    assert breaker.state()["spend_eur"] == pytest.approx(0.6)
