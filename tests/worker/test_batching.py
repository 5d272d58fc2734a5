"""A worker that batches (WORKER_MAX_BATCH=3; fake pipeline, 30 tokens 50 ms apart): several jobs
in flight in one process, each with its own stream, cancel, failure and crash recovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.events import read_events
from shared.jobs import JobRecord, JobStore
from shared.settings import Settings, load_settings
from shared.tasks import make_client
from tests.support.celery import WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # noqa: F401 (fixture)
from tests.support.servers import RedisServer
from web.submit import submit_job
from worker.pipeline.fake import FAKE_CONTEXT_TOKENS

pytestmark = pytest.mark.integration

BATCH = 3
TOKENS = 30
READ_TIMEOUT = 30.0


@dataclass
class Batching:
    worker: WorkerProcess
    settings: Settings
    store: JobStore
    env: dict[str, str]

    def submit(self, query: str = "what is ragq?") -> JobRecord:
        return submit_job(self.store, make_client(self.settings), owner="alice", query=query,
                          top_k=2, request_id=f"req-{uuid.uuid4().hex[:8]}")

    def live(self, job_id: str) -> Iterator[dict[str, Any]]:
        return read_events(self.store.redis, job_id, idle_timeout=READ_TIMEOUT)

    def final(self, job_id: str) -> dict[str, Any]:
        record = self.store.wait_final(job_id, READ_TIMEOUT)
        assert record is not None, f"job {job_id} not final after {READ_TIMEOUT}s"
        return dict(record)


@pytest.fixture
def batching(broker_redis: RedisServer,
             worker_factory: Callable[..., WorkerProcess]) -> Batching:
    env = worker_env(broker_redis.url, WORKER_MAX_BATCH=str(BATCH),
                     PIPELINE_FAKE_TOKENS=str(TOKENS), PIPELINE_FAKE_TOKEN_DELAY="0.05")
    worker = worker_factory(env, "batch").wait_ready()
    settings = load_settings(broker={"url": broker_redis.url})
    return Batching(worker, settings, JobStore(broker_redis.client(), settings), env)


def until_tokens(live: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Events read from `live` up to and including its `count`-th token."""
    seen = []
    for event in live:
        seen.append(event)
        if sum(e["type"] == "token" for e in seen) == count:
            return seen
    raise AssertionError(f"stream ended before {count} tokens: {seen[-1:]}")


