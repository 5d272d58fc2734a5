"""The verification on pairs from other domains than the dev pairs it was tuned beside.

tests/web/data/cache_pairs_extra.jsonl: 30 paraphrases and 30 near misses (cooking,
medicine, software, sport, law, finance, ...) written for this test, after the guard's rules,
word lists and default thresholds were fixed and without changing them afterwards: a held-out
check of the default configuration. The rates are printed (`pytest -s`) and bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.cache import Scope
from shared.embedding import Embedder
from shared.settings import CacheSettings
from tests.support.servers import RedisServer
from web.semantic_cache import SemanticCache

pytestmark = pytest.mark.integration

PAIRS = Path(__file__).parent / "data" / "cache_pairs_extra.jsonl"
SCOPE = Scope(index_version="idx-1", model_id="smollm2", prompt_version="v1", top_k=5)
MAX_FALSE_HIT_RATE = 0.05  # issue 5's bound at the default threshold


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]


def _rates(rows: list[dict[str, Any]], hits: list[bool]) -> tuple[float, float]:
    """Paraphrase-hit rate and false-hit rate."""
    paraphrase = [hit for row, hit in zip(rows, hits, strict=True) if row["same_answer"]]
    near_miss = [hit for row, hit in zip(rows, hits, strict=True) if not row["same_answer"]]
    return sum(paraphrase) / len(paraphrase), sum(near_miss) / len(near_miss)


def _ragq_hits(cache: SemanticCache, rows: list[dict[str, Any]]) -> list[bool]:
    """A paraphrase counts when its own `a`'s answer comes back; a near miss, on any hit."""
    for question in sorted({row["a"] for row in rows}):
        cache.store(question, SCOPE, None, {"answer": question})
    hits = []
    for row in rows:
        result = cache.lookup(row["b"], SCOPE)
        own = result.payload is not None and result.payload["answer"] == row["a"]
        hits.append(result.hit and (own or not row["same_answer"]))
    return hits


def _best_plain_cosine(
    embedder: Embedder, rows: list[dict[str, Any]], max_false_rate: float
) -> float:
    """Plain nearest-neighbour cosine's best paraphrase-hit rate over every threshold whose
    false-hit rate is at most `max_false_rate`."""
    stored = sorted({row["a"] for row in rows})
    scores = embedder.encode([row["b"] for row in rows]) @ embedder.encode(stored).T
    nearest = scores.argmax(axis=1)
    best = np.max(scores, axis=1)
    right = [stored[j] == row["a"] for row, j in zip(rows, nearest, strict=True)]
    found = 0.0
    for threshold in sorted({*best.tolist(), 1.01}):
        hits = [
            bool(score >= threshold) and (ok or not row["same_answer"])
            for score, ok, row in zip(best, right, rows, strict=True)
        ]
        paraphrase, false = _rates(rows, hits)
        if false <= max_false_rate:
            found = max(found, paraphrase)
    return found


def test_held_out_pairs_keep_false_hits_low_and_beat_plain_cosine(
    cache_redis: RedisServer,
) -> None:
    rows = _rows()
    embedder = Embedder("minilm")
    cache = SemanticCache(CacheSettings(redis_url=cache_redis.url), embedder, cache_redis.url)
    paraphrase, false = _rates(rows, _ragq_hits(cache, rows))
    cosine = _best_plain_cosine(embedder, rows, false)
    print(
        f"\nheld-out pairs ({len(rows)}): ragq paraphrase hit {paraphrase:.2f}, false hit "
        f"{false:.2f}; plain cosine at a false-hit rate <= {false:.2f}: {cosine:.2f}"
    )
    assert false <= MAX_FALSE_HIT_RATE
    assert paraphrase > cosine
