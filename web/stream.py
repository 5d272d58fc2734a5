"""WS /v1/jobs/{id}/stream[?after=seq]: relays a job's events, one JSON object per message.

The handshake is checked before it is accepted: a bad Origin is refused with 403, a missing
or unknown key or ticket with 401, and an unknown job or another key's job with 404 (the same
answer as an HTTP route gives), and a job that has API_WEBSOCKETS_PER_JOB sockets open in this
process already with 429, so nothing is held for a socket that could never stream.
Accepted sockets replay every event after `after` from the job's Redis stream, then the live
ones through the process's shared pub/sub hub, each once, in order, and close after done/error.
simple-websocket pings every API_WS_PING_SECONDS and drops a peer that stops answering; an idle
relay notices a gone client within LIVENESS_CHECK_SECONDS and returns its greenlet and its hub
subscription. After the upgrade no HTTP response may be written on the socket, so a failure
while relaying closes the WebSocket with a code instead: 1013 (broker unreachable: reconnect
later with `?after=<last seq>`; or more sockets on the job than allowed raced past the
handshake's check), 4404 (the job vanished), 4410 (the next event was trimmed from
the job's stream: fetch the job instead), 1011 (anything else).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from werkzeug.exceptions import BadRequest

from shared import logs
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, EventsTrimmed, JobNotFound
from shared.events import read_events
from shared.metrics import ERRORS, WEBSOCKETS_OPEN
from web.auth import websocket_owner
from web.problems import problem, retry_after
from web.resources import resources, settings

NORMAL_CLOSURE = 1000
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
JOB_NOT_FOUND = 4404
EVENTS_TRIMMED = 4410
# An idle relay checks this often whether its client is still there (a flag read, no I/O);
# the protocol-level pings that keep proxies and dead peers honest run every API_WS_PING_SECONDS.
LIVENESS_CHECK_SECONDS = 1.0
AFTER_MAX = 2**63 - 2  # the stream is read from after + 1, which Redis holds as a signed 64-bit
STREAMS_RETRY_AFTER_SECONDS = 5

# OpenAPI 3.1 has no WebSocket operations: the route is told in the document's description.
OPENAPI_DESCRIPTION = f"""
## WebSocket: `GET /v1/jobs/{{job_id}}/stream[?after=n]`

Upgrade to a WebSocket to receive the job's events, one JSON object per message:
`{{"seq": n, "type": "status"|"sources"|"token"|"done"|"error", "job_id": ..., "ts": ...}}`
plus a payload; `seq` starts at 1 with no gaps. `after` is the last seq the client has (0 to
{AFTER_MAX}); every later event comes once, in order, then the socket closes with 1000.
Authenticate with `X-API-Key` or `?ticket=` (`POST /v1/ws-tickets`). A refused handshake is an
HTTP problem: 400 (bad `after`, or no `Upgrade: websocket`), 401, 403 (Origin), 404, 429 (too
many sockets), 503. Close codes once open: 1000 finished, 1013 try again later (broker
unreachable, or too many sockets), 4404 job vanished, 4410 events trimmed, 1011 unexpected.
"""

log = logging.getLogger(__name__)
bp = Blueprint("stream", __name__)
sock = Sock()
_open: Counter[str] = Counter()  # WebSockets open per job in this process


def parse_after(raw: str | None) -> int:
    """`?after=n`: the last seq the client already has (0: from the start)."""
    if raw is None:
        return 0
    # ASCII digits only (str.isdigit takes "²"), and few enough that after + 1 is a Redis id
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(AFTER_MAX)) \
            or int(raw) > AFTER_MAX:
        raise BadRequest(f"after must be an integer from 0 to {AFTER_MAX} (the last seq received)")
    return int(raw)


@bp.before_request
def _authorize() -> Response | None:
    found = resources()
    g.owner = websocket_owner(settings().auth, found.redis)
    job_id = str((request.view_args or {}).get("job_id", ""))
    found.store.get(job_id, owner=g.owner)
    logs.bind(job_id=job_id)
    g.after = parse_after(request.args.get("after"))
    limit = settings().api.websockets_per_job
    if _open[job_id] >= limit:
        return problem(429, f"{limit} WebSockets are open on this job already; use one of them",
                       slug=ErrorType.TOO_MANY_STREAMS, title="Too many WebSockets",
                       headers=retry_after(STREAMS_RETRY_AFTER_SECONDS))
    return None


def stream(ws: Server, job_id: str) -> None:
    """Relay the job's events until done/error or until the client leaves."""
    _open[job_id] += 1
    WEBSOCKETS_OPEN.inc()
    try:
        if _open[job_id] > settings().api.websockets_per_job:  # sockets raced past the check
            ERRORS.labels(type=ErrorType.TOO_MANY_STREAMS).inc()
            _close(ws, TRY_AGAIN_LATER, "too many WebSockets on this job")
            return
        sent = relay(ws, job_id, g.after)
        log.info("stream ended", extra={"after": g.after, "events_sent": sent})
    except BrokerUnavailable as error:
        log.warning("websocket relay lost the broker: %s", error)
        ERRORS.labels(type=ErrorType.WEBSOCKET_BROKER).inc()
        _close(ws, TRY_AGAIN_LATER, "broker unavailable; reconnect with ?after=<last seq>")
    except JobNotFound:
        _close(ws, JOB_NOT_FOUND, "job not found")
    except EventsTrimmed as error:
        log.warning("websocket relay cannot go on: %s", error)
        ERRORS.labels(type=ErrorType.WEBSOCKET_TRIMMED).inc()
        _close(ws, EVENTS_TRIMMED, "events trimmed; fetch the job")
    except Exception:
        log.exception("websocket relay failed")
        ERRORS.labels(type=ErrorType.WEBSOCKET).inc()
        _close(ws, INTERNAL_ERROR, "internal error")
    finally:
        WEBSOCKETS_OPEN.dec()
        _open[job_id] -= 1
        if not _open[job_id]:
            del _open[job_id]


# Not a decorator: flask-sock's returns None, and an ingest job's stream (web/collections.py)
# relays its events with this same function.
sock.route("/v1/jobs/<job_id>/stream", bp=bp)(stream)


def _close(ws: Server, code: int, reason: str) -> None:
    if ws.connected:
        with contextlib.suppress(ConnectionClosed, OSError):  # the client is gone already
            ws.close(code, reason)


def relay(ws: Server, job_id: str, after: int) -> int:
    """Send the job's events after `after` until the stream ends or the client leaves; returns
    how many were sent."""
    found = resources()
    events = read_events(found.redis, job_id, after, found.hub, ping=lambda: _still_open(ws),
                         ping_interval=LIVENESS_CHECK_SECONDS)
    sent = 0
    try:
        for event in events:
            ws.send(_encode(event))
            sent += 1
        ws.close(NORMAL_CLOSURE, "job finished")
    except (ConnectionClosed, OSError):
        pass  # the client left (or its connection broke): nothing to send it
    finally:
        events.close()  # drops the hub subscription at once
    return sent


def _still_open(ws: Server) -> None:
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def init_app(app: Flask, ping_seconds: float) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": ping_seconds}
    app.register_blueprint(bp)
