"""Job records: a Redis hash per job, changed only through the state machine, atomically.

Every change of status is one Lua script that compares-and-sets (status, attempt), updates the
queued/running indexes, the lease and the final-status counters, and emits the matching event
(`status`, or `done`/`error` carrying the final record) in the same step, so a reader can never
see a final record without its terminal event or the other way round. The move to a final
status also settles the job's cost-breaker reservation (its actual cost replaces the estimate).
A cache hit is recorded as a job that never ran: created succeeded, with its two events inline
in its record (no stream of its own), in one script (`create_answered`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, cast

import redis

from shared import events, keys, metrics
from shared.admission import ADMIT_FUNCTION, QUEUE, Bounds
from shared.breaker import SETTLE_FUNCTION, spend_window
from shared.broker import BROKER_ERRORS, broker_errors
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, InvalidTransition, JobNotFound, QueueRefused
from shared.events import EventHub, EventLog, PrivateSubscription, Subscription
from shared.leases import MOVE_FUNCTION, Leases, lease_value
from shared.settings import Settings

log = logging.getLogger(__name__)


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class FinishReason(StrEnum):
    """Why an answer's generation ended; only `stop` answers are worth caching."""

    STOP = "stop"  # the model ended its answer
    LENGTH = "length"  # PIPELINE_MAX_NEW_TOKENS ran out
    LOOP = "loop"  # the answer began repeating itself (PIPELINE_LOOP_NGRAM)
    CANCELLED = "cancelled"  # cancelled, or the lease was lost


class Outcome(StrEnum):
    """What became of a claim or a task besides a final status: a claim's outcome says whether
    the worker runs the job; a task returns its job's final Status or one of these."""

    RUN = "run"  # claimed: this worker runs it
    DROP = "drop"  # nothing to run here (final, gone, cancelled, another worker has it)
    EXPIRED = "expired"  # waited past its queue deadline: expired by the claim
    FAILED = "failed"  # killed its worker too often: failed by the claim
    LOST = "lost"  # another worker took the job meanwhile: this worker's result is dropped
    REJECTED = "rejected"  # a task message without a usable job id


FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.EXPIRED}),
    # running -> queued only when a worker died and the job is delivered again
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
}

METRIC_FIELDS = (
    "queue_wait_s", "retrieval_s", "rerank_s", "ttft_s", "generation_s", "prompt_tokens",
    "generated_tokens", "tokens_per_s", "cost_eur", "cached", "cache_similarity",
)
JSON_FIELDS = ("result", "error", "metrics")
CACHE_FIELD = "cache"  # JSON {similarity, question, path} of a job answered from the cache
KEY_NAME_FIELD = "key_name"  # the configured name of the key that made it (usage, metrics)
UNNAMED = "unnamed"  # the usage label of a job made without a key name (before names existed)
CANCEL_FIELD = "cancel"
WAIT_RECHECK_SECONDS = 1.0
CAS_RETRIES = 5

# KEYS: job, events, queued, running, status counts, lease, breaker spend of this window, the
# owner's spend of this window, the owner's usage.
# ARGV 1-13: see _run_transition; 14-16: breaker window start, the job's cost, spend key TTL;
# 17-18: the job's prompt and generated tokens; 19...: changed fields.
_TRANSITION_SCRIPT = events.EMIT_FUNCTION + SETTLE_FUNCTION + MOVE_FUNCTION + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if not cur[1] then return -1 end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
local to, id = ARGV[3], ARGV[4]
if #ARGV > 18 then redis.call('HSET', KEYS[1], unpack(ARGV, 19)) end
redis.call('HSET', KEYS[1], 'status', to)
move(KEYS[3], KEYS[4], KEYS[6], id, to, ARGV[13], ARGV[5], ARGV[10], ARGV[11])
if ARGV[12] == '1' then
  redis.call('HINCRBY', KEYS[5], to, 1)
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  settle(KEYS[1], KEYS[7], ARGV[14], ARGV[15], ARGV[16], KEYS[8])
  redis.call('HINCRBY', KEYS[9], 'jobs_' .. to, 1)
  redis.call('HINCRBY', KEYS[9], 'prompt_tokens', ARGV[17])
  redis.call('HINCRBY', KEYS[9], 'generated_tokens', ARGV[18])
  redis.call('HINCRBYFLOAT', KEYS[9], 'cost_eur', ARGV[15])
