"""What one API key asks stays its own: the cache's scope by key (CACHE_SHARING), against real
redis-servers, with a bag-of-words embedder so paraphrases meet on the semantic path."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.cache import scope_for, tenant_of
from tests.support.servers import RedisServer
from tests.web.conftest import KEY, OTHER_KEY
from web import resources
from web.auth import owner_of

pytestmark = pytest.mark.integration

DIM = 256
QUESTION = "What does the circuit breaker do for customer ACME-9bc98f account 4242?"
PARAPHRASE = "What does the circuit breaker do for customer ACME-9bc98f account 4242, please?"
ANSWER = {"answer": "It refuses new jobs once the spend reaches the limit.", "sources": []}


class WordsEmbedder:
    """Unit vectors of hashed word counts: texts sharing most words are close."""

    model_id = "words"
    dim = DIM

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.stack([self.encode_one(text) for text in texts])

    def encode_one(self, text: str) -> np.ndarray:
        vector = np.zeros(DIM, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return vector / np.linalg.norm(vector)


@pytest.fixture
def tenant_app(
    make_app: Callable[..., Flask], broker_redis: RedisServer, cache_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], Flask]:
    monkeypatch.setattr(resources, "shared_embedder", lambda *_: WordsEmbedder())

    def make(sharing: str) -> Flask:
        app = make_app(broker={"url": broker_redis.url},
                       auth={"enabled": True, "api_keys": [KEY, OTHER_KEY]},
                       cache={"redis_url": cache_redis.url, "verify": False, "sharing": sharing,
                              "sync_interval_seconds": 0.01})
        with app.app_context():  # KEY asked QUESTION and its answer was cached
            found = resources.resources()
            tenant = tenant_of(found.settings, owner_of(KEY))
            scope = scope_for({}, found.settings.pipeline.top_k, tenant)
            vector = WordsEmbedder().encode_one(QUESTION)
            found.cache.store(QUESTION, scope, vector, ANSWER, owner=owner_of(KEY))
        return app

    return make


def ask(client: FlaskClient, key: str, question: str) -> tuple[int, dict[str, Any]]:
    response = client.post("/v1/jobs", json={"query": question}, headers={"X-API-Key": key})
    return response.status_code, response.get_json()


def test_by_key_another_key_never_hits_nor_learns_the_question(
    tenant_app: Callable[[str], Flask],
) -> None:
    client = tenant_app("key").test_client()
    for question in (QUESTION, PARAPHRASE):
        status, body = ask(client, OTHER_KEY, question)
        assert status == 202 and "cached" not in body, body  # a miss: queued
    status, body = ask(client, KEY, PARAPHRASE)
    assert status == 200 and body["cache_path"] == "semantic"
    assert body["cached_question"] == QUESTION  # its own question


@pytest.mark.parametrize("question", [QUESTION.lower(), PARAPHRASE])
def test_shared_hits_never_show_another_keys_question(
    tenant_app: Callable[[str], Flask], question: str
) -> None:
    client = tenant_app("shared").test_client()
    status, body = ask(client, OTHER_KEY, question)
    assert status == 200 and body["cached"] is True and body["result"] == ANSWER
    assert body["cached_question"] is None
    assert QUESTION not in str(client.get(f"/v1/jobs/{body['id']}",
                                          headers={"X-API-Key": OTHER_KEY}).get_data(as_text=True))
    status, body = ask(client, KEY, question)
    assert status == 200 and body["cached_question"] == QUESTION
