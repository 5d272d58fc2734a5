"""The ingest task: validate the message, then hand the job to this process's runner."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from shared.errors import BadTaskMessage
from shared.jobs import Outcome
from shared.logs import bound
from shared.tasks import INGEST_TASK
from worker import ingest_app
from worker.tasks import parse_message

log = logging.getLogger(__name__)


@shared_task(name=INGEST_TASK)
def ingest(*args: Any, **kwargs: Any) -> str:
    """Run one ingest job; returns its final status (or why it did not run)."""
    try:
        job_id, request_id = parse_message(args, kwargs)
    except BadTaskMessage as error:
        log.error("bad ingest task message", extra={"error": str(error)})
        return Outcome.REJECTED
    with bound(job_id=job_id, request_id=request_id):
        return ingest_app.runner().run_job(job_id)
