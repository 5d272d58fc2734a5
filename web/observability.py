"""Request metrics for every response, and GET /metrics for Prometheus.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (prometheus_client's own variable, set by
web/gunicorn_conf.py) makes every worker write its samples to files that /metrics merges.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from shared.metrics import REQUESTS

UNMATCHED = "<unmatched>"


def _count(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    REQUESTS.labels(method=request.method, endpoint=endpoint, status=str(response.status_code)).inc()
    return response


def metrics() -> Response:
    """Every metric of every web process (the worker serves its own)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = REGISTRY
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", metrics)
