"""Request bodies before validation: size (413), content type (415), well-formed JSON (400).

flask-openapi3 reads bodies leniently (malformed JSON becomes a 422), so the routes that take
a JSON body are checked here first; pydantic then validates the fields.
"""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_openapi3.types import ResponseDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from web.schemas import ProblemOut

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
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
    if _chunked_past(limit):
        raise RequestEntityTooLarge(f"bodies are limited to {limit} bytes")
    try:
        parsed = request.get_json(silent=True)
    except RecursionError as error:
        raise BadRequest("the body's JSON is nested too deeply") from error
    if parsed is None:
        raise BadRequest("the body is not well-formed JSON")


def _chunked_past(limit: int) -> bool:
    """A body sent without Content-Length (chunked) is cut at `limit` when read: one byte more
    left in the server's input means it was larger."""
    if request.content_length is not None:
        return False
    body = request.get_data(cache=True)
    return len(body) >= limit and bool(request.environ["wsgi.input"].read(1))


def init_app(app: Flask, max_body_bytes: int) -> None:
    """Cap bodies app-wide; blueprints add `check_body` after their own authentication."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
