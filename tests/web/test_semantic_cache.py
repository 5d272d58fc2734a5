"""SemanticCache against real redis-servers and the real MiniLM embedder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.cache import Scope
from shared.embedding import Embedder
from shared.metrics import CACHE_ERRORS
from shared.settings import CacheSettings
from tests.support.servers import RedisServer
from web.semantic_cache import EXACT, SEMANTIC, SemanticCache

pytestmark = pytest.mark.integration

SCOPE = Scope(index_version="idx-1", model_id="smollm2", prompt_version="v1", top_k=5)
QUESTION = "How tall is the Eiffel Tower in Paris?"
PARAPHRASE = "How tall is Paris's Eiffel Tower?"
ANSWER = {"answer": "About 330 metres.", "sources": []}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder("minilm")


@pytest.fixture
def make_cache(
    cache_redis: RedisServer, embedder: Embedder
) -> Iterator[Callable[..., SemanticCache]]:
    def make(**overrides: Any) -> SemanticCache:
        settings = CacheSettings(redis_url=cache_redis.url, sync_interval_seconds=0.05, **overrides)
        return SemanticCache(settings, embedder, cache_redis.url)

    yield make


def _errors(op: str) -> float:
    return CACHE_ERRORS.labels(op=op)._value.get()


def test_exact_repeat_hits_without_embedding(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache()
    miss = cache.lookup(QUESTION, SCOPE)
    assert not miss.hit and miss.embedding is not None
    cache.store(QUESTION, SCOPE, miss.embedding, ANSWER)
    hit = cache.lookup("  how TALL is the eiffel tower in paris ", SCOPE)
    assert (hit.hit, hit.path, hit.similarity) == (True, EXACT, 1.0)
    assert hit.payload == ANSWER and hit.question == QUESTION and hit.embedding is None


def test_semantic_hit_and_miss_at_the_threshold_edge(
    make_cache: Callable[..., SemanticCache], embedder: Embedder
) -> None:
    similarity = float(embedder.encode_one(QUESTION) @ embedder.encode_one(PARAPHRASE))
    below = make_cache(similarity_threshold=similarity - 0.005, verify=False)
    below.store(QUESTION, SCOPE, None, ANSWER)
    hit = below.lookup(PARAPHRASE, SCOPE)
    assert hit.hit and hit.path == SEMANTIC
    assert hit.similarity == pytest.approx(similarity, abs=1e-4)
    assert hit.question == QUESTION
    above = make_cache(similarity_threshold=min(1.0, similarity + 0.005), verify=False)
    assert not above.lookup(PARAPHRASE, SCOPE).hit


def test_verification_rejects_a_near_miss_the_cosine_accepts(
    make_cache: Callable[..., SemanticCache], embedder: Embedder
) -> None:
    cached, near_miss = "Who sold the brewery in 1998?", "Who bought the brewery in 1998?"
    similarity = float(embedder.encode_one(cached) @ embedder.encode_one(near_miss))
    cache = make_cache(similarity_threshold=similarity - 0.01)
    cache.store(cached, SCOPE, None, {"answer": "Anna"})
    result = cache.lookup(near_miss, SCOPE)
    assert not result.hit and result.rejected == ["opposite"]
    unguarded = make_cache(similarity_threshold=similarity - 0.01, verify=False)
    assert unguarded.lookup(near_miss, SCOPE).hit


@pytest.mark.parametrize(
    "other",
    [
        Scope("idx-2", SCOPE.model_id, SCOPE.prompt_version, SCOPE.top_k),
        Scope(SCOPE.index_version, SCOPE.model_id, SCOPE.prompt_version, 3),
        Scope(SCOPE.index_version, "qwen", SCOPE.prompt_version, SCOPE.top_k),
        Scope(SCOPE.index_version, SCOPE.model_id, "v2", SCOPE.top_k),
    ],
)
def test_other_scope_cannot_reach_the_entry(
    make_cache: Callable[..., SemanticCache], other: Scope
) -> None:
    cache = make_cache(similarity_threshold=0.5)
    cache.store(QUESTION, SCOPE, None, ANSWER)
    assert not cache.lookup(QUESTION, other).hit
    assert not cache.lookup(PARAPHRASE, other).hit
    assert cache.lookup(QUESTION, SCOPE).hit


def test_only_non_empty_answers_are_stored(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache()
    assert cache.store(QUESTION, SCOPE, None, {"answer": "  "}) is None
    assert cache.store(QUESTION, SCOPE, None, {"sources": []}) is None
    assert not cache.lookup(QUESTION, SCOPE).hit


def test_expired_entry_is_a_miss_and_leaves_the_index(
    make_cache: Callable[..., SemanticCache],
) -> None:
    cache = make_cache(ttl_seconds=1, verify=False, similarity_threshold=0.5)
    cache.store(QUESTION, SCOPE, None, ANSWER)
    assert cache.lookup(PARAPHRASE, SCOPE).hit and cache.size() == 1
    time.sleep(1.3)
    assert not cache.lookup(QUESTION, SCOPE).hit
    assert not cache.lookup(PARAPHRASE, SCOPE).hit
    assert cache.size() == 0


def test_evicted_entry_is_a_miss_and_leaves_the_index(
    make_cache: Callable[..., SemanticCache], cache_redis: RedisServer
) -> None:
    cache = make_cache(verify=False, similarity_threshold=0.5)
    entry_id = cache.store(QUESTION, SCOPE, None, ANSWER)
    assert cache.lookup(PARAPHRASE, SCOPE).hit
    from shared import keys

    cache_redis.client().delete(keys.cache_entry(str(entry_id)))
    assert not cache.lookup(PARAPHRASE, SCOPE).hit
    assert not cache.lookup(QUESTION, SCOPE).hit
    assert cache.size() == 0


def test_a_second_process_index_sees_a_new_entry_within_a_second(
    make_cache: Callable[..., SemanticCache],
) -> None:
    writer, reader = make_cache(), make_cache()
    assert not reader.lookup(PARAPHRASE, SCOPE).hit
    writer.store(QUESTION, SCOPE, None, ANSWER)
    stored = time.monotonic()
    while not reader.lookup(PARAPHRASE, SCOPE).hit:
        assert time.monotonic() - stored < 1.0, "entry not visible to the second index within 1 s"
        time.sleep(0.02)
    assert reader.size() == 1


def test_cache_redis_down_misses_counts_and_recovers(
    make_cache: Callable[..., SemanticCache], cache_redis: RedisServer
) -> None:
    cache = make_cache()
    cache.store(QUESTION, SCOPE, None, ANSWER)
    assert cache.lookup(QUESTION, SCOPE).hit
    before = _errors("lookup_exact") + _errors("store")
    cache_redis.stop()
    result = cache.lookup(QUESTION, SCOPE)
    assert not result.hit and result.embedding is not None
    assert cache.store(PARAPHRASE, SCOPE, None, ANSWER) is None
    assert cache.stats()["reachable"] is False
    assert _errors("lookup_exact") + _errors("store") >= before + 2
    cache_redis.start()
    assert not cache.lookup(QUESTION, SCOPE).hit
    cache.store(QUESTION, SCOPE, None, ANSWER)
    assert cache.lookup(QUESTION, SCOPE).hit


def test_stats_count_hits_and_misses_across_instances(
    make_cache: Callable[..., SemanticCache],
) -> None:
    first, second = make_cache(), make_cache()
    first.lookup(QUESTION, SCOPE)
    first.store(QUESTION, SCOPE, None, ANSWER)
    second.lookup(QUESTION, SCOPE)
    stats = second.stats()
    assert (stats["hits_exact"], stats["misses"], stats["entries"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5


def test_entries_past_their_ttl_leave_the_index_without_being_looked_up(
    make_cache: Callable[..., SemanticCache],
) -> None:
    cache = make_cache(ttl_seconds=1)
    cache.store(QUESTION, SCOPE, None, ANSWER)
    cache.stats()  # syncs
    assert cache.size() == 1
    time.sleep(1.2)
    cache.stats()
    assert cache.size() == 0


def test_index_is_rebuilt_without_tombstones_and_keeps_answering(
    make_cache: Callable[..., SemanticCache], cache_redis: RedisServer, embedder: Embedder
) -> None:
    from shared import keys

    cache = make_cache(verify=False, similarity_threshold=0.5)
    questions = [f"What is the population of city number {n}?" for n in range(100)]
    vectors = embedder.encode(questions)
    ids = [cache.store(q, SCOPE, v, {"answer": q}) for q, v in zip(questions, vectors, strict=True)]
    cache_redis.client().delete(*[keys.cache_entry(str(entry_id)) for entry_id in ids[:80]])
    deadline = time.monotonic() + 20
    while cache.size() != 20 or cache._indexes[SCOPE.key].dead:
        assert time.monotonic() < deadline, (cache.size(), len(cache._indexes[SCOPE.key].dead))
        for question in questions[:80]:
            cache.lookup(question, SCOPE)
    assert len(cache._indexes[SCOPE.key].ids) == 20  # rebuilt: the tombstones are gone
    hit = cache.lookup(f"{questions[90]} today", SCOPE)
    assert hit.hit and hit.path == SEMANTIC and hit.payload == {"answer": questions[90]}


def test_a_new_process_catches_up_with_a_large_cache_in_the_background(
    make_cache: Callable[..., SemanticCache], embedder: Embedder
) -> None:
    import uuid

    import numpy as np

    from web.semantic_cache import SYNC_BATCH

    writer = make_cache()
    vectors = np.random.default_rng(0).standard_normal((SYNC_BATCH * 2 + 100, embedder.dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pipe = writer.redis.pipeline(transaction=False)
    for n, vector in enumerate(vectors.astype(np.float32)):
        writer.queue_write(pipe, uuid.uuid4().hex, f"filler {n}", SCOPE, vector, ANSWER)
    pipe.execute()
    reader = make_cache()
    reader.lookup(QUESTION, SCOPE)
    assert reader.size() >= SYNC_BATCH  # one batch inline, the rest on a background thread
    deadline = time.monotonic() + 30
    while reader.size() < len(vectors):
        assert time.monotonic() < deadline, reader.size()
        time.sleep(0.05)
    assert reader.size() == len(vectors)
