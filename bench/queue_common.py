"""What the queue benches share: a broker redis-server and real Celery workers (fake pipeline),
percentiles, and writing bench/results/<name>.json and .md."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery  # noqa: E402

from shared.events import EventHub  # noqa: E402
from shared.jobs import JobStore  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402
from shared.tasks import make_client  # noqa: E402
from tests.support.celery import WorkerProcess, start_worker, worker_env  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from web.submit import submit_job  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Bench:
    """A broker, a job store and client on it, and the workers started so far."""

    tmp: Path
    server: RedisServer
    settings: Settings
    store: JobStore
    celery: Celery
    hub: EventHub
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str) -> WorkerProcess:
        worker = start_worker(self.env, self.tmp, name)
        self.workers.append(worker)
        return worker.wait_ready()

    def submit(self, query: str = "bench question") -> dict[str, Any]:
        return submit_job(self.store, self.celery, owner="bench", query=query, top_k=2,
                          request_id="bench")

    def final(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        record = self.store.wait_final(job_id, timeout)
        if record is None:
            raise TimeoutError(f"job {job_id} not final after {timeout}s")
        return record


@contextmanager
def bench_stack(tmp: Path, **worker_overrides: str) -> Iterator[Bench]:
    """A broker redis-server and a client; workers come from `Bench.start_worker`."""
    server = RedisServer(tmp / "redis", "--maxmemory-policy", "noeviction").start()
    settings = load_settings(broker={"url": server.url})
    hub = EventHub(server.url)
    bench = Bench(tmp, server, settings, JobStore(server.client(), settings, hub),
                  make_client(settings), hub, worker_env(server.url, **worker_overrides))
    try:
        yield bench
    finally:
        hub.stop()
        for worker in bench.workers:
            worker.stop()
        server.stop()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of seconds, in milliseconds."""
    return {"n": len(values), "p50_ms": percentile(values, 50) * 1000,
            "p90_ms": percentile(values, 90) * 1000, "p99_ms": percentile(values, 99) * 1000,
            "max_ms": max(values) * 1000, "mean_ms": statistics.fmean(values) * 1000}


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    """Print the table and write bench/results/<name>.json and .md."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**data, "machine": machine()}, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
