"""The cache, breaker and single-flight through a real gunicorn, a real Celery worker (fake
pipeline) and real redis-servers. The tests run in order on one stack: the first job's answer
is what the later ones find in the cache."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from shared import keys
from shared.breaker import Breaker
from shared.settings import BreakerSettings
from tests.support.celery import WorkerProcess, start_worker, worker_env
from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

KEY = "cache-flow-key"
QUESTION = "How tall is the Eiffel Tower in Paris?"
PARAPHRASE = "How tall is Paris's Eiffel Tower?"
WAIT = 60.0


class Stack:
    def __init__(self, broker: RedisServer, cache: RedisServer, web: GunicornServer) -> None:
        self.broker, self.cache, self.web = broker, cache, web
        self.first_job: dict[str, Any] = {}

    def post(self, path: str, query: str) -> requests.Response:
        return requests.post(
            self.web.url + path, json={"query": query}, headers={"X-API-Key": KEY}, timeout=WAIT
        )

    def final(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            job = requests.get(
                f"{self.web.url}/v1/jobs/{job_id}", headers={"X-API-Key": KEY}, timeout=WAIT
            ).json()
            if job["status"] not in ("queued", "running"):
                return dict(job)
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not final after {WAIT}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("cache-flow")
    broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
    cache = RedisServer(
        root / "cache", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"
    ).start()
    web = GunicornServer(
        root / "web",
        env={
            "BROKER_URL": broker.url,
            "CACHE_REDIS_URL": cache.url,
            "AUTH_ENABLED": "true",
            "AUTH_API_KEYS": KEY,
            "CB_WINDOW_SECONDS": "3600",
            "API_MAX_QUEUE_DEPTH": "3",
            "API_QUERY_WAIT_SECONDS": "30",
        },
    )
    worker: WorkerProcess | None = None
    try:
        web.start()
        env = worker_env(broker.url, CACHE_REDIS_URL=cache.url, PIPELINE_FAKE_TOKENS="8")
        worker = start_worker(env, root, "cache1").wait_ready()
        yield Stack(broker, cache, web)
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
        broker.stop()
        cache.stop()


def test_twenty_concurrent_identical_misses_share_one_job(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: stack.post("/v1/jobs", QUESTION), range(20)))
    assert {response.status_code for response in responses} == {202}
    ids = {response.json()["id"] for response in responses}
    assert len(ids) == 1
    job = stack.final(ids.pop())
    assert job["status"] == "succeeded" and job["result"]["answer"]
    stack.first_job = job
    deadline = time.monotonic() + 10  # the worker caches the answer just after the job is final
    while stack.cache.client().xlen(keys.CACHE_LOG) < 1:
        assert time.monotonic() < deadline, "the answer was not cached within 10 s"
        time.sleep(0.02)


def test_exact_repeat_is_answered_from_the_cache(stack: Stack) -> None:
    response = stack.post("/v1/jobs", "  how tall is the eiffel tower in paris ")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["cached"] is True
    assert (body["cache_path"], body["similarity"], body["cached_question"]) == (
        "exact",
        1.0,
        QUESTION,
    )
    assert body["result"] == stack.first_job["result"]
    assert body["metrics"]["cached"] is True
    answer = stack.post("/query", QUESTION)
    assert answer.status_code == 200 and answer.json()["cached"] is True
    assert answer.json()["answer"] == stack.first_job["result"]["answer"]


def test_paraphrase_is_answered_from_the_cache(stack: Stack) -> None:
    body = stack.post("/v1/jobs", PARAPHRASE).json()
    assert body["cached"] is True and body["cache_path"] == "semantic"
    assert body["cached_question"] == QUESTION and 0.85 <= body["similarity"] < 1.0
    assert body["result"] == stack.first_job["result"]


def test_breaker_charged_by_the_worker_and_open_breaker_refuses_misses(stack: Stack) -> None:
    breaker = Breaker(stack.broker.client(), BreakerSettings(window_seconds=3600))
    spent = breaker.state()["spend_eur"]
    assert spent == pytest.approx(stack.first_job["metrics"]["cost_eur"], abs=1e-6)
    breaker.charge(breaker.settings.limit_eur)
    try:
        refused = stack.post("/v1/jobs", "Who designed the Eiffel Tower?")
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert abs(retry_after - breaker.retry_after()) <= 1
        assert "cost limit" in refused.json()["detail"]
        assert stack.post("/v1/jobs", QUESTION).status_code == 200  # hits still answer
        stats = requests.get(stack.web.url + "/health/stats", timeout=WAIT).json()
        assert stats["breaker"]["state"] == "open"
        assert stats["cache"]["entries"] >= 1 and stats["cache"]["hits"] >= 3
    finally:
        stack.broker.client().delete(keys.breaker_window(breaker.window_start()))


def test_deep_queue_refuses_misses_with_retry_after_but_hits_answer(stack: Stack) -> None:
    client = stack.broker.client()
    waiting = {f"not-a-job-{n}": time.time() for n in range(4)}
    client.zadd(keys.QUEUED, waiting)
    try:
        refused = stack.post("/v1/jobs", "Who painted the Mona Lisa?")
        assert refused.status_code == 429
        assert refused.json()["title"] == "Too many queued jobs"
        job_seconds = float(client.lindex(keys.RECENT_DURATIONS, 0))
        assert int(refused.headers["Retry-After"]) == max(1, math.ceil(job_seconds * 2))
        assert stack.post("/v1/jobs", QUESTION).status_code == 200
    finally:
        client.zrem(keys.QUEUED, *waiting)


def test_service_answers_while_the_cache_redis_is_down(stack: Stack) -> None:
    stack.cache.stop()
    try:
        response = stack.post("/v1/jobs", QUESTION)
        assert response.status_code == 202, response.text
        assert stack.final(response.json()["id"])["status"] == "succeeded"
    finally:
        stack.cache.start()
    assert stack.post("/v1/jobs", "What is the Eiffel Tower made of?").status_code == 202
