"""Flows through a real gunicorn, a real Celery worker (fake pipeline) and real redis-servers.

One stack per module (starting them is the slow part); the broker-outage test runs last.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
import websocket

from shared import keys
from shared.jobs import JobStore
from shared.settings import load_settings
from tests.support.celery import WorkerProcess, start_worker, worker_env
from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer
from web.auth import owner_of

pytestmark = pytest.mark.integration

KEY, OTHER_KEY, LIST_KEY = "flow-key-1", "flow-key-2", "flow-key-3"
ORIGIN = "https://app.example"
TOKENS = 30
TOKEN_DELAY = "0.03"
WAIT = 30.0


class Stack:
    def __init__(self, broker: RedisServer, cache: RedisServer, web: GunicornServer) -> None:
        self.broker = broker
        self.cache = cache
        self.web = web

    def call(self, method: str, path: str, key: str | None = KEY,
             **kwargs: Any) -> requests.Response:
        headers = {"X-API-Key": key} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.web.url + path, headers=headers, timeout=WAIT,
                                **kwargs)

    def submit(self, key: str = KEY, **kwargs: Any) -> dict[str, Any]:
        response = self.call("POST", "/v1/jobs", key, json={"query": unique_query()}, **kwargs)
        assert response.status_code in (200, 202), response.text
        return dict(response.json())

    def wait_status(self, job_id: str, statuses: set[str], key: str = KEY) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            job = self.call("GET", f"/v1/jobs/{job_id}", key).json()
            if job["status"] in statuses:
                return dict(job)
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached {statuses}")

    def connect(self, job_id: str, query: str = "", key: str | None = KEY,
                origin: str | None = None) -> websocket.WebSocket:
        headers = [f"X-API-Key: {key}"] if key else []
        url = f"{self.web.ws_url}/v1/jobs/{job_id}/stream{query}"
        return websocket.create_connection(url, header=headers, origin=origin, timeout=WAIT)


def unique_query() -> str:
    return f"what is retrieval number {uuid.uuid4().hex[:12]}?"


def read_until_closed(ws: websocket.WebSocket, limit: int | None = None) -> list[dict[str, Any]]:
    """Events until the server closes the socket (or `limit` events)."""
    events: list[dict[str, Any]] = []
    try:
        while limit is None or len(events) < limit:
            message = ws.recv()
            if not message:
                break
            events.append(json.loads(message))
    except websocket.WebSocketConnectionClosedException:
        pass
    if limit is None or len(events) < limit:
        ws.shutdown()  # the server closed: drop TCP at once, as browsers do (docs/api.md)
    return events


def handshake_status(call: Callable[[], websocket.WebSocket]) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        call()
    return int(refused.value.status_code)


def assert_complete(events: list[dict[str, Any]], after: int = 0) -> None:
    """Every event after `after` exactly once, in order, ending with the terminal one."""
    assert [event["seq"] for event in events] == list(range(after + 1, after + 1 + len(events)))
    assert events[-1]["type"] in ("done", "error")
    assert all(event["type"] not in ("done", "error") for event in events[:-1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("web-flows")
    broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
    cache = RedisServer(root / "cache", "--maxmemory", "64mb",
                        "--maxmemory-policy", "allkeys-lru").start()
    web = GunicornServer(root / "web", env={
        "BROKER_URL": broker.url, "CACHE_REDIS_URL": cache.url, "AUTH_ENABLED": "true",
        "AUTH_API_KEYS": f"{KEY},{OTHER_KEY},{LIST_KEY}", "AUTH_ALLOWED_ORIGINS": ORIGIN,
        "API_QUERY_WAIT_SECONDS": "20", "API_WS_PING_SECONDS": "5", "API_HEALTH_DETAIL": "true",
    })
    try:
        yield Stack(broker, cache, web.start())
    finally:
        web.stop()
        broker.stop()
        cache.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = worker_env(stack.broker.url, CACHE_REDIS_URL=stack.cache.url,
                     PIPELINE_FAKE_TOKENS=str(TOKENS), PIPELINE_FAKE_TOKEN_DELAY=TOKEN_DELAY)
    started = start_worker(env, tmp_path_factory.mktemp("web-worker"), "web1")
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def worker_node(request: pytest.FixtureRequest) -> str:
    worker: WorkerProcess = request.getfixturevalue("worker")
    return worker.node


def test_ready_only_once_a_worker_is_up(stack: Stack, request: pytest.FixtureRequest) -> None:
    response = stack.call("GET", "/health/ready", key=None)
    assert response.status_code == 503
    assert response.json()["checks"] == {"broker": True, "workers_ready": 0}
    request.getfixturevalue("worker")
    deadline = time.monotonic() + WAIT
    while (response := stack.call("GET", "/health/ready", key=None)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.json()["checks"]["workers_ready"] == 1
    report = stack.call("GET", "/health/gpu", key=None).json()["workers"][0]
    assert report["pipeline_loaded"] is True and report["node"] == worker_node(request)
    assert report["device"] == "cpu" and report["cuda_available"] is False
    assert {"model_on_device", "vram_used_gb", "vram_total_gb"} <= set(report)


def test_submit_then_poll_until_done(stack: Stack, worker: WorkerProcess) -> None:
    response = stack.call("POST", "/v1/jobs", json={"query": unique_query(), "top_k": 3},
                          headers={"X-Request-ID": "flow-req-1"})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["links"]["stream"] == f"{stack.web.ws_url}/v1/jobs/{job['id']}/stream"
    assert job["status"] in ("queued", "running") and job["request_id"] == "flow-req-1"
    done = stack.wait_status(job["id"], {"succeeded"})
    assert done["result"]["answer"].split() == [f"tok{i}" for i in range(TOKENS)]
    assert len(done["result"]["sources"]) == 3
    assert done["request_id"] == "flow-req-1"
    assert "flow-req-1" in worker.log_tail(200_000)


def test_prefer_wait_returns_the_finished_job(stack: Stack, worker: WorkerProcess) -> None:
    response = stack.call("POST", "/v1/jobs", json={"query": unique_query()},
                          headers={"Prefer": "wait=20"})
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert "Preference-Applied" not in response.headers  # answered before the 20 s ran out


def test_query_answers_in_one_round_trip(stack: Stack, worker: WorkerProcess) -> None:
    response = stack.call("POST", "/query", json={"query": unique_query(), "top_k": 2},
                          headers={"X-Request-ID": "sync-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"].startswith("tok0") and len(body["sources"]) == 2
    assert body["request_id"] == "sync-1" and body["cached"] is False and body["latency_ms"] > 0
    assert body["finish_reason"] == "stop" and all(s["cited"] is False for s in body["sources"])
    job = stack.call("GET", f"/v1/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["result"]["finish_reason"] == "stop"


def test_batch_and_paginated_listing(stack: Stack, worker: WorkerProcess) -> None:
    queries = [unique_query() for _ in range(3)]
    response = stack.call("POST", "/v1/batch", LIST_KEY, json={"queries": queries, "top_k": 1})
    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]
    assert [job["query"] for job in response.json()["jobs"]] == queries
    first = stack.call("GET", "/v1/jobs?limit=2", LIST_KEY).json()
    assert first["total"] == 3 and [job["id"] for job in first["jobs"]] == ids[::-1][:2]
    second = stack.call("GET", first["next"], LIST_KEY).json()
    assert [job["id"] for job in second["jobs"]] == ids[:1] and second["next"] is None
    for job_id in ids:
        stack.wait_status(job_id, {"succeeded"}, LIST_KEY)


def test_stream_relays_every_event_then_closes(stack: Stack, worker: WorkerProcess) -> None:
    job = stack.submit()
    events = read_until_closed(stack.connect(job["id"]))
    assert_complete(events)
    types = [event["type"] for event in events]
    assert types[0] == "status" and types[-1] == "done"
    assert types.index("sources") < types.index("token")
    tokens = "".join(event["text"] for event in events if event["type"] == "token")
    assert tokens.split() == events[-1]["job"]["result"]["answer"].split()


def test_late_join_and_resume_get_each_event_once(stack: Stack, worker: WorkerProcess) -> None:
    job = stack.submit()
    first = read_until_closed(stack.connect(job["id"]), limit=8)
    resumed = read_until_closed(stack.connect(job["id"], f"?after={first[-1]['seq']}"))
    assert_complete(first + resumed)
    stack.wait_status(job["id"], {"succeeded"})
    late = read_until_closed(stack.connect(job["id"]))
    assert late == first + resumed
    tail = read_until_closed(stack.connect(job["id"], "?after=5"))
    assert tail == late[5:]
    for past in (late[-1]["seq"], late[-1]["seq"] + 1, 10**9):  # nothing left: closed at once
        ws = stack.connect(job["id"], f"?after={past}")
        assert close_code(ws) == 1000
        ws.shutdown()


def test_cancel_over_http_while_streaming(stack: Stack, worker: WorkerProcess) -> None:
    job = stack.submit()
    ws = stack.connect(job["id"])
    seen = read_until_closed(ws, limit=1)
    while seen[-1]["type"] != "token":
        seen += read_until_closed(ws, limit=1)
    cancelled = stack.call("POST", f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    events = seen + read_until_closed(ws)
    assert_complete(events)
    final = events[-1]["job"]
    assert final["status"] == "cancelled"
    assert 0 < len(final["result"]["answer"].split()) < TOKENS


def test_another_keys_job_is_404_everywhere(stack: Stack, worker: WorkerProcess) -> None:
    job_id = stack.submit()["id"]
    unknown = str(uuid.uuid4())
    for target in (job_id, unknown):
        for method, path in (("GET", f"/v1/jobs/{target}"), ("POST", f"/v1/jobs/{target}/cancel")):
            response = stack.call(method, path, OTHER_KEY)
            assert response.status_code == 404
            assert response.json()["type"] == "/problems/job-not-found"
        assert handshake_status(lambda t=target: stack.connect(t, key=OTHER_KEY)) == 404
    assert job_id not in stack.call("GET", "/v1/jobs", OTHER_KEY).text
    assert stack.wait_status(job_id, {"succeeded"})["status"] == "succeeded"


def test_websocket_auth_by_ticket_and_origin(stack: Stack, worker: WorkerProcess) -> None:
    job_id = stack.submit()["id"]
    assert handshake_status(lambda: stack.connect(job_id, key=None)) == 401
    assert handshake_status(lambda: stack.connect(job_id, key="wrong")) == 401
    assert handshake_status(lambda: stack.connect(job_id, origin="https://evil.example")) == 403
    ticket = stack.call("POST", "/v1/ws-tickets").json()
    assert ticket["expires_in"] > 0
    with_ticket = f"?ticket={ticket['ticket']}"
    assert_complete(read_until_closed(stack.connect(job_id, with_ticket, key=None, origin=ORIGIN)))
    assert handshake_status(lambda: stack.connect(job_id, with_ticket, key=None)) == 401
    foreign = stack.call("POST", "/v1/ws-tickets", OTHER_KEY).json()["ticket"]
    assert handshake_status(lambda: stack.connect(job_id, f"?ticket={foreign}", key=None)) == 404


def _gauge(stack: Stack, name: str) -> float:
    for line in stack.call("GET", "/metrics", key=None).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _pubsub_clients(stack: Stack) -> int:
    with redis.Redis.from_url(stack.broker.url, decode_responses=True) as client:
        return sum(1 for entry in client.client_list() if int(entry.get("psub", 0)) > 0)


def test_leaving_clients_free_their_socket_and_subscription(stack: Stack,
                                                            worker: WorkerProcess) -> None:
    job_id = stack.submit()["id"]
    first = stack.connect(job_id)
    assert read_until_closed(first, limit=1)[0]["seq"] == 1
    subscribers = _pubsub_clients(stack)  # the hub's, and Celery's own (remote control)
    sockets = [first] + [stack.connect(job_id) for _ in range(9)]
    for ws in sockets[1:]:
        assert read_until_closed(ws, limit=1)[0]["seq"] == 1
    assert _gauge(stack, "rag_websockets_open") >= 1
    assert _pubsub_clients(stack) == subscribers  # ten sockets, still one hub connection
    for ws in sockets:
        ws.close()
    deadline = time.monotonic() + WAIT
    while _gauge(stack, "rag_websockets_open") > 0:
        assert time.monotonic() < deadline, "relays kept running after their clients left"
        time.sleep(0.1)
    assert _pubsub_clients(stack) == subscribers
    metrics = stack.call("GET", "/metrics", key=None).text
    assert 'endpoint="/v1/jobs/<job_id>/stream"' in metrics


def close_code(ws: websocket.WebSocket) -> int:
    """Read frames until the server's close frame; its status code."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


