"""Semantic-cache entries: the format both sides share, and the one way to write one.

The web looks answers up (web/semantic_cache.py); the worker writes a good answer under the
embedding the web computed for its query (worker/aftercare.py). Both meet here, in the cache
Redis (its own instance, `allkeys-lru`): one hash per entry (question, owner, scope,
embedding, payload, created), an exact key per normalised question text and scope, and a stream
(`keys.CACHE_LOG`) of entry ids in insertion order that lookup processes index from.

Tenancy (CACHE_SHARING): under `key` (the default) each API key's answers live in a scope of
their own (the owner id is part of the scope's digest), so another key can neither hit them nor
learn from a hit that the question was asked. Under `shared` every key shares one scope, and a
hit shows the cached question only to the key that asked it (`owner`).

When the cache Redis is down, writes are skipped (and lookups miss): `rag_cache_errors_total`
counts each failure and a warning is logged; nothing raises to the caller.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from shared import keys
from shared.metrics import CACHE_ERRORS
from shared.settings import CacheSettings, Settings

log = logging.getLogger(__name__)

JOB_EMBEDDING_FIELD = "cache_embedding"  # job hash field: the web's query embedding (base64)
JOB_TENANT_FIELD = "cache_tenant"  # job hash field: whose cache the answer goes to ("": shared)
OWNER_FIELD = "owner"  # job hash and entry hash field: the owner id of the key that asked


@dataclass(frozen=True)
class Scope:
    """What an answer depends on besides the question; another scope never sees the entry.
    `tenant`: the owner id whose entries these are under CACHE_SHARING=key, "" when shared."""

    index_version: str
    model_id: str
    prompt_version: str
    top_k: int
    tenant: str = ""

    @property
    def key(self) -> str:
        """A short stable digest of the scope, used in Redis keys and the index map."""
        text = f"{self.index_version}|{self.model_id}|{self.prompt_version}|{self.top_k}"
        if self.tenant:
            text += f"|{self.tenant}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def scope_for(pipeline_info: dict[str, str], top_k: int, tenant: str = "") -> Scope:
    """The scope of a query with `top_k` answered by workers that publish `pipeline_info`
    (keys.PIPELINE_INFO: index_version, model_id, prompt_version), in `tenant`'s cache."""
    return Scope(
        index_version=pipeline_info.get("index_version", ""),
        model_id=pipeline_info.get("model_id", ""),
        prompt_version=pipeline_info.get("prompt_version", ""),
        top_k=top_k,
        tenant=tenant,
    )


def tenant_of(settings: Settings, owner: str) -> str:
    """The cache `owner`'s questions are looked up in and stored to: its own under
    CACHE_SHARING=key with auth on, the one shared by every key otherwise (with auth off every
    caller is one tenant: the entries of a single-tenant service keep one scope)."""
    return owner if settings.cache.sharing == "key" and settings.auth.enabled else ""


@dataclass(frozen=True)
class CacheTarget:
    """What a worker needs to cache a job's answer where the web looked it up."""

    vector: np.ndarray
    tenant: str
    owner: str


def job_cache_target(broker: redis.Redis, job_id: str) -> CacheTarget | None:
    """The cache target the web left in job `job_id`'s hash; None when it left no embedding
    (the cache was off, or the job was sent without one)."""
    embedding, tenant, owner = broker.hmget(
        keys.job(job_id), [JOB_EMBEDDING_FIELD, JOB_TENANT_FIELD, OWNER_FIELD])
    if not embedding:
        return None
    return CacheTarget(decode_vector(str(embedding)), str(tenant or ""), str(owner or ""))


def normalise(question: str) -> str:
    """The text the exact path compares: lower case, single spaces, no closing punctuation."""
    return " ".join(question.lower().split()).strip(" ?!.")


def text_hash(question: str) -> str:
    """Digest of the normalised question."""
    return hashlib.sha256(normalise(question).encode()).hexdigest()[:32]


def encode_vector(vector: np.ndarray) -> str:
    """A float32 vector as base64 text (job records and Redis hashes are text)."""
    return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """The inverse of encode_vector."""
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def connect_cache(settings: CacheSettings, url: str | None = None) -> redis.Redis:
    """A cache Redis client (for `url`, else CACHE_REDIS_URL) whose timeouts make a slow or
    dead cache a miss, not a stall."""
    timeout = settings.socket_timeout_seconds
    return redis.Redis.from_url(
        url or settings.redis_url, decode_responses=True, socket_timeout=timeout,
        socket_connect_timeout=timeout, health_check_interval=30,
    )


def guarded(op: str, action: Callable[[], Any], fallback: Any) -> Any:
    """Run a cache Redis operation; on failure count it, log it and return `fallback`."""
    try:
        return action()
    except redis.RedisError as error:
        CACHE_ERRORS.labels(op=op).inc()
        log.warning("cache redis %s failed: %s", op, error, extra={"cache_op": op})
        return fallback


def cacheable(settings: CacheSettings, payload: dict[str, Any]) -> bool:
    """Whether `payload` may be written: the cache is on and the answer is not empty."""
    return settings.enabled and bool(str(payload.get("answer") or "").strip())


def write_entry(
    client: redis.Redis, settings: CacheSettings, query: str, scope: Scope, vector: np.ndarray,
    payload: dict[str, Any], owner: str = "",
) -> str | None:
    """Cache `payload` (a succeeded job's result) for `query`, asked by `owner`, in `scope`
    under `vector`, for CACHE_TTL_SECONDS. Returns the entry id; None when skipped (see
    cacheable) or failed."""
    if not cacheable(settings, payload):
        return None
    entry_id = uuid.uuid4().hex

    def write() -> str | None:
        pipe = client.pipeline(transaction=True)
        queue_write(pipe, settings, entry_id, query, scope, vector, payload, owner)
        pipe.execute()
        return entry_id

    stored: str | None = guarded("store", write, None)
    return stored


def queue_write(
    pipe: Any, settings: CacheSettings, entry_id: str, query: str, scope: Scope,
    vector: np.ndarray, payload: dict[str, Any], owner: str = "",
) -> None:
    """Add one entry's writes to a Redis pipeline (write_entry uses it; bulk loaders batch it)."""
    ttl = settings.ttl_seconds
    entry = {
        "question": query,
        OWNER_FIELD: owner,
        "scope": scope.key,
        "embedding": encode_vector(vector),
        "payload": json.dumps(payload),
        "created": f"{time.time():.3f}",
    }
    pipe.hset(keys.cache_entry(entry_id), mapping=entry)
    pipe.expire(keys.cache_entry(entry_id), ttl)
    pipe.set(keys.cache_exact(scope.key, text_hash(query)), entry_id, ex=ttl)
    min_id = f"{int((time.time() - ttl) * 1000)}-0"
    log_fields = {"id": entry_id, "scope": scope.key}
    pipe.xadd(keys.CACHE_LOG, log_fields, minid=min_id, approximate=True)
    pipe.xtrim(keys.CACHE_LOG, maxlen=settings.max_entries, approximate=True)
