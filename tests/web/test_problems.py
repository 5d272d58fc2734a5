"""Errors as problem details: HTTP conditions, broker down, admission refusals, the unexpected.

The broker is a closed port here, so a request that passes every check ends in a 503."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.error_types import ErrorType
from shared.errors import BudgetExceeded, QueueFull
from tests.support.gunicorn import REPO
from tests.web.conftest import AUTH, problem_of
from web.problems import PROBLEM_TYPES


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


def test_every_problem_slug_is_a_known_error_type() -> None:
    """Each slug the web answers with (in its code, or documented in docs/api.md) has its
    rag_errors_total series created at start-up (web/observability.py)."""
    fixed = {*PROBLEM_TYPES, *ErrorType}
    in_code = {slug for path in (REPO / "web").glob("*.py")
               for slug in re.findall(r'slug="([^"]+)"', path.read_text())}
    in_docs = set(re.findall(r"/problems/([a-z-]+)", (REPO / "docs" / "api.md").read_text()))
    assert in_code and in_docs
    assert (in_code | in_docs) - fixed == set()
