"""What a worker does once a job succeeded: charge the breaker, record the job's duration for
admission control, and cache the answer under the embedding the web computed for the query."""

from __future__ import annotations

import logging
from typing import Any

import redis

from shared import keys, metrics
from shared.admission import record_duration
from shared.breaker import RESERVED_FIELD, WINDOW_FIELD, Breaker
from shared.cache import JOB_EMBEDDING_FIELD, SemanticCache, decode_vector, scope_for
from shared.errors import BrokerUnavailable
from shared.settings import Settings

log = logging.getLogger(__name__)


class AfterSuccess:
    """Called with each succeeded job's final record; never fails the job."""

    def __init__(
        self, settings: Settings, broker: redis.Redis, pipeline_info: dict[str, str]
    ) -> None:
        self.broker = broker
        self.breaker = Breaker(broker, settings.breaker)
        self.cache = SemanticCache(settings.cache, None, settings.cache.redis_url, verifier=None)
        self.pipeline_info = pipeline_info

    def __call__(self, record: dict[str, Any]) -> None:
        try:
            embedding, reserved, window = self.broker.hmget(
                keys.job(record["id"]), [JOB_EMBEDDING_FIELD, RESERVED_FIELD, WINDOW_FIELD]
            )
            spend = self.breaker.charge(
                float(record["metrics"].get("cost_eur") or 0.0),
                reserved_eur=float(reserved or 0.0),
                reserved_window=int(window) if window else None,
            )
            if record.get("started_at") and record.get("finished_at"):
                record_duration(self.broker, record["finished_at"] - record["started_at"])
        except (BrokerUnavailable, redis.RedisError) as error:
            metrics.ERRORS.labels(type="after_success").inc()
            log.warning("breaker charge or duration not recorded", extra={"error": str(error)})
            return
        log.info("job charged", extra={"window_spend_eur": spend})
        if embedding:
            scope = scope_for(self.pipeline_info, int(record["top_k"]))
            self.cache.store(
                record["query"], scope, decode_vector(str(embedding)), record["result"] or {}
            )
