"""ragq under a realistic mix, for locust (bench/load.py runs it against `make run`):

- API users (the users beyond the watchers) ask repeat questions that the cache answers, new
  questions that queue a job (or get 429 + Retry-After once the queue is full), poll the jobs
  they queued, and list jobs;
- 100 watchers (RAGQ_LOAD_WATCHERS) each join a job that an API user saw running (or just
  finished) over its WebSocket, from seq 1 (replayed) through the live events to the close, and
  check that `seq` runs 1, 2, 3, ... with no gap and no repeat; then the next.

    .venv/bin/locust -f bench/locustfile.py --headless -u 150 -r 15 -t 3m -H http://127.0.0.1:8000

A 429 with Retry-After is the service working as designed (queue full), so it counts as a
success of its own name ("POST /v1/jobs new (429)"); one without Retry-After is a failure. A
watcher that saw a gap fails its "WS stream" request and is counted in `watch_gaps`.
"""

from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
import uuid
from typing import Any

import websocket
from locust import FastHttpUser, User, between, events, task

WATCHERS = int(os.environ.get("RAGQ_LOAD_WATCHERS", "100"))
REPEATS = [  # asked again and again: after the first answer, exact cache hits
    "What is retrieval-augmented generation?",
    "How do I start ragq locally?",
    "Which Redis holds the semantic cache?",
    "What does JOBS_MAX_ATTEMPTS do?",
    "How do I stream a job's tokens?",
]
STREAM_TIMEOUT = 120.0  # a watched job that has not finished by then is reported, not waited on

started_jobs: collections.deque[str] = collections.deque(maxlen=20)  # seen running or done
counts: collections.Counter[str] = collections.Counter()
counts_lock = threading.Lock()


def count(name: str) -> None:
    with counts_lock:
        counts[name] += 1


class ApiUser(FastHttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.mine: collections.deque[str] = collections.deque(maxlen=20)

    @task(4)
    def repeat_question(self) -> None:
        self.client.post("/v1/jobs", json={"query": random.choice(REPEATS)},
                         name="POST /v1/jobs repeat")

    @task(2)
    def new_question(self) -> None:
        question = f"What does ragq do with request {uuid.uuid4().hex[:12]}?"
        with self.client.post("/v1/jobs", json={"query": question}, catch_response=True,
                              name="POST /v1/jobs new") as response:
            if response.status_code == 202:
                job_id = response.json()["id"]
                self.mine.append(job_id)
                response.success()
            elif response.status_code == 429:
                refused_with_retry_after(response)
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(4)
    def poll(self) -> None:
        if not self.mine:
            return
        job_id = random.choice(self.mine)
        response = self.client.get(f"/v1/jobs/{job_id}", name="GET /v1/jobs/{id}")
        if response.status_code == 200 and response.json()["status"] in ("running", "succeeded"):
            started_jobs.append(job_id)
            self.mine.remove(job_id)

    @task(1)
    def list_jobs(self) -> None:
        self.client.get("/v1/jobs?limit=20", name="GET /v1/jobs")


def refused_with_retry_after(response: Any) -> None:
    """A 429: fine with a Retry-After (reported under its own name), a failure without one."""
    retry_after = response.headers.get("Retry-After")
    if retry_after is None or not retry_after.isdigit():
        response.failure("429 without Retry-After")
        return
    count("429_with_retry_after")
    response.request_meta["name"] = "POST /v1/jobs new (429)"
    response.success()


class Watcher(User):
    """Joins the stream of a job that started recently, from seq 1 to its close; then the next."""

    fixed_count = WATCHERS
    wait_time = between(0.5, 1.5)

    @task
    def watch(self) -> None:
        if not started_jobs:
            time.sleep(0.5)
            return
        job_id = random.choice(list(started_jobs))
        url = self.host.replace("http", "ws", 1) + f"/v1/jobs/{job_id}/stream"
        started = time.perf_counter()
        seqs: list[int] = []
        error: Exception | None = None
        try:
            socket = websocket.create_connection(url, timeout=STREAM_TIMEOUT)
            try:
                while True:
                    message = socket.recv()
                    if not message:
                        break
                    event = json.loads(message)
                    seqs.append(int(event["seq"]))
                    if event["type"] in ("done", "error"):
                        break
            finally:
                socket.close()
        except (websocket.WebSocketException, OSError) as failure:
            error = failure
        if error is None and seqs != list(range(1, len(seqs) + 1)):
            count("watch_gaps")
            error = AssertionError(f"seq gap or repeat on {job_id}: {seqs[:50]}")
        count("watches" if error is None else "watch_failures")
        events.request.fire(request_type="WS", name="WS /v1/jobs/{id}/stream",
                            response_time=(time.perf_counter() - started) * 1000,
                            response_length=len(seqs), exception=error, context={})


@events.quitting.add_listener
def report_counts(environment: Any, **_: Any) -> None:
    """The counts no locust table shows, on stdout as one JSON line for bench/load.py."""
    print("RAGQ_COUNTS " + json.dumps(dict(counts)), flush=True)
