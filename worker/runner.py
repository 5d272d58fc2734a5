"""The life of one job in a worker: claim, lease, stream its events, aftercare, finish.

`JobRunner.run_job()` is what the Celery task calls (through this process's Runtime). With
WORKER_MAX_BATCH at 1 the task runs its job to the end. Above 1 the task only admits the job:
it waits for a free slot, claims the job, starts it on a thread of its own (worker/inflight.py)
and returns once the process has room for another job, so Celery hands it the next message
while the pipeline decodes every job in flight together (docs/jobs.md, "Batched decoding").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import Reject

from shared import events, metrics
from shared.collections import job_collection
from shared.error_types import ErrorType
from shared.errors import InvalidTransition
from shared.jobs import Claim, JobRecord, JobStore, Outcome, Status
from shared.pricing import cost_eur
from shared.settings import Settings
from worker.aftercare import Aftercare
from worker.inflight import InFlight
from worker.pipeline.types import Answer, PipelineLike, SourcesItem, TokenItem
from worker.tickers import Lease

log = logging.getLogger(__name__)


class JobRunner:
    """Runs the jobs this worker claims on its pipeline: one at a time, or up to
    WORKER_MAX_BATCH at once, each on its own thread (`in_flight`)."""

    def __init__(self, settings: Settings, pipeline: PipelineLike, store: JobStore, node: str,
                 aftercare: Aftercare | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.node = node
        self.aftercare = aftercare
        batch = settings.worker.max_batch
        self.in_flight = InFlight(batch) if batch > 1 else None
        self._alone: str | None = None  # the job running now when not batching

    def jobs_in_flight(self) -> list[str]:
        """The ids of the jobs this process runs now."""
        if self.in_flight is not None:
            return self.in_flight.job_ids()
        return [self._alone] if self._alone else []

    def run_job(self, job_id: str) -> str:
        """Claim and run the job; returns its final status, or why it did not run here. When
        batching: returns `run` once the job runs on its own thread and another fits."""
        if self.in_flight is not None:
            return self._admit(job_id, self.in_flight)
        claim = self._claim(job_id)
        if claim.record is None or not claim.run:
            return claim.outcome
        self._alone = job_id
        try:
            return self._run_leased(claim.record)
        finally:
            self._alone = None

    def _claim(self, job_id: str) -> Claim:
        claim = self.store.claim(job_id, self.node)
        if not claim.run or claim.record is None:
            log.info("job not run", extra={"outcome": claim.outcome, "reason": claim.reason})
            if claim.outcome in (Outcome.EXPIRED, Outcome.FAILED):
                metrics.JOBS_FINISHED.labels(status=claim.outcome).inc()
            return claim
        metrics.QUEUE_WAIT.observe(claim.record["metrics"]["queue_wait_s"])
        if claim.record["attempt"] > 1:
            metrics.JOB_ATTEMPTS.inc()
        return claim

    def _run_leased(self, record: JobRecord, deadline: float | None = None) -> str:
        with Lease(self.store.leases, record["id"], self.node, record["attempt"]) as lease:
            return self._run_claimed(record, lease, deadline)

    def _admit(self, job_id: str, in_flight: InFlight) -> str:
        """Wait for a slot, claim the job, start it on its own thread; return once the process
        has room for the next job, so the message is acknowledged only then (docs/jobs.md)."""
        if job_id in in_flight:  # a duplicate task: the claim would take this for a dead child's
            log.info("job not run", extra={"outcome": Outcome.DROP, "reason": "running here"})
            return Outcome.DROP
        waited = time.monotonic()
        if not in_flight.reserve(self.admission_wait_s):
            raise Reject("no free batch slot; the message goes back to the queue", requeue=True)
        metrics.SLOT_WAIT.observe(time.monotonic() - waited)
        try:
            claim = self._claim(job_id)
        except Exception:  # the broker is down, say: the slot must not stay taken
            in_flight.release()
            raise
        if claim.record is None or not claim.run:
            in_flight.release()
            return claim.outcome
        record = claim.record
        deadline = time.monotonic() + self.settings.jobs.soft_time_limit_seconds
        in_flight.start(job_id, lambda: self._run_leased(record, deadline))
        in_flight.wait_for_room(self.admission_wait_s)
        return Outcome.RUN

    @property
    def admission_wait_s(self) -> float:
        """How long the admitting task waits for a slot, and then for room: each half the soft
        time limit, so the task itself never reaches it."""
        return self.settings.jobs.soft_time_limit_seconds / 2

    def fail_bad_message(self, job_id: str, message: str) -> str:
        """A task message we cannot run: the job (claimed so no one else runs it) fails."""
        claim = self.store.claim(job_id, self.node)
        if not claim.run or claim.record is None:
            return claim.outcome
        error = {"type": "BadTaskMessage", "message": message}
        self.store.finish(job_id, Status.FAILED, claim.record["attempt"], error=error)
        metrics.JOBS_FINISHED.labels(status=Status.FAILED).inc()
        return Status.FAILED

    def _run_claimed(self, record: JobRecord, lease: Lease, deadline: float | None) -> str:
        """Run the claimed job; `deadline` (monotonic): its time limit when Celery's does not
        apply (a job on its own thread)."""
        job_id = record["id"]
        timed_out = threading.Event()

        def should_stop() -> bool:
            if deadline is not None and time.monotonic() > deadline:
                timed_out.set()
                return True
            return lease.lost or self.store.cancel_requested(job_id)

        try:
            answer = self._generate(record, should_stop)
        except SoftTimeLimitExceeded:
            return self._time_limit_failure(record)
        except Exception as error:  # the task boundary: any pipeline error fails the job
            log.exception("job failed")
            return self._fail(record, type(error).__name__, str(error))
        if timed_out.is_set():
            return self._time_limit_failure(record)
        if lease.lost:
            log.warning("lease lost: another worker runs this job now; result dropped")
            return Outcome.LOST
        return self._succeed_or_cancel(record, answer)

    def _generate(self, record: JobRecord, should_stop: Callable[[], bool]) -> Answer:
        job_id = record["id"]
        collection = job_collection(self.store.redis, job_id)
        for item in self.pipeline.stream(record["query"], record["top_k"], should_stop,
                                         collection):
            if isinstance(item, TokenItem):
                self.store.events.emit(job_id, events.TOKEN, text=item.text)
            elif isinstance(item, SourcesItem):
                self.store.events.emit(job_id, events.SOURCES,
                                       sources=[source.to_dict() for source in item.sources])
            elif isinstance(item, Answer):
                return item
        raise RuntimeError("pipeline ended without an Answer")

    def _succeed_or_cancel(self, record: JobRecord, answer: Answer) -> str:
        """Aftercare (cache write, duration) first, then the final transition, which settles the
        breaker with the job's cost (partial for a cancelled job) and emits `done`."""
        status = Status.CANCELLED if answer.stopped else Status.SUCCEEDED
        job_metrics = self.answer_metrics(answer)
        # answer.extra: the collection and index_version that answered (docs/collections.md)
        result = {"answer": answer.answer, "sources": [s.to_dict() for s in answer.sources],
                  "finish_reason": answer.finish_reason.value, **answer.extra}
        if status == Status.SUCCEEDED and self.aftercare is not None:
            self.aftercare(record, result)
        self.store.finish(record["id"], status, record["attempt"],
                          charge_eur=job_metrics["cost_eur"], result=result, metrics=job_metrics)
        observe_answer(answer, status)
        log.info("job finished", extra={"status": status.value, "cost_eur": job_metrics["cost_eur"],
                                        "generated_tokens": answer.generated_tokens})
        return status

    def _time_limit_failure(self, record: JobRecord) -> str:
        return self._fail(record, ErrorType.TIME_LIMIT_EXCEEDED,
                          f"ran longer than {self.settings.jobs.soft_time_limit_seconds}s")

    def _fail(self, record: JobRecord, error_type: str, message: str) -> str:
        metrics.ERRORS.labels(type=error_type).inc()
        error = {"type": error_type, "message": message}
        try:
            self.store.finish(record["id"], Status.FAILED, record["attempt"], error=error)
        except InvalidTransition:  # the worker that has it now counts how it ends
            log.warning("job already taken by another worker; failure not recorded")
            return Outcome.LOST
        metrics.JOBS_FINISHED.labels(status=Status.FAILED).inc()
        return Status.FAILED

    def answer_metrics(self, answer: Answer) -> dict[str, Any]:
        """The record's metrics for a finished answer, cost included."""
        return {
            "retrieval_s": answer.retrieval_s, "rerank_s": answer.rerank_s,
            "ttft_s": answer.ttft_s, "generation_s": answer.generation_s,
            "prompt_tokens": answer.prompt_tokens, "generated_tokens": answer.generated_tokens,
            "tokens_per_s": answer.tokens_per_s,
            "cost_eur": cost_eur(answer.prompt_tokens, answer.generated_tokens,
                                 self.settings.breaker),
            "cached": False, "cache_similarity": None,
        }


def observe_answer(answer: Answer, status: str) -> None:
    """Export one answer's stage timings and token counts."""
    metrics.RETRIEVAL_LATENCY.observe(answer.retrieval_s)
    if answer.rerank_s > 0:
        metrics.RERANK_LATENCY.observe(answer.rerank_s)
    metrics.GENERATION_LATENCY.observe(answer.generation_s)
    if answer.generated_tokens:
        metrics.TIME_TO_FIRST_TOKEN.observe(answer.ttft_s)
    metrics.TOKENS_GENERATED.inc(answer.generated_tokens)
    if answer.generated_tokens:
        metrics.JOB_TOKENS_PER_SECOND.observe(answer.tokens_per_s)
    metrics.PROMPT_TOKENS.inc(answer.prompt_tokens)
    metrics.JOBS_FINISHED.labels(status=status).inc()
    metrics.ANSWERS.labels(finish_reason=answer.finish_reason.value).inc()
