"""The reapers: jobs whose worker died are queued again and their tasks sent again.

Every worker runs one for its kind of job (REAPS_PER_LEASE times per lease), one at a time
across the workers of that kind (its lock): the generation workers reap questions
(`Reaper`), the ingest workers reap ingest jobs (`IngestReaper`). A running job whose lease
expired is requeued (attempt + 1 on its next claim) or, once it killed JOBS_MAX_ATTEMPTS
workers, failed; a queued job still unclaimed after STRANDED_AFTER_LEASES leases gets its task
again (the send after a requeue may have failed, and a duplicate task is dropped by the claim).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, cast

import redis
from celery import Celery

from shared import keys, metrics
from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import Status
from shared.leases import Leases
from shared.settings import JobSettings
from shared.tasks import send_generate, send_ingest

log = logging.getLogger(__name__)

REAPS_PER_LEASE = 2
STRANDED_AFTER_LEASES = 3  # a requeued job not claimed after this many leases gets its task again


class Reapable(Protocol):
    """A kind of job a reaper looks after: shared/jobs.JobStore, shared/ingest_jobs.IngestJobs."""

    leases: Leases

    def requeue_lost(self, job_id: str, attempt: int) -> Mapping[str, Any]: ...


class Reaper:
    """Requeues dead workers' questions and sends their tasks again; see the module docstring."""

    lock = keys.REAPER_LOCK

    def __init__(self, settings: JobSettings, store: Reapable, redis_client: redis.Redis,
                 celery: Celery, node: str) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis_client
        self.celery = celery
        self.node = node

    @property
    def interval(self) -> float:
        return self.settings.lease_seconds / REAPS_PER_LEASE

    def recover_own(self) -> None:
        """At a pool child's start, queue again the jobs this node's leases hold: with one child
        per node they were its dead predecessor's (a batch of them, when it batched), and need
        not wait for their leases to lapse. Node names must be unique, as Celery asks."""
        leases = self.store.leases
        for job_id in leases.running_ids():
            if leases.holder(job_id) != self.node:
                continue
            attempt = int(cast(str, self.redis.hget(keys.job(job_id), "attempt")) or 0)
            self._requeue(job_id, attempt)

    def reap(self) -> None:
        """Queue again the jobs of dead workers; one reaper at a time across its workers."""
        interval_ms = int(self.interval * 1000)
        if not self.redis.set(self.lock, self.node, nx=True, px=interval_ms):
            return
        for job_id, attempt in self.store.leases.lost():
            self._requeue(job_id, attempt)
        # A queued job whose task was never sent (the send failed) would wait forever.
        older_than = self.settings.lease_seconds * STRANDED_AFTER_LEASES
        for job_id, request_id in self.store.leases.stranded(older_than):
            log.warning("queued job not claimed; sending its task again",
                        extra={"job_id": job_id})
            self.send(job_id, request_id)

    def send(self, job_id: str, request_id: str) -> None:
        send_generate(self.celery, job_id, request_id)

    def count_final(self, status: str) -> None:
        metrics.JOBS_FINISHED.labels(status=status).inc()

    def _requeue(self, job_id: str, attempt: int) -> None:
        """A dead worker's job: queued again with its task sent, or failed (attempts spent)."""
        try:
            record = self.store.requeue_lost(job_id, attempt)
        except (InvalidTransition, JobNotFound):
            return  # a worker reclaimed it meanwhile
        log.warning("job's worker died", extra={"job_id": job_id, "attempt": attempt,
                                                "status": record["status"]})
        if record["status"] == Status.QUEUED:
            self.send(job_id, str(record["request_id"]))
        else:
            self.count_final(str(record["status"]))


class IngestReaper(Reaper):
    """The same for ingest jobs (shared/ingest_jobs.py), run by the ingest workers."""

    lock = keys.INGEST_REAPER_LOCK

    def send(self, job_id: str, request_id: str) -> None:
        send_ingest(self.celery, job_id, request_id)

    def count_final(self, status: str) -> None:
        """Nothing to add: IngestJobs.finish counts every final status (rag_ingest_jobs_total)."""
