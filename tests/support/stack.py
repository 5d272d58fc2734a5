"""A whole local stack for tests that drive ragq from the outside (client, CLI, browser):
broker and cache redis-servers, a real Celery worker (fake pipeline) and a real gunicorn.

    with running_stack(tmp_path, keys=["k1"], tokens=40, token_delay=0.05) as stack:
        stack.url   # http://127.0.0.1:<port>
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.celery import WorkerProcess, start_worker, worker_env
from tests.support.gunicorn import GunicornServer
from tests.support.servers import RedisServer


@dataclass
class Stack:
    broker: RedisServer
    cache: RedisServer
    web: GunicornServer
    worker: WorkerProcess

    @property
    def url(self) -> str:
        return self.web.url


@contextlib.contextmanager
def running_stack(root: Path, *, keys: list[str] | None = None, tokens: int = 20,
                  token_delay: float = 0.01, web_env: dict[str, str] | None = None,
                  worker_overrides: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start the stack (auth on with `keys`, off without); everything is stopped afterwards.
    The worker's fake pipeline answers `tokens` tokens `token_delay` seconds apart."""
    with contextlib.ExitStack() as started:
        broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
        started.callback(broker.stop)
        cache = RedisServer(root / "cache", "--maxmemory", "64mb",
                            "--maxmemory-policy", "allkeys-lru").start()
        started.callback(cache.stop)
        auth = {"AUTH_ENABLED": "true", "AUTH_API_KEYS": ",".join(keys)} if keys else {}
        web = GunicornServer(root / "web", env={
            "BROKER_URL": broker.url, "CACHE_REDIS_URL": cache.url, **auth, **(web_env or {}),
        })
        web.start()
        started.callback(web.stop)
        env = worker_env(broker.url, CACHE_REDIS_URL=cache.url, PIPELINE_FAKE_TOKENS=str(tokens),
                         PIPELINE_FAKE_TOKEN_DELAY=str(token_delay), **(worker_overrides or {}))
        worker = start_worker(env, root, "stack")
        started.callback(worker.stop)
        yield Stack(broker, cache, web, worker.wait_ready())
