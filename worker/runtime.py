"""One worker process's state and the life of one job in it.

`start()` runs once per pool child (worker_process_init): it loads the pipeline, opens the
broker connection, and starts three background threads: the heartbeat, the reaper (sends again
the tasks of jobs whose worker died) and the metrics endpoint. `Runtime.run_job()` is what the
Celery task calls: claim, lease, stream events, finish.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery
from prometheus_client import start_http_server

from shared import events, keys, metrics
from shared.broker import connect
from shared.errors import InvalidTransition, JobNotFound, RagqError
from shared.jobs import JobStore, Status
from shared.pricing import cost_eur
from shared.settings import Settings
from shared.tasks import send_generate
from shared.workers import publish_pipeline_info, write_heartbeat
from worker.aftercare import Aftercare
from worker.pipeline import load_pipeline
from worker.pipeline.types import Answer, PipelineLike, SourcesItem, TokenItem

log = logging.getLogger(__name__)

LEASE_RENEWALS_PER_LEASE = 3
REAPS_PER_LEASE = 2
STRANDED_AFTER_LEASES = 3  # a requeued job not claimed after this many leases gets its task again


class Ticker:
    """Calls `func` every `interval` seconds on a daemon thread until stopped; logs its errors."""

    def __init__(self, name: str, interval: float, func: Callable[[], None]) -> None:
        self.interval = interval
        self.func = func
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 1.0)

    def _run(self) -> None:
        while True:
            try:
                self.func()
            except (RagqError, redis.RedisError) as error:
                metrics.ERRORS.labels(type=f"ticker_{self._thread.name}").inc()
                log.warning("background task failed", extra={"task": self._thread.name,
                                                             "error": str(error)})
            except Exception:  # anything else would end the thread: no heartbeat, no reaper
                metrics.ERRORS.labels(type=f"ticker_{self._thread.name}").inc()
                log.exception("background task failed", extra={"task": self._thread.name})
            if self._stopped.wait(self.interval):
                return


class Lease:
    """Keeps a running job's lease alive; `lost` turns true when another worker took the job."""

    def __init__(self, store: JobStore, job_id: str, node: str, attempt: int) -> None:
        self.store = store
        self.job_id = job_id
        self.node = node
        self.attempt = attempt
        self.lost = False
        interval = store.jobs.lease_seconds / LEASE_RENEWALS_PER_LEASE
        self._ticker = Ticker("lease", interval, self._renew)

    def _renew(self) -> None:
        if not self.store.renew_lease(self.job_id, self.node, self.attempt):
            self.lost = True
            self._ticker.stop()

    def __enter__(self) -> Lease:
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticker.stop()


