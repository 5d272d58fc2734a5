"""Faults against a whole `make run` stack, with its Redis servers run by its own supervisor
("supervised") and by someone else ("apart", as a deployment with managed Redis would):

- the broker Redis SIGKILLed while three jobs are queued or running: every API call answers a
  503 problem meanwhile (no hang, no 500), a watcher's WebSocket closes 1013 and a new one is
  refused 503; back from its AOF, all three finish exactly once;
- the cache Redis SIGKILLed: answers go on as counted misses; back (empty), caching resumes
  with the same web processes;
- the worker's pool child SIGKILLed on one job again and again: it fails after
  JOBS_MAX_ATTEMPTS with a clear error; once on each of three jobs: each runs again, succeeds.

Run the suite alone: `.venv/bin/pytest -m chaos` (tests/chaos, with test_make_run.py).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest
import requests
import websocket

from tests.chaos.conftest import apart_env, events, job, redis_apart, submit, wait_status
from tests.chaos.test_make_run import redis_process
from tests.support.make_run import WAIT, MakeRun, stack_env
from tests.support.servers import RedisServer

# A stack's start (in the first test of each mode) and its faults fit in pytest-timeout's 300 s
# on a quiet machine, not always on 2 shared cores under `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]

MAX_ATTEMPTS = 3
CALL_TIMEOUT = 30.0  # far above any answer the web gives; only a hung call reaches it
JOB_ENV = {
    "PIPELINE_FAKE_TOKEN_DELAY": "0.1",  # 30 tokens: a job runs about 3 s
    "PIPELINE_FAKE_TOKENS": "30",
    "JOBS_LEASE_SECONDS": "1.0",
    "JOBS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
}


@dataclass
class Chaos:
    """A running stack and the means to take its Redis servers away and bring them back."""

    stack: MakeRun
    mode: str
    servers: dict[str, RedisServer] = field(default_factory=dict)

    def url(self, role: str) -> str:
        return self.stack.env["BROKER_URL" if role == "broker" else "CACHE_REDIS_URL"]

    @contextlib.contextmanager
    def outage(self, role: str) -> Iterator[None]:
        """`role`'s Redis SIGKILLed for the block; then back on its port, from its own data."""
        if self.mode == "apart":
            server = self.servers[role]
            server.stop()  # SIGKILL
            try:
                yield
            finally:
                server.start()
            return
        # supervisord would start it again at once: held (SIGSTOP) so the outage lasts the block
        supervisor = self.stack.find("supervisord")
        killed = redis_process(self.stack, self.url(role))
        assert supervisor is not None and killed is not None
        supervisor.suspend()
        try:
            killed.kill()
            yield
        finally:
            supervisor.resume()
        deadline = time.monotonic() + WAIT
        while (back := redis_process(self.stack, self.url(role))) is None or back == killed:
            assert time.monotonic() < deadline, self.stack.log()[-3000:]
            time.sleep(0.2)


@pytest.fixture(scope="module", params=["supervised", "apart"])
def chaos(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Chaos]:
    mode = str(request.param)
    workdir = tmp_path_factory.mktemp(f"chaos-{mode}")
    servers: dict[str, RedisServer] = {}
    env = dict(JOB_ENV)
    if mode == "apart":
        servers = redis_apart(workdir)
        env |= apart_env(servers)
    stack = MakeRun(workdir, stack_env(workdir, **env))
    try:
        yield Chaos(stack.wait_ready(), mode, servers)
    finally:
        stack.kill_all()
        for server in servers.values():
            server.stop()


def metric(stack: MakeRun, name: str) -> float:
    """The sum of a counter's samples in the web's /metrics."""
    text = requests.get(f"{stack.url}/metrics", timeout=CALL_TIMEOUT).text
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                    re.MULTILINE))


def pool_child(stack: MakeRun) -> psutil.Process:
    """The Celery worker's pool child (concurrency 1): the process that runs the job."""
    deadline = time.monotonic() + WAIT
    while True:
        main = stack.find("celery", "worker", "-Q")
        children = main.children() if main is not None else []
        if children:
            return children[0]
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.2)


def running(stack: MakeRun, job_id: str, attempt: int) -> None:
    """Until the job runs its `attempt`-th delivery and has streamed a token of it."""
    deadline = time.monotonic() + WAIT
    while not any(e["type"] == "token" for e in events(stack, job_id)[-1:]) or (
            job(stack, job_id)["attempt"] != attempt):
        assert time.monotonic() < deadline, (job(stack, job_id), stack.log()[-3000:])
        time.sleep(0.1)


