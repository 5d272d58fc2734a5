"""The ingest worker's Celery app, apart from the generation worker's. Start it with:

    celery -A worker.ingest_app worker -c 1 -P prefork -n ingest@%h

(without -Q it consumes COLLECTIONS_QUEUE, `ragq.ingest` by default).

It embeds on the CPU and never loads a generator, so uploads never wait behind answers nor
take a GPU worker's memory. Its pool child loads the embedding model once, in
`worker_process_init`, then starts two background threads as a generation worker does: its
heartbeat (role `ingest`, shared/workers.py: /health/stats and /health/gpu show it) and the
ingest reaper (worker/reaper.py). Same Celery rules as generation (shared/tasks.py): acks_late
and reject on worker lost, so a job whose pool child dies is delivered again; a job whose whole
worker died, or whose broker failed under it, is found by the reaper once its lease lapses. The
collection's lock and atomic publish (worker/ingestion/versions.py) mean a half-built version is
never served.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import redis
from celery import Celery, signals

from shared import metrics
from shared.broker import connect
from shared.collections import CollectionRegistry
from shared.embedding import Embedder
from shared.error_types import INGEST_ERROR_TYPES
from shared.ingest_jobs import IngestJobs
from shared.jobs import Status
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.tasks import celery_config
from shared.workers import INGEST, process_report, write_heartbeat
from worker.ingestion.build import VersionBuilder
from worker.ingestion.runner import DOCUMENT_OUTCOMES, IngestRunner
from worker.reaper import IngestReaper
from worker.runtime import serve_metrics
from worker.tickers import Ticker

log = logging.getLogger(__name__)

_runner: IngestRunner | None = None
_tickers: list[Ticker] = []


def make_celery(settings: Settings) -> Celery:
    """The ingest worker's Celery app on `settings`; the pool child builds its runner."""
    app = Celery("ragq-ingest", include=["worker.ingestion.task"])
    app.conf.update(celery_config(settings))
    # without -Q it consumes COLLECTIONS_QUEUE, never the generation queue
    app.conf.task_default_queue = settings.collections.queue
    node = {"name": f"ingest@{socket.gethostname()}"}

    def configure(**_: Any) -> None:
        configure_logging(settings.log, "ingest")

    def remember_node(sender: str | None = None, **_: Any) -> None:
        if sender:  # the parent learns its node name here; the forked child inherits it
            node["name"] = sender

    def start_child(**_: Any) -> None:
        configure_logging(settings.log, "ingest")
        start(settings, app, node["name"])

    def stop_child(**_: Any) -> None:
        for ticker in _tickers:
            ticker.stop()

    signals.setup_logging.connect(configure, weak=False)
    signals.celeryd_init.connect(remember_node, weak=False)
    signals.worker_process_init.connect(start_child, weak=False)
    signals.worker_process_shutdown.connect(stop_child, weak=False)
    return app


def start(settings: Settings, celery: Celery, node: str) -> IngestRunner:
    """Load the embedder once for this process, build its runner, start its heartbeat and
    reaper."""
    global _runner, _tickers
    client = connect(settings.broker)
    embedder = Embedder(settings.pipeline.embedding_model, "cpu")
    jobs = IngestJobs(client, settings.jobs)
    job_runner = _runner = IngestRunner(settings, jobs, CollectionRegistry(client),
                                        VersionBuilder(settings.pipeline, embedder), node)
    for outcome in DOCUMENT_OUTCOMES:
        metrics.INGEST_DOCUMENTS.labels(outcome=outcome)
    for status in (Status.SUCCEEDED, Status.FAILED):
        metrics.INGEST_JOBS.labels(status=status.value)
    for error_type in INGEST_ERROR_TYPES:
        metrics.ERRORS.labels(type=error_type)
    reaper = IngestReaper(settings.jobs, jobs, client, celery, node)
    beat = settings.worker.heartbeat_seconds
    _tickers = [Ticker("heartbeat", beat, lambda: heartbeat(client, job_runner, beat)).start(),
                Ticker("reaper", reaper.interval, reaper.reap).start()]
    serve_metrics(settings.collections.metrics_port)
    log.info("ingest worker ready", extra={"collections_dir": str(settings.collections.dir)})
    return job_runner


def heartbeat(client: redis.Redis, runner: IngestRunner, interval: float) -> None:
    """Report this process (role `ingest`: no pipeline, the embedder on the CPU, its job)."""
    report = {**process_report(runner.node, INGEST), "pipeline_loaded": False,
              "device": {"device": "cpu"}, "max_batch": 1,
              "jobs_in_flight": int(runner.running is not None)}
    write_heartbeat(client, report, interval)


def runner() -> IngestRunner:
    """This process's runner (it exists once worker_process_init ran here)."""
    if _runner is None:
        raise RuntimeError("ingest runner not started: worker_process_init has not run here")
    return _runner


app = make_celery(load_settings())  # `celery -A worker.ingest_app` finds it here
