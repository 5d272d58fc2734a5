"""Request bodies before validation: malformed (400), wrong type (415), too large (413)."""

from __future__ import annotations

import io
import json

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.web.conftest import AUTH, problem_of


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


def post_chunked(client: FlaskClient, body: bytes) -> TestResponse:
    """POST without Content-Length, as gunicorn hands over a chunked body."""
    return client.post("/v1/jobs", input_stream=io.BytesIO(body),
                       environ_overrides={"wsgi.input_terminated": True},
                       headers={**AUTH, "Content-Type": "application/json",
                                "Transfer-Encoding": "chunked"})


def test_oversized_chunked_body_is_413(client: FlaskClient, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    problem_of(post_chunked(client, json.dumps({"query": "q" * limit}).encode()), 413)
    at_limit = json.dumps({"query": "q" * (limit - 13)}).encode()
    assert len(at_limit) == limit
    assert post_chunked(client, at_limit).status_code not in (400, 413)
