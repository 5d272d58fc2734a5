"""Request ids: a sane client X-Request-ID is kept, others replaced; every response carries it."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from shared import logs

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def choose_request_id(offered: str | None) -> str:
    """The client's id when it is 1-128 characters of [A-Za-z0-9._-], else a new uuid4 hex."""
    if offered is not None and _SANE.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def current_request_id() -> str:
    """This request's id (made on first use, so error handlers always have one)."""
    if "request_id" not in g:
        g.request_id = choose_request_id(request.headers.get(HEADER))
    return str(g.request_id)


def _bind() -> None:
    logs.clear()
    logs.bind(request_id=current_request_id())


def _stamp(response: Response) -> Response:
    response.headers[HEADER] = current_request_id()
    return response


def init_app(app: Flask) -> None:
    app.before_request(_bind)
    app.after_request(_stamp)
