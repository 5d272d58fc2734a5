"""Health routes: no key needed; ready only with a reachable broker."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.web.conftest import problem_of


def test_health_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}

def test_ready_is_503_when_broker_is_down(client: FlaskClient) -> None:
    response = client.get("/health/ready")
    body = problem_of(response, 503)
    assert body["checks"] == {"broker": False, "workers_ready": 0}
    assert "Retry-After" in response.headers
