"""`make run` (scripts/run.sh) end to end with the fake pipeline: its own redis-servers, a
worker that comes back after a crash, nothing left after Ctrl-C, and a second `make run` that
cannot own its ports refusing to start without touching the first."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.make_run import READY_LINE, WAIT, MakeRun

pytestmark = pytest.mark.integration


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


def celery_parent(stack: MakeRun) -> psutil.Process | None:
    """The Celery worker's main process (the respawn loop's child), if one runs now."""
    for process in stack.descendants():
        parent = process.parent()
        if parent is not None and "respawn" in " ".join(parent.cmdline()):
            return process
    return None


def test_run_serves_restarts_the_worker_and_stops_cleanly(
        make_run: Callable[..., MakeRun], tmp_path: Path) -> None:
    stack = make_run(tmp_path).wait_ready()
    assert "curl -s" in stack.log()
    answer = requests.post(f"{stack.url}/v1/jobs", json={"query": "what is a runner?"},
                           headers={"Prefer": "wait=30"}, timeout=40)
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    # Tokens are counted by the worker, on its own port: the web's /metrics must not show them
    # too, or anyone scraping both counts them twice.
    web_metrics = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert not re.search(r"^rag_tokens_generated_total [1-9]", web_metrics, re.MULTILINE)
    assert any("redis-server" in p.name() for p in stack.descendants())

    crashed = celery_parent(stack)
    assert crashed is not None
    crashed.kill()
    deadline = time.monotonic() + WAIT
    while getattr(celery_parent(stack), "pid", crashed.pid) == crashed.pid or requests.post(
            f"{stack.url}/v1/jobs", json={"query": "and after a crash?"},
            headers={"Prefer": "wait=10"}, timeout=20).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.5)

    stack.started = stack.descendants()
    stack.interrupt()
    alive = stack.wait_stopped()
    assert not alive, [p.cmdline() for p in alive]


def test_a_second_run_on_ports_in_use_says_which_and_touches_nothing_of_the_first(
        make_run: Callable[..., MakeRun], tmp_path: Path) -> None:
    first = make_run(tmp_path / "first").wait_ready()
    assert requests.get(f"{first.url}/health", timeout=10).status_code == 200
    metrics_dir = first.run_dir / "prometheus-web"
    series = sorted(path.name for path in metrics_dir.iterdir())
    assert series  # the web has written its counters
    web = first.find("bin/gunicorn")
    assert web is not None

    # The same checkout again (its run folder is in use), then another checkout (a run folder
    # of its own) on the same ports: neither may start, and each says why.
    same_checkout = make_run(tmp_path / "again", first.env)
    assert same_checkout.process.wait(timeout=WAIT) != 0
    assert f"already runs from {first.run_dir} (pid {first.process.pid})" in same_checkout.log()

    other_checkout = make_run(tmp_path / "other",
                              {**first.env, "RAGQ_RUN_DIR": str(tmp_path / "other" / "run")})
    assert other_checkout.process.wait(timeout=WAIT) != 0
    refusal = other_checkout.log()
    assert f"port {first.env['API_PORT']} (API_PORT) is in use by pid {web.pid}" in refusal
    assert f"port {first.env['FLOWER_PORT']} (FLOWER_PORT) is in use by pid" in refusal
    broker_port = first.env["BROKER_URL"].rsplit(":", 1)[1].split("/")[0]
    assert f"port {broker_port} (BROKER_URL) is the broker Redis of another make run" in refusal

    for refused in (same_checkout, other_checkout):
        assert READY_LINE not in refused.log()
        assert not refused.descendants()
    assert sorted(path.name for path in metrics_dir.iterdir()) == series
    assert first.find("bin/gunicorn") == web
    assert requests.get(f"{first.url}/health/ready", timeout=10).status_code == 200
    metrics = requests.get(f"{first.url}/metrics", timeout=10).text
    assert re.search(r'^rag_requests_total\{[^}]*endpoint="/health"[^}]*\} [1-9]', metrics,
                     re.MULTILINE), metrics[:2000]
