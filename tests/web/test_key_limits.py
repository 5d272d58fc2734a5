"""Per-key limits against a real broker-role redis-server: one key's refusals are 429 problems
naming the limit, with Retry-After and RateLimit-* fields, and never touch another key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.servers import RedisServer
from tests.web.conftest import problem_of

pytestmark = pytest.mark.integration

BUSY, QUIET = {"X-API-Key": "k-busy"}, {"X-API-Key": "k-quiet"}


@pytest.fixture
def limited(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> Callable[..., FlaskClient]:
    def make(**auth: Any) -> FlaskClient:
        app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False},
                       auth={"enabled": True, "api_keys": ["busy:k-busy", "quiet:k-quiet"],
                             "key_rate_per_second": 0.0, **auth})
        return app.test_client()

    return make


def post(client: FlaskClient, headers: dict[str, str], query: str) -> Any:
    return client.post("/v1/jobs", json={"query": query}, headers=headers)


def test_requests_per_second_come_from_a_token_bucket_per_key(
    limited: Callable[..., FlaskClient],
) -> None:
    client = limited(key_rate_per_second=0.01, key_burst=2)
    allowed = [client.get("/v1/jobs", headers=BUSY) for _ in range(2)]
    assert [response.status_code for response in allowed] == [200, 200]
    assert [response.headers["RateLimit-Remaining"] for response in allowed] == ["1", "0"]
    assert allowed[0].headers["RateLimit-Limit"] == "2"
    refused = client.get("/v1/jobs", headers=BUSY)
    body = problem_of(refused, 429)
    assert (body["type"], body["limit"]) == ("/problems/rate-limited", "key-rate")
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == "2"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"]
    assert refused.headers["RateLimit-Policy"] == "2;w=200"
    assert client.get("/v1/jobs", headers=QUIET).status_code == 200


def test_a_keys_queued_jobs_are_bounded_and_another_key_still_queues(
    limited: Callable[..., FlaskClient],
) -> None:
    client = limited(key_max_queued=2)
    assert [post(client, BUSY, f"busy {n}").status_code for n in range(2)] == [202, 202]
    refused = post(client, BUSY, "busy 3")
    body = problem_of(refused, 429)
    assert (body["type"], body["limit"]) == ("/problems/key-queue-full", "key-queued")
    assert "2 jobs of this API key are queued (limit 2)" in body["detail"]
    assert refused.headers["RateLimit-Limit"] == "2" and refused.headers["Retry-After"]
    assert post(client, QUIET, "quiet 1").status_code == 202


def test_a_keys_budget_refuses_its_misses_on_top_of_the_global_breaker(
    limited: Callable[..., FlaskClient],
) -> None:
    client = limited(key_budget_eur=0.0001)  # below one job's estimate: the first reserves it all
    assert post(client, BUSY, "busy 1").status_code == 202
    refused = post(client, BUSY, "busy 2")
    body = problem_of(refused, 429)
    assert (body["type"], body["limit"]) == ("/problems/key-budget-exceeded", "key-budget")
    assert "this API key's cost limit of 0.00 EUR" in body["detail"]
    assert refused.headers["RateLimit-Policy"] == "0.0001;w=3600"
    assert post(client, QUIET, "quiet 1").status_code == 202


def test_a_batch_refused_by_the_keys_queue_limit_names_it(
    limited: Callable[..., FlaskClient],
) -> None:
    client = limited(key_max_queued=2)
    queries = ["first question", "second question", "third question"]
    refused = client.post("/v1/batch", json={"queries": queries}, headers=BUSY)
    body = problem_of(refused, 429)
    assert (body["type"], body["limit"]) == ("/problems/key-queue-full", "key-queued")
    assert "its 2 job(s) already queued were cancelled" in body["detail"]
    assert refused.headers["RateLimit-Limit"] == "2"
