"""`Prefer: wait=N` through the Flask app against a real broker-role redis-server (no worker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from flask import Flask

from shared import keys
from shared.jobs import JobStore
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def test_a_wait_that_runs_out_answers_the_job_as_it_is_now(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False})
    store = JobStore(broker_redis.client(), load_settings(broker={"url": broker_redis.url}))

    def take_the_job() -> None:  # a worker starts it while the request waits
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            queued = broker_redis.client().zrange(keys.QUEUED, 0, -1)
            if queued:
                store.claim(queued[0], "w1")
                return
            time.sleep(0.01)

    taker = threading.Thread(target=take_the_job)
    taker.start()
    response = app.test_client().post("/v1/jobs", json={"query": "what is ragq?"},
                                      headers={"Prefer": "wait=1"})
    taker.join()
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=1"
    body = response.get_json()
    assert (body["status"], body["queue_position"], body["attempt"]) == ("running", None, 1)
