"""The chaos suite's fixtures and probes: `make run` stacks on temporary state, jobs submitted
and read through the API, and each job's stored events read from its broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from shared.events import replay
from tests.support.make_run import WAIT, MakeRun
from tests.support.servers import RedisServer

FINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


@pytest.fixture
def make_run() -> Iterator[Callable[..., MakeRun]]:
    """Start `make run` stacks: `make_run(workdir, env=None)`; all are killed after the test."""
    started: list[MakeRun] = []

    def start(workdir: Path, env: dict[str, str] | None = None) -> MakeRun:
        stack = MakeRun(workdir, env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.kill_all()


def redis_apart(workdir: Path) -> dict[str, RedisServer]:
    """A broker (AOF on) and a cache redis-server that no `make run` owns, as managed ones."""
    return {
        "broker": RedisServer(workdir / "broker", "--appendonly", "yes",
                              "--maxmemory-policy", "noeviction").start(),
        "cache": RedisServer(workdir / "cache", "--maxmemory", "64mb",
                             "--maxmemory-policy", "allkeys-lru").start(),
    }


def apart_env(servers: dict[str, RedisServer]) -> dict[str, str]:
    return {"BROKER_URL": servers["broker"].url, "CACHE_REDIS_URL": servers["cache"].url}


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[dict[str, RedisServer]]:
    """redis_apart() for one test; both killed after it."""
    servers = redis_apart(tmp_path / "redis")
    yield servers
    for server in servers.values():
        server.stop()


def submit(stack: MakeRun, label: str) -> str:
    """Queue a job with a question no other test asks; its id."""
    answer = requests.post(f"{stack.url}/v1/jobs", timeout=30,
                           json={"query": f"{label} {uuid.uuid4().hex}?"})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def job(stack: MakeRun, job_id: str) -> dict[str, Any]:
    answer = requests.get(f"{stack.url}/v1/jobs/{job_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_status(stack: MakeRun, job_id: str, statuses: frozenset[str] | set[str],
                timeout: float = WAIT) -> dict[str, Any]:
    """Poll the job until its status is one of `statuses`; its record then."""
    deadline = time.monotonic() + timeout
    while (record := job(stack, job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, (record, stack.log()[-3000:])
        time.sleep(0.2)
    return record


def events(stack: MakeRun, job_id: str) -> list[dict[str, Any]]:
    """The job's stored events, read from the stack's broker Redis."""
    with redis.Redis.from_url(stack.env["BROKER_URL"], decode_responses=True) as client:
        return replay(client, job_id)


def ran_once(stack: MakeRun, job_id: str) -> bool:
    """Succeeded on its first delivery, with one `running` and one `done` event, seq gap-free."""
    stored = events(stack, job_id)
    types = [event["type"] for event in stored]
    return (job(stack, job_id)["status"] == "succeeded"
            and [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
            and types.count("done") == 1
            and [e.get("status") for e in stored if e["type"] == "status"].count("running") == 1)
