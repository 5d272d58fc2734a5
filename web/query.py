"""POST /query: the seed design's synchronous call, built on a job (submit, then wait)."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify, url_for
from flask_openapi3 import APIBlueprint, Tag

from shared import logs
from shared.jobs import JobRecord, Status
from shared.metrics import QUERY_LATENCY
from web.auth import PROBLEMS, SECURITY, authenticate
from web.bodies import BODY_PROBLEMS
from web.problems import problem, retry_after
from web.request_ids import current_request_id
from web.resources import resources, settings
from web.schemas import JobRequest, ProblemOut, QueryAnswer
from web.submit import submit

EXPIRED_RETRY_AFTER_SECONDS = 30
# A job that ends without an answer: (HTTP status, problem slug, title).
_UNANSWERED: dict[str, tuple[int, str, str]] = {
    Status.FAILED: (502, "job-failed", "The job failed"),
    Status.CANCELLED: (409, "job-cancelled", "The job was cancelled"),
    Status.EXPIRED: (503, "job-expired", "The job waited too long in the queue"),
}

bp = APIBlueprint("query", __name__, abp_tags=[Tag(name="query")], abp_security=SECURITY,
                  abp_responses=PROBLEMS)
bp.before_request(authenticate)


@bp.post("/query", responses={200: QueryAnswer, 409: ProblemOut, 502: ProblemOut, 504: ProblemOut,
                               **BODY_PROBLEMS})
def query(body: JobRequest) -> Response:
    """Answer in one round trip, waiting up to API_QUERY_WAIT_SECONDS; 504: the job runs on."""
    started = time.perf_counter()
    job = submit(body.query, body.top_k, body.collection)
    logs.bind(job_id=job["id"])
    finished = job if job.get("cached") else resources().store.wait_final(
        job["id"], settings().api.query_wait_seconds)
    if finished is None:
        link = url_for("jobs.get_job", job_id=job["id"])
        return problem(504, "no answer in time; the job keeps running", slug="query-timeout",
                       title="Answer not ready", job_id=job["id"], job=link)
    if finished["status"] != Status.SUCCEEDED:
        return _unanswered(finished)
    elapsed = time.perf_counter() - started
    QUERY_LATENCY.observe(elapsed)
    return jsonify(answer_of(finished, elapsed))


def answer_of(job: JobRecord, elapsed_s: float) -> dict[str, Any]:
    """The synchronous answer shape from a succeeded job."""
    result = job.get("result") or {}
    metrics = job.get("metrics") or {}
    return {
        "answer": result.get("answer", ""),
        "sources": result.get("sources", []),
        "finish_reason": result.get("finish_reason", "stop"),
        "latency_ms": round(elapsed_s * 1000, 1),
        "request_id": current_request_id(),
        "cached": bool(metrics.get("cached", False)),
        "job_id": job["id"],
    }


def _unanswered(job: JobRecord) -> Response:
    status, slug, title = _UNANSWERED.get(job["status"], (502, "job-failed", "The job failed"))
    error = job.get("error") or {}
    headers = retry_after(EXPIRED_RETRY_AFTER_SECONDS) if status == 503 else None
    return problem(status, str(error.get("message") or job["status"]), slug=slug, title=title,
                   headers=headers, job_id=job["id"], job=url_for("jobs.get_job", job_id=job["id"]))
