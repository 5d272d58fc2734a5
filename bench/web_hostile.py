"""One hostile client against everyone else: while one client address holds 500 WebSockets and
300 sockets stuck in their headers, how fast do `GET /health` and a cache hit
(`POST /v1/jobs` of a question already answered) answer for another client address?

A real gunicorn (2 workers) on real redis-servers, semantic cache on, a real Celery worker with
the fake pipeline (it answers the cached question once, before the measurement). The hostile
client is 127.0.0.1; the bystander is 127.0.0.2 (Linux routes all of 127/8 to loopback), so
the per-client bound applies to the hostile one only. Its WebSockets, 25 per job on jobs that
stay queued (the worker is stopped once the cached answer exists), are opened by 50 threads
(each handshake with a 3 s timeout: past the server's capacity a handshake hangs); "open at
the end" is the server's own count (rag_websockets_open) after the measurement. Its slow
sockets send half a request line and nothing more, reopened whenever the server cuts them (the
header deadline). API_WS_PING_SECONDS is 600 so that the hostile sockets, which never read,
are not dropped for missing pongs during the measurement. Per scenario the bystander makes
`--calls` sequential calls of each kind quiet, then as many under the hostile load, each with
a 5 s timeout (a timeout is counted, not timed; after 5 failures in a row it stops asking).

Scenarios, side by side on the same machine:
- `gthread`: the worker class before this change (gthread, 128 threads, worker_connections
  128), through GUNICORN_CMD_ARGS, which overrides web/gunicorn_conf.py;
- `gevent, no per-client bound`: ragq's worker class (web/serving.py) with
  API_CONNECTIONS_PER_CLIENT=0, so the hostile client really holds all its sockets;
- `gevent, default bounds`: API_CONNECTIONS_PER_CLIENT=128 per process (the hostile client's
  sockets past it are refused with 429).

    .venv/bin/python bench/web_hostile.py [--calls 100] [--websockets 500] [--slow 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websocket
from queue_common import summary_ms, write_results
from web_common import WebStack, web_stack

BYSTANDER = "127.0.0.2"
CALL_TIMEOUT = 5.0
GIVE_UP_AFTER = 5  # calls failed in a row: the service is down for this client, stop asking
HANDSHAKE_TIMEOUT = 3.0
SOCKETS_PER_JOB = 25
QUESTION = "What does the semantic cache store?"
TARGET_MS = 100.0
SCENARIOS: dict[str, dict[str, str]] = {
    "gthread": {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 128 "
                                     "--worker-connections 128"},
    "gevent, no per-client bound": {"API_CONNECTIONS_PER_CLIENT": "0"},
    "gevent, default bounds": {},
}


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> float | None:
    """Seconds one call from the bystander took (a new connection each), None on timeout or
    error; a status other than 200 counts as an error."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT,
                                            source_address=(BYSTANDER, 0))
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - started if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def bystander(port: int, calls: int) -> dict[str, dict[str, Any]]:
    """`calls` sequential /health calls and as many cache hits: times and failures."""
    kinds = {"GET /health": ("GET", "/health", None),
             "cache hit (POST /v1/jobs)": ("POST", "/v1/jobs", {"query": QUESTION})}
    found: dict[str, dict[str, Any]] = {}
    for name, (method, path, body) in kinds.items():
        times: list[float | None] = []
        while len(times) < calls and times[-GIVE_UP_AFTER:] != [None] * GIVE_UP_AFTER:
            times.append(call(port, method, path, body))
        answered = [t for t in times if t is not None]
        found[name] = {**(summary_ms(answered) if answered else {"n": 0}),
                       "failed": len(times) - len(answered), "attempted": len(times)}
    return found