def assert_503_problem(response: requests.Response, slug: str) -> None:
    assert response.status_code == 503, (response.request.method, response.url, response.text)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"] == f"/problems/{slug}"


def stream_url(stack: MakeRun, job_id: str) -> str:
    return f"{stack.url.replace('http', 'ws', 1)}/v1/jobs/{job_id}/stream"


def close_code(socket: websocket.WebSocket) -> int:
    """Read past the events until the server's close frame; its code."""
    while True:
        opcode, data = socket.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            socket.close()
            return int.from_bytes(data[:2], "big")


def finished_once(stack: MakeRun, job_id: str) -> None:
    """Succeeded, with one `done` event and gap-free seq, however many deliveries it took."""
    assert wait_status(stack, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    stored = events(stack, job_id)
    assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
    assert [event["type"] for event in stored].count("done") == 1


def test_broker_killed_with_three_jobs_queued_or_running(chaos: Chaos) -> None:
    stack = chaos.stack
    jobs = [submit(stack, f"broker outage job {i}") for i in range(3)]
    running(stack, jobs[0], 1)
    watcher = websocket.create_connection(stream_url(stack, jobs[0]), timeout=CALL_TIMEOUT)
    with chaos.outage("broker"):
        assert close_code(watcher) == 1013  # try again later, with ?after=<last seq>
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(stream_url(stack, jobs[1]), timeout=CALL_TIMEOUT)
        assert refused.value.status_code == 503
        down = "broker-unavailable"
        calls = [
            ("GET", f"/v1/jobs/{jobs[0]}", None, down), ("GET", f"/v1/jobs/{jobs[2]}", None, down),
            ("GET", "/v1/jobs", None, down), ("GET", "/health/ready", None, "not-ready"),
            ("POST", "/v1/jobs", {"query": "asked while the broker is down?"}, down),
        ]
        for method, path, body, slug in calls:
            assert_503_problem(requests.request(method, f"{stack.url}{path}", json=body,
                                                timeout=CALL_TIMEOUT), slug)
        assert requests.get(f"{stack.url}/health", timeout=CALL_TIMEOUT).status_code == 200
    for job_id in jobs:
        finished_once(stack, job_id)


def test_cache_killed_answers_go_on_as_counted_misses_then_caching_resumes(
        chaos: Chaos) -> None:
    stack = chaos.stack
    web = stack.find("bin/gunicorn")

    def ask(question: str) -> requests.Response:
        return requests.post(f"{stack.url}/v1/jobs", json={"query": question},
                             headers={"Prefer": "wait=30"}, timeout=CALL_TIMEOUT + 30)

    before = f"what does the cache hold before the outage ({chaos.mode})?"
    assert ask(before).json()["status"] == "succeeded"
    assert ask(before).json()["metrics"]["cached"] is True
    misses, errors = metric(stack, "rag_cache_misses_total"), metric(stack,
                                                                     "rag_cache_errors_total")
    with chaos.outage("cache"):
        during = ask(before)
        assert during.status_code in (200, 202), during.text
        assert during.json()["metrics"]["cached"] is False  # a miss: the cache is gone
        assert metric(stack, "rag_cache_misses_total") > misses
        assert metric(stack, "rag_cache_errors_total") > errors
    after = f"what does the cache hold after the outage ({chaos.mode})?"
    assert ask(after).json()["status"] == "succeeded"
    deadline = time.monotonic() + WAIT
    while not ask(after).json()["metrics"]["cached"]:  # stored on a later miss if not at once
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(1)
    assert stack.find("bin/gunicorn") == web  # no restart of the web was needed


@pytest.mark.parametrize("chaos", ["supervised"], indirect=True)
def test_a_job_that_keeps_killing_its_worker_fails_and_others_are_redelivered(
        chaos: Chaos) -> None:
    stack = chaos.stack
    doomed = submit(stack, "a job that kills its worker")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        running(stack, doomed, attempt)
        pool_child(stack).kill()
    record = wait_status(stack, doomed, {"failed", "succeeded"})
    assert record["status"] == "failed" and record["attempt"] == MAX_ATTEMPTS
    assert record["error"] == {"type": "WorkerLost",
                               "message": f"job killed its worker {MAX_ATTEMPTS} times"}

    for i in range(3):
        unlucky = submit(stack, f"a job whose worker dies once, number {i}")
        running(stack, unlucky, 1)
        pool_child(stack).kill()
        finished_once(stack, unlucky)
        assert job(stack, unlucky)["attempt"] == 2

