"""Running jobs' leases, and how the reaper (worker/reaper.py) finds jobs whose worker died.

A worker holds a running job through a lease (`keys.job_lease`, "node|attempt") that it renews
while the job runs and that expires when it dies. Each kind of job keeps two indexes, sorted
sets its state machine updates in the same step as the status: its queued and its running job
ids. Questions (shared/jobs.py) and ingest jobs (shared/ingest_jobs.py) each have a `Leases`
over their own indexes; the keys of the leases themselves are shared (one per job id).
"""

from __future__ import annotations

import time
from typing import cast

import redis

from shared import keys
from shared.broker import broker_errors
from shared.settings import JobSettings

LEASE_SEPARATOR = "|"
QUEUED, RUNNING = "queued", "running"

# A Lua function for the transition scripts: job `id`, moving to status `to`, leaves both
# indexes, joins the one of its new status, and takes its lease (running) or drops it.
MOVE_FUNCTION = """
local function move(queued, running, lease, id, to, queued_at, started_at, holder, lease_ms)
  redis.call('ZREM', queued, id)
  redis.call('ZREM', running, id)
  if to == 'queued' then redis.call('ZADD', queued, queued_at, id) end
  if to == 'running' then
    redis.call('ZADD', running, started_at, id)
    redis.call('SET', lease, holder, 'PX', lease_ms)
  else
    redis.call('DEL', lease)
  end
end
"""

_TOUCH_IF_QUEUED_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'requeued_at', ARGV[1])
return 1
"""

_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def lease_value(node: str, attempt: int) -> str:
    return f"{node}{LEASE_SEPARATOR}{attempt}"


def lease_node(value: str) -> str:
    return value.rsplit(LEASE_SEPARATOR, 1)[0]


class Leases:
    """The leases of one kind of job, over its queued and running indexes (sorted sets)."""

    def __init__(self, redis_client: redis.Redis, settings: JobSettings, queued: str,
                 running: str, resend_first_runs: bool = False) -> None:
        self.redis = redis_client
        self.settings = settings
        self.queued = queued
        self.running = running
        # whether a queued job that never ran counts as stranded too (see stranded())
        self.resend_first_runs = resend_first_runs
        self._touch_queued = redis_client.register_script(_TOUCH_IF_QUEUED_SCRIPT)
        self._renew = redis_client.register_script(_RENEW_SCRIPT)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    @broker_errors()
    def renew(self, job_id: str, node: str, attempt: int) -> bool:
        """Extend the lease; False when it is no longer ours (the job was taken from us)."""
        renewed = self._renew(keys=[keys.job_lease(job_id)],
                              args=[lease_value(node, attempt), self.lease_ms])
        return bool(renewed)

    @broker_errors()
    def holder(self, job_id: str) -> str | None:
        """The node whose lease holds the job now; None when no live lease does."""
        value = cast(str | None, self.redis.get(keys.job_lease(job_id)))
        return None if value is None else lease_node(value)

    @broker_errors()
    def running_ids(self) -> list[str]:
        return cast(list[str], self.redis.zrange(self.running, 0, -1))

    @broker_errors()
    def lost(self) -> list[tuple[str, int]]:
        """Running jobs whose lease expired: (job id, attempt) for the reaper."""
        lost = []
        for job_id in self.running_ids():
            raw = cast(list[str | None], self.redis.hmget(keys.job(job_id), "status", "attempt"))
            if raw[0] != RUNNING:
                self.redis.zrem(self.running, job_id)
            elif not self.redis.exists(keys.job_lease(job_id)):
                lost.append((job_id, int(raw[1] or 0)))
        return lost

    @broker_errors()
    def stranded(self, older_than: float, limit: int = 100) -> list[tuple[str, str]]:
        """Queued jobs not claimed `older_than` seconds after they were requeued or last sent:
        (job id, request id), at most `limit`. Only requeued ones (attempt >= 1) unless
        `resend_first_runs`, then also those never run (`created_at` starts their clock). Each
        one's clock starts again, so the reaper sends its task again at most once per
        `older_than` (a send that failed leaves such a job with no task; a duplicate task is
        dropped by the claim)."""
        cutoff = time.time() - older_than
        stranded: list[tuple[str, str]] = []
        ids = cast(list[str], self.redis.zrange(self.queued, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "status", "attempt", "requeued_at", "created_at",
                       "request_id")
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            status, attempt, requeued_at, created_at, request_id = raw
            if status is None:  # its record lapsed (retention): nothing left to run
                self.redis.zrem(self.queued, job_id)
                continue
            if status != QUEUED or (int(attempt or 0) < 1 and not self.resend_first_runs):
                continue
            if float(requeued_at or created_at or 0.0) > cutoff:
                continue
            if self._touch_queued(keys=[keys.job(job_id)], args=[repr(time.time())]):
                stranded.append((job_id, request_id or ""))
            if len(stranded) >= limit:
                break
        return stranded
