"""The reaper: jobs whose worker died are queued again and their tasks sent again.

Every worker runs it (REAPS_PER_LEASE times per lease), one at a time across all workers
(`keys.REAPER_LOCK`). A running job whose lease expired is requeued (attempt + 1 on its next
claim) or, once it killed JOBS_MAX_ATTEMPTS workers, failed; a requeued job still unclaimed
after STRANDED_AFTER_LEASES leases gets its task again (the send after a requeue may have
failed, and a duplicate task is dropped by the claim).
"""

from __future__ import annotations

import logging
from typing import cast

import redis
from celery import Celery

from shared import keys, metrics
from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import JobStore, Status, lease_node
from shared.settings import JobSettings
from shared.tasks import send_generate

log = logging.getLogger(__name__)

REAPS_PER_LEASE = 2
STRANDED_AFTER_LEASES = 3  # a requeued job not claimed after this many leases gets its task again


class Reaper:
    """Requeues dead workers' jobs and sends their tasks again; see the module docstring."""

    def __init__(self, settings: JobSettings, store: JobStore, redis_client: redis.Redis,
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
        for job_id in cast(list[str], self.redis.zrange(keys.RUNNING, 0, -1)):
            holder = cast(str | None, self.redis.get(keys.job_lease(job_id)))
            if holder is None or lease_node(holder) != self.node:
                continue
            attempt = int(cast(str, self.redis.hget(keys.job(job_id), "attempt")) or 0)
            self._requeue(job_id, attempt)

    def reap(self) -> None:
        """Queue again the jobs of dead workers; one reaper at a time across all workers."""
        interval_ms = int(self.interval * 1000)
        if not self.redis.set(keys.REAPER_LOCK, self.node, nx=True, px=interval_ms):
            return
        for job_id, attempt in self.store.lost_jobs():
            self._requeue(job_id, attempt)
        # A requeued job whose task was never sent (the send failed) would wait forever.
        older_than = self.settings.lease_seconds * STRANDED_AFTER_LEASES
        for job_id, request_id in self.store.stranded_jobs(older_than):
            log.warning("requeued job not claimed; sending its task again",
                        extra={"job_id": job_id})
            send_generate(self.celery, job_id, request_id)

    def _requeue(self, job_id: str, attempt: int) -> None:
        """A dead worker's job: queued again with its task sent, or failed (attempts spent)."""
        try:
            record = self.store.requeue_lost(job_id, attempt)
        except (InvalidTransition, JobNotFound):
            return  # a worker reclaimed it meanwhile
        log.warning("job's worker died", extra={"job_id": job_id, "attempt": attempt,
                                                "status": record["status"]})
        if record["status"] == Status.QUEUED:
            send_generate(self.celery, job_id, record["request_id"])
        else:
            metrics.JOBS_FINISHED.labels(status=record["status"]).inc()
