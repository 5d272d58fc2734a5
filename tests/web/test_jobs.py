"""The job routes' validation, batch limit and Prefer: wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.conftest import AUTH, bad_fields, problem_of
from web.jobs import prefer_wait


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"query": "  ab  "}, {"query"}),
        ({"query": "x" * 513}, {"query"}),
        ({"query": "what is rag?", "top_k": 0}, {"top_k"}),
        ({"query": "what is rag?", "top_k": 21}, {"top_k"}),
        ({"query": "what is rag?", "top_k": True}, {"top_k"}),
        ({"query": "what is rag?", "top_k": "3"}, {"top_k"}),
        ({"query": "what is rag?", "colour": "blue"}, {"colour"}),
        ({"top_k": "many", "extra": 1}, {"query", "top_k", "extra"}),
    ],
)
def test_invalid_job_lists_each_bad_field(client: FlaskClient, payload: dict[str, Any],
                                          fields: set[str]) -> None:
    assert bad_fields(client.post("/v1/jobs", json=payload, headers=AUTH)) == fields

def test_batch_is_limited(make_app: Callable[..., Flask]) -> None:
    client = make_app(api={"batch_max": 2}).test_client()
    response = client.post("/v1/batch", json={"queries": ["one?", "two?", "three?"]})
    body = problem_of(response, 422)
    assert body["errors"] == [{"field": "queries", "message": "at most 2 queries per batch"}]
    assert bad_fields(client.post("/v1/batch", json={"queries": []})) == {"queries"}
    assert bad_fields(client.post("/v1/batch", json={"queries": ["ok?", "x"]})) == {"queries.1"}

def test_prefer_wait_is_parsed() -> None:
    assert prefer_wait(None) == 0
    assert prefer_wait("wait=5") == 5
    assert prefer_wait("respond-async, wait=2.5") == 2.5
    assert prefer_wait("wait=600") == 600  # capped where it is applied
    assert prefer_wait("return=minimal") == 0
