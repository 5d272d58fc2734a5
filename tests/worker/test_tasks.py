"""One real Celery worker (fake pipeline: 40 tokens, 50 ms apart) shared by this module's tests."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from shared import keys
from shared.error_types import WORKER_ERROR_TYPES
from shared.events import EventHub, read_events
from shared.jobs import JobRecord, JobStore
from shared.pricing import cost_eur
from shared.settings import PipelineSettings, Settings, load_settings
from shared.tasks import GENERATE_TASK, make_client
from shared.workers import list_workers, pipeline_info
from tests.support.celery import WorkerProcess, start_worker, worker_env
from tests.support.servers import RedisServer, free_port
from web.submit import submit_job

pytestmark = pytest.mark.integration

TOKENS = 40
DEADLINE = 3.0
READ_TIMEOUT = 30.0


@dataclass
class Stack:
    server: RedisServer
    worker: WorkerProcess
    settings: Settings
    store: JobStore
    celery: Celery
    hub: EventHub
    metrics_port: int

    def submit(self, query: str = "what is ragq?") -> JobRecord:
        return submit_job(self.store, self.celery, owner="alice", query=query, top_k=2,
                          request_id=f"req-{uuid.uuid4().hex[:8]}")

    def final(self, job_id: str) -> JobRecord:
        record = self.store.wait_final(job_id, READ_TIMEOUT)
        assert record is not None, f"job {job_id} not final after {READ_TIMEOUT}s"
        return record

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return list(read_events(self.store.redis, job_id, after, hub=self.hub,
                                idle_timeout=READ_TIMEOUT))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("stack")
    server = RedisServer(tmp / "redis", "--maxmemory-policy", "noeviction").start()
    worker = None
    hub = EventHub(server.url)
    port = free_port()
    try:
        env = worker_env(server.url, PIPELINE_FAKE_TOKENS=str(TOKENS),
                         PIPELINE_FAKE_TOKEN_DELAY="0.05",
                         JOBS_QUEUE_DEADLINE_SECONDS=str(DEADLINE), WORKER_METRICS_PORT=str(port))
        worker = start_worker(env, tmp, "w1").wait_ready()
        settings = load_settings(broker={"url": server.url},
                                 jobs={"queue_deadline_seconds": DEADLINE})
        yield Stack(server, worker, settings, JobStore(server.client(), settings, hub),
                    make_client(settings), hub, port)
    finally:
        hub.stop()
        if worker is not None:
            worker.stop()
        server.stop()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_job_streams_and_succeeds_with_metrics_and_cost(stack: Stack) -> None:
    job = stack.submit()
    events = stack.events(job["id"])
    assert types(events) == ["status", "status", "sources"] + ["token"] * TOKENS + ["done"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[1] == {**events[1], "status": "running", "attempt": 1, "redelivered": False}
    record = events[-1]["job"]
    assert record["status"] == "succeeded" and record["request_id"] == job["request_id"]
    assert record["result"]["answer"] == "".join(e["text"] for e in events[3:-1]).strip()
    assert [s["chunk_id"] for s in record["result"]["sources"]] == ["fake-0", "fake-1"]
    m = record["metrics"]
    assert m["generated_tokens"] == TOKENS and m["prompt_tokens"] > 0
    assert m["cost_eur"] == pytest.approx(
        cost_eur(m["prompt_tokens"], m["generated_tokens"], stack.settings.breaker))
    assert m["queue_wait_s"] >= 0 and m["generation_s"] > 0 and m["ttft_s"] > 0
    assert stack.store.get(job["id"], "alice") == record


def test_late_and_reconnecting_readers_get_each_event_once(stack: Stack) -> None:
    job = stack.submit()
    live = read_events(stack.store.redis, job["id"], hub=stack.hub)
    head = [next(live) for _ in range(10)]
    live.close()
    rest = stack.events(job["id"], after=10)
    late = stack.events(job["id"], after=25)
    assert [e["seq"] for e in head + rest] == list(range(1, TOKENS + 5))
    assert late == rest[15:]


def test_cancel_running_stops_within_tokens_and_keeps_the_partial_answer(stack: Stack) -> None:
    job = stack.submit()
    live = read_events(stack.store.redis, job["id"], hub=stack.hub, idle_timeout=READ_TIMEOUT)
    seen = []
    for event in live:
        seen.append(event)
        if types(seen).count("token") == 3:
            break
    assert stack.store.cancel(job["id"], "alice")["status"] == "running"
    cancelled_at = time.time()
    rest = list(live)
    record = rest[-1]["job"]
    assert rest[-1]["type"] == "done" and record["status"] == "cancelled"
    tokens = [e for e in seen + rest if e["type"] == "token"]
    assert len([e for e in tokens if e["ts"] > cancelled_at]) <= 2  # by the worker's clock
    assert len(tokens) < TOKENS
    assert record["result"]["answer"] == "".join(e["text"] for e in tokens).strip()
    assert stack.store.cancel(job["id"], "alice") == stack.store.get(job["id"])


def test_cancel_queued_never_touches_the_model(stack: Stack) -> None:
    blocker = stack.submit()
    victim = stack.submit()
    assert victim["queue_position"] is not None
    first = stack.store.cancel(victim["id"], "alice")
    assert first["status"] == "cancelled"
    assert stack.store.cancel(victim["id"], "alice") == first
    assert stack.final(blocker["id"])["status"] == "succeeded"
    assert types(stack.events(victim["id"])) == ["status", "done"]
    record = stack.store.get(victim["id"])
    assert record["attempt"] == 0 and record["started_at"] is None


def test_job_past_its_queue_deadline_expires_without_running(stack: Stack) -> None:
    blockers = [stack.submit(), stack.submit()]  # 2 s each; the victim waits about 4 s
    victim = stack.submit()
    events = stack.events(victim["id"])
    assert types(events) == ["status", "error"]
    assert events[-1]["error"]["type"] == "JobExpired"
    assert events[-1]["job"]["status"] == "expired" and events[-1]["job"]["attempt"] == 0
    for blocker in blockers:
        stack.final(blocker["id"])


def test_malformed_messages_fail_the_job_and_the_worker_survives(stack: Stack) -> None:
    child = stack.worker.child_pid()
    job = stack.store.create(owner="alice", query="q", top_k=1, request_id="r")
    stack.celery.send_task(GENERATE_TASK, kwargs={"job_id": job["id"], "request_id": 7})
    stack.celery.send_task(GENERATE_TASK, kwargs={"bogus": 1})
    stack.celery.send_task(GENERATE_TASK, args=["x"])
    stack.celery.send_task(GENERATE_TASK, kwargs={"job_id": str(uuid.uuid4()), "request_id": "r"})
    record = stack.final(job["id"])
    error = record["error"]
    assert record["status"] == "failed" and error is not None
    assert error["type"] == "BadTaskMessage"
    assert "request_id must be a string" in error["message"]
    follow_up = stack.submit()
    assert stack.final(follow_up["id"])["status"] == "succeeded"
    assert stack.worker.child_pid() == child


def test_heartbeat_reports_the_loaded_pipeline(stack: Stack) -> None:
    reports = list_workers(stack.store.redis)
    assert [r["node"] for r in reports] == [stack.worker.node]
    report = reports[0]
    assert report["pipeline_loaded"] and report["model_id"] == "fake-model"
    assert report["device"]["device"] == "cpu" and report["parent_pid"] == stack.worker.pid
    assert pipeline_info(stack.store.redis) == {
        "index_version": "fake-index", "model_id": "fake-model",
        "prompt_version": PipelineSettings().prompt_version}
    assert stack.store.redis.pttl(keys.worker(stack.worker.node)) > 0


def test_worker_serves_its_metrics(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    assert 'rag_jobs_total{status="succeeded"}' in body
    assert "rag_tokens_generated_total" in body and "rag_queue_wait_seconds_bucket" in body
    for error_type in WORKER_ERROR_TYPES:  # created at start-up, whether or not it happened yet
        assert f'rag_errors_total{{type="{error_type}"}}' in body, error_type


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(stack: Stack) -> None:
    job = stack.submit(query="poison")
    live = read_events(stack.store.redis, job["id"], hub=stack.hub, idle_timeout=READ_TIMEOUT)
    attempts = []
    for event in live:
        if event["type"] == "status" and event["status"] == "running":
            attempts.append(event["attempt"])
            stack.worker.kill_child()  # as a crash in native model code would
        if event["type"] == "error":
            break
    assert attempts == [1, 2, 3]
    assert event["error"] == {"type": "WorkerLost", "message": "job killed its worker 3 times"}
    assert event["job"]["status"] == "failed"
    stack.worker.wait_ready()
    assert stack.final(stack.submit()["id"])["status"] == "succeeded"


def test_worker_answers_ping_while_a_job_generates(stack: Stack) -> None:
    job = stack.submit()
    live = read_events(stack.store.redis, job["id"], hub=stack.hub, idle_timeout=READ_TIMEOUT)
    for event in live:
        if event["type"] == "token":
            break
    replies = stack.celery.control.ping(destination=[stack.worker.node], timeout=2.0)
    assert stack.store.get(job["id"])["status"] == "running"
    assert replies == [{stack.worker.node: {"ok": "pong"}}]
    assert list(live)[-1]["job"]["status"] == "succeeded"


def test_heartbeat_counts_the_job_running(stack: Stack) -> None:
    job = stack.submit()
    live = read_events(stack.store.redis, job["id"], hub=stack.hub, idle_timeout=READ_TIMEOUT)
    for event in live:
        if event["type"] == "token":
            break
    seen = []
    deadline = time.monotonic() + READ_TIMEOUT
    while time.monotonic() < deadline and 1 not in seen:
        report = stack.worker.report()
        assert report is not None and report["max_batch"] == 1
        seen.append(report["jobs_in_flight"])
        time.sleep(0.1)
    assert 1 in seen
    assert list(live)[-1]["job"]["status"] == "succeeded"
