"""Request metrics for every response, and GET /metrics for Prometheus.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (prometheus_client's own variable, set by
web/gunicorn_conf.py) makes every worker write its samples to files that /metrics merges.
"""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from shared.broker import memory as broker_memory
from shared.error_types import WEB_ERROR_TYPES, ErrorType
from shared.errors import BrokerUnavailable
from shared.metrics import (
    BROKER_MEMORY_MAX,
    BROKER_MEMORY_USED,
    ERRORS,
    QUEUE_DEPTH,
    REQUESTS,
    WORKERS_ONLINE,
)
from shared.series import zero_known_series
from shared.workers import GENERATION, list_workers
from web.problems import PROBLEM_TYPES
from web.resources import resources

log = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"


def _count(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    status = str(response.status_code)
    REQUESTS.labels(method=request.method, endpoint=endpoint, status=status).inc()
    return response


def _refresh_broker_gauges() -> None:
    """Queue depth, broker memory, live workers and the breaker's spend and state (`state()`
    sets its gauges), read from the broker each time Prometheus scrapes, so none is stale after
    a window resets."""
    try:
        QUEUE_DEPTH.set(resources().store.queue_depth())
        used = broker_memory(resources().redis)
        BROKER_MEMORY_USED.set(used["used_bytes"])
        BROKER_MEMORY_MAX.set(used["max_bytes"])
        WORKERS_ONLINE.set(len(list_workers(resources().redis, GENERATION)))
        resources().breaker.state()
    except BrokerUnavailable as error:
        ERRORS.labels(type=ErrorType.METRICS_BROKER).inc()
        log.warning("metrics scrape cannot read the broker; its gauges keep their last values",
                    extra={"error": str(error)})


def metrics() -> Response:
    """Every metric of every web process (the worker serves its own)."""
    _refresh_broker_gauges()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = REGISTRY
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    zero_known_series((*PROBLEM_TYPES, *WEB_ERROR_TYPES))
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", metrics)
