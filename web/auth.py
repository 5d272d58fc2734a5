"""API keys, owners and WebSocket tickets; the preamble of every keyed route.

A job belongs to the key that made it, recorded only as a hash of the key (the key is never
stored). The accepted keys and their limits are web/tenants.py's KeyRing; every keyed request
takes a token of its key's rate limit (web/ratelimit.py) before its body is read.

Browsers cannot set headers on a WebSocket, so they trade their key for a short-lived,
single-use ticket (`POST /v1/ws-tickets`) and pass it as `?ticket=`.
"""

from __future__ import annotations

import logging
import math
import secrets

import redis
from flask import Response, after_this_request, g, request
from flask_openapi3.types import ResponseDict
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from shared import keys
from shared.broker import broker_errors
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, RateLimited
from shared.metrics import ERRORS
from shared.settings import AuthSettings
from web.bodies import check_body
from web.resources import resources, settings
from web.schemas import ProblemOut
from web.tenants import ANONYMOUS_TENANT, Tenant, digest_of, owner_of_digest

KEY_HEADER = "X-API-Key"
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]
PROBLEMS: ResponseDict = {status: ProblemOut for status in (401, 404, 422, 429, 503)}
log = logging.getLogger(__name__)
_CHALLENGE = WWWAuthenticate("ApiKey", {"header": KEY_HEADER})


def owner_of(key: str) -> str:
    """The owner id of a key: a hash, so records never hold the key itself."""
    return owner_of_digest(digest_of(key))


def tenant_for_key(settings: AuthSettings, presented: str | None) -> Tenant:
    """The caller's tenant (key name, owner id, limits); Unauthorized for a missing or unknown
    key. With auth off every caller is the anonymous tenant."""
    if not settings.enabled:
        return ANONYMOUS_TENANT
    if not presented:
        raise Unauthorized(f"this route needs an {KEY_HEADER} header", www_authenticate=_CHALLENGE)
    tenant = resources().keyring.find(presented)
    if tenant is None:
        raise Unauthorized(f"unknown {KEY_HEADER}", www_authenticate=_CHALLENGE)
    return tenant


def owner_for_key(settings: AuthSettings, presented: str | None) -> str:
    """The caller's owner id; raises Unauthorized for a missing or unknown key."""
    return tenant_for_key(settings, presented).owner


def require_owner(settings: AuthSettings) -> str:
    """Authenticate the current request by its header; the tenant and owner are kept on `g`."""
    g.tenant = tenant_for_key(settings, request.headers.get(KEY_HEADER))
    g.owner = g.tenant.owner
    return str(g.owner)


def current_tenant() -> Tenant:
    """The authenticated caller's tenant (after `authenticate`)."""
    tenant: Tenant = g.tenant
    return tenant


def limit_rate(tenant: Tenant) -> None:
    """Take one of the key's tokens; RateLimited (429) when its bucket is empty, else the
    response tells the tokens left (RateLimit-* fields). While the
    broker is unreachable the request goes on unlimited (counted and logged): the limiter is
    not what should make a route that needs no broker unavailable."""
    if tenant.rate_per_second <= 0:
        return
    try:
        take = resources().rate_limiter.take(tenant.owner, tenant.rate_per_second, tenant.burst)
    except BrokerUnavailable as error:
        ERRORS.labels(type=ErrorType.RATE_LIMIT_SKIPPED).inc()
        log.warning("rate limit not applied: broker unavailable", extra={"error": str(error)})
        return
    window = max(1, math.ceil(tenant.burst / tenant.rate_per_second))
    if not take.allowed:
        raise RateLimited(
            f"this API key may make {tenant.rate_per_second:g} requests per second (bursts of "
            f"{tenant.burst}); try again in {take.retry_after} s",
            retry_after=take.retry_after, quota=tenant.burst, window_seconds=window,
        )
    refill = math.ceil((tenant.burst - take.remaining) / tenant.rate_per_second)

    @after_this_request
    def tell_the_rate(response: Response) -> Response:  # the IETF draft's fields, as on a 429
        response.headers.update({
            "RateLimit-Limit": str(tenant.burst), "RateLimit-Remaining": str(take.remaining),
            "RateLimit-Reset": str(refill), "RateLimit-Policy": f"{tenant.burst};w={window}"})
        return response


def authenticate() -> None:
    """A keyed blueprint's before_request: the caller's key, its request rate, then the body."""
    require_owner(settings().auth)
    limit_rate(current_tenant())
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
