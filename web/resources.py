"""The per-process objects of one web process: the broker client, job store, Celery client and
event hub, and the submit path's semantic cache, breaker, admission, rate limiter and
single-flight; and the accepted API keys (built at once, so a bad entry fails at start).

Built lazily on first use, after gunicorn forks, so no connection or thread crosses a fork.
The event hub holds the process's single pub/sub connection, shared by all its WebSockets
(it also restarts its own thread in a forked child).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from celery import Celery
from flask import Flask, current_app
from redis import Redis

from shared.admission import Admission
from shared.breaker import Breaker
from shared.broker import connect
from shared.embedding import Embedder
from shared.events import EventHub
from shared.jobs import JobStore
from shared.settings import Settings
from shared.tasks import make_client
from shared.workers import GENERATION, list_workers, pipeline_info
from web.offload import LoopFriendlyEmbedder
from web.ratelimit import TokenBucket
from web.semantic_cache import SemanticCache
from web.singleflight import SingleFlight
from web.tenants import KeyRing

EXTENSION = "ragq"
PIPELINE_INFO_SECONDS = 1.0  # how long a process reuses the workers' published scope
T = TypeVar("T")


@cache
def shared_embedder(model: str, threads: int) -> Embedder:
    """One embedder per model and process, however many apps the process builds. torch's
    thread count is process-wide: the query embedding is the web's only torch work."""
    import torch

    torch.set_num_threads(threads)
    return LoopFriendlyEmbedder(model, device="cpu")


class Resources:
    """Per-process objects, each created once, on first use, under a lock (threads race for it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyring = KeyRing.from_settings(settings.auth)  # a bad key entry fails at start
        self._lock = threading.RLock()  # reentrant: the store is built on redis
        self._made: dict[str, Any] = {}
        self._info: tuple[float, dict[str, str]] = (0.0, {})

    def _once(self, name: str, make: Callable[[], T]) -> T:
        if name not in self._made:
            with self._lock:
                if name not in self._made:
                    self._made[name] = make()
        found: T = self._made[name]
        return found

    @property
    def redis(self) -> Redis:
        return self._once("redis", lambda: connect(self.settings.broker))

    @property
    def store(self) -> JobStore:
        """Job records; wait_final listens through the shared hub, not a connection of its own."""
        return self._once("store", lambda: JobStore(self.redis, self.settings, hub=self.hub))

    @property
    def celery(self) -> Celery:
        return self._once("celery", lambda: make_client(self.settings))

    @property
    def hub(self) -> EventHub:
        """This process's one pub/sub connection; its thread starts on first subscribe."""
        return self._once("hub", lambda: EventHub(connect(self.settings.broker)))

    @property
    def cache(self) -> SemanticCache:
        """The semantic cache, with this process's embedder (loaded here on first use)."""
        return self._once("cache", self._make_cache)

    def _make_cache(self) -> SemanticCache:
        cache_settings = self.settings.cache
        embedder = shared_embedder(self.settings.pipeline.embedding_model,
                                   cache_settings.embedding_threads)
        return SemanticCache(cache_settings, embedder, cache_settings.redis_url)

    @property
    def breaker(self) -> Breaker:
        return self._once("breaker", lambda: Breaker(self.redis, self.settings.breaker))

    @property
    def rate_limiter(self) -> TokenBucket:
        return self._once("rate_limiter", lambda: TokenBucket(self.redis))

    @property
    def admission(self) -> Admission:
        return self._once("admission", lambda: Admission(
            self.redis, self.settings.api.max_queue_depth,
            workers=lambda: len(list_workers(self.redis, GENERATION)),
        ))

    @property
    def single_flight(self) -> SingleFlight:
        """Claims live as long as a job can be in flight: its queue deadline plus its run."""
        jobs = self.settings.jobs
        ttl = int(jobs.queue_deadline_seconds + jobs.hard_time_limit_seconds)
        return self._once("single_flight", lambda: SingleFlight(self.redis, ttl))

    def pipeline_info(self) -> dict[str, str]:
        """The workers' index version, model and prompt version, re-read at most every second."""
        read_at, info = self._info
        if time.monotonic() - read_at > PIPELINE_INFO_SECONDS:
            info = pipeline_info(self.redis)
            self._info = (time.monotonic(), info)
        return info

    def close(self) -> None:
        """Stop the hub's thread, if it was started (an app torn down inside a running process)."""
        hub = self._made.pop("hub", None)
        if hub is not None:
            hub.stop()


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = Resources(settings)


def warm_up(app: Flask) -> None:
    """Load the cache's embedding model before the first request instead of during it."""
    found: Resources = app.extensions[EXTENSION]
    cache_settings = found.settings.cache
    if cache_settings.enabled:
        shared_embedder(found.settings.pipeline.embedding_model,
                        cache_settings.embedding_threads).encode_one("warm up")


def resources() -> Resources:
    """The current app's per-process resources."""
    found: Resources = current_app.extensions[EXTENSION]
    return found


def settings() -> Settings:
    return resources().settings
