"""Ingest jobs: a collection's uploads and deletions, run by the ingest worker as jobs.

An ingest job's record is a hash at the same key as a question's (`keys.job`), so its events
go through the same EventLog (gap-free seq, stream for replay, pub/sub) and the same WebSocket
relay. It carries `kind = ingest`; shared/jobs.py's JobStore never shows it. Every change of
status is one Lua script that compares-and-sets (status, attempt), writes the fields and emits
the matching event (`status`, or `done`/`error` with the final record) in the same step.

Its own statuses are a question's: queued -> running -> succeeded | failed. The script also keeps
the ingest queued and running indexes and the running job's lease (shared/leases.py), as a
question's does. A worker that dies mid-job leaves it running: when only its pool child died,
Celery delivers the message again (acks_late, reject on worker lost) and the next claim queues
it again and runs it with attempt + 1, up to JOBS_MAX_ATTEMPTS; when the whole worker died, or
the broker failed the job under it, its lease lapses and the ingest reaper (worker/reaper.py)
does the same and sends its task again. Each final status is counted (rag_ingest_jobs_total) in
the step that reaches it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict, cast

import redis

from shared import events, keys, metrics
from shared.broker import BROKER_ERRORS, broker_errors
from shared.error_types import ErrorType
from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import Status, valid_job_id
from shared.leases import MOVE_FUNCTION, Leases, lease_value
from shared.settings import JobSettings

log = logging.getLogger(__name__)

KIND = "ingest"
JSON_FIELDS = ("documents", "result", "error")


class Action(StrEnum):
    ADD = "add"  # upload documents (new ones added, same names replaced)
    REMOVE = "remove"  # delete documents by id
    DROP = "drop"  # delete the collection's files


# KEYS: job, events, queued index, running index, lease. ARGV: expected status ('' for any
# non-final), expected attempt, new status, channel, event body, stream maxlen, retention, now,
# lease value, lease ms, then the changed fields.
_TRANSITION_SCRIPT = events.EMIT_FUNCTION + MOVE_FUNCTION + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'kind', 'id')
if not cur[1] or cur[3] ~= 'ingest' then return -1 end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
if #ARGV > 10 then redis.call('HSET', KEYS[1], unpack(ARGV, 11)) end
redis.call('HSET', KEYS[1], 'status', ARGV[3])
move(KEYS[3], KEYS[4], KEYS[5], cur[4], ARGV[3], ARGV[8], ARGV[8], ARGV[9], ARGV[10])
return emit(KEYS[1], KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name, media type and bytes."""

    name: str
    media_type: str
    data: bytes


class IngestJobRecord(TypedDict):
    """An ingest job as clients see it (view()); web/collections.IngestJobOut is built from
    these fields."""

    id: str
    kind: str  # KIND
    status: str  # a Status: queued, running, succeeded or failed
    collection: str
    action: str  # an Action
    documents: list[str]  # the names uploaded, or the ids removed
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempt: int
    request_id: str
    result: dict[str, Any] | None  # collection, index_version, ..., each document's outcome
    error: dict[str, Any] | None  # type, message


def view(raw: dict[str, str]) -> IngestJobRecord:
    """The record as clients see it (the owner stays inside)."""
    parsed = {name: json.loads(raw[name]) if raw.get(name) else None for name in JSON_FIELDS}
    return {
        "id": raw["id"],
        "kind": KIND,
        "status": raw["status"],
        "collection": raw["collection"],
        "action": raw["action"],
        "documents": parsed["documents"] or [],
        "created_at": float(raw["created_at"]),
        "started_at": float(raw["started_at"]) if raw.get("started_at") else None,
        "finished_at": float(raw["finished_at"]) if raw.get("finished_at") else None,
        "attempt": int(raw.get("attempt", 0)),
        "request_id": raw.get("request_id", ""),
        "result": parsed["result"],
        "error": parsed["error"],
    }


