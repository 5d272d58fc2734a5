"""A real worker's answered job: the answer is cached and the job's duration recorded before the
job turns succeeded, and the final status settles the breaker reservation the web made."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from shared import keys
from shared.breaker import RESERVED_FIELD, WINDOW_FIELD, Breaker
from shared.cache import JOB_EMBEDDING_FIELD, encode_vector, scope_for
from shared.events import read_events, replay
from shared.jobs import JobStore
from shared.settings import Settings, load_settings
from shared.tasks import make_client
from shared.workers import pipeline_info
from tests.support.celery import start_worker, worker_env
from tests.support.servers import RedisServer, free_port
from web.semantic_cache import SemanticCache
from web.submit import submit_job
from worker.aftercare import Aftercare

QUESTION = "What does the fake pipeline answer?"
RESERVED = 0.5
WAIT = 30.0


class _FixedEmbedder:
    """Exact lookups need no embedding; this one only fills the interface."""

    model_id, dim = "fixed", 8

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.tile(np.eye(8, dtype=np.float32)[0], (len(texts), 1))

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@dataclass
class Stack:
    broker: RedisServer
    cache: RedisServer
    settings: Settings

    @property
    def store(self) -> JobStore:
        return JobStore(self.broker.client(), self.settings)

    @property
    def breaker(self) -> Breaker:
        return Breaker(self.broker.client(), self.settings.breaker)

    def submit(self, query: str) -> str:
        """A job submitted as the web does: its estimate reserved, the query embedding along."""
        window = self.breaker.window_start()
        self.breaker.check(reserve_eur=RESERVED)
        internal = {RESERVED_FIELD: repr(RESERVED), WINDOW_FIELD: str(window),
                    JOB_EMBEDDING_FIELD: encode_vector(np.eye(8, dtype=np.float32)[0])}
        job = submit_job(self.store, make_client(self.settings), owner="alice", query=query,
                         top_k=2, request_id=f"req-{uuid.uuid4().hex[:8]}", internal=internal)
        assert JOB_EMBEDDING_FIELD not in job and RESERVED_FIELD not in job
        return str(job["id"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("aftercare")
    broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
    cache = RedisServer(root / "cache", "--maxmemory", "64mb",
                        "--maxmemory-policy", "allkeys-lru").start()
    env = worker_env(broker.url, CACHE_REDIS_URL=cache.url, PIPELINE_FAKE_TOKEN_DELAY="0.05",
                     CB_WINDOW_SECONDS="3600")
    worker = start_worker(env, root, "w1")
    try:
        worker.wait_ready()
        settings = load_settings(broker={"url": broker.url}, cache={"redis_url": cache.url},
                                 breaker={"window_seconds": 3600})
        yield Stack(broker, cache, settings)
    finally:
        worker.stop()
        broker.stop()
        cache.stop()


@pytest.mark.integration
@pytest.mark.parametrize("question", [QUESTION, "Is the answer cached before done?",
                                      "What does a third repeat find?"])
def test_the_answer_is_cached_before_the_job_turns_succeeded(stack: Stack, question: str) -> None:
    cache = SemanticCache(stack.settings.cache, _FixedEmbedder(), stack.cache.url, verifier=None)
    scope = scope_for(pipeline_info(stack.broker.client()), 2)
    before = stack.breaker.state()["spend_eur"]
    job_id = stack.submit(question)
    for event in read_events(stack.broker.client(), job_id):
        if event["type"] == "done":
            hit = cache.lookup(question, scope)  # the moment done arrives: no waiting
    record = event["job"]
    assert record["status"] == "succeeded"
    assert hit.hit and hit.path == "exact" and hit.payload == record["result"]
    assert not cache.lookup(question, scope_for(pipeline_info(stack.broker.client()), 3)).hit
    durations = stack.broker.client().lrange(keys.RECENT_DURATIONS, 0, 0)
    assert float(durations[0]) > 0
    assert stack.breaker.state()["spend_eur"] - before == pytest.approx(
        record["metrics"]["cost_eur"])  # the reservation replaced by the job's cost


@pytest.mark.integration
def test_a_cancelled_job_is_charged_its_partial_cost(stack: Stack) -> None:
    before = stack.breaker.state()["spend_eur"]
    job_id = stack.submit("Which question gets cancelled half way?")
    deadline = time.monotonic() + WAIT
    while not any(event["type"] == "token" for event in replay(stack.broker.client(), job_id)):
        assert time.monotonic() < deadline, "no token within the wait"
        time.sleep(0.02)
    stack.store.cancel(job_id, "alice")
    record = stack.store.wait_final(job_id, WAIT)
    assert record is not None and record["status"] == "cancelled"
    cost = record["metrics"]["cost_eur"]
    assert 0 < record["metrics"]["generated_tokens"] < 20 and cost > 0
    assert stack.breaker.state()["spend_eur"] - before == pytest.approx(cost)


def test_aftercare_never_raises_when_neither_redis_answers() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings(broker={"url": closed}, cache={"redis_url": closed})
    broker = redis.Redis.from_url(closed, decode_responses=True, socket_connect_timeout=0.5)
    aftercare = Aftercare(settings, broker, {"index_version": "i", "model_id": "m",
                                             "prompt_version": "p"})
    before = REGISTRY.get_sample_value("rag_errors_total", {"type": "aftercare"}) or 0.0
    record = {"id": str(uuid.uuid4()), "started_at": time.time(), "query": QUESTION, "top_k": 2}
    aftercare(record, {"answer": "an answer", "sources": []})  # returns: the job goes on to done
    assert REGISTRY.get_sample_value("rag_errors_total", {"type": "aftercare"}) == before + 1


@pytest.mark.integration
@pytest.mark.parametrize(("finish_reason", "answer", "skipped"), [
    ("loop", "It repeats. It repeats. It repeats.", "loop"),
    ("length", "An answer cut off in the midd", "length"),
    ("stop", "   ", "empty"),
])
def test_an_answer_the_model_did_not_end_well_is_never_cached(
    stack: Stack, finish_reason: str, answer: str, skipped: str
) -> None:
    # A scope of its own per case: the fixed embedder makes every question a semantic match.
    info = {"index_version": f"i-{finish_reason}-{skipped}", "model_id": "m", "prompt_version": "p"}
    aftercare = Aftercare(stack.settings, stack.broker.client(), info)
    job_id = str(uuid.uuid4())
    vector = np.eye(8, dtype=np.float32)[0]
    stack.broker.client().hset(keys.job(job_id), JOB_EMBEDDING_FIELD, encode_vector(vector))
    question = f"Which answer is kept out when it ends with {finish_reason}?"
    record = {"id": job_id, "started_at": time.time(), "query": question, "top_k": 2}
    labels = {"reason": skipped}
    before = REGISTRY.get_sample_value("rag_cache_writes_skipped_total", labels) or 0.0
    aftercare(record, {"answer": answer, "sources": [], "finish_reason": finish_reason})
    cache = SemanticCache(stack.settings.cache, _FixedEmbedder(), stack.cache.url, verifier=None)
    assert not cache.lookup(question, scope_for(info, 2)).hit
    assert REGISTRY.get_sample_value("rag_cache_writes_skipped_total", labels) == before + 1
    aftercare(record, {"answer": "A good answer [1].", "sources": [], "finish_reason": "stop"})
    assert cache.lookup(question, scope_for(info, 2)).hit  # the same job, ended well: cached
