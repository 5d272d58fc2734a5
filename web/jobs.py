"""The job API: submit, read, list, cancel, batch, and WebSocket tickets."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Response, g, jsonify, request, url_for
from flask_openapi3 import APIBlueprint, Tag

from shared import logs
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, BudgetExceeded, JobNotFound, QueueFull
from shared.jobs import JobRecord
from shared.metrics import ERRORS
from web.auth import PROBLEMS, SECURITY, authenticate, issue_ticket
from web.bodies import BODY_PROBLEMS
from web.problems import invalid_fields
from web.request_ids import current_request_id
from web.resources import resources, settings
from web.schemas import (
    BatchOut,
    BatchRequest,
    JobListQuery,
    JobOut,
    JobPage,
    JobPath,
    JobRequest,
    PreferHeader,
    Ticket,
)
from web.submit import submit

log = logging.getLogger(__name__)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)

bp = APIBlueprint("jobs", __name__, url_prefix="/v1", abp_tags=[Tag(name="jobs")],
                  abp_security=SECURITY, abp_responses=PROBLEMS)
bp.before_request(authenticate)


def links(job_id: str) -> dict[str, str]:
    """Where a job, its cancel action and its event stream live."""
    return {
        "self": url_for("jobs.get_job", job_id=job_id),
        "cancel": url_for("jobs.cancel_job", job_id=job_id),
        "stream": _stream_url(job_id),
    }


def _stream_url(job_id: str) -> str:
    """The stream's ws(s):// URL: on API_PUBLIC_URL when set, else on the request's own Host
    (which a client chooses, so a deployment behind a proxy should set the public URL)."""
    public = settings().api.public_url
    if not public:
        return url_for("stream.stream", job_id=job_id, _external=True, _scheme=_ws_scheme())
    base = urlsplit(public)
    path = urlsplit(url_for("stream.stream", job_id=job_id)).path  # a WebSocket rule's URL
    scheme = "wss" if base.scheme == "https" else "ws"
    return urlunsplit((scheme, base.netloc, base.path + path, "", ""))


def _ws_scheme() -> str:
    return "wss" if request.scheme == "https" else "ws"


def present(job: JobRecord) -> dict[str, Any]:
    """A job record as the API shows it: the record plus its links."""
    return {**job, "links": links(str(job["id"]))}


def prefer_wait(prefer: str | None) -> float:
    """Seconds asked for by `Prefer: wait=N`, before API_PREFER_WAIT_MAX_SECONDS; else 0."""
    match = _PREFER_WAIT.search(prefer or "")
    return 0.0 if match is None else float(match.group(1))


@bp.post("/jobs", responses={202: JobOut, 200: JobOut, **BODY_PROBLEMS})
def create_job(body: JobRequest, header: PreferHeader) -> Response:
    """Submit a question: 202 with the queued job, or 200 with the finished one (a cache hit,
    or a job that finished within `Prefer: wait=N`)."""
    job = submit(body.query, body.top_k, body.collection)
    logs.bind(job_id=job["id"])
    asked = 0.0 if job.get("cached") else prefer_wait(header.prefer)
    wait = min(asked, settings().api.prefer_wait_max_seconds)
    status = 200 if job.get("cached") else 202
    applied = False
    if wait > 0:
        finished = resources().store.wait_final(job["id"], wait)
        if finished is not None:
            job, status = finished, 200
        else:  # the job as it is now (running, or further up the queue), not as submitted
            job = resources().store.get(job["id"], owner=g.owner)
            # RFC 7240: applied only when held for all the seconds asked (not capped, not early)
            applied = wait == asked
    response = jsonify(present(job))
    response.status_code = status
    response.headers["Location"] = url_for("jobs.get_job", job_id=job["id"])
    if applied:
        response.headers["Preference-Applied"] = f"wait={wait:g}"
    return response


@bp.get("/jobs/<job_id>", responses={200: JobOut})
def get_job(path: JobPath) -> Response:
    """The job, if it belongs to the caller (404 otherwise, exactly as for an unknown id)."""
    return jsonify(present(resources().store.get(path.job_id, owner=g.owner)))


@bp.get("/jobs", responses={200: JobPage})
def list_jobs(query: JobListQuery) -> Response:
    """The caller's jobs, newest first, `limit` at a time from `offset`."""
    limit = query.limit or settings().api.page_size
    jobs, total = resources().store.list_for(g.owner, query.offset, limit)
    page: dict[str, Any] = {"jobs": [present(job) for job in jobs], "total": total,
                            "offset": query.offset, "limit": limit, "next": None}
    if query.offset + len(jobs) < total:
        page["next"] = url_for("jobs.list_jobs", offset=query.offset + len(jobs), limit=limit)
    return jsonify(page)


@bp.post("/jobs/<job_id>/cancel", responses={200: JobOut})
def cancel_job(path: JobPath) -> Response:
    """Ask the job to stop: a queued job never runs, a running one stops between tokens."""
    return jsonify(present(resources().store.cancel(path.job_id, g.owner)))


@bp.post("/batch", responses={202: BatchOut, **BODY_PROBLEMS})
def create_batch(body: BatchRequest) -> Response | tuple[Response, int]:
    """One job per query (at most API_BATCH_MAX), all with the same top_k."""
    limit = settings().api.batch_max
    if len(body.queries) > limit:
        too_many = f"at most {limit} queries per batch"
        return invalid_fields([{"field": "queries", "message": too_many}])
    jobs: list[JobRecord] = []
    try:
        for query in body.queries:
            jobs.append(submit(query, body.top_k, body.collection))
    except (QueueFull, BudgetExceeded, BrokerUnavailable) as error:
        raise _refused_batch(error, jobs) from error
    return jsonify({"jobs": [present(job) for job in jobs]}), 202


def _refused_batch(
    error: QueueFull | BudgetExceeded | BrokerUnavailable, jobs: list[JobRecord]
) -> QueueFull | BudgetExceeded | BrokerUnavailable:
    """All or nothing: cancel the jobs this batch already queued (not the cache's answers, nor
    an identical job of another request it attached to), then the refusal, saying so."""
    mine = {job["id"] for job in jobs
            if job.get("request_id") == current_request_id() and not job.get("cached")}
    cancelled = 0
    for job_id in sorted(mine):
        try:
            resources().store.cancel(job_id, g.owner)
        except (BrokerUnavailable, JobNotFound) as cancel_error:
            ERRORS.labels(type=ErrorType.BATCH_CANCEL).inc()
            log.warning("cannot cancel a refused batch's job", extra={"job_id": job_id,
                                                                      "error": str(cancel_error)})
            continue
        cancelled += 1
    message = (f"{error}; the batch was refused as a whole: its {cancelled} job(s) "
               "already queued were cancelled")
    if isinstance(error, BrokerUnavailable):
        return BrokerUnavailable(message)
    return error.reworded(message)


@bp.post("/ws-tickets", responses={201: Ticket})
def create_ticket() -> tuple[Response, int]:
    """A single-use ticket that opens one WebSocket as the caller (browsers cannot set headers)."""
    ttl = settings().auth.ticket_ttl_seconds
    ticket = issue_ticket(resources().redis, g.owner, ttl)
    return jsonify({"ticket": ticket, "expires_in": ttl}), 201
