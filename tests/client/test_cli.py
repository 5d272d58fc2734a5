"""`ragq` (the installed console script, run as a real process) against a real stack: real
redis-servers, a real Celery worker (fake pipeline) and a real gunicorn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client
from tests.support.servers import free_port
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

KEY = "cli-key"
TOKENS = 40
# 6 s an answer: Ctrl-C after the fourth token must land while the job still runs, also on a
# loaded machine where the test reads the CLI's output late.
TOKEN_DELAY = 0.15
RAGQ = str(Path(sys.executable).with_name("ragq"))
WAIT = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli"), keys=[KEY], tokens=TOKENS,
                       token_delay=TOKEN_DELAY) as started:
        yield started


@pytest.fixture
def ragq(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, KEY) as client:
        yield client


def env_for(stack: Stack, key: str = KEY) -> dict[str, str]:
    return {**os.environ, "RAGQ_URL": stack.url, "RAGQ_API_KEY": key}


def run(stack: Stack, *args: str, key: str = KEY, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAGQ, *args], env=env_for(stack, key), input=stdin,
                          capture_output=True, text=True, timeout=WAIT)


def question() -> str:
    return f"what does setting {uuid.uuid4().hex[:10]} do?"


def test_ask_prints_tokens_then_sources(stack: Stack) -> None:
    done = run(stack, "ask", question(), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    answer, sources = done.stdout.split("\n\nSources (* cited):\n")
    assert answer.split() == [f"tok{i}" for i in range(TOKENS)]
    assert sources.splitlines() == [" [1] Fake (fake-0, score 1.0000)",
                                    " [2] Fake (fake-1, score 0.5000)"]


def test_ask_json_prints_the_finished_job(stack: Stack, ragq: Client) -> None:
    done = run(stack, "ask", question(), "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job == ragq.get(job["id"])


def test_a_repeated_question_says_it_came_from_the_cache(stack: Stack) -> None:
    asked = question()
    assert run(stack, "ask", asked).returncode == 0
    again = run(stack, "ask", asked)
    assert again.returncode == 0
    assert "[answered from the cache: exact match, similarity 1.000" in again.stderr
    assert again.stdout.startswith("tok0 tok1") and "Sources (* cited):" in again.stdout


def test_ctrl_c_cancels_the_job_and_keeps_the_partial_answer(stack: Stack,
                                                             ragq: Client) -> None:
    # A test run started in the background (`make test &`) ignores SIGINT, and a child inherits
    # an ignored signal: start ragq with SIGINT caught here, which exec resets to its default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([RAGQ, "ask", question()], env=env_for(stack),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   bufsize=0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.stdout is not None
    seen = ""
    while "tok3 " not in seen:
        seen += process.stdout.read(1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 4, err
    assert "ragq: cancelling job" in err and "[answer ended: cancelled]" in out
    job = ragq.jobs(limit=1)["jobs"][0]
    assert job["status"] == "cancelled"
    assert (seen + out).split("\n")[0].split() == job["result"]["answer"].split()
    assert len(job["result"]["answer"].split()) < TOKENS


def test_refused_and_unreachable_have_their_exit_codes(stack: Stack) -> None:
    refused = run(stack, "ask", question(), key="wrong-key")
    assert refused.returncode == 3
    assert refused.stderr.startswith("ragq: refused: 401 Unauthorized: unknown X-API-Key")
    invalid = run(stack, "ask", "hi")
    assert invalid.returncode == 3 and "422 Request failed validation" in invalid.stderr
    nowhere = subprocess.run([RAGQ, "jobs"], capture_output=True, text=True, timeout=WAIT,
                             env={**env_for(stack), "RAGQ_URL": f"http://127.0.0.1:{free_port()}"})
    assert nowhere.returncode == 5 and "cannot reach" in nowhere.stderr
    missing = run(stack, "job", str(uuid.uuid4()))
    assert missing.returncode == 3 and "404 Job not found" in missing.stderr


def test_jobs_job_watch_and_cancel(stack: Stack, ragq: Client) -> None:
    finished = ragq.wait(ragq.submit(question())["id"])
    listed = run(stack, "jobs", "--limit", "50")
    assert listed.returncode == 0 and finished["id"] in listed.stdout
    assert json.loads(run(stack, "job", finished["id"]).stdout) == finished
    watched = run(stack, "watch", finished["id"])
    assert watched.returncode == 0
    assert watched.stdout.split("\n\n")[0].split() == finished["result"]["answer"].split()
    running = ragq.submit(question())
    next(event for event in ragq.stream(running["id"]) if event["type"] == "token")
    cancelled = run(stack, "cancel", running["id"])
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(running["id"])
    watched = run(stack, "watch", running["id"])
    assert watched.returncode == 4 and "[answer ended: cancelled]" in watched.stdout


def test_batch_prints_json_lines_in_order(stack: Stack, tmp_path: Path) -> None:
    questions = [question() for _ in range(3)]
    file = tmp_path / "questions.txt"
    file.write_text(f"{questions[0]}\n\n{questions[1]}\n{questions[2]}\n")
    done = run(stack, "batch", str(file), "--chunk", "2", "--top-k", "1", "--progress")
    assert done.returncode == 0, done.stderr
    jobs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [job["query"] for job in jobs] == questions
    assert {job["status"] for job in jobs} == {"succeeded"}
    assert all(len(job["result"]["sources"]) == 1 for job in jobs)
    assert "3/3" in done.stderr  # the progress bar's last state
    from_stdin = run(stack, "batch", "-", stdin=questions[0] + "\n")
    assert [json.loads(line)["query"] for line in from_stdin.stdout.splitlines()] == questions[:1]


def test_a_job_that_expired_in_the_queue_exits_1(tmp_path: Path) -> None:
    # the worker expires a job that waited over 1 s; the first job keeps it busy for 3 s
    with running_stack(tmp_path, keys=[KEY], tokens=30, token_delay=0.1,
                       worker_overrides={"JOBS_QUEUE_DEADLINE_SECONDS": "1"}) as slow, \
            Client(slow.url, KEY) as ragq:
        busy = ragq.submit(question())
        next(event for event in ragq.stream(busy["id"]) if event["type"] == "token")
        expired = run(slow, "ask", question())
    assert expired.returncode == 1, expired.stderr
    assert "[queued at position 1]" in expired.stderr
    assert "ragq: job expired: waited" in expired.stderr and "it never ran" in expired.stderr
