"""gunicorn configuration of ragq's web tier.

    gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'


Worker class: gthread. Each open WebSocket holds one thread of its worker process for its
lifetime (plus simple-websocket's reader thread), so a process holds up to API_THREADS sockets
and API_WORKERS * API_THREADS in all (2 * 128 by default). gthread keeps real OS threads, so
redis-py, kombu and the shared pub/sub hub's thread work as written, with no monkey-patching;
the cost of a blocked thread is its stack (memory per open socket is measured by
bench/web_ws_fanout.py and reported in docs/api.md). gevent would hold more sockets per
process, but it needs monkey-patching that must reach redis-py, kombu and the hub before they
are imported, and one CPU-bound request (e.g. a cache embedding) stalls every socket of the
process. Holding hundreds of watchers does not need that trade.

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
worker_class = "gthread"
threads = _settings.api.threads
# A worker accepts no more connections than it has threads: a WebSocket it could not give a
# thread would wait in its queue while the other worker has threads free (the kernel does not
# balance accepts between processes). The price: no idle keep-alive connections are kept.
worker_connections = _settings.api.threads
timeout = 30  # gthread: how long the arbiter waits for a silent worker, not a request limit
graceful_timeout = 10
keepalive = 5
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
