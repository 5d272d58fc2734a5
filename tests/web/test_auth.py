"""Authentication: a known key on every keyed route, checked before the body."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.web.conftest import KEY, problem_of
from web.auth import owner_of


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/v1/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/abc"),
     ("post", "/v1/jobs/abc/cancel"), ("post", "/v1/batch"), ("post", "/query"),
     ("post", "/v1/ws-tickets")],
)
def test_routes_need_a_known_key(client: FlaskClient, method: str, path: str) -> None:
    call = getattr(client, method)
    assert problem_of(call(path), 401)["detail"].startswith("this route needs")
    response = call(path, headers={"X-API-Key": "not-a-key"})
    assert problem_of(response, 401)["detail"] == "unknown X-API-Key"
    assert "apikey" in response.headers["WWW-Authenticate"].lower()

def test_auth_comes_before_body_checks(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data="{", content_type="application/json")
    problem_of(response, 401)

def test_owner_ids() -> None:
    assert owner_of(KEY) == owner_of(KEY) != owner_of("other")
    assert KEY not in owner_of(KEY)
