"""Fixtures of the web tests: apps built on temporary settings, and their test clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.settings import load_settings
from tests.support.servers import free_port
from web import resources
from web.app import create_app
from web.problems import PROBLEM_JSON

KEY = "test-key-one"
OTHER_KEY = "test-key-two"
AUTH = {"X-API-Key": KEY}


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Build an app; `overrides` maps a group to field values. The broker is a closed port.
    Every app's event hub is stopped after the test, so no thread outlives it."""
    apps: list[Flask] = []

    def make(**overrides: dict[str, Any]) -> Flask:
        groups: dict[str, dict[str, Any]] = {
            "broker": {"url": f"redis://127.0.0.1:{free_port()}/0", "connect_timeout_seconds": 0.5},
            "log": {"json_format": False, "level": "WARNING"},
        }
        for group, values in overrides.items():
            groups[group] = {**groups.get(group, {}), **values}
        app = create_app(load_settings(**groups))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions[resources.EXTENSION].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(auth={"enabled": True, "api_keys": [KEY, OTHER_KEY]})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


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
