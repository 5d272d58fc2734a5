"""Hostile clients against a real gunicorn: many WebSockets, slow headers, a slow body, huge
request lines and headers, forged and reused tickets, foreign Origins. Each gets a clear 4xx
or a bounded resource, and the service keeps answering another client meanwhile."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import websocket

from tests.hostile.conftest import (
    AUTH,
    BODY_TIMEOUT,
    KEY,
    ORIGIN,
    PER_CLIENT,
    PER_JOB,
    Web,
)

pytestmark = pytest.mark.integration

HOSTILE = "127.0.0.1"
MANY_WEBSOCKETS = 500
SLOW_SOCKETS = 300
PROBLEM_JSON = "application/problem+json"


def _problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, str]:
    assert status == expected, body
    assert headers["Content-Type"] == PROBLEM_JSON
    problem = json.loads(body)
    assert problem["status"] == expected and problem["request_id"] == headers["X-Request-ID"]
    return dict(problem)


@contextmanager
def _websocket(web: Web, job_id: str, query: str = "", keyed: bool = True,
               origin: str | None = None) -> Iterator[websocket.WebSocket]:
    """An open WebSocket on the job's stream, closed (and its TCP connection shut) on exit."""
    ws = websocket.create_connection(f"{web.server.ws_url}/v1/jobs/{job_id}/stream{query}",
                                     timeout=30, header=[f"X-API-Key: {KEY}"] if keyed else [],
                                     origin=origin)
    try:
        yield ws
    finally:
        ws.close()


def _refused_handshake(web: Web, job_id: str, query: str = "",
                       headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    return web.call("GET", f"/v1/jobs/{job_id}/stream{query}", headers={**upgrade,
                                                                         **(headers or {})})


@contextmanager
def _slow_header_sockets(web: Web, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that sent half a request line and then nothing."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", web.server.port)))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        yield sockets


def test_one_client_over_its_connections_gets_429_while_others_are_served(web: Web) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(socket.create_connection(("127.0.0.1", web.server.port)))
                for _ in range(PER_CLIENT)]
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # kept alive: still held
        problem = _problem(*web.call("GET", "/health", source=HOSTILE), 429)
        assert problem["type"] == "/problems/too-many-connections"
        assert web.call("GET", "/health")[0] == 200  # another client address
    assert web.call("GET", "/health", source=HOSTILE)[0] == 200  # closed: served again


def test_websockets_per_job_are_bounded(web: Web) -> None:
    job_id = web.new_job()
    with ExitStack() as stack:
        for _ in range(PER_JOB):
            stack.enter_context(_websocket(web, job_id))
        status, headers, body = _refused_handshake(web, job_id, headers={"X-API-Key": KEY})
        assert _problem(status, headers, body, 429)["type"] == "/problems/too-many-streams"
        assert int(headers["Retry-After"]) > 0
    for _ in range(100):  # a relay notices its client left within a second, then frees its slot
        try:
            with _websocket(web, job_id) as ws:
                assert ws.connected
                return
        except websocket.WebSocketBadStatusException as error:
            assert error.status_code == 429
            time.sleep(0.1)
    pytest.fail("the job's WebSocket slots were never freed")


def test_websockets_past_the_client_bound_are_refused_never_held(web: Web) -> None:
    jobs = [web.new_job() for _ in range(MANY_WEBSOCKETS // PER_JOB)]
    opened, refused = 0, 0
    with ExitStack() as stack:
        for n in range(MANY_WEBSOCKETS):
            try:
                stack.enter_context(_websocket(web, jobs[n % len(jobs)]))
                opened += 1
            except websocket.WebSocketBadStatusException as error:
                assert error.status_code == 429
                refused += 1
        # The bound is a ceiling: sockets an earlier test closed may still count for the second
        # the web takes to notice, so a few slots can be taken when this test starts.
        assert PER_CLIENT // 2 < opened <= PER_CLIENT and refused == MANY_WEBSOCKETS - opened
        assert web.call("GET", "/health")[0] == 200


def test_one_client_holding_many_websockets_and_slow_sockets_leaves_the_service_up(
        unbounded_web: Web) -> None:
    """500 WebSockets and 300 sockets stuck in their headers, all from one address, held at
    once (no per-client bound here): another client is still served, its keyed calls too."""
    web = unbounded_web
    job_id = web.new_job()
    with ExitStack() as stack:
        for _ in range(MANY_WEBSOCKETS):
            stack.enter_context(_websocket(web, job_id))
        with _slow_header_sockets(web, SLOW_SOCKETS):
            assert web.call("GET", "/health")[0] == 200
            assert web.call("GET", "/v1/jobs?limit=1", headers=AUTH)[0] == 200
            assert web.call("GET", f"/v1/jobs/{web.new_job()}", headers=AUTH)[0] == 200


def test_slow_headers_are_cut_off(web: Web) -> None:
    with _slow_header_sockets(web, 20) as sockets:
        for sock in sockets:
            sock.settimeout(60)
            assert sock.recv(100) == b""  # the server closed it (API_HEADER_TIMEOUT_SECONDS)


def test_a_slow_body_is_408(web: Web) -> None:
    """A body dribbled a byte every half second is answered 408 once its deadline passes."""
    with socket.create_connection(("127.0.0.1", web.server.port)) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        sock.settimeout(0.5)
        answer = b""
        for _ in range(BODY_TIMEOUT * 2 * 20):  # bounded: 20 times the deadline
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b" ")
                continue
            answer += chunk
            if not chunk or answer.rstrip().endswith(b"}"):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in head
    assert "did not arrive" in json.loads(body)["detail"]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + b"r" * 10_000 + b"\r\n\r\n", 431),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rX-Injected: 1\r\n\r\n", 400),
], ids=["long-request-line", "long-header", "not-http", "long-request-id", "cr-in-request-id"])
def test_what_gunicorn_refuses_itself_is_a_problem_too(web: Web, request_bytes: bytes,
                                                       status: int) -> None:
    with socket.create_connection(("127.0.0.1", web.server.port), timeout=30) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode())
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank"


def test_forged_and_reused_tickets_are_refused(web: Web) -> None:
    job_id = web.new_job()
    forged = _refused_handshake(web, job_id, "?ticket=not-a-ticket")
    assert _problem(*forged, 401)
    _, _, body = web.call("POST", "/v1/ws-tickets", headers=AUTH)
    ticket = json.loads(body)["ticket"]
    with _websocket(web, job_id, f"?ticket={ticket}", keyed=False) as ws:
        assert ws.connected
    assert _problem(*_refused_handshake(web, job_id, f"?ticket={ticket}"), 401)


def test_a_foreign_origin_cannot_open_a_websocket(web: Web) -> None:
    job_id = web.new_job()
    foreign = _refused_handshake(web, job_id, headers={"X-API-Key": KEY,
                                                       "Origin": "https://evil.example.net"})
    assert _problem(*foreign, 403)
    with _websocket(web, job_id, origin=ORIGIN) as ws:
        assert ws.connected