class Hostile:
    """One client address (127.0.0.1) holding WebSockets and slow-header sockets."""

    def __init__(self, stack: WebStack, websockets: int, slow: int) -> None:
        self.stack = stack
        self.port = stack.web.port
        self.websockets: list[websocket.WebSocket] = []
        self.refused = 0
        self.slow_target = slow
        self.selector = selectors.DefaultSelector()
        self.reopened = 0
        self.stopping = threading.Event()
        self.keeper = threading.Thread(target=self._keep_slow_sockets, daemon=True)
        self._open_websockets(websockets)
        for _ in range(slow):
            self._open_slow()
        self.keeper.start()

    def _open_websockets(self, count: int) -> None:
        """`count` WebSockets spread over queued jobs, SOCKETS_PER_JOB each (under the per-job
        bound, so only the per-client bound can refuse them)."""
        jobs = [json.loads(self._post({"query": f"hostile {uuid.uuid4().hex}?"}))["id"]
                for _ in range(-(-count // SOCKETS_PER_JOB))]

        def open_one(n: int) -> websocket.WebSocket | None:
            url = f"{self.stack.web.ws_url}/v1/jobs/{jobs[n % len(jobs)]}/stream"
            try:
                return websocket.create_connection(url, timeout=HANDSHAKE_TIMEOUT)
            except (websocket.WebSocketException, OSError):
                return None

        with ThreadPoolExecutor(50) as pool:
            for ws in pool.map(open_one, range(count)):
                if ws is None:
                    self.refused += 1
                else:
                    self.websockets.append(ws)

    def _post(self, body: dict[str, Any]) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                                source_address=(BYSTANDER, 0))
        connection.request("POST", "/v1/jobs", body=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        return connection.getresponse().read()

    def _open_slow(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ)

    def _keep_slow_sockets(self) -> None:
        """Reopen each slow socket the server cuts (readable: EOF or an answer)."""
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                self.selector.unregister(sock)
                sock.close()
                if not self.stopping.is_set():
                    self._open_slow()
                    self.reopened += 1

    def close(self) -> None:
        self.stopping.set()
        self.keeper.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        for ws in self.websockets:
            ws.shutdown()


def scenario(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    server_env: dict[str, Any] = {"API_WS_PING_SECONDS": "600", "LOG_LEVEL": "WARNING", **env}
    with tempfile.TemporaryDirectory() as tmp, web_stack(Path(tmp), **server_env) as stack:
        stack.start_worker()
        deadline = time.monotonic() + 60
        while not _submit(stack.web.port).get("cached"):  # the first submission queues it
            assert time.monotonic() < deadline, "the seeded answer never reached the cache"
            time.sleep(0.5)
        for worker in stack.workers:  # the hostile client's jobs stay queued, its sockets open
            worker.stop()
        load_before = os.getloadavg()[0]
        quiet = bystander(stack.web.port, args.calls)
        hostile = Hostile(stack, args.websockets, args.slow)
        try:
            time.sleep(2.0)  # let every socket settle in the server
            loaded = bystander(stack.web.port, args.calls)
            held = _websockets_open(stack.web.port)
            accepted = len(hostile.websockets)
            refused = hostile.refused
            reopened = hostile.reopened
        finally:
            hostile.close()
        print(f"{name}: done", flush=True)
        return {"scenario": name, "env": env, "load_average_1m": round(load_before, 1),
                "quiet": quiet, "hostile": loaded,
                "websockets_accepted": accepted, "websockets_open_at_end": held,
                "websockets_refused": refused,
                "slow_sockets": args.slow, "slow_sockets_reopened": reopened}


def _websockets_open(port: int) -> int | None:
    """The server's own count of open WebSockets (rag_websockets_open, all its processes);
    None when it does not answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT,
                                            source_address=(BYSTANDER, 0))
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    except OSError:
        return None
    finally:
        connection.close()
    return round(sum(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith("rag_websockets_open")))


def _submit(port: int) -> dict[str, Any]:
    """The job POST /v1/jobs answers for the bench's question."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=(BYSTANDER, 0))
    try:
        connection.request("POST", "/v1/jobs", body=json.dumps({"query": QUESTION}),
                           headers={"Content-Type": "application/json"})
        found: dict[str, Any] = json.loads(connection.getresponse().read())
        return found
    finally:
        connection.close()


def _cell(summary: dict[str, Any]) -> str:
    if not summary.get("n"):
        return f"all {summary['failed']} failed"
    failed = (f", {summary['failed']} of {summary['attempted']} failed"
              if summary["failed"] else "")
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f}{failed}"


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# One hostile client against everyone else",
        "",
        f"`.venv/bin/python bench/web_hostile.py --calls {args.calls} --websockets "
        f"{args.websockets} --slow {args.slow}`: 2 gunicorn workers, cache on, fake-pipeline "
        "worker, all on one 2-core machine shared with other work. The hostile client "
        f"(127.0.0.1) opens {args.websockets} WebSockets and holds {args.slow} sockets stuck "
        "in their headers; the bystander (127.0.0.2) makes sequential calls, each on a new "
        f"connection with a {CALL_TIMEOUT:g} s timeout. Cells: p50 / p99 in ms (target: "
        f"within {TARGET_MS:g} ms under the hostile load).",
        "",
        "| scenario | load (1 min) | WebSockets accepted / refused / open at the end "
        "| GET /health quiet | GET /health hostile | cache hit quiet | cache hit hostile |",
        "|---|---|---|---|---|---|---|",
    ]
    for found in results:
        health, hit = "GET /health", "cache hit (POST /v1/jobs)"
        open_at_end = found["websockets_open_at_end"]
        lines.append(
            f"| {found['scenario']} | {found['load_average_1m']} | "
            f"{found['websockets_accepted']} / {found['websockets_refused']} / "
            f"{'no answer' if open_at_end is None else open_at_end} | "
            f"{_cell(found['quiet'][health])} | "
            f"{_cell(found['hostile'][health])} | {_cell(found['quiet'][hit])} | "
            f"{_cell(found['hostile'][hit])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--websockets", type=int, default=500)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--only", choices=list(SCENARIOS), action="append")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for name, env in SCENARIOS.items():
        if not args.only or name in args.only:
            results.append(scenario(name, env, args))
            write_results("web_hostile", {"results": results, "calls": args.calls},
                          markdown(results, args))


if __name__ == "__main__":
    main()
