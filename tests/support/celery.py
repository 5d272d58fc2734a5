"""Real Celery worker processes for tests and benches.

    env = worker_env(broker.url, PIPELINE_FAKE_TOKEN_DELAY="0.01")
    worker = start_worker(env, tmp_path, "w1").wait_ready()
    ...
    worker.stop()   # or worker.kill() (SIGKILL parent and child), worker.kill_child()

The `worker_factory` fixture starts as many as a test needs and kills them all afterwards,
even when the test fails. Import it into a test module to use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.workers import INGEST, list_workers

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_HOST = "ragq-test"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0

FAKE_WORKER_ENV = {
    "PIPELINE_BACKEND": "fake",
    "PIPELINE_FAKE_TOKEN_DELAY": "0.01",
    "PIPELINE_FAKE_TOKENS": "20",
    "JOBS_LEASE_SECONDS": "1.0",
    "WORKER_METRICS_PORT": "0",
    "WORKER_HEARTBEAT_SECONDS": "0.5",
    "LOG_LEVEL": "INFO",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def worker_env(broker_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a worker on `broker_url`: fake pipeline, short lease, no metrics port."""
    return {**os.environ, **FAKE_WORKER_ENV, "BROKER_URL": broker_url, **overrides}


class WorkerProcess:
    """A `celery worker` (prefork, concurrency 1) in its own process group."""

    def __init__(self, process: subprocess.Popen[bytes], node: str, broker_url: str,
                 log_path: Path) -> None:
        self.process = process
        self.node = node
        self.broker_url = broker_url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def report(self) -> dict[str, Any] | None:
        """This worker's live heartbeat (written by its current pool child), if any."""
        with redis.Redis.from_url(self.broker_url, decode_responses=True) as client:
            for report in list_workers(client):
                if report["node"] == self.node and report["parent_pid"] == self.pid:
                    return report
        return None

    def wait_ready(
        self, timeout: float = READY_TIMEOUT, not_child: int | None = None
    ) -> WorkerProcess:
        """Block until a pool child has loaded the pipeline, or for an ingest worker its
        embedder (and is not `not_child`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.node} exited: {self.log_tail()}")
            report = self.report()
            loaded = report and (report["pipeline_loaded"] or report["role"] == INGEST)
            if loaded and report["pid"] != not_child:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.node} not ready after {timeout}s: {self.log_tail()}")

    def child_pid(self) -> int:
        report = self.report()
        if report is None or report["pid"] is None:
            raise RuntimeError(f"worker {self.node} has no live pool child")
        return int(report["pid"])

    def kill_child(self) -> int:
        """SIGKILL the pool child (a crash in native model code); the parent forks a new one."""
        pid = self.child_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill(self) -> None:
        """SIGKILL the parent and its child at once, as when a host dies."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def start_worker(env: dict[str, str], tmp_path: Path, name: str, queue: str = "ragq.generate"
                 ) -> WorkerProcess:
    """Start `celery -A worker.celery_app worker` as node `name@ragq-test`; call wait_ready()."""
    node = f"{name}@{TEST_HOST}"
    log_path = tmp_path / f"worker-{name}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queue,
               "-c", "1", "-P", "prefork", "-n", node, "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-l", "INFO"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProcess(process, node, env["BROKER_URL"], log_path)


def start_ingest_worker(env: dict[str, str], tmp_path: Path, name: str = "ingest"
                        ) -> WorkerProcess:
    """Start `celery -A worker.ingest_app worker` (the collections' ingest queue) as node
    `name@ragq-test`; its heartbeat (role `ingest`) says when it is ready: wait_ready()."""
    node = f"{name}@{TEST_HOST}"
    log_path = tmp_path / f"ingest-{name}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "celery", "-A", "worker.ingest_app", "worker", "-c", "1",
               "-P", "prefork", "-n", node, "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-l", "INFO"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProcess(process, node, env["BROKER_URL"], log_path)

@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real workers: `worker_factory(env, "w1")`; every one is killed after the test."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str, queue: str = "ragq.generate") -> WorkerProcess:
        worker = start_worker(env, tmp_path, name, queue)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
