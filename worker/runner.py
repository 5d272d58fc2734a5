"""The life of one job in a worker: claim, lease, stream its events, aftercare, finish.

`JobRunner.run_job()` is what the Celery task calls (through this process's Runtime).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from shared import events, metrics
from shared.errors import InvalidTransition
from shared.jobs import JobRecord, JobStore, Outcome, Status
from shared.pricing import cost_eur
from shared.settings import Settings
from worker.aftercare import Aftercare
from worker.pipeline.types import Answer, PipelineLike, SourcesItem, TokenItem
from worker.tickers import Lease

log = logging.getLogger(__name__)


class JobRunner:
    """Runs the jobs this worker claims, one at a time, on its pipeline."""

    def __init__(self, settings: Settings, pipeline: PipelineLike, store: JobStore, node: str,
                 aftercare: Aftercare | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.node = node
        self.aftercare = aftercare

    def run_job(self, job_id: str) -> str:
        """Claim and run the job; returns its final status, or why it did not run here."""
        claim = self.store.claim(job_id, self.node)
        if not claim.run or claim.record is None:
            log.info("job not run", extra={"outcome": claim.outcome, "reason": claim.reason})
            if claim.outcome in (Outcome.EXPIRED, Outcome.FAILED):
                metrics.JOBS_FINISHED.labels(status=claim.outcome).inc()
            return claim.outcome
        record = claim.record
        metrics.QUEUE_WAIT.observe(record["metrics"]["queue_wait_s"])
        if record["attempt"] > 1:
            metrics.JOB_ATTEMPTS.inc()
        with Lease(self.store, job_id, self.node, record["attempt"]) as lease:
            return self._run_claimed(record, lease)

    def fail_bad_message(self, job_id: str, message: str) -> str:
        """A task message we cannot run: the job (claimed so no one else runs it) fails."""
        claim = self.store.claim(job_id, self.node)
        if not claim.run or claim.record is None:
            return claim.outcome
        error = {"type": "BadTaskMessage", "message": message}
        self.store.finish(job_id, Status.FAILED, claim.record["attempt"], error=error)
        metrics.JOBS_FINISHED.labels(status=Status.FAILED).inc()
        return Status.FAILED

    def _run_claimed(self, record: JobRecord, lease: Lease) -> str:
        job_id = record["id"]

        def should_stop() -> bool:
            return lease.lost or self.store.cancel_requested(job_id)

        try:
            answer = self._generate(record, should_stop)
        except SoftTimeLimitExceeded:
            return self._fail(record, "TimeLimitExceeded",
                              f"ran longer than {self.settings.jobs.soft_time_limit_seconds}s")
        except Exception as error:  # the task boundary: any pipeline error fails the job
            log.exception("job failed")
            return self._fail(record, type(error).__name__, str(error))
        if lease.lost:
            log.warning("lease lost: another worker runs this job now; result dropped")
            return Outcome.LOST
        return self._succeed_or_cancel(record, answer)

    def _generate(self, record: JobRecord, should_stop: Callable[[], bool]) -> Answer:
        job_id = record["id"]
        for item in self.pipeline.stream(record["query"], record["top_k"], should_stop):
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
        result = {"answer": answer.answer, "sources": [s.to_dict() for s in answer.sources],
                  "finish_reason": answer.finish_reason.value}
        if status == Status.SUCCEEDED and self.aftercare is not None:
            self.aftercare(record, result)
        self.store.finish(record["id"], status, record["attempt"],
                          charge_eur=job_metrics["cost_eur"], result=result, metrics=job_metrics)
        observe_answer(answer, status)
        log.info("job finished", extra={"status": status.value, "cost_eur": job_metrics["cost_eur"],
                                        "generated_tokens": answer.generated_tokens})
        return status

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
    metrics.PROMPT_TOKENS.inc(answer.prompt_tokens)
    metrics.JOBS_FINISHED.labels(status=status).inc()
    metrics.ANSWERS.labels(finish_reason=answer.finish_reason.value).inc()
