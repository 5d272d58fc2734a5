"""What a worker does with a good answer before it marks the job succeeded: record the job's
duration for admission control and cache the answer under the embedding the web computed for
the query. Both happen before the final transition (which also settles the job's breaker
reservation, shared/jobs.py), so a client that repeats the question the moment it sees `done`
finds the answer in the cache. Neither may cost the job its `done`: a failure is counted, logged
and skipped (a cache Redis that is down is a skipped write inside SemanticCache already)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from shared import keys, metrics
from shared.admission import record_duration
from shared.cache import JOB_EMBEDDING_FIELD, SemanticCache, decode_vector, scope_for
from shared.settings import Settings

log = logging.getLogger(__name__)


class Aftercare:
    """Called once per answered job, before it turns succeeded; never raises."""

    def __init__(
        self, settings: Settings, broker: redis.Redis, pipeline_info: dict[str, str]
    ) -> None:
        self.broker = broker
        self.cache = SemanticCache(settings.cache, None, settings.cache.redis_url, verifier=None)
        self.pipeline_info = pipeline_info

    def __call__(self, record: dict[str, Any], result: dict[str, Any]) -> None:
        """`record`: the running job (as claimed); `result`: its answer and sources."""
        try:
            record_duration(self.broker, time.time() - float(record["started_at"]))
            embedding = self.broker.hget(keys.job(record["id"]), JOB_EMBEDDING_FIELD)
            if embedding:
                scope = scope_for(self.pipeline_info, int(record["top_k"]))
                self.cache.store(record["query"], scope, decode_vector(str(embedding)), result)
        except Exception as error:  # the job's done event matters more than its aftercare
            metrics.ERRORS.labels(type="aftercare").inc()
            log.warning("aftercare failed; the job ends succeeded without it",
                        extra={"error": repr(error)})
