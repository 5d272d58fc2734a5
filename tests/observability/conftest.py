"""A running ragq for the observability tests: both Redis roles, a real Celery worker, gunicorn.

The worker serves the fake pipeline: these tests are about what operators see (metrics,
Flower, logs), not about answers, and the fake keeps a job to a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.celery import WorkerProcess, start_ingest_worker, start_worker, worker_env
from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer, free_port

API_KEY = "obs-test-key-7f3a"
GUNICORN_WORKERS = 2


@dataclass
class Stack:
    web: GunicornServer
    worker: WorkerProcess
    broker: RedisServer
    cache: RedisServer
    metrics_port: int
    ingest: WorkerProcess
    ingest_metrics_port: int

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, Any]]:
        """POST JSON with the test's API key; (status, JSON body)."""
        request = urllib.request.Request(
            f"{self.web.url}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def get_json(self, path: str) -> dict[str, Any]:
        """GET with the test's API key; the JSON body."""
        request = urllib.request.Request(f"{self.web.url}{path}", headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))

    def get(self, path: str) -> int:
        """GET without a key; the status."""
        try:
            with urllib.request.urlopen(f"{self.web.url}{path}", timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /health/ready answers 200: a worker is online with its pipeline loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # a busy machine's slow answer: ask again
                if self.get("/health/ready") == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"not ready after {timeout}s; worker log: {self.worker.log_tail()}")


def stack_env(broker: RedisServer, cache: RedisServer, metrics_port: int,
              collections: Path | None = None, ingest_metrics_port: int = 0) -> dict[str, str]:
    """The settings web and workers share in these tests (the fake pipeline's among them)."""
    extra = {"COLLECTIONS_DIR": str(collections)} if collections else {}
    return worker_env(
        broker.url, CACHE_REDIS_URL=cache.url, AUTH_ENABLED="true", AUTH_API_KEYS=API_KEY,
        PIPELINE_FAKE_TOKENS="5", WORKER_METRICS_PORT=str(metrics_port), LOG_LEVEL="INFO",
        LOG_JSON_FORMAT="true", COLLECTIONS_METRICS_PORT=str(ingest_metrics_port), **extra,
    )


@pytest.fixture
def stack(tmp_path: Path, broker_redis: RedisServer, cache_redis: RedisServer) -> Iterator[Stack]:
    metrics_port, ingest_metrics_port = free_port(), free_port()
    env = stack_env(broker_redis, cache_redis, metrics_port, tmp_path / "collections",
                    ingest_metrics_port)
    worker = start_worker(env, tmp_path, "obs")
    ingest = start_ingest_worker(env, tmp_path)
    web = GunicornServer(tmp_path / "web", env=env, workers=GUNICORN_WORKERS)
    try:
        worker.wait_ready()
        web.start(timeout=120)
        running = Stack(web, worker, broker_redis, cache_redis, metrics_port, ingest,
                        ingest_metrics_port)
        running.wait_ready()
        yield running
    finally:
        web.stop()
        ingest.stop()
        worker.stop()
