"""The front end through Flask's test client: validation, auth, request ids, problems, OpenAPI.

The broker is a closed port here, so a request that passes every check ends in a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.errors import BudgetExceeded, QueueFull
from tests.web.conftest import KEY
from web.auth import key_is_known, owner_of
from web.jobs import prefer_wait
from web.problems import PROBLEM_JSON
from web.request_ids import choose_request_id
from web.stream import parse_after

AUTH = {"X-API-Key": KEY}


def problem_of(response: TestResponse, status: int) -> dict[str, Any]:
    """The response's problem body, after checking the RFC 9457 shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return dict(body)


def bad_fields(response: TestResponse) -> set[str]:
    body = problem_of(response, 422)
    assert body["type"] == "/problems/validation"
    return {error["field"] for error in body["errors"]}


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"query": "  ab  "}, {"query"}),
        ({"query": "x" * 513}, {"query"}),
        ({"query": "what is rag?", "top_k": 0}, {"top_k"}),
        ({"query": "what is rag?", "top_k": 21}, {"top_k"}),
        ({"query": "what is rag?", "colour": "blue"}, {"colour"}),
        ({"top_k": "many", "extra": 1}, {"query", "top_k", "extra"}),
    ],
)
def test_invalid_job_lists_each_bad_field(client: FlaskClient, payload: dict[str, Any],
                                          fields: set[str]) -> None:
    assert bad_fields(client.post("/v1/jobs", json=payload, headers=AUTH)) == fields


def test_malformed_json_is_400(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data='{"query": ', headers=AUTH,
                           content_type="application/json")
    assert "JSON" in problem_of(response, 400)["detail"]


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data="query=hello", headers=AUTH,
                           content_type="application/x-www-form-urlencoded")
    problem_of(response, 415)


def test_oversized_body_is_413(client: FlaskClient, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/v1/jobs", json={"query": "q" * limit}, headers=AUTH)
    problem_of(response, 413)


def test_batch_is_limited(make_app: Callable[..., Flask]) -> None:
    client = make_app(api={"batch_max": 2}).test_client()
    response = client.post("/v1/batch", json={"queries": ["one?", "two?", "three?"]})
    body = problem_of(response, 422)
    assert body["errors"] == [{"field": "queries", "message": "at most 2 queries per batch"}]
    assert bad_fields(client.post("/v1/batch", json={"queries": []})) == {"queries"}
    assert bad_fields(client.post("/v1/batch", json={"queries": ["ok?", "x"]})) == {"queries.1"}


def test_unknown_route_and_wrong_method(client: FlaskClient) -> None:
    assert problem_of(client.get("/nowhere"), 404)["type"] == "about:blank"
    assert "WebSocket only" in problem_of(client.get("/v1/jobs/abc/stream"), 400)["detail"]
    response = client.get("/v1/batch", headers=AUTH)
    problem_of(response, 405)
    assert "POST" in response.headers["Allow"]


def test_broker_down_is_503_with_retry_after(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={"query": "what is rag?"}, headers=AUTH)
    body = problem_of(response, 503)
    assert body["type"] == "/problems/broker-unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_unexpected_error_is_500_without_internals(app: Flask) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", "boom", boom)
    app.config["TESTING"] = False
    response = app.test_client().get("/boom")
    assert "secret" not in problem_of(response, 500)["detail"]


@pytest.mark.parametrize(
    ("error", "slug"),
    [(BudgetExceeded("window spend reached 10 EUR", retry_after=120), "budget-exceeded"),
     (QueueFull("200 jobs queued", retry_after=7), "queue-full")],
)
def test_admission_errors_are_429_with_retry_after(app: Flask, error: Exception, slug: str) -> None:
    def refuse() -> None:
        raise error

    app.add_url_rule("/refuse", "refuse", refuse)
    response = app.test_client().get("/refuse")
    body = problem_of(response, 429)
    assert body["type"] == f"/problems/{slug}"
    assert response.headers["Retry-After"] == str(error.retry_after)  # type: ignore[attr-defined]


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


def test_health_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_is_503_when_broker_is_down(client: FlaskClient) -> None:
    response = client.get("/health/ready")
    body = problem_of(response, 503)
    assert body["checks"] == {"broker": False, "workers_ready": 0}
    assert "Retry-After" in response.headers


def test_key_comparison_and_owner_ids() -> None:
    assert key_is_known("b", ["a", "b", "c"])
    assert not key_is_known("d", ["a", "b", "c"])
    assert not key_is_known("", ["a"])
    assert owner_of(KEY) == owner_of(KEY) != owner_of("other")
    assert KEY not in owner_of(KEY)


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("abc-123_X.y", True), ("a" * 128, True), ("a" * 129, False), ("has space", False),
     ("semi;colon", False), ("", False), (None, False)],
)
def test_request_id_kept_only_when_sane(offered: str | None, kept: bool) -> None:
    chosen = choose_request_id(offered)
    assert (chosen == offered) is kept
    if not kept:
        assert len(chosen) == 32 and int(chosen, 16) >= 0


def test_request_id_echoed_on_success_and_error(client: FlaskClient) -> None:
    kept = client.get("/health", headers={"X-Request-ID": "req-1"})
    assert kept.headers["X-Request-ID"] == "req-1"
    response = client.get("/nowhere", headers={"X-Request-ID": "bad id!"})
    assert response.headers["X-Request-ID"] != "bad id!"
    assert problem_of(response, 404)["request_id"] == response.headers["X-Request-ID"]


def test_prefer_wait_is_parsed_and_capped(app: Flask) -> None:
    with app.app_context():
        cap = app.extensions["ragq"].settings.api.prefer_wait_max_seconds
        assert prefer_wait(None) == 0
        assert prefer_wait("wait=5") == 5
        assert prefer_wait("respond-async, wait=2.5") == 2.5
        assert prefer_wait(f"wait={cap * 10:g}") == cap
        assert prefer_wait("return=minimal") == 0


def test_after_must_be_a_seq() -> None:
    assert parse_after(None) == 0
    assert parse_after("17") == 17
    with pytest.raises(Exception, match="non-negative integer"):
        parse_after("-1")


def test_openapi_documents_the_validated_models(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/batch",
                 "/query", "/v1/ws-tickets", "/health/ready", "/health/gpu", "/health/stats"):
        assert path in doc["paths"], path
    job_request = doc["components"]["schemas"]["JobRequest"]
    assert job_request["properties"]["query"]["minLength"] == 3
    assert job_request["properties"]["query"]["maxLength"] == 512
    assert job_request["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    assert doc["paths"]["/v1/jobs"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in doc["paths"]["/health/ready"]["get"]
    assert client.get("/docs/swagger").status_code == 200


def test_requests_are_counted_by_route_template(client: FlaskClient) -> None:
    client.get("/v1/jobs/some-id", headers=AUTH)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/v1/jobs/<job_id>"' in text
    assert "some-id" not in text
