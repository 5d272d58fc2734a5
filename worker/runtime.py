"""One worker process's life: what it holds, its background threads, start and stop.

`start()` runs once per pool child (worker_process_init): it loads the pipeline, opens the
broker connection, builds the aftercare and the Runtime, and starts three background threads:
the heartbeat, the reaper (worker/reaper.py) and the metrics endpoint. The Runtime runs the
jobs the Celery task hands it (worker/runner.py). When it batches (WORKER_MAX_BATCH above 1) a
new child first queues again the jobs its dead predecessor left running, and a stopping child
lets its jobs in flight finish.
"""

from __future__ import annotations

import logging

import redis
from celery import Celery
from prometheus_client import start_http_server

from shared import metrics
from shared.broker import connect
from shared.collections import CollectionRegistry
from shared.error_types import WORKER_ERROR_TYPES, ErrorType
from shared.jobs import JobStore
from shared.series import zero_known_series
from shared.settings import Settings
from shared.workers import GENERATION, process_report, publish_pipeline_info, write_heartbeat
from worker.aftercare import Aftercare
from worker.pipeline import load_pipeline
from worker.pipeline.types import PipelineLike
from worker.reaper import Reaper
from worker.runner import JobRunner
from worker.tickers import Ticker

log = logging.getLogger(__name__)


def pipeline_info(pipeline: PipelineLike) -> dict[str, str]:
    """What a pipeline serves (index, model, prompt): the scope of the answers it caches."""
    return {"index_version": pipeline.index_version, "model_id": pipeline.model_id,
            "prompt_version": pipeline.prompt_version}


class Runtime(JobRunner):
    """What one worker process holds (settings, pipeline, broker connection, job store, reaper)
    and does in the background; it runs jobs as a JobRunner."""

    def __init__(self, settings: Settings, pipeline: PipelineLike, redis_client: redis.Redis,
                 celery: Celery, node: str, aftercare: Aftercare | None = None) -> None:
        super().__init__(settings, pipeline, JobStore(redis_client, settings), node, aftercare)
        self.redis = redis_client
        self.celery = celery
        self.reaper = Reaper(settings.jobs, self.store, redis_client, celery, node)
        self._tickers: list[Ticker] = []

    def start_background(self) -> None:
        if self.in_flight is not None:
            self.pipeline.start_batching(self.in_flight.capacity)
            self.reaper.recover_own()
        publish_pipeline_info(self.redis, pipeline_info(self.pipeline))
        self._tickers = [
            Ticker("heartbeat", self.settings.worker.heartbeat_seconds, self.heartbeat).start(),
            Ticker("reaper", self.reaper.interval, self.reap).start(),
        ]

    def stop_background(self) -> None:
        if self.in_flight is not None:
            self.in_flight.drain(self.settings.jobs.hard_time_limit_seconds)
        for ticker in self._tickers:
            ticker.stop()

    def heartbeat(self) -> None:
        """Report this process (pid, pipeline, device) and export its VRAM use."""
        device = self.pipeline.device_report()
        metrics.GPU_VRAM_USED.set(float(device.get("vram_used_gb") or 0.0))
        in_flight = self.jobs_in_flight()
        report = {**process_report(self.node, GENERATION),
                  "pipeline_loaded": True, "device": device, **pipeline_info(self.pipeline),
                  "max_batch": self.settings.worker.max_batch, "jobs_in_flight": len(in_flight)}
        write_heartbeat(self.redis, report, self.settings.worker.heartbeat_seconds)

    def reap(self) -> None:
        """Queue again the jobs of dead workers (worker/reaper.py)."""
        self.reaper.reap()


_runtime: Runtime | None = None


def start(settings: Settings, celery: Celery, node: str) -> Runtime:
    """Build this process's runtime: load the pipeline once, start the background threads."""
    global _runtime
    pipeline = load_pipeline(settings.pipeline)
    client = connect(settings.broker)
    pipeline.serve_collections(settings.collections.dir, CollectionRegistry(client))
    aftercare = Aftercare(settings, client, pipeline_info(pipeline))
    _runtime = Runtime(settings, pipeline, client, celery, node, aftercare)
    _runtime.start_background()
    zero_known_series(WORKER_ERROR_TYPES)
    serve_metrics(settings.worker.metrics_port)
    return _runtime


def serve_metrics(port: int) -> None:
    """Serve /metrics from this process (the pool child that records them); 0 turns it off."""
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as error:
        metrics.ERRORS.labels(type=ErrorType.METRICS_PORT).inc()
        log.error("cannot serve worker metrics", extra={"port": port, "error": str(error)})


def stop() -> None:
    if _runtime is not None:
        _runtime.stop_background()


def current() -> Runtime:
    """This process's runtime (it exists once worker_process_init ran here)."""
    if _runtime is None:
        raise RuntimeError("worker runtime not started: worker_process_init has not run here")
    return _runtime

