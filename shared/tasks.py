"""The Celery configuration both sides use, the task name, and sending the task.

The web sends tasks by name through `make_client()`; it never imports `worker/` or a model.
The worker's reaper sends again the task of a job whose worker died. Tasks carry a priority
that serves API keys in a fair order (the job's level, shared/admission.py; docs/jobs.md).
"""

from __future__ import annotations

from typing import Any

import kombu.exceptions
from celery import Celery

from shared.admission import FAIR_LEVELS
from shared.broker import broker_errors
from shared.settings import Settings

GENERATE_TASK = "ragq.generate"
INGEST_TASK = "ragq.ingest"
# A child must answer within this after fork; loading a model on a CPU takes tens of seconds.
PROC_ALIVE_TIMEOUT_SECONDS = 300.0
# Publishing retries briefly, so an unreachable broker becomes a 503 within about a second.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2,
                        "interval_max": 0.5}
# kombu's own errors (and a socket's) besides the broker errors shared/broker.py decides
SEND_ERRORS = (kombu.exceptions.OperationalError, OSError)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the web's client and the worker (DESIGN.md "Celery rules")."""
    jobs = settings.jobs
    timeout = settings.broker.connect_timeout_seconds
    return {
        "broker_url": settings.broker.url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # above the hard limit: Redis never hands a running task to a second worker
            "visibility_timeout": jobs.visibility_timeout_seconds,
            # one list per fair level (shared/admission.py); BRPOP takes the first non-empty
            # list, level 0 first
            "priority_steps": list(range(FAIR_LEVELS)),
            "socket_connect_timeout": timeout,
            "socket_timeout": max(timeout, 5.0),
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": jobs.soft_time_limit_seconds,
        "task_time_limit": jobs.hard_time_limit_seconds,
        "task_default_queue": settings.broker.queue,
        "task_routes": {GENERATE_TASK: {"queue": settings.broker.queue},
                        INGEST_TASK: {"queue": settings.collections.queue}},
        # job state lives in our records; Celery results would only say PENDING for unknown ids
        "result_backend": None,
        "task_ignore_result": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "worker_proc_alive_timeout": PROC_ALIVE_TIMEOUT_SECONDS,
        "worker_hijack_root_logger": False,
        # Flower shows live work from these events (task sent, started, succeeded, ...).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def make_client(settings: Settings) -> Celery:
    """A Celery app that only sends tasks by name (the web's side)."""
    app = Celery("ragq-client", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def send_generate(celery: Celery, job_id: str, request_id: str, priority: int = 0) -> None:
    """Queue the generation task of `job_id` at `priority` (0, the default, is served first: a
    job sent again after its worker died has waited already); BrokerUnavailable when the broker
    cannot take it."""
    with broker_errors(f"cannot queue job {job_id}", also=SEND_ERRORS):
        celery.send_task(GENERATE_TASK, kwargs={"job_id": job_id, "request_id": request_id},
                         priority=priority)


def send_ingest(celery: Celery, job_id: str, request_id: str) -> None:
    """Queue the ingest task of `job_id` (its own queue, served by the ingest worker)."""
    with broker_errors(f"cannot queue ingest job {job_id}", also=SEND_ERRORS):
        celery.send_task(INGEST_TASK, kwargs={"job_id": job_id, "request_id": request_id})
