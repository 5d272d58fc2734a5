"""Request ids: kept when sane, echoed on every response."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.web.conftest import problem_of
from web.request_ids import choose_request_id


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