class Runtime:
    """What one worker process holds: settings, pipeline, broker connection, job store."""

    def __init__(self, settings: Settings, pipeline: PipelineLike, redis_client: redis.Redis,
                 celery: Celery, node: str, aftercare: Aftercare | None = None) -> None:
        self.settings = settings
        self.aftercare = aftercare
        self.pipeline = pipeline
        self.redis = redis_client
        self.celery = celery
        self.node = node
        self.store = JobStore(redis_client, settings)
        self._tickers: list[Ticker] = []

    # --- process life -------------------------------------------------------------------
    def start_background(self) -> None:
        publish_pipeline_info(self.redis, self.pipeline_info())
        lease = self.settings.jobs.lease_seconds
        self._tickers = [
            Ticker("heartbeat", self.settings.worker.heartbeat_seconds, self.heartbeat).start(),
            Ticker("reaper", lease / REAPS_PER_LEASE, self.reap).start(),
        ]

    def stop_background(self) -> None:
        for ticker in self._tickers:
            ticker.stop()

    def pipeline_info(self) -> dict[str, str]:
        return {"index_version": self.pipeline.index_version, "model_id": self.pipeline.model_id,
                "prompt_version": self.pipeline.prompt_version}

    def heartbeat(self) -> None:
        """Report this process (pid, pipeline, device) and export its VRAM use."""
        device = self.pipeline.device_report()
        metrics.GPU_VRAM_USED.set(float(device.get("vram_used_gb") or 0.0))
        report = {"node": self.node, "pid": os.getpid(), "parent_pid": os.getppid(),
                  "pipeline_loaded": True, "device": device, **self.pipeline_info()}
        write_heartbeat(self.redis, report, self.settings.worker.heartbeat_seconds)

    def reap(self) -> None:
        """Queue again the jobs of dead workers; one reaper at a time across all workers."""
        interval_ms = int(self.settings.jobs.lease_seconds / REAPS_PER_LEASE * 1000)
        if not self.redis.set(keys.REAPER_LOCK, self.node, nx=True, px=interval_ms):
            return
        for job_id, attempt in self.store.lost_jobs():
            try:
                record = self.store.requeue_lost(job_id, attempt)
            except (InvalidTransition, JobNotFound):
                continue  # a worker reclaimed it meanwhile
            log.warning("job's worker died", extra={"job_id": job_id, "attempt": attempt,
                                                    "status": record["status"]})
            if record["status"] == Status.QUEUED:
                send_generate(self.celery, job_id, record["request_id"])
            else:
                metrics.JOBS_FINISHED.labels(status=record["status"]).inc()
        # A requeued job whose task was never sent (the send failed) would wait forever.
        older_than = self.settings.jobs.lease_seconds * STRANDED_AFTER_LEASES
        for job_id, request_id in self.store.stranded_jobs(older_than):
            log.warning("requeued job not claimed; sending its task again",
                        extra={"job_id": job_id})
            send_generate(self.celery, job_id, request_id)

    # --- one job ------------------------------------------------------------------------
    def run_job(self, job_id: str) -> str:
        """Claim and run the job; returns its final status, or why it did not run here."""
        claim = self.store.claim(job_id, self.node)
        if not claim.run or claim.record is None:
            log.info("job not run", extra={"outcome": claim.outcome, "reason": claim.reason})
            if claim.outcome in (Status.EXPIRED, Status.FAILED):
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

    def _run_claimed(self, record: dict[str, Any], lease: Lease) -> str:
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
            return "lost"
        return self._succeed_or_cancel(record, answer)

    def _generate(self, record: dict[str, Any], should_stop: Callable[[], bool]) -> Answer:
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

    def _succeed_or_cancel(self, record: dict[str, Any], answer: Answer) -> str:
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

    def _fail(self, record: dict[str, Any], error_type: str, message: str) -> str:
        metrics.ERRORS.labels(type=error_type).inc()
        error = {"type": error_type, "message": message}
        try:
            self.store.finish(record["id"], Status.FAILED, record["attempt"], error=error)
        except InvalidTransition:  # the worker that has it now counts how it ends
            log.warning("job already taken by another worker; failure not recorded")
            return "lost"
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


_runtime: Runtime | None = None


def start(settings: Settings, celery: Celery, node: str) -> Runtime:
    """Build this process's runtime: load the pipeline once, start the background threads."""
    global _runtime
    pipeline = load_pipeline(settings.pipeline)
    client = connect(settings.broker)
    _runtime = Runtime(settings, pipeline, client, celery, node)
    _runtime.aftercare = Aftercare(settings, client, _runtime.pipeline_info())
    _runtime.start_background()
    serve_metrics(settings.worker.metrics_port)
    return _runtime


def serve_metrics(port: int) -> None:
    """Serve /metrics from this process (the pool child that records them); 0 turns it off."""
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as error:
        metrics.ERRORS.labels(type="metrics_port").inc()
        log.error("cannot serve worker metrics", extra={"port": port, "error": str(error)})


def stop() -> None:
    if _runtime is not None:
        _runtime.stop_background()


def current() -> Runtime:
    """This process's runtime (it exists once worker_process_init ran here)."""
    if _runtime is None:
        raise RuntimeError("worker runtime not started: worker_process_init has not run here")
    return _runtime

