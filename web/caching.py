"""The web's side of the semantic cache, the cost breaker, admission control and single-flight.

Every submitting route goes through `answer_or_submit()`: a cache hit becomes a finished job
record of the caller's (`cached: true`, the similarity, the original question), stored with its
events in one round trip, without queueing anything; a miss passes the breaker and admission
checks (429 with Retry-After through the exceptions), then attaches to an identical job in
flight or queues a new one, carrying the query embedding so the worker can cache the answer
without embedding it again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from functools import cache, cached_property
from typing import Any

from flask import Flask, current_app, g

from shared.admission import Admission
from shared.breaker import RESERVED_FIELD, WINDOW_FIELD, Breaker, job_estimate_eur
from shared.cache import JOB_EMBEDDING_FIELD, CacheLookup, SemanticCache, encode_vector, scope_for
from shared.embedding import Embedder
from shared.errors import BrokerUnavailable
from shared.jobs import METRIC_FIELDS
from shared.settings import Settings
from shared.singleflight import SingleFlight, fingerprint
from shared.workers import list_workers, pipeline_info
from web.health import register_stats
from web.request_ids import current_request_id
from web.resources import resources

log = logging.getLogger(__name__)

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

    def reserve_and_submit(self, lookup: CacheLookup, submit: Submit) -> dict[str, Any]:
        """Reserve a job's estimated cost (BudgetExceeded if the limit was reached meanwhile) and
        submit the job with what the worker needs: the reservation to settle (its final status
        does), the query embedding to cache. A submission that fails gives the reservation back."""
        internal: dict[str, str] = {}
        if lookup.embedding is not None:
            internal[JOB_EMBEDDING_FIELD] = encode_vector(lookup.embedding)
        if not self.settings.breaker.enabled:  # check() reserves nothing: nothing to settle
            return submit(internal)
        estimate = job_estimate_eur(self.settings.pipeline, self.settings.breaker)
        window = self.breaker.window_start()
        self.breaker.check(reserve_eur=estimate)
        internal.update({RESERVED_FIELD: repr(estimate), WINDOW_FIELD: str(window)})
        try:
            return submit(internal)
        except BaseException:
            with contextlib.suppress(BrokerUnavailable):  # the broker is what failed, maybe
                self.breaker.charge(0.0, reserved_eur=estimate, reserved_window=window)
            raise

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


def warm_up(app: Flask) -> None:
    """Load the cache's embedding model before the first request instead of during it."""
    path: CachePath = app.extensions[EXTENSION]
    if path.settings.cache.enabled:
        shared_embedder(
            path.settings.pipeline.embedding_model, path.settings.cache.embedding_threads
        ).encode_one("warm up")


def current() -> CachePath:
    found: CachePath = current_app.extensions[EXTENSION]
    return found


def answer_or_submit(query: str, top_k: int, submit: Submit) -> dict[str, Any]:
    """A cached answer as a finished job of the caller's, or the caller's job for this miss
    (maybe one already in flight). `submit(internal)` queues a new job with `internal` fields
    for the worker. Logs one INFO line per job: "cache hit", "job queued" or "job attached"."""
    path = current()
    lookup = CacheLookup(hit=False)
    scope = scope_for(path.pipeline_info(), top_k)
    if path.settings.cache.enabled:
        lookup = path.cache.lookup(query, scope)
        if lookup.hit:
            record = cached_record(query, top_k, lookup)
            log.info("cache hit", extra={"job_id": record["id"], "top_k": top_k,
                                         "cache_path": lookup.path})
            return record
    path.breaker.check()
    path.admission.check()
    store = resources().store
    record, attached = path.single_flight.submit(
        fingerprint(query, scope, g.owner),
        create=lambda: path.reserve_and_submit(lookup, submit),
        load=lambda job_id: store.get(job_id, owner=g.owner),
    )
    log.info("job attached" if attached else "job queued",
             extra={"job_id": record["id"], "top_k": top_k})
    return record


def cached_record(query: str, top_k: int, lookup: CacheLookup) -> dict[str, Any]:
    """The caller's job answered from the cache: stored succeeded, with its events (status,
    done), so its id, links, listing and stream work like any other job's."""
    similarity = round(lookup.similarity, 4)
    metrics: dict[str, Any] = dict.fromkeys(METRIC_FIELDS)
    metrics.update(cached=True, cache_similarity=similarity, cost_eur=0.0, queue_wait_s=0.0)
    return resources().store.create_answered(
        owner=g.owner, query=query, top_k=top_k, request_id=current_request_id(),
        result=lookup.payload or {}, metrics=metrics,
        cache={"similarity": similarity, "question": lookup.question, "path": lookup.path},
    )
