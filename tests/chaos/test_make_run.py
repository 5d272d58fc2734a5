"""`make run`'s runner (scripts/run.sh: honcho + Procfile) end to end, with the fake pipeline:
its own redis-servers, a worker that comes back after a crash, and nothing left after Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.gunicorn import REPO
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

READY_LINE = "ragq is ready at"
WAIT = 90.0


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.api_port = free_port()
        self.log_path = tmp / "run.log"
        self.env = {
            **os.environ, "API_PORT": str(self.api_port), "FLOWER_PORT": str(free_port()),
            "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
            "CACHE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "PIPELINE_BACKEND": "fake", "PIPELINE_FAKE_TOKEN_DELAY": "0.01",
            "WORKER_METRICS_PORT": "0", "WORKER_HEARTBEAT_SECONDS": "0.5", "API_WORKERS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), "RAGQ_RUN_DIR": str(tmp / "run"),
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(["bash", "scripts/run.sh"], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.api_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, after: int = 0) -> None:
        deadline = time.monotonic() + WAIT
        while text not in self.log()[after:]:
            assert self.process.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.2)

    def descendants(self) -> list[psutil.Process]:
        """Every process of the stack (honcho starts each line in a session of its own)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the terminal's process group (run.sh and honcho)."""
        os.killpg(self.process.pid, signal.SIGINT)

    def kill_all(self) -> None:
        for process in self.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    started = Runner(tmp_path)
    stack: list[psutil.Process] = []
    try:
        started.wait_for(READY_LINE)
        stack = started.descendants()
        yield started
    finally:
        started.kill_all()
        for process in stack:  # a leftover is killed here, and the test has failed already
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def celery_parent(runner: Runner) -> psutil.Process | None:
    """The Celery worker's main process (the respawn loop's child), if one runs now."""
    for process in runner.descendants():
        parent = process.parent()
        if parent is not None and "respawn" in " ".join(parent.cmdline()):
            return process
    return None


def test_run_serves_restarts_the_worker_and_stops_cleanly(runner: Runner) -> None:
    assert "curl -s" in runner.log()
    answer = requests.post(f"{runner.url}/v1/jobs", json={"query": "what is a runner?"},
                           headers={"Prefer": "wait=30"}, timeout=40)
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    # Tokens are counted by the worker, on its own port: the web's /metrics must not show them
    # too, or anyone scraping both counts them twice.
    web_metrics = requests.get(f"{runner.url}/metrics", timeout=10).text
    assert not re.search(r"^rag_tokens_generated_total [1-9]", web_metrics, re.MULTILINE)
    stack = runner.descendants()
    assert any("redis-server" in p.name() for p in stack)

    crashed = celery_parent(runner)
    assert crashed is not None
    mark = len(runner.log())
    crashed.kill()
    runner.wait_for("respawn: 'celery' exited", mark)
    deadline = time.monotonic() + WAIT
    while getattr(celery_parent(runner), "pid", crashed.pid) == crashed.pid or requests.post(
            f"{runner.url}/v1/jobs", json={"query": "and after a crash?"},
            headers={"Prefer": "wait=10"}, timeout=20).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, runner.log()[-3000:]
        time.sleep(0.5)

    stack = runner.descendants()
    runner.interrupt()
    runner.process.wait(timeout=WAIT)
    gone, alive = psutil.wait_procs(stack, timeout=WAIT)
    assert not alive, [p.cmdline() for p in alive]
