"""gunicorn's worker class for ragq: gevent, so an open WebSocket or a slow client costs a
greenlet (kilobytes) instead of one of a fixed pool of threads.

    worker_class = "web.serving.Worker"   (web/gunicorn_conf.py)

On top of gunicorn's gevent worker it counts each connection against its client's address
(web/peers.py: the app answers 429 past API_CONNECTIONS_PER_CLIENT), and answers the requests
gunicorn refuses itself before the app sees them (a bad request line, 414 URI too long, 431
header fields too large) as application/problem+json, like every other error of the API,
instead of gunicorn's HTML page.

The gevent worker patches the standard library (sockets, threads, queues, `select`) when the
worker process starts, before it imports the app, so redis-py, kombu and the event hub's
thread become cooperative unchanged. Reading a request's line and headers runs under a
deadline of gunicorn's `keepalive` (API_HEADER_TIMEOUT_SECONDS): gevent's worker wraps each
parse in `gevent.Timeout(keepalive)`. CPU-bound work would hold every greenlet of the
process: the semantic cache's query embedding runs in gevent's native threads (web/offload.py).
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from web import peers

PROBLEM_JSON = "application/problem+json"  # web.problems' type; that module needs Flask


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, writing an RFC 9457 problem instead of an HTML page."""
    request_id = uuid.uuid4().hex
    body = json.dumps({
        "type": "about:blank",
        "title": reason,
        "status": status_int,
        "detail": mesg or reason,
        "request_id": request_id,
    }).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class Worker(GeventWorker):
    """gunicorn's gevent worker, counting connections per client and answering its own
    refusals as problems."""

    def init_process(self) -> None:
        util.write_error = write_problem  # gunicorn's handle_error writes through this
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        address = addr[0] if isinstance(addr, tuple) else str(addr)
        with peers.held(address):
            super().handle(listener, client, addr)
