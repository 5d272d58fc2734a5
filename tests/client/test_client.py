"""The Python client against a real stack: real redis-servers, a real Celery worker (fake
pipeline, slow enough to cut a stream mid-answer) and a real gunicorn."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from client import Client, Reconnect
from client.errors import (
    AuthenticationFailed,
    JobNotFound,
    RateLimited,
    ServiceUnreachable,
    StreamInterrupted,
    ValidationFailed,
)
from shared import keys
from tests.support.proxy import CuttingProxy
from tests.support.servers import free_port
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

KEY = "client-key"
TOKENS = 30
MAX_QUEUE_DEPTH = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("client"), keys=[KEY], tokens=TOKENS,
                       token_delay=0.05,
                       web_env={"API_MAX_QUEUE_DEPTH": str(MAX_QUEUE_DEPTH)}) as started:
        yield started


@pytest.fixture
def ragq(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, KEY) as client:
        yield client


def question() -> str:
    return f"which setting is number {uuid.uuid4().hex[:10]}?"


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "done"


def test_submit_stream_and_wait(ragq: Client) -> None:
    job = ragq.submit(question(), top_k=2)
    assert job["status"] in ("queued", "running")
    events = list(ragq.stream(job["id"]))
    assert_gap_free(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("sources") < kinds.index("token") and kinds.count("token") == TOKENS
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    final = ragq.wait(job["id"])
    assert final["status"] == "succeeded" and final["result"]["answer"] == tokens.strip()
    assert ragq.get(job["id"]) == final
    assert job["id"] in [listed["id"] for listed in ragq.jobs(limit=5)["jobs"]]


def test_stream_after_n_yields_only_the_rest(ragq: Client) -> None:
    job = ragq.submit(question())
    everything = list(ragq.stream(job["id"]))
    rest = list(ragq.stream(job["id"], after=5))
    assert rest == everything[5:]


def test_resumes_a_cut_connection_without_gaps_or_repeats(stack: Stack) -> None:
    with CuttingProxy(stack.web.port) as proxy, Client(proxy.url, KEY) as ragq:
        job = ragq.submit(question())
        events: list[dict[str, Any]] = []
        for event in ragq.stream(job["id"]):
            events.append(event)
            if event["type"] == "token" and len(events) in (6, 14, 22):
                proxy.cut()  # mid-answer, three times
        assert proxy.cuts == 3 and proxy.connections >= 4  # the POST, then one socket per cut
    assert_gap_free(events)
    texts = [e["text"] for e in events if e["type"] == "token"]
    assert texts == [f"tok{i} " for i in range(TOKENS)]


def test_trimmed_events_yield_the_job_outcome(ragq: Client, stack: Stack) -> None:
    job = ragq.wait(ragq.submit(question())["id"])
    stack.broker.client().xtrim(keys.job_events(job["id"]), maxlen=3)  # what MAXLEN ~ does
    events = list(ragq.stream(job["id"]))
    assert len(events) == 1 and events[0]["trimmed"] is True and events[0]["seq"] is None
    assert events[0]["type"] == "done" and events[0]["job"] == job


def test_cancel_keeps_the_partial_answer(ragq: Client) -> None:
    job = ragq.submit(question())
    seen = 0
    for event in ragq.stream(job["id"]):
        seen += event["type"] == "token"
        if seen == 3:
            ragq.cancel(job["id"])
        if event["type"] == "done":
            final = event["job"]
    assert final["status"] == "cancelled" and final["result"]["finish_reason"] == "cancelled"
    assert final["result"]["answer"].startswith("tok0 tok1 tok2")
    assert len(final["result"]["answer"].split()) < TOKENS
    assert ragq.cancel(job["id"])["status"] == "cancelled"  # idempotent


def test_batch_returns_one_job_per_query(ragq: Client) -> None:
    queries = [question(), question()]
    jobs = ragq.batch(queries, top_k=1)
    assert [job["query"] for job in jobs] == queries
    assert {ragq.wait(job["id"])["status"] for job in jobs} == {"succeeded"}


def test_errors_are_typed_with_the_problem(stack: Stack, ragq: Client) -> None:
    with Client(stack.url, "wrong-key") as stranger, pytest.raises(AuthenticationFailed) as no:
        stranger.jobs()
    assert no.value.status == 401 and no.value.request_id and "X-API-Key" in no.value.detail
    with pytest.raises(JobNotFound, match="404 Job not found: no such job"):
        ragq.get(str(uuid.uuid4()))
    with pytest.raises(JobNotFound):
        list(ragq.stream(str(uuid.uuid4())))  # refused at the WebSocket handshake
    with pytest.raises(ValidationFailed) as invalid:
        ragq.submit(question(), top_k=99)
    assert [error["field"] for error in invalid.value.errors] == ["top_k"]
    with Client(f"http://127.0.0.1:{free_port()}", KEY) as nowhere, \
            pytest.raises(ServiceUnreachable, match="cannot reach"):
        nowhere.get("x")


def test_stream_gives_up_after_its_reconnect_attempts(stack: Stack, ragq: Client) -> None:
    job = ragq.submit(question())
    with CuttingProxy(stack.web.port) as proxy, \
            Client(proxy.url, KEY, reconnect=Reconnect(attempts=2, first_delay=0.01)) as flaky:
        proxy.stop_listening()  # nothing answers any more
        with pytest.raises(StreamInterrupted, match="dropped 3 times"):
            list(flaky.stream(job["id"]))
    ragq.wait(job["id"])


def test_queue_full_carries_retry_after(ragq: Client) -> None:
    submitted: list[str] = []
    try:
        with pytest.raises(RateLimited) as refused:
            for _ in range(MAX_QUEUE_DEPTH + 3):  # one runs; the queue holds the limit
                submitted.append(ragq.submit(question())["id"])
        assert refused.value.type == "/problems/queue-full"
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert "retry after" in str(refused.value)
    finally:
        for job_id in submitted:
            ragq.cancel(job_id)