end
return emit(KEYS[1], KEYS[2], ARGV[7], ARGV[8], ARGV[9], ARGV[6])
"""

# A Lua function: add a job to its owner's index (sorted by creation time), dropping entries
# past the retention and all but the newest `kept`; the index lives as long as its newest job.
_INDEX_FUNCTION = """
local function index_job(index, now, id, cutoff, kept, retention)
  redis.call('ZADD', index, now, id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
  redis.call('ZREMRANGEBYRANK', index, 0, -tonumber(kept) - 1)
  redis.call('EXPIRE', index, retention)
end
"""

# KEYS: job, queued, owner's jobs. ARGV: max depth, max queued per owner (0: no limit), now,
# job id, retention, owner index cutoff, index size kept, then the record's fields. Admission
# and enqueue in one step: {1, the job's fair level} or ADMIT_FUNCTION's refusal.
_CREATE_SCRIPT = ADMIT_FUNCTION + _INDEX_FUNCTION + """
local refused, level = admit(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if refused then return refused end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], level * LEVEL_SPAN + tonumber(ARGV[3]), ARGV[4])
index_job(KEYS[3], ARGV[3], ARGV[4], ARGV[6], ARGV[7], ARGV[5])
return {1, level}
"""

# KEYS: job, owner's jobs, status counts, owner's usage. ARGV: the hit's retention, now, job
# id, owner index cutoff, index size kept, the index's retention (a job's), then the record's
# fields, its events inline among them (no stream: events.INLINE_FIELD).
_ANSWERED_SCRIPT = _INDEX_FUNCTION + """
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[1])
index_job(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
redis.call('HINCRBY', KEYS[3], 'succeeded', 1)
redis.call('HINCRBY', KEYS[4], 'jobs_succeeded', 1)
redis.call('HINCRBY', KEYS[4], 'cache_hits', 1)
return 1
"""

_FLAG_IF_RUNNING_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 1
"""

def valid_job_id(job_id: object) -> bool:
    """True for a canonical UUID string (the only ids ragq hands out)."""
    if not isinstance(job_id, str):
        return False
    try:
        return str(uuid.UUID(job_id)) == job_id
    except ValueError:
        return False


def _tokens(raw: dict[str, str]) -> tuple[int, int]:
    """(prompt, generated) tokens of a job's stored metrics; 0 where it has none."""
    stored = json.loads(raw["metrics"]) if raw.get("metrics") else {}
    return int(stored.get("prompt_tokens") or 0), int(stored.get("generated_tokens") or 0)


def _count_usage(raw: dict[str, str], charge_eur: float) -> None:
    """Export a job's final status, tokens and cost by its key's name (the process that moved
    it there counts it: each final status is reached once)."""
    name = raw.get(KEY_NAME_FIELD) or UNNAMED
    metrics.KEY_JOBS.labels(key=name, status=raw["status"]).inc()
    if raw.get(CACHE_FIELD):
        metrics.KEY_CACHE_HITS.labels(key=name).inc()
    prompt, generated = _tokens(raw)
    metrics.KEY_TOKENS.labels(key=name, kind="prompt").inc(prompt)
    metrics.KEY_TOKENS.labels(key=name, kind="generated").inc(generated)
    metrics.KEY_COST.labels(key=name).inc(charge_eur)


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


class JobRecord(TypedDict):
    """A job as clients see it (view()); web/schemas.JobOut is built from these fields."""

    id: str
    status: str  # a Status
    query: str
    top_k: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempt: int
    request_id: str
    queue_position: int | None  # 1 for the next job to run; None unless queued
    result: dict[str, Any] | None  # answer, sources, finish_reason
    error: dict[str, Any] | None  # type, message
    metrics: dict[str, Any]  # METRIC_FIELDS
    # a job answered from the cache, only:
    cached: NotRequired[bool]
    similarity: NotRequired[float]
    cached_question: NotRequired[str | None]
    cache_path: NotRequired[str | None]


def view(raw: dict[str, str], queue_position: int | None = None) -> JobRecord:
    """The record as clients see it (the owner, lease and cancel flag stay inside). A cache
    hit's fields are stored once (CACHE_FIELD) and shown both here and in its metrics."""
    parsed = {name: json.loads(raw[name]) if raw.get(name) else None for name in JSON_FIELDS}
    record: JobRecord = {
        "id": raw["id"],
        "status": raw["status"],
        "query": raw["query"],
        "top_k": int(raw["top_k"]),
        "created_at": float(raw["created_at"]),
        "started_at": _float_or_none(raw.get("started_at")),
        "finished_at": _float_or_none(raw.get("finished_at")),
        "attempt": int(raw.get("attempt", 0)),
        "request_id": raw.get("request_id", ""),
        "queue_position": queue_position if raw["status"] == Status.QUEUED else None,
        "result": parsed["result"],
        "error": parsed["error"],
        "metrics": {name: None for name in METRIC_FIELDS} | (parsed["metrics"] or {}),
    }
    if raw.get(CACHE_FIELD):
        cache = json.loads(raw[CACHE_FIELD])
        record["cached"] = True
        record["similarity"] = cache["similarity"]
        record["cached_question"] = cache["question"]
        record["cache_path"] = cache["path"]
        record["metrics"].update(cached=True, cache_similarity=cache["similarity"])
    return record


def _event_for(record: JobRecord, reason: str) -> tuple[str, dict[str, Any]]:
    """The event a transition into `record["status"]` emits."""
    status = record["status"]
    if status == Status.SUCCEEDED or status == Status.CANCELLED:
        return events.DONE, {"job": record}
    if status in FINAL:
        return events.ERROR, {"error": record["error"], "job": record}
    payload: dict[str, Any] = {"status": status, "attempt": record["attempt"],
                               "redelivered": record["attempt"] > 1}
    if reason:
        payload["reason"] = reason
    return events.STATUS, payload


@dataclass(frozen=True)
class Claim:
    """What a worker got when it tried to take a job: run it, or why not."""

    outcome: Outcome  # RUN, or DROP / EXPIRED / FAILED: nothing to run
    record: JobRecord | None
    reason: str = ""

    @property
    def run(self) -> bool:
        return self.outcome == Outcome.RUN


class JobStore:
    """Job records on the broker Redis (a client with decode_responses=True)."""

    def __init__(
        self, redis_client: redis.Redis, settings: Settings, hub: EventHub | None = None
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.jobs = settings.jobs
        self.events = EventLog(redis_client, settings.jobs)
        self.hub = hub
        self._transition = redis_client.register_script(_TRANSITION_SCRIPT)
        self._flag = redis_client.register_script(_FLAG_IF_RUNNING_SCRIPT)
        self.leases = Leases(redis_client, settings.jobs, keys.QUEUED, keys.RUNNING)
        self._answered = redis_client.register_script(_ANSWERED_SCRIPT)
        self._create = redis_client.register_script(_CREATE_SCRIPT)

    # --- clients' API -------------------------------------------------------------------
    def create(
        self, *, owner: str, query: str, top_k: int, request_id: str, key_name: str = ""
    ) -> JobRecord:
        """A new queued job owned by `owner`, without queue limits; see create_admitted."""
        record, _ = self.create_admitted(owner=owner, query=query, top_k=top_k,
                                         request_id=request_id, bounds=Bounds(),
                                         key_name=key_name)
        return record

    @broker_errors()
    def create_admitted(
        self, *, owner: str, query: str, top_k: int, request_id: str, bounds: Bounds,
        key_name: str = "",
    ) -> tuple[JobRecord, int]:
        """A new queued job owned by `owner` (the key named `key_name`), admitted under `bounds`
        in the same atomic step (QueueRefused otherwise); emits status `queued` (seq 1). Also
        returns its level in the fair order across keys (its task's priority)."""
        job_id = str(uuid.uuid4())
        now = time.time()
        raw = {"id": job_id, "owner": owner, "status": Status.QUEUED.value, "query": query,
               "top_k": str(top_k), "created_at": repr(now), "attempt": "0",
               "request_id": request_id, KEY_NAME_FIELD: key_name or UNNAMED}
        retention = self.jobs.retention_seconds
        args: list[str | int] = [bounds.max_depth, bounds.max_queued_per_key, repr(now), job_id,
                                 retention, repr(now - retention), self.jobs.listed_max,
                                 *(item for pair in raw.items() for item in pair)]
        admitted = self._create(keys=[keys.job(job_id), keys.QUEUED, keys.owner_jobs(owner)],
                                args=args)
        if int(admitted[0]) != 1:
            limit, count = str(admitted[1]), int(admitted[2])
            maximum = bounds.max_depth if limit == QUEUE else bounds.max_queued_per_key
            raise QueueRefused(limit, count, maximum)
        try:
            self.events.emit(job_id, events.STATUS, status=Status.QUEUED.value, attempt=0)
        except (BrokerUnavailable, JobNotFound):
            self.discard(job_id, owner)  # no task is sent: it would stay queued for good
            raise
        return view(raw, self.queue_position(job_id)), int(admitted[1])

    @broker_errors()
    def create_answered(
        self, *, owner: str, query: str, top_k: int, request_id: str,
        result: dict[str, Any], metrics: dict[str, Any], cache: dict[str, Any],
        key_name: str = "",
    ) -> JobRecord:
        """A job answered without running (a cache hit) for the key named `key_name`: recorded
        `succeeded` with its events (status, then done) in one round trip, kept
        JOBS_CACHED_RETENTION_SECONDS. The events live in the record (events.INLINE_FIELD), not
        in a stream: nobody can have subscribed to a new id, and no event follows them.
        `cache`: similarity, question, path."""
        job_id = str(uuid.uuid4())
        now = time.time()
        raw = {"id": job_id, "owner": owner, "status": Status.SUCCEEDED.value, "query": query,
               "top_k": str(top_k), "created_at": repr(now), "started_at": repr(now),
               "finished_at": repr(now), "attempt": "0", "request_id": request_id,
               "result": json.dumps(result), "metrics": json.dumps(metrics),
               CACHE_FIELD: json.dumps(cache), KEY_NAME_FIELD: key_name or UNNAMED}
        record = view(raw)
        status = {"status": Status.SUCCEEDED.value, "attempt": 0, "redelivered": False}
        raw[events.INLINE_FIELD] = events.inline_events(
            events.event_body(job_id, events.STATUS, status),
            events.event_body(job_id, events.DONE, {"job": record}))
        retention = self.jobs.retention_seconds
        args: list[str | int] = [
            self.jobs.cached_retention_seconds, repr(now), job_id, repr(now - retention),
            self.jobs.listed_max, retention, *(item for pair in raw.items() for item in pair),
        ]
        self._answered(keys=[keys.job(job_id), keys.owner_jobs(owner), keys.STATUS_COUNTS,
                             keys.usage(owner)], args=args)
        _count_usage(raw, 0.0)
        return record

    @broker_errors()
    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job's record; JobNotFound for unknown ids and for another owner's job."""
        raw = self._raw(job_id, owner)
        if raw["status"] == Status.QUEUED and self._past_deadline(raw):
            self._try_expire(job_id)
            raw = self._raw(job_id, owner)
        return view(raw, self.queue_position(job_id))

    @broker_errors()
    def list_for(
        self, owner: str, offset: int = 0, limit: int = 20
    ) -> tuple[list[JobRecord], int]:
        """`owner`'s jobs, newest first, and how many there are in all."""
        index = keys.owner_jobs(owner)
        self.redis.zremrangebyscore(index, "-inf", time.time() - self.jobs.retention_seconds)
        ids = cast(list[str], self.redis.zrevrange(index, offset, offset + limit - 1))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            raws = cast(list[dict[str, str]], pipe.execute())
        gone = [job_id for job_id, raw in zip(ids, raws, strict=True) if not raw]
        if gone:
            self.redis.zrem(index, *gone)
        records = []
        for raw in raws:
            if raw and raw["status"] == Status.QUEUED and self._past_deadline(raw):
                self._try_expire(raw["id"])  # as get() does: a read expires it
                raw = self._hash(raw["id"])
            if raw:
                records.append(view(raw, self.queue_position(raw["id"])))
        return records, cast(int, self.redis.zcard(index))

    @broker_errors()
    def cancel(self, job_id: str, owner: str) -> JobRecord:
        """Queued: cancelled now, never runs. Running: flag the worker checks between tokens.

        Final: unchanged. Idempotent; returns the record as it is after the call.
        """
        raw = self._raw(job_id, owner)
        if raw["status"] == Status.QUEUED:
            with contextlib.suppress(InvalidTransition):  # a worker took it: flag it below
                self.transition(job_id, Status.CANCELLED, {"finished_at": repr(time.time())},
                                allowed_from=(Status.QUEUED,))
        self._flag(keys=[keys.job(job_id)], args=[CANCEL_FIELD])
        return self.get(job_id, owner)

    @broker_errors()
    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run (in the fair order across keys, shared/admission.py);
        None when the job is not queued."""
        rank = cast(int | None, self.redis.zrank(keys.QUEUED, job_id))
        return None if rank is None else rank + 1

    @broker_errors()
    def queue_depth(self) -> int:
        return cast(int, self.redis.zcard(keys.QUEUED))

    @broker_errors()
    def usage(self, owner: str) -> dict[str, Any]:
        """`owner`'s running totals (jobs by final status, cache hits, tokens, cost) since the
        broker started, and its jobs queued and running now."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.usage(owner))
            pipe.zintercard(2, [keys.QUEUED, keys.owner_jobs(owner)])
            pipe.zintercard(2, [keys.RUNNING, keys.owner_jobs(owner)])
            totals, queued, running = pipe.execute()
        jobs = {status.value: int(totals.get(f"jobs_{status.value}", 0)) for status in FINAL}
        return {
            "jobs": {Status.QUEUED.value: int(queued), Status.RUNNING.value: int(running), **jobs},
            "cache_hits": int(totals.get("cache_hits", 0)),
            "tokens": {"prompt": int(totals.get("prompt_tokens", 0)),
                       "generated": int(totals.get("generated_tokens", 0))},
            "cost_eur": round(float(totals.get("cost_eur", 0.0)), 6),
        }

    @broker_errors()
    def status_counts(self) -> dict[str, int]:
        """Jobs queued and running now, and final statuses reached since the broker started."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.QUEUED)
            pipe.zcard(keys.RUNNING)
            pipe.hgetall(keys.STATUS_COUNTS)
            queued, running, finals = pipe.execute()
        counts = {status.value: int(finals.get(status.value, 0)) for status in FINAL}
        return {Status.QUEUED.value: int(queued), Status.RUNNING.value: int(running), **counts}

    def wait_final(self, job_id: str, timeout: float) -> JobRecord | None:
        """Block until the job is final (woken by its events); None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._subscribe(job_id) as sub:
            while True:
                record = self.get(job_id)
                left = deadline - time.monotonic()
                if record["status"] in FINAL or left <= 0:
                    return record if record["status"] in FINAL else None
                self._until_terminal(sub, min(left, WAIT_RECHECK_SECONDS))

    @broker_errors()
    def set_internal(self, job_id: str, fields: dict[str, str]) -> None:
        """Store fields for the worker (the cache's query embedding) that clients never see."""
        self.redis.hset(keys.job(job_id), mapping=cast("dict[Any, Any]", fields))

    def discard(self, job_id: str, owner: str) -> None:
        """Remove a job whose task could not be sent; best effort, the broker may be down."""
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.job(job_id), keys.job_events(job_id))
                pipe.zrem(keys.QUEUED, job_id)
                pipe.zrem(keys.owner_jobs(owner), job_id)
                pipe.execute()
        except BROKER_ERRORS as error:
            metrics.ERRORS.labels(type=ErrorType.JOB_DISCARD).inc()
            log.warning("cannot discard unsent job", extra={"job_id": job_id, "error": str(error)})

    # --- worker's API -------------------------------------------------------------------
    @broker_errors()
    def claim(self, job_id: str, node: str) -> Claim:
        """Take the job for `node`: queued (or running under a dead worker's lease) -> running."""
        raw = self._hash(job_id)
        if not raw:  # lapsed (retention) while queued: its index entries would stay for good
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.QUEUED, job_id)
                pipe.zrem(keys.RUNNING, job_id)
                pipe.execute()
            return Claim(Outcome.DROP, None, "missing")
        if raw["status"] in FINAL:
            return Claim(Outcome.DROP, view(raw), "final")
        if raw["status"] == Status.RUNNING:
            holder = self.leases.holder(job_id)
            # concurrency 1: a lease held by this very node belongs to its dead child
            if holder is not None and holder != node:
                return Claim(Outcome.DROP, view(raw), f"running on {holder}")
            try:
                record = self.requeue_lost(job_id, int(raw["attempt"]))
            except InvalidTransition:
                record = view(self._hash(job_id))  # the reaper was first
            if record["status"] == Status.FAILED:
                return Claim(Outcome.FAILED, record, "attempts exhausted")
            raw = self._hash(job_id)
        return self._claim_queued(job_id, node, raw)

    @broker_errors()
    def requeue_lost(self, job_id: str, attempt: int) -> JobRecord:
        """A running job whose worker died: queued again, or failed once attempts are spent."""
        now = time.time()
        if attempt >= self.jobs.max_attempts:
            error = {"type": "WorkerLost", "message": f"job killed its worker {attempt} times"}
            return self.transition(job_id, Status.FAILED,
                                   {"finished_at": repr(now), "error": json.dumps(error)},
                                   allowed_from=(Status.RUNNING,), expect_attempt=attempt)
        return self.transition(job_id, Status.QUEUED, {"requeued_at": repr(now)},
                               allowed_from=(Status.RUNNING,), expect_attempt=attempt,
                               reason="worker lost")

    @broker_errors()
    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(keys.job(job_id), CANCEL_FIELD) == "1"

    @broker_errors()
    def finish(
        self, job_id: str, status: Status, attempt: int, charge_eur: float = 0.0, **fields: Any
    ) -> JobRecord:
        """running -> final for the worker holding `attempt`; JSON-encodes result/error/metrics.

        `metrics` are merged into those the claim stored (queue_wait_s). `charge_eur`, what the
        job cost, settles its breaker reservation in the same step.
        """
        if fields.get("metrics") is not None:
            claimed = cast(str | None, self.redis.hget(keys.job(job_id), "metrics"))
            fields["metrics"] = (json.loads(claimed) if claimed else {}) | fields["metrics"]
        stored = {name: json.dumps(value) if name in JSON_FIELDS else str(value)
                  for name, value in fields.items() if value is not None}
        stored["finished_at"] = repr(time.time())
        return self.transition(job_id, status, stored, allowed_from=(Status.RUNNING,),
                               expect_attempt=attempt, charge_eur=charge_eur)

    @broker_errors()
    def transition(
        self,
        job_id: str,
        to: Status,
        fields: dict[str, str],
        *,
        allowed_from: tuple[Status, ...] | None = None,
        expect_attempt: int | None = None,
        reason: str = "",
        lease_node_name: str = "",
        charge_eur: float = 0.0,
    ) -> JobRecord:
        """Move the job to `to` if the state machine allows it from its current status.

        `allowed_from` narrows the allowed origins further; `expect_attempt` makes the change
        conditional on the attempt (a worker that lost its job cannot finish it). Emits the
        transition's event atomically; a final status also settles the job's breaker
        reservation against `charge_eur` (0: released). InvalidTransition otherwise, JobNotFound
        if it is gone.
        """
        for _ in range(CAS_RETRIES):
            raw = self._hash(job_id)
            if not raw:
                raise JobNotFound(job_id)
            self._check_allowed(raw, to, allowed_from, expect_attempt)
            new: dict[str, str] = {**raw, **fields, "status": to.value}
            result = self._run_transition(job_id, raw, new, reason, lease_node_name, charge_eur)
            if result > 0:
                if to in FINAL:
                    _count_usage(new, charge_eur)
                return view(new)
            if result < 0:
                raise JobNotFound(job_id)
        raise InvalidTransition(f"job {job_id} kept changing under transition to {to}")

    # --- internals ----------------------------------------------------------------------
    def _hash(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))

    def _raw(self, job_id: str, owner: str | None) -> dict[str, str]:
        raw = self._hash(job_id) if valid_job_id(job_id) else {}
        # an ingest job (shared/ingest_jobs.py, `kind` set) shares the key space: not a question
        if not raw or "kind" in raw or (owner is not None and raw.get("owner") != owner):
            raise JobNotFound(job_id)
        return raw

    def _past_deadline(self, raw: dict[str, str]) -> bool:
        """Queued too long before its first run (a redelivered job already ran: never expires)."""
        waited = time.time() - float(raw["created_at"])
        return raw.get("attempt") == "0" and waited > self.jobs.queue_deadline_seconds

    def _expire_fields(self, raw: dict[str, str]) -> dict[str, str]:
        waited = time.time() - float(raw["created_at"])
        error = {"type": "JobExpired",
                 "message": f"waited {waited:.1f}s in the queue, longer than its deadline of "
                            f"{self.jobs.queue_deadline_seconds:g}s; it never ran"}
        return {"finished_at": repr(time.time()), "error": json.dumps(error)}

    def _try_expire(self, job_id: str) -> JobRecord | None:
        raw = self._hash(job_id)
        try:
            return self.transition(job_id, Status.EXPIRED, self._expire_fields(raw),
                                   allowed_from=(Status.QUEUED,))
        except InvalidTransition:
            return None  # a worker or a cancel got there first

    def _claim_queued(self, job_id: str, node: str, raw: dict[str, str]) -> Claim:
        if raw["status"] != Status.QUEUED:
            return Claim(Outcome.DROP, view(raw), f"status is {raw['status']}")
        if self._past_deadline(raw):
            record = self._try_expire(job_id)
            outcome = Outcome.EXPIRED if record else Outcome.DROP
            return Claim(outcome, record, "queue deadline passed")
        if raw.get(CANCEL_FIELD) == "1":
            record = self.transition(job_id, Status.CANCELLED, {"finished_at": repr(time.time())},
                                     allowed_from=(Status.QUEUED,))
            return Claim(Outcome.DROP, record, "cancelled while its worker was lost")
        attempt = int(raw["attempt"]) + 1
        now = time.time()
        metrics = {"queue_wait_s": now - float(raw["created_at"])}
        fields = {"attempt": str(attempt), "started_at": repr(now), "node": node,
                  "metrics": json.dumps(metrics)}
        try:
            record = self.transition(job_id, Status.RUNNING, fields, allowed_from=(Status.QUEUED,),
                                     expect_attempt=attempt - 1, lease_node_name=node)
        except InvalidTransition:
            return Claim(Outcome.DROP, None, "another worker claimed it first")
        return Claim(Outcome.RUN, record)

    def _check_allowed(
        self,
        raw: dict[str, str],
        to: Status,
        allowed_from: tuple[Status, ...] | None,
        expect_attempt: int | None,
    ) -> None:
        current = Status(raw["status"])
        allowed = to in TRANSITIONS.get(current, frozenset())
        if allowed_from is not None:
            allowed = allowed and current in allowed_from
        if expect_attempt is not None and int(raw["attempt"]) != expect_attempt:
            raise InvalidTransition(
                f"job {raw['id']} is at attempt {raw['attempt']}, not {expect_attempt}"
            )
        if not allowed:
            raise InvalidTransition(f"job {raw['id']}: {current} -> {to} is not allowed")

    def _run_transition(
        self, job_id: str, raw: dict[str, str], new: dict[str, str], reason: str, node: str,
        charge_eur: float,
    ) -> int:
        to = new["status"]
        event_type, payload = _event_for(view(new), reason)
        changed = [item for name in new if new[name] != raw.get(name) and name != "status"
                   for item in (name, new[name])]
        now = time.time()
        window, window_ttl = spend_window(self.settings.breaker.window_seconds, now)
        prompt, generated = _tokens(new)
        args = [raw["status"], raw["attempt"], to, job_id, repr(now), self.jobs.retention_seconds,
                keys.job_channel(job_id), events.event_body(job_id, event_type, payload),
                self.jobs.stream_maxlen, lease_value(node, int(new["attempt"])),
                int(self.jobs.lease_seconds * 1000), "1" if to in FINAL else "0",
                raw["created_at"], str(window), repr(float(charge_eur)), window_ttl, prompt,
                generated, *changed]
        owner = raw.get("owner", "")
        key_list = [keys.job(job_id), keys.job_events(job_id), keys.QUEUED, keys.RUNNING,
                    keys.STATUS_COUNTS, keys.job_lease(job_id), keys.breaker_window(window),
                    keys.owner_spend(owner, window), keys.usage(owner)]
        return cast(int, self._transition(keys=key_list, args=args))

    def _subscribe(self, job_id: str) -> Subscription | PrivateSubscription:
        if self.hub is not None:
            return self.hub.subscribe(job_id)
        return PrivateSubscription(self.redis, job_id)

    @staticmethod
    def _until_terminal(sub: Subscription | PrivateSubscription, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = sub.get(timeout=left)
            if event is not None and event["type"] in events.TERMINAL:
                return
