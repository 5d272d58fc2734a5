"""The web's side of the semantic cache, the cost breaker, admission control and single-flight.

Every submitting route goes through `answer_or_submit()`: a cache hit comes back as a finished
job record (`cached: true`, the similarity, the original question) without queueing anything;
a miss passes the breaker and admission checks (429 with Retry-After through the exceptions),
then attaches to an identical job in flight or queues a new one, carrying the query embedding
so the worker can cache the answer without embedding it again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from functools import cache, cached_property
from typing import Any

from flask import Flask, current_app, g

from shared.admission import Admission
from shared.breaker import RESERVED_FIELD, WINDOW_FIELD, Breaker, job_estimate_eur
from shared.cache import JOB_EMBEDDING_FIELD, CacheLookup, SemanticCache, encode_vector, scope_for
from shared.embedding import Embedder
from shared.jobs import METRIC_FIELDS, Status
from shared.settings import Settings
from shared.singleflight import SingleFlight, fingerprint
from shared.workers import list_workers, pipeline_info
from web.health import register_stats
from web.request_ids import current_request_id
from web.resources import resources

EXTENSION = "ragq.caching"
PIPELINE_INFO_SECONDS = 1.0  # how long a process reuses the workers' published scope

Submit = Callable[[dict[str, str] | None], dict[str, Any]]


@cache
def shared_embedder(model: str, threads: int) -> Embedder:
    """One embedder per model and process, however many apps the process builds. torch's
    thread count is process-wide: the query embedding is the web's only torch work."""
    import torch

    torch.set_num_threads(threads)
    return Embedder(model, device="cpu")


class CachePath:
    """One web process's cache, breaker, admission and single-flight; built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._cache: SemanticCache | None = None
        self._info: tuple[float, dict[str, str]] = (0.0, {})

    @property
    def cache(self) -> SemanticCache:
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    embedder = shared_embedder(
                        self.settings.pipeline.embedding_model,
                        self.settings.cache.embedding_threads,
                    )
                    cache = self.settings.cache
                    self._cache = SemanticCache(cache, embedder, cache.redis_url)
        return self._cache

    @cached_property
    def breaker(self) -> Breaker:
        return Breaker(resources().redis, self.settings.breaker)

    @cached_property
    def admission(self) -> Admission:
        redis_client = resources().redis
        return Admission(
            redis_client,
            self.settings.api.max_queue_depth,
            workers=lambda: len(list_workers(redis_client)),
        )

    @cached_property
    def single_flight(self) -> SingleFlight:
        jobs = self.settings.jobs
        ttl = int(jobs.queue_deadline_seconds + jobs.hard_time_limit_seconds)
        return SingleFlight(resources().redis, ttl)

    def reserve(self, lookup: CacheLookup) -> dict[str, str]:
        """Reserve a job's estimated cost (BudgetExceeded if the limit was reached meanwhile);
        the fields the worker needs: the reservation to settle, the query embedding to cache."""
        estimate = job_estimate_eur(self.settings.pipeline, self.settings.breaker)
        window = self.breaker.window_start()
        self.breaker.check(reserve_eur=estimate)
        internal = {RESERVED_FIELD: repr(estimate), WINDOW_FIELD: str(window)}
        if lookup.embedding is not None:
            internal[JOB_EMBEDDING_FIELD] = encode_vector(lookup.embedding)
        return internal

    def pipeline_info(self) -> dict[str, str]:
        """The workers' index version, model and prompt version, re-read at most every second."""
        read_at, info = self._info
        if time.monotonic() - read_at > PIPELINE_INFO_SECONDS:
            info = pipeline_info(resources().redis)
            self._info = (time.monotonic(), info)
        return info


def init_app(app: Flask, settings: Settings) -> None:
    path = CachePath(settings)
    app.extensions[EXTENSION] = path
    register_stats(app, "cache", lambda: path.cache.stats() if settings.cache.enabled else None)
    register_stats(app, "breaker", lambda: path.breaker.state())


def current() -> CachePath:
    found: CachePath = current_app.extensions[EXTENSION]
    return found


def answer_or_submit(query: str, top_k: int, submit: Submit) -> dict[str, Any]:
    """A cached answer as a finished job, or the caller's job for this miss (maybe one already
    in flight). `submit(internal)` queues a new job with `internal` fields for the worker."""
    path = current()
    lookup = CacheLookup(hit=False)
    scope = scope_for(path.pipeline_info(), top_k)
    if path.settings.cache.enabled:
        lookup = path.cache.lookup(query, scope)
        if lookup.hit:
            return cached_record(query, top_k, lookup)
    path.breaker.check()
    path.admission.check()
    store = resources().store
    record, _ = path.single_flight.submit(
        fingerprint(query, scope, g.owner),
        create=lambda: submit(path.reserve(lookup)),
        load=lambda job_id: store.get(job_id, owner=g.owner),
    )
    return record


def cached_record(query: str, top_k: int, lookup: CacheLookup) -> dict[str, Any]:
    """A finished job record answering from the cache (not stored: nothing ran)."""
    now = time.time()
    metrics: dict[str, Any] = dict.fromkeys(METRIC_FIELDS)
    metrics.update(
        cached=True, cache_similarity=round(lookup.similarity, 4), cost_eur=0.0, queue_wait_s=0.0
    )
    return {
        "id": str(uuid.uuid4()),
        "status": Status.SUCCEEDED.value,
        "query": query,
        "top_k": top_k,
        "created_at": now,
        "started_at": now,
        "finished_at": now,
        "attempt": 0,
        "request_id": current_request_id(),
        "queue_position": None,
        "result": lookup.payload,
        "error": None,
        "metrics": metrics,
        "cached": True,
        "similarity": round(lookup.similarity, 4),
        "cached_question": lookup.question,
        "cache_path": lookup.path,
    }