class IngestJobs:
    """Ingest job records and their uploads on the broker Redis (decode_responses=True)."""

    def __init__(self, redis_client: redis.Redis, settings: JobSettings) -> None:
        self.redis = redis_client
        self.settings = settings
        self.events = events.EventLog(redis_client, settings)
        self._transition = redis_client.register_script(_TRANSITION_SCRIPT)
        # no queue deadline here (uploads may wait behind long ingests), so a queued job that
        # never ran is resent too: its send (or its claim) may have failed with the broker
        self.leases = Leases(redis_client, settings, keys.INGEST_QUEUED, keys.INGEST_RUNNING,
                             resend_first_runs=True)

    @broker_errors()
    def create(self, *, owner: str, collection: str, action: Action, documents: list[str],
               request_id: str, uploads: list[Upload] | None = None) -> IngestJobRecord:
        """A new queued ingest job (its uploads stored beside it); emits status `queued`."""
        job_id = str(uuid.uuid4())
        raw = {"id": job_id, "kind": KIND, "owner": owner, "status": Status.QUEUED.value,
               "collection": collection, "action": action.value,
               "documents": json.dumps(documents), "created_at": repr(time.time()),
               "attempt": "0", "request_id": request_id}
        retention = self.settings.retention_seconds
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(job_id), mapping=cast("dict[Any, Any]", raw))
            pipe.expire(keys.job(job_id), retention)
            pipe.zadd(keys.INGEST_QUEUED, {job_id: float(raw["created_at"])})
            if uploads:
                pipe.hset(keys.ingest_upload(job_id),
                          mapping=cast("dict[Any, Any]", _encode(uploads)))
                pipe.expire(keys.ingest_upload(job_id), retention)
            pipe.execute()
        self.events.emit(job_id, events.STATUS, status=Status.QUEUED.value, attempt=0)
        return view(raw)

    @broker_errors()
    def get(self, job_id: str, owner: str | None = None) -> IngestJobRecord:
        """The job's record; JobNotFound for unknown ids, a question's id, another owner's job."""
        raw = self._raw(job_id)
        if not raw or (owner is not None and raw.get("owner") != owner):
            raise JobNotFound(job_id)
        return view(raw)

    @broker_errors()
    def uploads(self, job_id: str) -> list[Upload]:
        """The job's uploaded files, in the order they were sent."""
        raw = cast(dict[str, str], self.redis.hgetall(keys.ingest_upload(job_id)))
        count = len(raw) // 3
        return [Upload(raw[f"name:{i}"], raw[f"type:{i}"], base64.b64decode(raw[f"data:{i}"]))
                for i in range(count)]

    @broker_errors()
    def claim(self, job_id: str, node: str) -> IngestJobRecord | None:
        """queued -> running (attempt + 1) under `node`'s lease. A running job found again was
        left by a dead worker, unless another node's live lease holds it (a duplicate task): it
        is queued again and runs, or fails once attempts are spent. None when there is nothing
        to run here."""
        raw = self._raw(job_id)
        if raw.get("status") == Status.RUNNING:
            holder = self.leases.holder(job_id)
            if holder is not None and holder != node:
                return None
            with contextlib.suppress(InvalidTransition):  # the reaper was first
                self.requeue_lost(job_id, int(raw["attempt"]))
            raw = self._raw(job_id)
        if raw.get("status") != Status.QUEUED:
            return None
        attempt = int(raw["attempt"]) + 1
        fields = {"attempt": str(attempt), "started_at": repr(time.time()), "node": node}
        payload = {"status": Status.RUNNING.value, "attempt": attempt, "redelivered": attempt > 1}
        try:
            self._change(raw, Status.RUNNING, fields, events.STATUS, payload,
                         lease=lease_value(node, attempt))
        except InvalidTransition:
            return None  # a duplicate task's worker claimed it first
        return view({**raw, **fields, "status": Status.RUNNING.value})

    @broker_errors()
    def requeue_lost(self, job_id: str, attempt: int) -> IngestJobRecord:
        """A running job whose worker died: queued again, or failed once attempts are spent."""
        raw = self._raw(job_id)
        if not raw:
            raise JobNotFound(job_id)
        if raw["status"] != Status.RUNNING or int(raw["attempt"]) != attempt:
            raise InvalidTransition(f"ingest job {job_id} is {raw['status']} at attempt "
                                    f"{raw['attempt']}, not running at {attempt}")
        if attempt >= self.settings.max_attempts:
            error = {"type": "WorkerLost", "message": f"ingest job killed its worker {attempt} "
                     "times; the collection keeps its previous version"}
            return self.finish(job_id, attempt, Status.FAILED, error=error)
        fields = {"requeued_at": repr(time.time())}
        payload = {"status": Status.QUEUED.value, "attempt": attempt, "reason": "worker lost"}
        self._change(raw, Status.QUEUED, fields, events.STATUS, payload)
        return view({**raw, **fields, "status": Status.QUEUED.value})

    def progress(self, job_id: str, stage: str, done: int, total: int) -> None:
        """A `progress` event: `done` of `total` documents parsed or chunks embedded."""
        self.events.emit(job_id, events.PROGRESS, stage=stage, done=done, total=total)

    @broker_errors()
    def finish(self, job_id: str, attempt: int, status: Status, *,
               result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> IngestJobRecord:
        """running -> succeeded/failed for the worker holding `attempt`; uploads dropped."""
        raw = self._raw(job_id)
        if not raw:
            raise JobNotFound(job_id)
        if int(raw["attempt"]) != attempt:
            raise InvalidTransition(f"ingest job {job_id} is at attempt {raw['attempt']}")
        fields = {"finished_at": repr(time.time())}
        if result is not None:
            fields["result"] = json.dumps(result)
        if error is not None:
            fields["error"] = json.dumps(error)
        record = view({**raw, **fields, "status": status.value})
        if status == Status.SUCCEEDED:
            self._change(raw, status, fields, events.DONE, {"job": record})
        else:
            self._change(raw, status, fields, events.ERROR, {"error": error, "job": record})
        self.redis.delete(keys.ingest_upload(job_id))
        metrics.INGEST_JOBS.labels(status=status.value).inc()
        return record

    def discard(self, job_id: str) -> None:
        """Remove a job whose task could not be sent, with its uploads; best effort, the broker
        may be down (counted and logged, as JobStore.discard)."""
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.job(job_id), keys.job_events(job_id), keys.ingest_upload(job_id))
                pipe.zrem(keys.INGEST_QUEUED, job_id)
                pipe.execute()
        except BROKER_ERRORS as error:
            metrics.ERRORS.labels(type=ErrorType.JOB_DISCARD).inc()
            log.warning("cannot discard unsent ingest job",
                        extra={"job_id": job_id, "error": str(error)})

    def _raw(self, job_id: str) -> dict[str, str]:
        if not valid_job_id(job_id):
            return {}
        raw = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return raw if raw.get("kind") == KIND else {}

    def _change(self, raw: dict[str, str], to: Status, fields: dict[str, str], event: str,
                payload: dict[str, Any], lease: str = "") -> None:
        job_id = raw["id"]
        changed = [item for pair in fields.items() for item in pair]
        args: list[str | int] = [
            raw["status"], raw["attempt"], to.value, keys.job_channel(job_id),
            events.event_body(job_id, event, payload), self.settings.stream_maxlen,
            self.settings.retention_seconds, repr(time.time()), lease, self.leases.lease_ms,
            *changed,
        ]
        key_list = [keys.job(job_id), keys.job_events(job_id), keys.INGEST_QUEUED,
                    keys.INGEST_RUNNING, keys.job_lease(job_id)]
        done = int(self._transition(keys=key_list, args=args))
        if done < 0:
            raise JobNotFound(job_id)
        if done == 0:
            raise InvalidTransition(f"ingest job {job_id} changed under its {to} transition")


def _encode(uploads: list[Upload]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for i, upload in enumerate(uploads):
        fields[f"name:{i}"] = upload.name
        fields[f"type:{i}"] = upload.media_type
        fields[f"data:{i}"] = base64.b64encode(upload.data).decode("ascii")
    return fields
