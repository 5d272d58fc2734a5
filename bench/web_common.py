"""What the web benches share: a broker and cache redis-server, a real gunicorn on them, and
(on demand) a real Celery worker with the fake pipeline."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.celery import WorkerProcess, start_worker, worker_env  # noqa: E402
from tests.support.gunicorn import GunicornServer  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

START_TIMEOUT_SECONDS = 180.0  # a loaded 2-core machine boots a worker (and its embedder) slowly


@dataclass
class WebStack:
    tmp: Path
    broker: RedisServer
    cache: RedisServer
    web: GunicornServer
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str = "bench", **overrides: str) -> WorkerProcess:
        env = worker_env(self.broker.url, CACHE_REDIS_URL=self.cache.url, LOG_LEVEL="WARNING",
                         **overrides)
        worker = start_worker(env, self.tmp, name)
        self.workers.append(worker)
        return worker.wait_ready()

    def web_rss_bytes(self) -> int:
        """Resident memory of gunicorn's worker processes, together."""
        return sum(psutil.Process(pid).memory_info().rss for pid in self.web.worker_pids())

    def web_threads(self) -> int:
        return sum(psutil.Process(pid).num_threads() for pid in self.web.worker_pids())


@contextmanager
def web_stack(tmp: Path, workers: int = 2, connections: int = 1000,
              **env: str) -> Iterator[WebStack]:
    """Redis servers and gunicorn (`workers` x `connections`); everything is stopped on exit."""
    broker = RedisServer(tmp / "broker", "--maxmemory-policy", "noeviction").start()
    cache = RedisServer(tmp / "cache", "--maxmemory", "256mb",
                        "--maxmemory-policy", "allkeys-lru").start()
    web = GunicornServer(tmp / "web", {"BROKER_URL": broker.url, "CACHE_REDIS_URL": cache.url,
                                       **env}, workers=workers, connections=connections)
    stack = WebStack(tmp, broker, cache, web)
    try:
        web.start(timeout=START_TIMEOUT_SECONDS)
        yield stack
    finally:
        web.stop()
        for worker in stack.workers:
            worker.stop()
        broker.stop()
        cache.stop()
