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
from shared.settings import load_settings
from shared.tasks import celery_config
from worker import runtime

log = logging.getLogger(__name__)

settings = load_settings()
app = Celery("ragq", include=["worker.tasks"])
app.conf.update(celery_config(settings))

_node = {"name": f"worker@{socket.gethostname()}"}


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(settings.log, "worker")


@signals.celeryd_init.connect
def _remember_node(sender: str | None = None, **_: Any) -> None:
    # The parent learns its node name here; the forked child inherits it.
    if sender:
        _node["name"] = sender


@signals.worker_process_init.connect
def _start_child(**_: Any) -> None:
    configure_logging(settings.log, "worker")
    try:
        runtime.start(settings, app, _node["name"])
    except RagqError as error:
        log.critical("cannot load the pipeline; stopping this worker", extra={"error": str(error)})
        os.kill(os.getppid(), signal.SIGTERM)
        raise
    except Exception as error:  # CUDA's RuntimeError, an OSError: restarting the child won't help
        log.critical("cannot load the pipeline; stopping this worker", exc_info=True,
                     extra={"error": f"{type(error).__name__}: {error}"})
        os.kill(os.getppid(), signal.SIGTERM)
        raise


@signals.worker_process_shutdown.connect
def _stop_child(**_: Any) -> None:
    runtime.stop()
