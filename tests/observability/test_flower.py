"""Flower, started as `make run` and compose start it, against the test's broker and a real worker:
its authenticated API lists the worker and a finished task; without credentials it refuses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import JobStore
from shared.settings import load_settings
from shared.tasks import make_client
from tests.observability.flower import USER, Flower
from tests.support.celery import WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # the fixture
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration

PROTECTED = ["/", "/workers", "/tasks", "/api/workers", "/api/tasks", f"/api/task/info/{'0' * 8}"]


@pytest.fixture
def flower(tmp_path: Path, broker_redis: RedisServer) -> Iterator[Flower]:
    server = Flower(tmp_path, worker_env(broker_redis.url)).start()
    try:
        yield server
    finally:
        server.stop()


def _poll(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"{check.__doc__} not seen within {timeout}s")


def _submit(broker: RedisServer) -> str:
    settings = load_settings(broker={"url": broker.url})
    store = JobStore(broker.client(), settings)
    job = submit_job(store, make_client(settings), owner="flower-test",
                     query="What does Flower show about this job?", top_k=3, request_id="flower-1")
    return str(job["id"])


def test_lists_the_worker_and_a_finished_task(
    flower: Flower, broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(worker_env(broker_redis.url), "flowerw").wait_ready()

    def worker_listed() -> bool:
        """the worker in /api/workers"""
        status, body = flower.get("/api/workers?refresh=1")
        return status == 200 and worker.node in body

    _poll(worker_listed)
    job_id = _submit(broker_redis)

    def task_succeeded() -> list[dict[str, Any]]:
        """the task, succeeded, in /api/tasks"""
        status, body = flower.get("/api/tasks")
        assert status == 200, body
        return [task for task in body.values()
                if task["state"] == "SUCCESS" and job_id in str(task.get("kwargs"))]

    (task,) = _poll(task_succeeded)
    assert task["name"] == "ragq.generate"
    assert task["worker"] == worker.node


@pytest.mark.parametrize("path", PROTECTED)
def test_refuses_requests_without_credentials(flower: Flower, path: str) -> None:
    status, _ = flower.get(path, credentials=None)
    assert status == 401
    assert flower.get(path, credentials=(USER, "wrong-password"))[0] == 401
