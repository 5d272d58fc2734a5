"""Request bodies before validation: size (413), content type (415), arrival within
API_BODY_TIMEOUT_SECONDS (408), well-formed JSON (400).

flask-openapi3 reads bodies leniently (malformed JSON becomes a 422), so the routes that take
a JSON body are checked here first; pydantic then validates the fields.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from flask import Flask, current_app, request
from flask_openapi3.types import ResponseDict
from gevent import Timeout, monkey
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

from web.schemas import ProblemOut

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
BODY_TIMEOUT = "RAGQ_BODY_TIMEOUT_SECONDS"
BODY_PROBLEMS: ResponseDict = {status: ProblemOut for status in (400, 413, 415)}


def _takes_json_body() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return view is not None and "body" in getattr(view, "__annotations__", {})


def check_body() -> None:
    """Refuse oversized, non-JSON or malformed bodies on the routes that take one."""
    if request.method not in BODY_METHODS or not _takes_json_body():
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(f"bodies are limited to {limit} bytes")
    if not request.is_json:
        raise UnsupportedMediaType("send the body as application/json")
    with _deadline(current_app.config[BODY_TIMEOUT]):
        if _chunked_past(limit):
            raise RequestEntityTooLarge(f"bodies are limited to {limit} bytes")
        request.get_data(cache=True)
    try:
        parsed = request.get_json(silent=True)
    except RecursionError as error:
        raise BadRequest("the body's JSON is nested too deeply") from error
    if parsed is None:
        raise BadRequest("the body is not well-formed JSON")


def _deadline(seconds: float) -> AbstractContextManager[object]:
    """The whole body must arrive within `seconds` (a client sending a byte now and then would
    hold its connection for ever): gevent.Timeout under gunicorn's gevent worker, which patched
    sockets; elsewhere (Flask's test client) the body is in memory already."""
    if not monkey.is_module_patched("socket"):
        return nullcontext()
    return Timeout(seconds, RequestTimeout(f"the body did not arrive within {seconds:g} s"))


def _chunked_past(limit: int) -> bool:
    """A body sent without Content-Length (chunked) is cut at `limit` when read: one byte more
    left in the server's input means it was larger."""
    if request.content_length is not None:
        return False
    body = request.get_data(cache=True)
    return len(body) >= limit and bool(request.environ["wsgi.input"].read(1))


def init_app(app: Flask, max_body_bytes: int, timeout_seconds: float) -> None:
    """Cap bodies app-wide; blueprints add `check_body` after their own authentication."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config[BODY_TIMEOUT] = timeout_seconds
