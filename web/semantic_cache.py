"""The web's semantic cache: answers of past questions, reachable by the same or an equivalent
question.

The entries (shared/cache.py) live in the cache Redis, the source of truth. Each web process
keeps an HNSW index of the entries' embeddings per scope and pulls new log entries at most
every `sync_interval_seconds`, so a lookup costs one embedding and one approximate
nearest-neighbour search however large the cache grows. A candidate from the index is then
checked by the verification stage (web/verify.py) and read back from Redis: an entry that
expired or was evicted is a miss and leaves the index.

Each API key looks up in its own scope under CACHE_SHARING=key (shared/cache.py "Tenancy"),
and a hit names the cached question only to the key that asked it.

When the cache Redis is down, lookups miss, writes are skipped, `rag_cache_errors_total`
counts each failure and a warning is logged; nothing raises to the caller.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import faiss
import numpy as np
import redis

from shared import keys
from shared.cache import (
    OWNER_FIELD,
    Scope,
    cacheable,
    connect_cache,
    decode_vector,
    guarded,
    queue_write,
    text_hash,
    write_entry,
)
from shared.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES, CACHE_SIZE
from shared.models import load_cross_encoder
from shared.series import CACHE_PATHS
from shared.settings import CacheSettings
from web.verify import Verdict, Verifier, WordGuard, WordVectors

log = logging.getLogger(__name__)

EXACT, SEMANTIC = CACHE_PATHS
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 64
HNSW_EF_CONSTRUCTION = 80
SYNC_BATCH = 500  # log entries per pull; a lookup pulls at most one batch itself
MAX_TOMBSTONES_SKIPPED = 64  # extra neighbours asked for, to step over removed entries
REBUILD_MIN_TOMBSTONES = 64
REBUILD_FRACTION = 4  # rebuild an index once a quarter of it is tombstones
STATS_FIELDS = ("hits_exact", "hits_semantic", "misses")


class EmbedderLike(Protocol):
    """What the cache needs of shared.embedding.Embedder."""

    model_id: str
    dim: int

    def encode(
        self, texts: list[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray: ...

    def encode_one(self, text: str) -> np.ndarray: ...


@dataclass
class CacheLookup:
    """A lookup's outcome. On a miss `payload` is None; `embedding` is the query's vector
    (None on an exact hit or when embedding was not needed), to be stored with the answer."""

    hit: bool
    path: str | None = None
    payload: dict[str, Any] | None = None
    similarity: float = 0.0
    question: str | None = None  # the cached question: only when the asker asked it too
    entry_id: str | None = None
    embedding: np.ndarray | None = None
    rejected: list[str] = field(default_factory=list)


class _ScopeIndex:
    """HNSW over one scope's embeddings in insertion order. Removals (found gone from Redis,
    or older than the TTL) are tombstones; a rebuild drops them once they are many."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.ids: list[str] = []
        self.questions: list[str] = []
        self.owners: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.created: list[float] = []
        self.dead: set[int] = set()
        self._unexpired = 0  # positions before this one are older than the TTL

    @property
    def live(self) -> int:
        return len(self.ids) - len(self.dead)

    @property
    def needs_rebuild(self) -> bool:
        return len(self.dead) > max(REBUILD_MIN_TOMBSTONES, len(self.ids) // REBUILD_FRACTION)

    def add(self, entries: list[IndexEntry]) -> None:
        if not entries:
            return
        self.index.add(np.stack([entry.vector for entry in entries]).astype(np.float32))
        for entry in entries:
            self.ids.append(entry.entry_id)
            self.questions.append(entry.question)
            self.owners.append(entry.owner)
            self.vectors.append(entry.vector)
            self.created.append(entry.created)

    def entries(self, start: int = 0) -> list[IndexEntry]:
        """The live entries from position `start` on."""
        return [
            IndexEntry(self.ids[i], self.questions[i], self.vectors[i], self.created[i],
                       self.owners[i])
            for i in range(start, len(self.ids))
            if i not in self.dead
        ]

    def search(self, vector: np.ndarray, count: int) -> Iterator[tuple[int, float]]:
        if not self.ids:
            return
        wanted = min(len(self.ids), count + min(len(self.dead), MAX_TOMBSTONES_SKIPPED))
        scores, positions = self.index.search(vector.reshape(1, -1).astype(np.float32), wanted)
        found = 0
        for position, score in zip(positions[0], scores[0], strict=True):
            if position >= 0 and int(position) not in self.dead and found < count:
                found += 1
                yield int(position), float(score)

    def drop(self, position: int) -> str:
        self.dead.add(position)
        return self.ids[position]

    def expire(self, before: float) -> list[str]:
        """Tombstone the entries created before `before` (epoch seconds); their ids."""
        gone = []
        while self._unexpired < len(self.ids) and self.created[self._unexpired] < before:
            if self._unexpired not in self.dead:
                gone.append(self.drop(self._unexpired))
            self._unexpired += 1
        return gone


@dataclass(frozen=True)
class IndexEntry:
    """What the in-process index keeps of a cache entry."""

    entry_id: str
    question: str
    vector: np.ndarray
    created: float
    owner: str = ""


def build_verifier(settings: CacheSettings, embedder: EmbedderLike) -> Verifier | None:
    """The verification stage the settings ask for: the word guard, a CrossEncoder, or none."""
    guard = None
    if settings.verify:
        tokenizer = getattr(embedder, "tokenizer", None)
        vocabulary = set(tokenizer.get_vocab()) if tokenizer is not None else set()
        guard = WordGuard(
            WordVectors(embedder.encode), vocabulary.__contains__, settings.synonym_similarity
        )
    scorer = None
    if settings.verifier_model:
        scorer = load_cross_encoder(
            settings.verifier_model, "cpu", "cache verifier", "CACHE_VERIFIER_MODEL"
        )
    if guard is None and scorer is None:
        return None
    return Verifier(guard, scorer, settings.verifier_threshold)


class SemanticCache:
    """Exact, then semantic lookup of answers in the cache Redis; see the module docstring."""

    def __init__(
        self,
        settings: CacheSettings,
        embedder: EmbedderLike | None,
        redis_client_or_url: redis.Redis | str,
        verifier: Verifier | None | Literal["settings"] = "settings",
    ) -> None:
        """`verifier`: "settings" builds the stage CacheSettings describe; None turns it off.
        `embedder` None: every lookup misses, and store() needs the embedding."""
        self.settings = settings
        self.embedder = embedder
        # Any: redis-py's stubs type replies as bytes | str; this client decodes to str
        self.redis: Any = (connect_cache(settings, redis_client_or_url)
                           if isinstance(redis_client_or_url, str) else redis_client_or_url)
        self.verifier: Verifier | None = None
        if not isinstance(verifier, str):
            self.verifier = verifier
        elif embedder is not None:
            self.verifier = build_verifier(settings, embedder)
        self._indexes: dict[str, _ScopeIndex] = {}
        self._rebuilding: set[str] = set()
        self._known: set[str] = set()
        self._last_id = "0-0"
        self._last_sync = 0.0
        self._lock = threading.Lock()  # the indexes
        self._sync_lock = threading.Lock()  # one sync at a time

    # --- public API -----------------------------------------------------------------------
    def lookup(self, query: str, scope: Scope, asker: str = "") -> CacheLookup:
        """Find an answer for `query` within `scope`: exact text first, then a verified
        nearest neighbour (lookup_exact, then lookup_semantic; web/submit.py calls them apart,
        to check admission between the two, before the query is embedded)."""
        return self.lookup_exact(query, scope, asker) or self.lookup_semantic(query, scope, asker)

    def lookup_exact(self, query: str, scope: Scope, asker: str = "") -> CacheLookup | None:
        """The exact path: a hit for the same normalised question in `scope` (counted), or None
        for a miss. A hit carries the cached question only when `asker` (an owner id) asked it.
        Never raises for cache Redis failures (they are misses)."""
        if not self.settings.enabled or self.embedder is None:
            return None
        result: CacheLookup | None = guarded(
            "lookup_exact", lambda: self._lookup_exact(query, scope, asker), None)
        if result is not None:
            self._count(result)
        return result

    def lookup_semantic(self, query: str, scope: Scope, asker: str = "") -> CacheLookup:
        """The semantic path, after an exact miss: embed the query and verify its nearest
        neighbours in `scope`; the hit or miss is counted (a miss carries the embedding, to be
        stored with the answer). Never raises for cache Redis failures (they are misses)."""
        if not self.settings.enabled or self.embedder is None:
            return CacheLookup(hit=False)
        result = self._lookup_semantic(query, scope, asker)
        self._count(result)
        return result

    def store(
        self, query: str, scope: Scope, embedding: np.ndarray | None, payload: dict[str, Any],
        owner: str = "",
    ) -> str | None:
        """Cache `payload` (its `answer` must be non-empty) for `query`, asked by `owner`, in
        `scope`, embedding the query when `embedding` is None (shared.cache.write_entry). The
        entry id, None if skipped."""
        if not cacheable(self.settings, payload):
            return None
        if embedding is None and self.embedder is None:
            return None
        vector = embedding if embedding is not None else self._embed(query)
        return write_entry(self.redis, self.settings, query, scope, vector, payload, owner)

    def stats(self) -> dict[str, Any]:
        """Entries, hits (by path), misses, hit rate and errors, across every process."""
        counts = guarded("stats", lambda: self.redis.hgetall(keys.CACHE_STATS), None)
        reachable = counts is not None
        if reachable:
            self.sync()
        values = {name: int((counts or {}).get(name, 0)) for name in STATS_FIELDS}
        hits = values["hits_exact"] + values["hits_semantic"]
        total = hits + values["misses"]
        errors = sum(
            sample.value
            for metric in CACHE_ERRORS.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        return {
            "enabled": self.settings.enabled,
            "reachable": reachable,
            "entries": self.size(),
            "hits": hits,
            **values,
            "hit_rate": round(hits / total, 4) if total else 0.0,
            "errors": int(errors),
        }

    def sync(self) -> None:
        """Index every entry logged since the last sync now, waiting for a sync in progress
        (lookups never wait; stats and benches that want the whole cache indexed do)."""
        guarded("sync", self._sync, None)

    def size(self) -> int:
        """Entries this process's index holds (expired ones leave it as lookups meet them)."""
        with self._lock:
            return sum(index.live for index in self._indexes.values())

    # --- exact path ------------------------------------------------------------------------
    def _lookup_exact(self, query: str, scope: Scope, asker: str) -> CacheLookup | None:
        exact_key = keys.cache_exact(scope.key, text_hash(query))
        entry_id = self.redis.get(exact_key)
        if not entry_id:
            return None
        entry = self.redis.hgetall(keys.cache_entry(entry_id))
        if not entry:
            return None
        return CacheLookup(
            hit=True,
            path=EXACT,
            payload=json.loads(entry["payload"]),
            similarity=1.0,
            question=entry["question"] if entry.get(OWNER_FIELD, "") == asker else None,
            entry_id=entry_id,
        )

    # --- semantic path ---------------------------------------------------------------------
    def _embed(self, query: str) -> np.ndarray:
        assert self.embedder is not None, "lookups and stores without an embedding need one"
        return self.embedder.encode_one(query)

    def _lookup_semantic(self, query: str, scope: Scope, asker: str) -> CacheLookup:
        vector = self._embed(query)
        if guarded("sync", self._sync_if_due, False) is False:
            return CacheLookup(hit=False, embedding=vector)
        rejected: list[str] = []
        candidates = self._candidates(vector, scope)
        verdicts = self._verdicts(query, [question for _, question, _, _, _ in candidates])
        for (entry_id, question, similarity, position, owner), verdict in zip(
            candidates, verdicts, strict=True
        ):
            if not verdict.same:
                rejected.append(verdict.reason)
                continue
            payload = guarded("lookup_semantic", partial(self._read, entry_id), False)
            if payload is False:
                return CacheLookup(hit=False, embedding=vector, rejected=rejected)
            if payload is None:
                self._drop(scope, position, entry_id)
                continue
            return CacheLookup(
                hit=True,
                path=SEMANTIC,
                payload=json.loads(payload),
                similarity=similarity,
                question=question if owner == asker else None,
                entry_id=entry_id,
                embedding=vector,
            )
        return CacheLookup(hit=False, embedding=vector, rejected=rejected)

    def _candidates(
        self, vector: np.ndarray, scope: Scope
    ) -> list[tuple[str, str, float, int, str]]:
        with self._lock:
            index = self._indexes.get(scope.key)
            if index is None:
                return []
            return [
                (index.ids[position], index.questions[position], score, position,
                 index.owners[position])
                for position, score in index.search(vector, self.settings.candidates)
                if score >= self.settings.similarity_threshold
            ]

    def _verdicts(self, query: str, questions: list[str]) -> Iterator[Verdict]:
        if self.verifier is None:
            return (Verdict(True) for _ in questions)
        return self.verifier.check_many(query, questions)

    def _read(self, entry_id: str) -> str | None:
        """The entry's payload (JSON text); None when the entry is gone (expired, evicted).
        Only the payload: the index already holds the question and the embedding."""
        payload: str | None = self.redis.hget(keys.cache_entry(entry_id), "payload")
        return payload

    def _drop(self, scope: Scope, position: int, entry_id: str) -> None:
        with self._lock:
            index = self._indexes[scope.key]
            if position >= len(index.ids) or index.ids[position] != entry_id:
                return  # rebuilt meanwhile: the next lookup that meets the entry drops it
            self._known.discard(index.drop(position))
            rebuild = index.needs_rebuild
        CACHE_SIZE.set(self.size())
        if rebuild:
            self._rebuild_in_background(scope.key)

    def _rebuild_in_background(self, scope_key: str) -> None:
        with self._lock:
            if scope_key in self._rebuilding:
                return
            self._rebuilding.add(scope_key)
        threading.Thread(target=self._rebuild, args=(scope_key,), daemon=True).start()

    def _rebuild(self, scope_key: str) -> None:
        """A new index of the live entries, built without holding the lock, then swapped in."""
        try:
            with self._lock:
                old = self._indexes[scope_key]
                upto = len(old.ids)
                kept = old.entries()
            fresh = _ScopeIndex(old.dim)
            fresh.add(kept)
            with self._lock:
                fresh.add(old.entries(upto))  # entries the sync added meanwhile
                self._indexes[scope_key] = fresh
        finally:
            with self._lock:
                self._rebuilding.discard(scope_key)

    # --- syncing -------------------------------------------------------------------------
    def queue_write(
        self, pipe: Any, entry_id: str, query: str, scope: Scope, vector: np.ndarray,
        payload: dict[str, Any], owner: str = "",
    ) -> None:
        """Add one entry's writes to a Redis pipeline (bulk loaders batch them)."""
        queue_write(pipe, self.settings, entry_id, query, scope, vector, payload, owner)

    def _sync_if_due(self) -> bool:
        """Pull one batch when due; never waits for a sync in progress, and leaves a longer
        backlog (a new process meeting a big cache) to a background thread."""
        due = time.monotonic() - self._last_sync >= self.settings.sync_interval_seconds
        if due and self._sync_lock.acquire(blocking=False):
            try:
                more = self._pull_batch()
            finally:
                self._sync_lock.release()
            if more:
                threading.Thread(target=self.sync, daemon=True).start()
        return True

    def _sync(self) -> None:
        """Pull every log entry added since the last sync."""
        with self._sync_lock:
            while self._pull_batch():
                pass

    def _pull_batch(self) -> bool:
        """Index one batch of new log entries, expire old ones; True when more are waiting."""
        batch = self.redis.xread({keys.CACHE_LOG: self._last_id}, count=SYNC_BATCH)
        messages = batch[0][1] if batch else []
        by_scope = self._fetch(messages) if messages else {}
        expired_before = time.time() - self.settings.ttl_seconds
        with self._lock:
            for scope_key, entries in by_scope.items():
                dim = len(entries[0].vector)
                self._indexes.setdefault(scope_key, _ScopeIndex(dim)).add(entries)
            for index in self._indexes.values():
                self._known.difference_update(index.expire(expired_before))
        if messages:
            self._last_id = messages[-1][0]
        self._last_sync = time.monotonic()
        CACHE_SIZE.set(self.size())
        return len(messages) == SYNC_BATCH

    def _fetch(self, messages: list[tuple[str, dict[str, str]]]) -> dict[str, list[IndexEntry]]:
        """Logged entries still in Redis, by scope; a stream id starts with its creation time."""
        fresh = [
            (float(stream_id.split("-")[0]) / 1000, fields)
            for stream_id, fields in messages
            if fields.get("id") and fields["id"] not in self._known
        ]
        pipe = self.redis.pipeline(transaction=False)
        for _, fields in fresh:
            pipe.hmget(keys.cache_entry(fields["id"]), "question", "embedding", OWNER_FIELD)
        by_scope: dict[str, list[IndexEntry]] = {}
        for (created, fields), (question, embedding, owner) in zip(
            fresh, pipe.execute(), strict=True
        ):
            if question is None or embedding is None:
                continue
            self._known.add(fields["id"])
            entry = IndexEntry(fields["id"], question, decode_vector(embedding), created,
                               owner or "")
            by_scope.setdefault(fields["scope"], []).append(entry)
        return by_scope

    # --- bookkeeping -----------------------------------------------------------------------
    def _count(self, result: CacheLookup) -> None:
        if result.hit:
            CACHE_HITS.labels(path=result.path).inc()
            name = f"hits_{result.path}"
        else:
            CACHE_MISSES.inc()
            name = "misses"
        guarded("stats", lambda: self.redis.hincrby(keys.CACHE_STATS, name, 1), None)
