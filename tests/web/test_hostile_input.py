"""Odd input gets a clear 4xx problem, never a 500: huge offsets, deep JSON, odd `after`s."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.servers import RedisServer
from tests.web.conftest import AUTH, KEY, problem_of

pytestmark = pytest.mark.integration

DEEP = 1000
UPGRADE = {**AUTH, "Upgrade": "websocket", "Connection": "Upgrade",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


@pytest.fixture
def live(make_app: Callable[..., Flask], broker_redis: RedisServer,
         cache_redis: RedisServer) -> FlaskClient:
    """A client of an app on real Redis servers (no worker: jobs stay queued)."""
    return make_app(broker={"url": broker_redis.url}, cache={"redis_url": cache_redis.url},
                    auth={"enabled": True, "api_keys": [KEY]}).test_client()


def test_an_offset_past_any_page_is_422(live: FlaskClient) -> None:
    problem_of(live.get("/v1/jobs?offset=9223372036854775807", headers=AUTH), 422)
    assert live.get("/v1/jobs?offset=1000000", headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batch"])
def test_a_deeply_nested_body_is_400(live: FlaskClient, path: str) -> None:
    body = '{"query": ' + "[" * DEEP + "]" * DEEP + "}"
    response = live.post(path, data=body, headers=AUTH, content_type="application/json")
    assert "nested" in problem_of(response, 400)["detail"]


@pytest.mark.parametrize("after", ["²", "٣", "9" * 5000, "99999999999999999999999", "-1", ""])
def test_an_after_that_is_no_seq_is_400(live: FlaskClient, after: str) -> None:
    job = live.post("/v1/jobs", json={"query": "what is a sequence?"}, headers=AUTH).get_json()
    response = live.get(f"/v1/jobs/{job['id']}/stream", query_string={"after": after},
                        headers=UPGRADE)
    assert "after must be" in problem_of(response, 400)["detail"]