def assert_whole_stream(events: list[dict[str, Any]], answer_tokens: int) -> None:
    """Gap-free seq from 1, sources before tokens, `answer_tokens` tokens, one done, last."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds.count("done") == 1 and kinds[-1] == "done"
    assert kinds.index("sources") < kinds.index("token")
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert tokens == [f"tok{i} " for i in range(answer_tokens)]
    assert events[-1]["job"]["result"]["answer"] == "".join(tokens).strip()


def overlapping(records: list[dict[str, Any]]) -> int:
    """The most jobs that were running at one moment, from their start and finish times."""
    return max(sum(1 for other in records
                   if other["started_at"] <= record["started_at"] < other["finished_at"])
               for record in records)


def test_jobs_run_together_each_with_its_own_whole_stream(batching: Batching) -> None:
    jobs = [batching.submit(f"question {i}") for i in range(BATCH)]
    streams = {job["id"]: list(batching.live(job["id"])) for job in jobs}
    for events in streams.values():
        assert_whole_stream(events, TOKENS)
        assert events[-1]["job"]["status"] == "succeeded"
    records = [events[-1]["job"] for events in streams.values()]
    assert overlapping(records) == BATCH
    assert {tuple(r["result"]["sources"][0]["text"].split()[-2:]) for r in records} == {
        ("question", str(i)) for i in range(BATCH)}


def in_flight_reports(batching: Batching, until: Callable[[int], bool]) -> list[int]:
    """The worker's heartbeat `jobs_in_flight` values, polled until one satisfies `until` (or
    READ_TIMEOUT passes)."""
    seen: list[int] = []
    deadline = time.monotonic() + READ_TIMEOUT
    while time.monotonic() < deadline and not any(until(n) for n in seen):
        report = batching.worker.report()
        assert report is not None and report["max_batch"] == BATCH
        seen.append(report["jobs_in_flight"])
        time.sleep(0.1)
    return seen


def test_the_heartbeat_shows_the_jobs_in_flight(batching: Batching) -> None:
    jobs = [batching.submit(f"q{i}") for i in range(BATCH)]
    for job in jobs:
        until_tokens(batching.live(job["id"]), 1)
    assert BATCH in in_flight_reports(batching, lambda n: n == BATCH)
    for job in jobs:
        batching.final(job["id"])
    assert in_flight_reports(batching, lambda n: n == 0)[-1] == 0


def test_a_job_submitted_mid_batch_joins_before_the_others_end(batching: Batching) -> None:
    first = batching.submit()
    live = batching.live(first["id"])
    until_tokens(live, 5)
    late = batching.submit()
    late_events = list(batching.live(late["id"]))
    first_rest = list(live)
    assert late_events[-1]["job"]["started_at"] < first_rest[-1]["job"]["finished_at"]
    assert_whole_stream(late_events, TOKENS)


def test_more_jobs_than_slots_wait_for_one_and_all_finish(batching: Batching) -> None:
    jobs = [batching.submit(f"q{i}") for i in range(2 * BATCH)]
    records = [batching.final(job["id"]) for job in jobs]
    assert [r["status"] for r in records] == ["succeeded"] * len(jobs)
    assert overlapping(records) == BATCH
    for job in jobs:
        assert_whole_stream(list(batching.live(job["id"])), TOKENS)


def test_cancelling_one_job_leaves_the_others_running(batching: Batching) -> None:
    jobs = [batching.submit(f"q{i}") for i in range(BATCH)]
    lives = [batching.live(job["id"]) for job in jobs]
    heads = [until_tokens(live, 3) for live in lives]
    assert batching.store.cancel(jobs[0]["id"], "alice")["status"] == "running"
    cancelled_at = time.time()
    rests = [list(live) for live in lives]
    victim = heads[0] + rests[0]
    record = victim[-1]["job"]
    assert record["status"] == "cancelled" and record["result"]["finish_reason"] == "cancelled"
    tokens = [e for e in victim if e["type"] == "token"]
    assert len([e for e in tokens if e["ts"] > cancelled_at]) <= 2  # by the worker's clock
    assert_whole_stream(victim, len(tokens))
    assert len(tokens) < TOKENS
    for head, rest in zip(heads[1:], rests[1:], strict=True):
        assert_whole_stream(head + rest, TOKENS)
        assert rest[-1]["job"]["status"] == "succeeded"


def test_a_job_that_fails_fails_alone(batching: Batching) -> None:
    good = [batching.submit(f"q{i}") for i in range(BATCH - 1)]
    lives = [batching.live(job["id"]) for job in good]
    heads = [until_tokens(live, 2) for live in lives]
    bad = batching.submit(" ".join(["word"] * FAKE_CONTEXT_TOKENS))
    bad_events = list(batching.live(bad["id"]))
    assert [e["type"] for e in bad_events] == ["status", "status", "sources", "error"]
    assert bad_events[-1]["error"]["type"] == "ModelError"
    assert "context" in bad_events[-1]["error"]["message"]
    for head, live in zip(heads, lives, strict=True):
        events = head + list(live)
        assert_whole_stream(events, TOKENS)
        assert events[-1]["job"]["status"] == "succeeded"
        assert events[-1]["job"]["finished_at"] > bad_events[-1]["job"]["finished_at"]


@pytest.mark.parametrize("crash", ["child", "worker"])
def test_sigkill_redelivers_every_job_in_flight_and_each_finishes_once(
    batching: Batching, worker_factory: Callable[..., WorkerProcess], crash: str
) -> None:
    jobs = [batching.submit(f"q{i}") for i in range(BATCH)]
    lives = [batching.live(job["id"]) for job in jobs]
    heads = [until_tokens(live, 3) for live in lives]
    if crash == "child":
        batching.worker.wait_ready(not_child=batching.worker.kill_child())
    else:
        batching.worker.kill()
        worker_factory(batching.env, "batch").wait_ready()
    for head, live in zip(heads, lives, strict=True):
        after = list(live)
        statuses = [(e["status"], e["attempt"]) for e in after if e["type"] == "status"]
        assert statuses == [("queued", 1), ("running", 2)]
        events = head + after
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["type"] for e in events].count("done") == 1
        record = after[-1]["job"]
        assert record["status"] == "succeeded" and record["attempt"] == 2
        assert record["result"]["answer"].split() == [f"tok{i}" for i in range(TOKENS)]
    counts = batching.store.status_counts()
    assert counts["succeeded"] == BATCH and counts["running"] == 0 and counts["queued"] == 0


def test_a_warm_shutdown_lets_the_jobs_in_flight_finish(
    batching: Batching, worker_factory: Callable[..., WorkerProcess]
) -> None:
    batching.worker.stop()
    long_jobs = {**batching.env, "PIPELINE_FAKE_TOKENS": str(4 * TOKENS)}  # 6 s each
    worker = worker_factory(long_jobs, "long").wait_ready()
    # Fewer jobs than slots: no task is left waiting for room, so Celery itself waits for none.
    jobs = [batching.submit(f"q{i}") for i in range(BATCH - 1)]
    lives = [batching.live(job["id"]) for job in jobs]
    heads = [until_tokens(live, 3) for live in lives]
    worker.stop()  # SIGTERM: Celery's warm shutdown
    for head, live in zip(heads, lives, strict=True):
        events = head + list(live)
        assert_whole_stream(events, 4 * TOKENS)
        assert events[-1]["job"]["status"] == "succeeded" and events[-1]["job"]["attempt"] == 1


def test_a_batched_job_past_its_time_limit_fails_on_its_own_thread(
    batching: Batching, worker_factory: Callable[..., WorkerProcess]
) -> None:
    batching.worker.stop()
    limited = {**batching.env, "PIPELINE_FAKE_TOKENS": str(4 * TOKENS),  # 6 s each
               "JOBS_SOFT_TIME_LIMIT_SECONDS": "2", "JOBS_HARD_TIME_LIMIT_SECONDS": "4"}
    worker = worker_factory(limited, "limited").wait_ready()
    child = worker.child_pid()
    jobs = [batching.submit(f"q{i}") for i in range(BATCH + 1)]  # the last waits for a slot
    for job in jobs:
        events = list(batching.live(job["id"]))
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["type"] == "TimeLimitExceeded"
        assert events[-1]["job"]["attempt"] == 1
        assert 0 < sum(e["type"] == "token" for e in events) < 4 * TOKENS
    assert worker.process.poll() is None  # Celery's own limits never struck the child
    assert worker.child_pid() == child
