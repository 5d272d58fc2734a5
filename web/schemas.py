"""Pydantic models that validate requests and document the API (OpenAPI) from one source."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, get_args, get_origin, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    create_model,
)

from shared.collections import DEFAULT, NAME_PATTERN
from shared.jobs import JobRecord

QUERY_MIN_CHARS = 3
QUERY_MAX_CHARS = 512
TOP_K_MAX = 20
# Far past any owner's jobs, and small enough that offset + limit is a Redis integer.
OFFSET_MAX = 10**9
BATCH_CEILING = 1000  # the schema's hard cap; API_BATCH_MAX (at most this) is the live limit

QueryText = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=QUERY_MIN_CHARS, max_length=QUERY_MAX_CHARS
    ),
]
TopK = Annotated[  # strict: JSON true is no count of passages
    StrictInt,
    Field(ge=1, le=TOP_K_MAX, description="Passages to the generator; default PIPELINE_TOP_K."),
]
CollectionName = Annotated[
    str, Field(pattern=NAME_PATTERN, description="The collection asked (docs/collections.md)."),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobRequest(_Strict):
    """One question to answer."""

    query: QueryText = Field(description="The question, 3 to 512 characters after trimming.")
    top_k: TopK | None = None
    collection: CollectionName = DEFAULT


class BatchRequest(_Strict):
    """Several questions; each becomes its own job."""

    queries: list[QueryText] = Field(
        min_length=1, max_length=BATCH_CEILING, description="At most API_BATCH_MAX."
    )
    top_k: TopK | None = None
    collection: CollectionName = DEFAULT


class JobPath(BaseModel):
    job_id: str = Field(description="The job's id (a UUID4).")


class JobListQuery(_Strict):
    limit: int | None = Field(None, ge=1, le=200, description="Page size; default API_PAGE_SIZE.")
    offset: int = Field(0, ge=0, le=OFFSET_MAX, description="Jobs to skip, newest first.")


class PreferHeader(BaseModel):
    """`Prefer: wait=N` (RFC 7240) holds the request up to N seconds for the finished job."""

    prefer: str | None = Field(None, description="`wait=N`: wait up to N seconds (capped).")


class Links(BaseModel):
    self: str
    cancel: str
    stream: str = Field(description="WebSocket URL of the job's events.")


class _JobOutBase(BaseModel):
    """A job record as clients see it."""

    model_config = ConfigDict(extra="allow")

    links: Links


def record_fields(record: type, descriptions: dict[str, str]) -> dict[str, Any]:
    """A response model's fields from a record TypedDict's (shared.jobs.JobRecord's for JobOut),
    those it may leave out (NotRequired) optional. Read from the hints themselves: under
    `from __future__ import annotations`, Python 3.11's TypedDict cannot see NotRequired and
    lists every key in __required_keys__."""
    fields: dict[str, Any] = {}
    for name, hint in get_type_hints(record, include_extras=True).items():
        description = descriptions.get(name)
        if get_origin(hint) is NotRequired:
            fields[name] = (get_args(hint)[0] | None, Field(None, description=description))
        else:
            fields[name] = (hint, Field(description=description))
    return fields


_DESCRIPTIONS = {
    "status": "queued, running, succeeded, failed, cancelled or expired.",
    "queue_position": "1 for the next job to run; null unless queued.",
    "cached": "Answered from the semantic cache (present only then).",
}
JobOut = create_model("JobOut", __base__=_JobOutBase, **record_fields(JobRecord, _DESCRIPTIONS))


class JobPage(BaseModel):
    jobs: list[JobOut]
    total: int
    offset: int
    limit: int
    next: str | None = Field(None, description="Link to the next page; absent on the last.")


class BatchOut(BaseModel):
    jobs: list[JobOut]


class QueryAnswer(BaseModel):
    """POST /query's synchronous answer."""

    answer: str
    sources: list[dict[str, Any]] = Field(
        description="The passages given to the generator; `cited` marks those the answer cites "
        "as [n] (n: its place in this list, from 1)."
    )
    finish_reason: str = Field(
        description="stop (the model ended its answer), length (PIPELINE_MAX_NEW_TOKENS ran "
        "out), loop (it began repeating itself) or cancelled."
    )
    latency_ms: float
    request_id: str
    cached: bool
    job_id: str


class Ticket(BaseModel):
    ticket: str = Field(description="Pass as `?ticket=` when opening a WebSocket; single use.")
    expires_in: int = Field(description="Seconds until the ticket lapses.")


class FieldError(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details (content type application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    errors: list[FieldError] | None = None


class LiveOut(BaseModel):
    status: str = Field(description="Always `ok`: the process answers.")


class ReadyOut(BaseModel):
    status: str = Field(description="`ready`.")
    checks: dict[str, Any] = Field(description="`broker` (reachable) and `workers_ready`.")


class DevicesOut(BaseModel):
    workers: list[dict[str, Any]] = Field(
        description="One device report per live worker, generation and ingest alike: its "
        "`role` says which."
    )


class UsageOut(BaseModel):
    key: str = Field(description="The key's configured name (AUTH_API_KEYS / AUTH_KEYS_FILE).")
    jobs: dict[str, int] = Field(description="The key's jobs queued and running now, and by "
                                 "final status since the broker started (cache hits included).")
    cache_hits: int = Field(description="Questions answered from the cache.")
    tokens: dict[str, int] = Field(description="Prompt and generated tokens of its jobs.")
    cost_eur: float = Field(description="What its jobs cost, EUR.")
    window: dict[str, Any] = Field(description="This spending window (CB_WINDOW_SECONDS): the "
                                   "key's spend, its budget (null: none), seconds to its end.")
    limits: dict[str, Any] = Field(description="The key's limits (null: none): max_queued, "
                                   "rate_per_second, burst.")


class StatsOut(BaseModel):
    queue_depth: int
    workers: list[dict[str, Any]] | int = Field(
        description="The live workers' reports (each with its `role`: generation or "
        "ingest), or their number when health detail is off."
    )
    workers_by_role: dict[str, int] = Field(
        description="Live workers by role: `generation` (answers) and `ingest` (uploads)."
    )
    jobs: dict[str, int] = Field(description="Jobs queued and running, and by final status.")
    cache: dict[str, Any] | None = Field(description="The semantic cache; null when it is off.")
    breaker: dict[str, Any] = Field(description="The cost breaker's window and state.")
    broker_memory: dict[str, Any] = Field(
        description="The broker Redis's memory: used_bytes, max_bytes (its maxmemory, 0: none) "
        "and used_ratio; at its maxmemory the broker refuses new jobs (503)."
    )
