"""Admission on the submit path against real redis-servers: a refusal costs no embedding, and
concurrent submissions never queue past the limit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from flask import Flask

from shared import keys
from shared.cache import scope_for
from tests.support.servers import RedisServer
from tests.web.conftest import problem_of
from web import resources

pytestmark = pytest.mark.integration

DIM = 8


def unit_vector(text: str) -> np.ndarray:
    """A unit vector of its own for each text (no two texts are alike)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


class CountingEmbedder:
    """An embedder that counts the texts it embeds (the cost a refusal must not pay)."""

    model_id = "counting"
    dim = DIM

    def __init__(self) -> None:
        self.texts = 0

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.texts += len(texts)
        return np.stack([unit_vector(text) for text in texts])

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    fake = CountingEmbedder()
    monkeypatch.setattr(resources, "shared_embedder", lambda *_: fake)
    return fake


def test_a_refused_question_is_never_embedded_and_exact_repeats_still_answer(
    make_app: Callable[..., Flask], broker_redis: RedisServer, cache_redis: RedisServer,
    embedder: CountingEmbedder,
) -> None:
    app = make_app(broker={"url": broker_redis.url}, api={"max_queue_depth": 2},
                   cache={"redis_url": cache_redis.url, "verify": False})
    with app.app_context():
        cache = resources.resources().cache
        cache.store("What is ragq?", scope_for({}, 3), unit_vector("What is ragq?"),
                    {"answer": "A job system.", "sources": []})  # auth off: one tenant
    broker_redis.client().zadd(keys.QUEUED, {f"queued-{n}": float(n) for n in range(3)})
    client = app.test_client()

    refused = client.post("/v1/jobs", json={"query": "Who wrote the worker?"})

    body = problem_of(refused, 429)
    assert body["type"] == "/problems/queue-full" and refused.headers["Retry-After"]
    assert embedder.texts == 0
    repeat = client.post("/v1/jobs", json={"query": "what is ragq"})
    assert repeat.status_code == 200 and repeat.get_json()["cached"] is True


def test_concurrent_submissions_never_queue_past_the_limit(
    make_app: Callable[..., Flask], broker_redis: RedisServer
) -> None:
    app = make_app(broker={"url": broker_redis.url}, api={"max_queue_depth": 5},
                   cache={"enabled": False})

    def post(n: int) -> int:
        return app.test_client().post("/v1/jobs", json={"query": f"question {n}"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(40)))

    assert statuses.count(202) == 5 and statuses.count(429) == 35
    assert broker_redis.client().zcard(keys.QUEUED) == 5
