"""POST /v1/batch is all or nothing: a refused query cancels the jobs the batch already queued."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from shared import keys
from shared.jobs import JobStore
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


def test_a_batch_refused_midway_cancels_the_jobs_it_already_queued(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False},
                   api={"max_queue_depth": 3})
    client = app.test_client()
    earlier = client.post("/v1/jobs", json={"query": "a job of another request"})
    assert earlier.status_code == 202
    queries = ["what is ragq?", "a job of another request", "what is a lease?", "why redis?"]
    response = client.post("/v1/batch", json={"queries": queries})
    assert response.status_code == 429, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["type"] == "/problems/queue-full"
    assert "2 job(s) already queued were cancelled" in body["detail"]
    broker = broker_redis.client()
    store = JobStore(broker, load_settings(broker={"url": broker_redis.url}))
    statuses = {}
    for key in broker.scan_iter(keys.job("*")):
        if broker.type(key) == "hash":
            record = broker.hgetall(key)
            statuses[record["query"]] = store.get(record["id"])["status"]
    # the batch's own job is cancelled; the identical job of the earlier request it attached to
    # is not (it is that request's)
    assert statuses == {"a job of another request": "queued", "what is ragq?": "cancelled",
                        "what is a lease?": "cancelled"}
    assert broker.zrange(keys.QUEUED, 0, -1) == [earlier.get_json()["id"]]
