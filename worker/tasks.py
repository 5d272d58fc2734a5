"""The generation task: validate the message, then hand the job to this process's runtime."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from shared.errors import BadTaskMessage
from shared.jobs import Outcome, valid_job_id
from shared.logs import bound
from shared.tasks import GENERATE_TASK
from worker import runtime

log = logging.getLogger(__name__)

TASK_FIELDS = frozenset({"job_id", "request_id"})
MAX_REQUEST_ID = 128


def parse_message(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """(job_id, request_id) from the task's arguments; BadTaskMessage naming what is wrong."""
    if args:
        raise BadTaskMessage(f"positional arguments are not accepted, got {len(args)}")
    missing = sorted(TASK_FIELDS - kwargs.keys())
    unknown = sorted(kwargs.keys() - TASK_FIELDS)
    if missing or unknown:
        raise BadTaskMessage(f"task fields missing: {missing}, unknown: {unknown}")
    if not valid_job_id(kwargs["job_id"]):
        raise BadTaskMessage(f"job_id must be a UUID string, got {kwargs['job_id']!r}")
    request_id = kwargs["request_id"]
    if not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID:
        raise BadTaskMessage(f"request_id must be a string of at most {MAX_REQUEST_ID} characters")
    return kwargs["job_id"], request_id


@shared_task(name=GENERATE_TASK)
def generate(*args: Any, **kwargs: Any) -> str:
    """Run one job; returns its final status (or why it did not run), or `run` once a batching
    worker admitted it (worker/runner.py). Never raises on bad input."""
    job_id = kwargs.get("job_id") if valid_job_id(kwargs.get("job_id")) else None
    request_id = kwargs.get("request_id") if isinstance(kwargs.get("request_id"), str) else None
    with bound(job_id=job_id, request_id=request_id):
        try:
            job_id, _ = parse_message(args, kwargs)
        except BadTaskMessage as error:
            log.error("bad task message", extra={"error": str(error)})
            if job_id is None:
                return Outcome.REJECTED
            return runtime.current().fail_bad_message(job_id, str(error))
        return runtime.current().run_job(job_id)
