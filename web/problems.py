"""The one translation of errors into HTTP problem details (RFC 9457), with request ids.

`type` is `about:blank` for plain HTTP conditions (the title is then the status phrase) and a
relative URI under /problems/ for ragq's own (documented in docs/api.md).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, json
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from shared.broker import BROKER_ERRORS, PoolExhausted
from shared.errors import BrokerBusy, BrokerUnavailable, JobNotFound, LimitExceeded
from shared.metrics import ERRORS
from web.request_ids import current_request_id

PROBLEM_JSON = "application/problem+json"
_BODY_HEADERS = ("content-type", "content-length")  # ours replace werkzeug's HTML ones
BROKER_RETRY_AFTER_SECONDS = 5
BUSY_RETRY_AFTER_SECONDS = 1

log = logging.getLogger(__name__)


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """A problem-details response; `slug` names a ragq problem type, None means about:blank."""
    body = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": current_request_id(),
        **extensions,
    }
    ERRORS.labels(type=slug or str(status)).inc()
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


def retry_after(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(seconds)))}


def invalid_fields(errors: list[dict[str, str]]) -> Response:
    """422 listing each bad field as {field, message}."""
    names = ", ".join(error["field"] for error in errors)
    return problem(422, f"invalid fields: {names}", slug="validation",
                   title="Request failed validation", errors=errors)


def from_validation_error(error: ValidationError) -> Response:
    """flask-openapi3's validation callback: pydantic's errors as a 422 problem."""
    errors = [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "message": item["msg"]}
        for item in error.errors()
    ]
    return invalid_fields(errors)


def _http(error: HTTPException) -> Response:
    headers = {k: v for k, v in error.get_headers() if k.lower() not in _BODY_HEADERS}
    return problem(error.code or 500, error.description or "", headers=headers)


def _websocket_only(error: WebsocketMismatch) -> Response:
    return problem(400, "this URL speaks WebSocket only: connect with Upgrade: websocket")


def _not_found(error: JobNotFound) -> Response:
    return problem(404, "no such job", slug="job-not-found", title="Job not found")


def _broker_down(error: Exception) -> Response:
    log.warning("broker unavailable: %s", error)
    return problem(503, "the job broker is unreachable; retry shortly", slug="broker-unavailable",
                   title="Service unavailable", headers=retry_after(BROKER_RETRY_AFTER_SECONDS))


def _broker_busy(error: Exception) -> Response:
    log.warning("broker connection pool exhausted: %s", error)
    return problem(503, "the server is busy; retry shortly", slug="broker-busy",
                   title="Service busy", headers=retry_after(BUSY_RETRY_AFTER_SECONDS))


def _limited(error: LimitExceeded) -> Response:
    """429 naming the limit (`limit`), with Retry-After and the IETF draft's RateLimit-*
    fields (draft-ietf-httpapi-ratelimit-headers): the quota, none left, seconds to reset."""
    slug, title = LIMIT_PROBLEMS.get(error.limit, ("too-many-requests", "Too many requests"))
    headers = retry_after(error.retry_after)
    if error.quota is not None:
        headers.update({"RateLimit-Limit": f"{error.quota:g}", "RateLimit-Remaining": "0",
                        "RateLimit-Reset": headers["Retry-After"]})
        if error.window_seconds:
            headers["RateLimit-Policy"] = f"{error.quota:g};w={error.window_seconds}"
    return problem(429, str(error), slug=slug, title=title, headers=headers, limit=error.limit)


# The 429 problems by the limit that refused (LimitExceeded.limit): slug, title.
LIMIT_PROBLEMS = {
    "queue": ("queue-full", "Too many queued jobs"),
    "key-queued": ("key-queue-full", "Too many queued jobs of this API key"),
    "budget": ("budget-exceeded", "Spending limit reached"),
    "key-budget": ("key-budget-exceeded", "Spending limit of this API key reached"),
    "key-rate": ("rate-limited", "Too many requests from this API key"),
}
# The rag_errors_total types of this web's problems: every slug it answers with (and
# ErrorType.TOO_MANY_STREAMS, shared/error_types.py), and 500 (about:blank problems count by
# status; other statuses are born at their first error); zeroed at start-up (shared/series.py).
PROBLEM_TYPES = ("validation", "job-not-found", "broker-unavailable", "broker-busy", "not-ready",
                 "no-worker", "query-timeout", "job-failed", "job-cancelled", "job-expired",
                 "too-many-connections", "too-many-requests", "collection-not-found",
                 "collection-read-only", "unsupported-document", "upload-too-large",
                 *(slug for slug, _ in LIMIT_PROBLEMS.values()), "500")


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem(500, "an unexpected error occurred; quote the request id when reporting it")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(WebsocketMismatch, _websocket_only)
    app.register_error_handler(JobNotFound, _not_found)
    app.register_error_handler(BrokerUnavailable, _broker_down)
    for broker_error in BROKER_ERRORS:  # a broker error that no call site translated
        app.register_error_handler(broker_error, _broker_down)
    app.register_error_handler(BrokerBusy, _broker_busy)  # the more specific class wins
    app.register_error_handler(PoolExhausted, _broker_busy)
    app.register_error_handler(LimitExceeded, _limited)
    app.register_error_handler(Exception, _unexpected)
