"""The ingest worker's Celery app, apart from the generation worker's. Start it with:

    celery -A worker.ingest_app worker -c 1 -P prefork -n ingest@%h

(without -Q it consumes COLLECTIONS_QUEUE, `ragq.ingest` by default).

It embeds on the CPU and never loads a generator, so uploads never wait behind answers nor
take a GPU worker's memory. Its pool child loads the embedding model once, in
`worker_process_init`. Same Celery rules as generation (shared/tasks.py): acks_late and reject
on worker lost, so a job whose worker dies is delivered again, and the collection's lock and
atomic publish (worker/ingestion/versions.py) mean a half-built version is never served.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from shared import metrics
from shared.broker import connect
from shared.collections import CollectionRegistry
from shared.embedding import Embedder
from shared.ingest_jobs import IngestJobs
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.tasks import celery_config
from worker.ingestion.build import VersionBuilder
from worker.ingestion.runner import DOCUMENT_OUTCOMES, IngestRunner
from worker.runtime import serve_metrics

log = logging.getLogger(__name__)

_runner: IngestRunner | None = None


def make_celery(settings: Settings) -> Celery:
    """The ingest worker's Celery app on `settings`; the pool child builds its runner."""
    app = Celery("ragq-ingest", include=["worker.ingestion.task"])
    app.conf.update(celery_config(settings))
    # without -Q it consumes COLLECTIONS_QUEUE, never the generation queue
    app.conf.task_default_queue = settings.collections.queue

    def configure(**_: Any) -> None:
        configure_logging(settings.log, "ingest")

    def start_child(**_: Any) -> None:
        configure_logging(settings.log, "ingest")
        start(settings)

    signals.setup_logging.connect(configure, weak=False)
    signals.worker_process_init.connect(start_child, weak=False)
    return app


def start(settings: Settings) -> IngestRunner:
    """Load the embedder once for this process and build its runner."""
    global _runner
    client = connect(settings.broker)
    embedder = Embedder(settings.pipeline.embedding_model, "cpu")
    _runner = IngestRunner(settings, IngestJobs(client, settings.jobs),
                           CollectionRegistry(client),
                           VersionBuilder(settings.pipeline, embedder))
    for outcome in DOCUMENT_OUTCOMES:
        metrics.INGEST_DOCUMENTS.labels(outcome=outcome)
    serve_metrics(settings.collections.metrics_port)
    log.info("ingest worker ready", extra={"collections_dir": str(settings.collections.dir)})
    return _runner


def runner() -> IngestRunner:
    """This process's runner (it exists once worker_process_init ran here)."""
    if _runner is None:
        raise RuntimeError("ingest runner not started: worker_process_init has not run here")
    return _runner


app = make_celery(load_settings())  # `celery -A worker.ingest_app` finds it here
