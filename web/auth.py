"""API keys, owners and WebSocket tickets; the preamble of every keyed route.

A job belongs to the key that made it, recorded only as a hash of the key (the key is never
stored). Browsers cannot set headers on a WebSocket, so they trade their key for a short-lived,
single-use ticket (`POST /v1/ws-tickets`) and pass it as `?ticket=`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import redis
from flask import g, request
from flask_openapi3.types import ResponseDict
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from shared import keys
from shared.broker import broker_errors
from shared.settings import AuthSettings
from web.bodies import check_body
from web.resources import settings
from web.schemas import ProblemOut

KEY_HEADER = "X-API-Key"
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]
PROBLEMS: ResponseDict = {status: ProblemOut for status in (401, 404, 422, 429, 503)}
ANONYMOUS = "anonymous"
_CHALLENGE = WWWAuthenticate("ApiKey", {"header": KEY_HEADER})


def owner_of(key: str) -> str:
    """The owner id of a key: a hash, so records never hold the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def key_is_known(presented: str, accepted: list[str]) -> bool:
    """Constant-time comparison against every accepted key (no early exit on a match)."""
    matched = False
    for key in accepted:
        matched |= hmac.compare_digest(key.encode(), presented.encode())
    return matched


def owner_for_key(settings: AuthSettings, presented: str | None) -> str:
    """The caller's owner id; raises Unauthorized for a missing or unknown key."""
    if not settings.enabled:
        return ANONYMOUS
    if not presented:
        raise Unauthorized(f"this route needs an {KEY_HEADER} header", www_authenticate=_CHALLENGE)
    if not key_is_known(presented, settings.api_keys):
        raise Unauthorized(f"unknown {KEY_HEADER}", www_authenticate=_CHALLENGE)
    return owner_of(presented)


def require_owner(settings: AuthSettings) -> str:
    """Authenticate the current request by its header; the owner is kept on `g`."""
    g.owner = owner_for_key(settings, request.headers.get(KEY_HEADER))
    return str(g.owner)


def authenticate() -> None:
    """A keyed blueprint's before_request: the caller's key first, then the request body."""
    require_owner(settings().auth)
    check_body()


def issue_ticket(client: redis.Redis, owner: str, ttl_seconds: int) -> str:
    """A fresh random ticket that stands for `owner` for `ttl_seconds`, once."""
    ticket = secrets.token_urlsafe(32)
    with broker_errors("cannot issue a ticket"):
        client.set(keys.ws_ticket(ticket), owner, ex=ttl_seconds)
    return ticket


def redeem_ticket(client: redis.Redis, ticket: str) -> str:
    """The ticket's owner; the ticket is gone afterwards. Unauthorized when unknown or used."""
    with broker_errors("cannot redeem a ticket"):
        owner = client.getdel(keys.ws_ticket(ticket))
    if owner is None:
        raise Unauthorized("unknown, expired or already used ticket")
    return owner.decode() if isinstance(owner, bytes) else str(owner)


def check_origin(settings: AuthSettings, origin: str | None, own_origin: str) -> None:
    """Refuse a cross-site Origin that is not allowed; the API's own origin is always allowed."""
    if not origin or not settings.allowed_origins or origin == own_origin:
        return
    if origin not in settings.allowed_origins:
        raise Forbidden(f"origin {origin} may not open WebSockets")


def websocket_owner(settings: AuthSettings, client: redis.Redis) -> str:
    """Authenticate a WebSocket handshake: Origin first, then a ticket or the key header."""
    check_origin(settings, request.headers.get("Origin"), request.host_url.rstrip("/"))
    ticket = request.args.get("ticket")
    if ticket:
        return redeem_ticket(client, ticket)
    return owner_for_key(settings, request.headers.get(KEY_HEADER))
