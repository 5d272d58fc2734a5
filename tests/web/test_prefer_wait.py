"""`Prefer: wait=N` through the Flask app against a real broker-role redis-server (no worker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from flask import Flask

from shared import keys
from shared.jobs import JobStore, Status
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def take_the_job(broker: RedisServer, store: JobStore, finish: bool = False) -> None:
    """What a worker does while the request waits: start the job (and finish it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        queued = broker.client().zrange(keys.QUEUED, 0, -1)
        if queued:
            store.claim(queued[0], "w1")
            if finish:
                store.finish(queued[0], Status.SUCCEEDED, attempt=1,
                             result={"answer": "x", "sources": []})
            return
        time.sleep(0.01)


def test_a_wait_that_runs_out_answers_the_job_as_it_is_now(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False})
    store = JobStore(broker_redis.client(), load_settings(broker={"url": broker_redis.url}))

    taker = threading.Thread(target=take_the_job, args=(broker_redis, store))
    taker.start()
    response = app.test_client().post("/v1/jobs", json={"query": "what is ragq?"},
                                      headers={"Prefer": "wait=1"})
    taker.join()
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=1"  # held the whole second asked
    body = response.get_json()
    assert (body["status"], body["queue_position"], body["attempt"]) == ("running", None, 1)


def test_a_capped_wait_is_not_applied_as_asked(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False},
                   api={"prefer_wait_max_seconds": 0.5})
    started = time.monotonic()
    response = app.test_client().post("/v1/jobs", json={"query": "what is capped?"},
                                      headers={"Prefer": "wait=30"})
    assert response.status_code == 202 and time.monotonic() - started < 10
    assert "Preference-Applied" not in response.headers


def test_an_answer_before_the_wait_ran_out_applies_no_wait(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False})
    store = JobStore(broker_redis.client(), load_settings(broker={"url": broker_redis.url}))
    finisher = threading.Thread(target=take_the_job, args=(broker_redis, store, True))
    finisher.start()
    response = app.test_client().post("/v1/jobs", json={"query": "what is quick?"},
                                      headers={"Prefer": "wait=30"})
    finisher.join()
    assert response.status_code == 200 and response.get_json()["status"] == "succeeded"
    assert "Preference-Applied" not in response.headers  # it waited 0.x s, not the 30 asked
