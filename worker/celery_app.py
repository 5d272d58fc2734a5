"""The worker's Celery app. Start one worker per GPU with:

    celery -A worker.celery_app worker -Q ragq.generate -c 1 -P prefork -n gpu0@%h

Why prefork with one child: the parent process keeps consuming from the broker and answering
`celery inspect ping` while the child generates (a thread or solo pool would sit inside the
model's native code), and a crash in native model code kills only the child: the parent sees
the worker lost, requeues the message (task_reject_on_worker_lost) and forks a fresh child.
Concurrency 1 because one process owns the one GPU. The pipeline loads in
`worker_process_init`, once per child, never at import in the parent. A child that cannot
load it (any exception) stops the whole worker (its parent gets SIGTERM) rather than take
jobs it cannot run: queued jobs wait for healthy workers, and the supervisor restarts this one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

from celery import Celery, signals

from shared.errors import RagqError
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.tasks import celery_config
from worker import runtime

log = logging.getLogger(__name__)


def make_celery(settings: Settings) -> Celery:
    """The worker's Celery app on `settings`, with the signal handlers that start and stop
    this process's runtime (they are connected for the life of the process)."""
    app = Celery("ragq", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    node = {"name": f"worker@{socket.gethostname()}"}

    def configure(**_: Any) -> None:
        configure_logging(settings.log, "worker")

    def remember_node(sender: str | None = None, **_: Any) -> None:
        # The parent learns its node name here; the forked child inherits it.
        if sender:
            node["name"] = sender

    def start_child(**_: Any) -> None:
        configure_logging(settings.log, "worker")
        _start_runtime(settings, app, node["name"])

    def stop_child(**_: Any) -> None:
        runtime.stop()

    signals.setup_logging.connect(configure, weak=False)
    signals.celeryd_init.connect(remember_node, weak=False)
    signals.worker_process_init.connect(start_child, weak=False)
    signals.worker_process_shutdown.connect(stop_child, weak=False)
    return app


def _start_runtime(settings: Settings, app: Celery, node: str) -> None:
    """Start this child's runtime; when it cannot load the pipeline, stop the whole worker."""
    try:
        runtime.start(settings, app, node)
    except Exception as error:  # CUDA's RuntimeError, an OSError: restarting the child won't help
        expected = isinstance(error, RagqError)
        detail = str(error) if expected else f"{type(error).__name__}: {error}"
        log.critical("cannot load the pipeline; stopping this worker", exc_info=not expected,
                     extra={"error": detail})
        os.kill(os.getppid(), signal.SIGTERM)
        raise


app = make_celery(load_settings())  # `celery -A worker.celery_app` finds it here
