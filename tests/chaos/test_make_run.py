"""`make run` (scripts/run.sh, supervisord) end to end with the fake pipeline: its own
redis-servers, any process that dies started again, Ctrl-C stopping the stack in order (the
running job finishes, Redis stops last) with nothing left behind, and a second `make run` that
cannot own its ports refusing to start without touching the first."""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from tests.chaos.conftest import apart_env, events, job, ran_once, submit, wait_status
from tests.support.make_run import READY_LINE, WAIT, MakeRun, stack_env
from tests.support.servers import RedisServer

# Two stack starts and a warm shutdown fit in pytest-timeout's 300 s on a quiet machine, not on
# 2 shared cores under `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]


def redis_port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


def redis_process(stack: MakeRun, url: str) -> psutil.Process | None:
    """The stack's redis-server on `url`'s port (its title is `redis-server host:port`)."""
    return stack.find("redis-server", f":{redis_port(url)}")


def celery_parent(stack: MakeRun) -> psutil.Process | None:
    """The Celery worker's main process, if one runs now."""
    return stack.find("celery", "worker", "-Q")


def killed_and_replaced(stack: MakeRun, find: Callable[[], psutil.Process | None]) -> None:
    """SIGKILL the process `find` returns; wait until supervisord has started another."""
    killed = find()
    assert killed is not None
    killed.kill()
    deadline = time.monotonic() + WAIT
    while (back := find()) is None or back.pid == killed.pid:
        assert stack.process.poll() is None, stack.log()[-3000:]
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.2)


def test_run_serves_starts_again_whatever_dies_and_stops_cleanly(
        make_run: Callable[..., MakeRun], tmp_path: Path) -> None:
    stack = make_run(tmp_path).wait_ready()
    assert "curl -s" in stack.log()
    before = requests.post(f"{stack.url}/v1/jobs", json={"query": "what is a runner?"},
                           headers={"Prefer": "wait=30"}, timeout=40)
    assert before.status_code == 200 and before.json()["status"] == "succeeded"
    # Tokens are counted by the worker, on its own port: the web's /metrics must not show them
    # too, or anyone scraping both counts them twice.
    web_metrics = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert not re.search(r"^rag_tokens_generated_total [1-9]", web_metrics, re.MULTILINE)

    web = stack.find("bin/gunicorn")
    for url in (stack.env["BROKER_URL"], stack.env["CACHE_REDIS_URL"]):
        killed_and_replaced(stack, functools.partial(redis_process, stack, url))
    assert stack.find("bin/gunicorn") == web  # the rest kept running
    assert job(stack, before.json()["id"])["status"] == "succeeded"  # from the broker's AOF
    killed_and_replaced(stack, lambda: celery_parent(stack))
    # gunicorn's arbiter SIGKILLed: its orphaned workers leave (their parent changed) and the
    # new arbiter binds the port once they have
    arbiter = stack.find("bin/gunicorn")
    assert arbiter is not None
    orphans = arbiter.children()
    killed_and_replaced(stack, functools.partial(stack.find, "bin/gunicorn"))
    assert not psutil.wait_procs(orphans, timeout=WAIT)[1]
    deadline = time.monotonic() + WAIT
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{stack.url}/health/ready", timeout=10).status_code == 200:
                break
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.5)
    after = submit(stack, "after the crashes")
    assert wait_status(stack, after, {"succeeded", "failed"})["status"] == "succeeded"

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
    broker_port = redis_port(first.env["BROKER_URL"])
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


@pytest.mark.parametrize("mode", ["supervised", "apart"])
def test_ctrl_c_stops_in_order_and_a_restart_runs_what_was_queued(
        make_run: Callable[..., MakeRun], tmp_path: Path, mode: str,
        redis_servers: dict[str, RedisServer]) -> None:
    env = stack_env(tmp_path, PIPELINE_FAKE_TOKEN_DELAY="0.1", PIPELINE_FAKE_TOKENS="30",
                    CACHE_ENABLED="false", **(apart_env(redis_servers) if mode == "apart" else {}))
    stack = make_run(tmp_path / "first", env).wait_ready()
    jobs = [submit(stack, f"job {i} before Ctrl-C") for i in range(4)]
    wait_status(stack, jobs[0], {"running"})
    while not any(event["type"] == "token" for event in events(stack, jobs[0])):
        time.sleep(0.05)

    stack.interrupt()
    alive = stack.wait_stopped()
    assert not alive, [p.cmdline() for p in alive]
    log = stack.log()
    assert "Couldn't reject" not in log and "ConnectionError" not in log
    if mode == "supervised":
        order = [log.index(f"stopped: {name}") for name in ("web", "worker", "broker")]
        assert order == sorted(order), log[-3000:]  # web, then the worker, Redis last
    else:  # Redis that the stack does not own is left running
        assert all(server.client().ping() for server in redis_servers.values())

    again = make_run(tmp_path / "again", env).wait_ready()
    for job_id in jobs:
        wait_status(again, job_id, {"succeeded"})
    # The running job finished during the warm shutdown (not run again as attempt 2); the
    # queued ones waited in the broker (its AOF) and ran once each after the restart.
    assert [job(again, job_id)["attempt"] for job_id in jobs] == [1, 1, 1, 1]
    assert all(ran_once(again, job_id) for job_id in jobs)
