"""Per-client bounds of a web process: a client address over API_CONNECTIONS_PER_CLIENT open
connections (counted by web/serving.py's worker in web/peers.py) gets 429 on each request it
sends on them, WebSocket handshakes included, until it closes some."""

from __future__ import annotations

from flask import Flask, Response, request

from web import peers
from web.problems import problem, retry_after
from web.resources import settings

RETRY_AFTER_SECONDS = 1


def refuse_crowded_client() -> Response | None:
    """429 when the request's client holds more connections than it may (None: go on)."""
    limit = settings().api.connections_per_client
    held = peers.open_from(request.remote_addr or "")
    if not limit or held <= limit:
        return None
    return problem(429, f"{held} connections open from your address; at most {limit} per web "
                   "process: close some", slug="too-many-connections",
                   title="Too many connections", headers=retry_after(RETRY_AFTER_SECONDS))


def init_app(app: Flask) -> None:
    app.before_request(refuse_crowded_client)