def test_a_stream_trimmed_past_the_next_event_closes_with_4410(
    stack: Stack, worker: WorkerProcess
) -> None:
    job = stack.submit()
    stack.wait_status(job["id"], {"succeeded"})
    # the stream as JOBS_STREAM_MAXLEN leaves it once it trimmed seq 1-9
    stack.broker.client().xtrim(keys.job_events(job["id"]), minid="10-1", approximate=False)
    watching = stack.connect(job["id"], "?after=3")
    assert close_code(watching) == 4410  # not left open waiting for events that are gone
    assert read_until_closed(stack.connect(job["id"], "?after=9"))[-1]["type"] == "done"


def test_broker_outage_is_503_then_recovers(stack: Stack, worker: WorkerProcess) -> None:
    settings = load_settings(broker={"url": stack.broker.url})
    parked = JobStore(stack.broker.client(), settings).create(  # no task: it stays queued
        owner=owner_of(KEY), query=unique_query(), top_k=1, request_id="parked")
    watching = stack.connect(parked["id"])
    assert read_until_closed(watching, limit=1)[0]["type"] == "status"
    stack.broker.stop()
    assert close_code(watching) == 1013  # "try again later", not an HTTP error on a WebSocket
    response = stack.call("POST", "/v1/jobs", json={"query": unique_query()})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert response.json()["type"] == "/problems/broker-unavailable"
    assert stack.call("GET", "/health/ready", key=None).status_code == 503
    assert stack.call("GET", "/health", key=None).status_code == 200
    stack.broker.start()
    deadline = time.monotonic() + WAIT
    def resubmit() -> requests.Response:
        return stack.call("POST", "/v1/jobs", json={"query": unique_query()})

    while (response := resubmit()).status_code != 202:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert stack.wait_status(response.json()["id"], {"succeeded"})["status"] == "succeeded"
