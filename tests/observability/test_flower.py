"""Flower, started as `make run` and compose start it, against the test's broker and a real worker:
its authenticated API lists the worker and a finished task; without credentials it refuses."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import JobStore
from shared.settings import load_settings
from shared.tasks import make_client, submit_job
from tests.support.celery import REPO_ROOT, WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # the fixture
from tests.support.servers import RedisServer, free_port, wait_for_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "ops", "flower-test-secret"
PROTECTED = ["/", "/workers", "/tasks", "/api/workers", "/api/tasks", f"/api/task/info/{'0' * 8}"]


class Flower:
    """`celery -A worker.celery_app flower`, configured by FLOWER_PORT and FLOWER_BASIC_AUTH."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / "flower.log"
        self.env = {**env, "FLOWER_PORT": str(self.port), "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Flower:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=60)
        return self

    def get(self, path: str, credentials: tuple[str, str] | None = (USER, PASSWORD)
            ) -> tuple[int, Any]:
        """(status, body: JSON when it parses, else text)."""
        headers = {}
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


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
