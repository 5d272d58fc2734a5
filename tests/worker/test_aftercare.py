"""After a job succeeds, a real worker charges the breaker, records the job's duration and
caches the answer under the embedding the submitter passed along."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from shared import keys
from shared.breaker import Breaker
from shared.cache import JOB_EMBEDDING_FIELD, SemanticCache, encode_vector, scope_for
from shared.jobs import JobStore
from shared.settings import load_settings
from shared.tasks import make_client, submit_job
from shared.workers import pipeline_info
from tests.support.celery import start_worker, worker_env
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

QUESTION = "What does the fake pipeline answer?"


class _FixedEmbedder:
    """Exact lookups need no embedding; this one only fills the interface."""

    model_id, dim = "fixed", 8

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.tile(np.eye(8, dtype=np.float32)[0], (len(texts), 1))

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def _wait_until_cached(cache_redis: RedisServer, entries: int = 1) -> None:
    deadline = time.monotonic() + 10
    while cache_redis.client().xlen(keys.CACHE_LOG) < entries:
        assert time.monotonic() < deadline, "the answer was not cached within 10 s"
        time.sleep(0.02)


def test_success_charges_records_and_caches(
    broker_redis: RedisServer, cache_redis: RedisServer, tmp_path: Path
) -> None:
    env = worker_env(broker_redis.url, CACHE_REDIS_URL=cache_redis.url)
    worker = start_worker(env, tmp_path, "w1").wait_ready()
    try:
        settings = load_settings(
            broker={"url": broker_redis.url}, cache={"redis_url": cache_redis.url}
        )
        store = JobStore(broker_redis.client(), settings)
        vector = np.eye(8, dtype=np.float32)[0]
        job = submit_job(
            store,
            make_client(settings),
            owner="alice",
            query=QUESTION,
            top_k=2,
            request_id=f"req-{uuid.uuid4().hex[:8]}",
            internal={JOB_EMBEDDING_FIELD: encode_vector(vector)},
        )
        assert JOB_EMBEDDING_FIELD not in job
        record = store.wait_final(job["id"], 30.0)
        assert record is not None and record["status"] == "succeeded"
        _wait_until_cached(cache_redis)  # the hook runs just after the record turns final
        spend = Breaker(broker_redis.client(), settings.breaker).state()["spend_eur"]
        assert spend == pytest.approx(record["metrics"]["cost_eur"], abs=1e-6)
        durations = broker_redis.client().lrange(keys.RECENT_DURATIONS, 0, -1)
        assert len(durations) == 1 and float(durations[0]) > 0
        scope = scope_for(pipeline_info(broker_redis.client()), 2)
        cache = SemanticCache(settings.cache, _FixedEmbedder(), cache_redis.url, verifier=None)
        hit = cache.lookup(QUESTION, scope)
        assert hit.hit and hit.path == "exact"
        assert hit.payload == record["result"]
        assert not cache.lookup(QUESTION, scope_for(pipeline_info(broker_redis.client()), 3)).hit
    finally:
        worker.stop()
