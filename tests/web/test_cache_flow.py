"""The cache, breaker and single-flight through a real gunicorn, a real Celery worker (fake
pipeline) and real redis-servers. The tests run in order on one stack: the first job's answer
is what the later ones find in the cache. A cache hit is a job record like any other (GET,
listing, batch links, stream); the web's JSON log lines are read from gunicorn's output."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from shared import keys
from shared.breaker import Breaker
from shared.settings import BreakerSettings
from tests.support.celery import WorkerProcess, start_worker, worker_env
from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

KEY = "cache-flow-key"
OTHER_KEY = "cache-flow-other-key"
QUESTION = "How tall is the Eiffel Tower in Paris?"
PARAPHRASE = "How tall is Paris's Eiffel Tower?"
WAIT = 60.0


class Stack:
    def __init__(self, broker: RedisServer, cache: RedisServer, web: GunicornServer) -> None:
        self.broker, self.cache, self.web = broker, cache, web
        self.first_job: dict[str, Any] = {}
        self.costs: list[float] = []  # of the jobs that ran, for the breaker's spend

    def post(self, path: str, query: str, **headers: str) -> requests.Response:
        return requests.post(
            self.web.url + path, json={"query": query}, headers={"X-API-Key": KEY, **headers},
            timeout=WAIT,
        )

    def get(self, path: str, key: str = KEY) -> requests.Response:
        return requests.get(self.web.url + path, headers={"X-API-Key": key}, timeout=WAIT)

    def events(self, stream_url: str) -> list[dict[str, Any]]:
        """Every event of a job's WebSocket until the server closes it."""
        ws = websocket.create_connection(stream_url, header=[f"X-API-Key: {KEY}"], timeout=WAIT)
        found: list[dict[str, Any]] = []
        try:
            while message := ws.recv():
                found.append(json.loads(message))
        except websocket.WebSocketConnectionClosedException:
            pass
        ws.shutdown()  # the server closed: drop TCP at once, as browsers do (docs/api.md)
        return found

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines gunicorn's workers wrote (its own banner lines are plain text)."""
        lines = self.web.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

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
            "AUTH_API_KEYS": f"{KEY},{OTHER_KEY}",
            "API_HEALTH_DETAIL": "true",  # the breaker's spend and the cache's counts
            "CB_WINDOW_SECONDS": "3600",
            "LOG_LEVEL": "INFO",
            "LOG_JSON_FORMAT": "true",
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
    stack.costs.append(job["metrics"]["cost_eur"])
    assert stack.cache.client().xlen(keys.CACHE_LOG) == 1  # cached before the job turned final


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
    assert body["metrics"]["cached"] is True and body["metrics"]["cost_eur"] == 0.0
    assert body["id"] != stack.first_job["id"]
    assert response.headers["Location"] == body["links"]["self"] == f"/v1/jobs/{body['id']}"
    answer = stack.post("/query", QUESTION)
    assert answer.status_code == 200 and answer.json()["cached"] is True
    assert answer.json()["answer"] == stack.first_job["result"]["answer"]
    assert stack.get(f"/v1/jobs/{answer.json()['job_id']}").json()["cached"] is True


def test_a_cache_hit_is_a_job_of_the_callers(stack: Stack) -> None:
    hit = stack.post("/v1/jobs", QUESTION).json()
    stored = stack.get(hit["links"]["self"])
    assert stored.status_code == 200 and stored.json() == hit
    assert stack.get(hit["links"]["self"], OTHER_KEY).status_code == 404
    assert hit["id"] in [job["id"] for job in stack.get("/v1/jobs?limit=5").json()["jobs"]]
    events = stack.events(hit["links"]["stream"])
    assert [(event["seq"], event["type"]) for event in events] == [(1, "status"), (2, "done")]
    assert events[0]["status"] == "succeeded"
    assert events[1]["job"] == {name: value for name, value in hit.items() if name != "links"}
    queries = {"queries": [QUESTION, QUESTION.upper()]}  # exact hits both
    batch = requests.post(stack.web.url + "/v1/batch", json=queries, headers={"X-API-Key": KEY},
                          timeout=WAIT).json()["jobs"]
    assert [job["cached"] for job in batch] == [True, True]
    for job in batch:
        assert stack.get(job["links"]["self"]).json()["status"] == "succeeded"


def test_a_repeat_right_after_done_is_a_hit(stack: Stack) -> None:
    question = "How old is the Eiffel Tower today?"
    job = stack.post("/v1/jobs", question).json()
    assert job["status"] in ("queued", "running")
    events = stack.events(job["links"]["stream"])
    assert events[-1]["type"] == "done" and events[-1]["job"]["status"] == "succeeded"
    repeat = stack.post("/v1/jobs", question)  # the moment done arrived
    assert repeat.status_code == 200 and repeat.json()["cached"] is True, repeat.text
    assert repeat.json()["result"] == events[-1]["job"]["result"]
    stack.costs.append(events[-1]["job"]["metrics"]["cost_eur"])


def test_one_info_line_per_job_with_its_ids_and_no_question_or_key(stack: Stack) -> None:
    hit = stack.post("/v1/jobs", QUESTION, **{"X-Request-ID": "log-hit-1"}).json()
    lines = stack.log_lines()
    first = [line for line in lines if line.get("job_id") == stack.first_job["id"]]
    assert [line["message"] for line in first].count("job queued") == 1
    assert [line["message"] for line in first].count("job attached") == 19
    top_k = stack.first_job["top_k"]
    assert all(line["request_id"] and line["top_k"] == top_k for line in first
               if line["message"] != "stream ended")
    hits = [line for line in lines if line["message"] == "cache hit"
            and line.get("request_id") == "log-hit-1"]
    assert [(line["job_id"], line["level"]) for line in hits] == [(hit["id"], "INFO")]
    assert any(line["message"] == "stream ended" and line.get("job_id") for line in lines)
    text = stack.web.log_path.read_text(errors="replace")
    for secret in (KEY, OTHER_KEY, QUESTION, PARAPHRASE):
        assert secret not in text, f"{secret!r} logged"


def test_paraphrase_is_answered_from_the_cache(stack: Stack) -> None:
    body = stack.post("/v1/jobs", PARAPHRASE).json()
    assert body["cached"] is True and body["cache_path"] == "semantic"
    assert body["cached_question"] == QUESTION and 0.85 <= body["similarity"] < 1.0
    assert body["result"] == stack.first_job["result"]


def test_breaker_charged_by_the_worker_and_open_breaker_refuses_misses(stack: Stack) -> None:
    breaker = Breaker(stack.broker.client(), BreakerSettings(window_seconds=3600))
    spent = breaker.state()["spend_eur"]
    assert spent == pytest.approx(sum(stack.costs), abs=1e-6)  # reservations all settled
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
