"""gunicorn configuration of ragq's web tier.

    gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'

Worker class: web.serving.Worker, gunicorn's gevent worker (see web/serving.py for why and what
it adds). A connection, an open WebSocket included, costs a greenlet, not a thread, so one
client holding hundreds of sockets no longer starves everyone else: each process serves up to
API_CONNECTIONS at once, one client address at most API_CONNECTIONS_PER_CLIENT of them (the
app answers 429 past it), one job at most API_WEBSOCKETS_PER_JOB WebSockets, and a request's
line and headers must arrive within API_HEADER_TIMEOUT_SECONDS (its body within
API_BODY_TIMEOUT_SECONDS: web/bodies.py). The measurements are in bench/web_hostile.py.

Metrics: every worker writes prometheus_client's multiprocess files under
PROMETHEUS_MULTIPROC_DIR, wiped when gunicorn starts and cleaned per dead worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

from shared.settings import load_settings

_settings = load_settings()
_METRICS_DIR = Path(tempfile.gettempdir()) / f"ragq-web-metrics-{_settings.api.port}"
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_METRICS_DIR))

bind = f"{_settings.api.host}:{_settings.api.port}"
workers = _settings.api.workers
worker_class = "web.serving.Worker"
worker_connections = _settings.api.connections
# gevent's worker reads each request's line and headers under gevent.Timeout(keepalive): the
# header deadline, and how long an idle keep-alive connection waits for its next request.
keepalive = _settings.api.header_timeout_seconds
timeout = 30  # how long the arbiter waits for a silent worker, not a request limit
graceful_timeout = 10
limit_request_line = 8190
# gunicorn's control socket lives at one path per user: several servers (tests, benches) would
# fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = None  # every request is counted in rag_requests_total; errors are logged as JSON


def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: stale files would add old samples."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():  # the contents only: the folder may be a mount (tmpfs)
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (open WebSockets) from the merged view."""
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Warm each worker's cache embedder, so no request (and no latency alert) pays the load."""
    from web.resources import warm_up

    warm_up(worker.wsgi)
