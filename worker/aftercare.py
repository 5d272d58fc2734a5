"""What a worker does with a good answer before it marks the job succeeded: record the job's
duration for admission control and cache the answer under the embedding the web computed for
the query. Only an answer the model ended itself is cached: one that looped, ran out of tokens
or is empty would otherwise be served to every paraphrase for the cache's whole TTL.
Both happen before the final transition (which also settles the job's breaker reservation,
shared/jobs.py), so a client that repeats the question the moment it sees `done` finds the
answer in the cache. Neither may cost the job its `done`: a failure is counted, logged and
skipped (a cache Redis that is down is a skipped write inside write_entry already)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from shared import metrics
from shared.admission import record_duration
from shared.cache import connect_cache, job_cache_target, scope_for, write_entry
from shared.collections import DEFAULT, scoped_version
from shared.error_types import ErrorType
from shared.jobs import FinishReason, JobRecord
from shared.series import EMPTY_ANSWER
from shared.settings import Settings

log = logging.getLogger(__name__)


class Aftercare:
    """Called once per answered job, before it turns succeeded; never raises."""

    def __init__(
        self, settings: Settings, broker: redis.Redis, pipeline_info: dict[str, str]
    ) -> None:
        self.broker = broker
        self.cache_settings = settings.cache
        self.cache = connect_cache(settings.cache)
        self.pipeline_info = pipeline_info

    def __call__(self, record: JobRecord, result: dict[str, Any]) -> None:
        """`record`: the running job (as claimed); `result`: its answer and sources."""
        try:
            started_at = record["started_at"]
            assert started_at is not None, "a claimed job has started"
            record_duration(self.broker, time.time() - started_at)
            reason = uncacheable(result)
            if reason:
                metrics.CACHE_WRITES_SKIPPED.labels(reason=reason).inc()
                return
            target = job_cache_target(self.broker, record["id"])
            if target is not None:
                scope = scope_for(answered_by(self.pipeline_info, result), int(record["top_k"]),
                                  target.tenant)
                write_entry(self.cache, self.cache_settings, record["query"], scope,
                            target.vector, result, target.owner)
        except Exception as error:  # the job's done event matters more than its aftercare
            metrics.ERRORS.labels(type=ErrorType.AFTERCARE).inc()
            log.warning("aftercare failed; the job ends succeeded without it",
                        extra={"error": repr(error)})


def answered_by(pipeline_info: dict[str, str], result: dict[str, Any]) -> dict[str, str]:
    """The pipeline info of the index that answered: a collection's answer is cached in the
    scope of its collection and version (docs/collections.md), as the web looked it up."""
    collection = result.get("collection", DEFAULT)
    if collection == DEFAULT:
        return pipeline_info
    return {**pipeline_info,
            "index_version": scoped_version(collection, str(result["index_version"]))}


def uncacheable(result: dict[str, Any]) -> str | None:
    """Why an answer must not be cached (its finish reason, or `empty`); None when it may be."""
    reason = result.get("finish_reason", FinishReason.STOP)
    if reason != FinishReason.STOP:
        return str(reason)
    if not str(result.get("answer", "")).strip():
        return EMPTY_ANSWER
    return None
