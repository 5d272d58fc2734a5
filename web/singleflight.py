"""Single-flight: identical cache misses in flight at once share one job.

A miss's fingerprint is its normalised question, scope and owner. The first submission
claims `keys.inflight(fingerprint)` (SET NX, first with a pending marker, then, bound, with its
job id once the job exists); identical submissions meanwhile wait for the id and attach to that
job while it is queued or running. A claim whose job is final or gone is stale: attaching to it
drops it, and the next identical miss queues a fresh job. web/submit.py drives it:

    claim = flight.claim(key)          # ours, or an identical job's id, or neither
    flight.attach(claim, record)       # the holder's job: in flight (True) or stale (dropped)
    flight.bind(claim, job_id)         # our new job holds the claim
    flight.release(claim)              # our job could not be made
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.broker import broker_errors
from shared.cache import Scope, normalise
from shared.jobs import JobRecord, Status

ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
PENDING = "pending:"
PENDING_TTL_SECONDS = 5
WAIT_STEP_SECONDS = 0.01
WAIT_LIMIT_SECONDS = 2.0

# KEYS[1] claim; ARGV: value, ttl. Sets it when absent; returns the value holding the claim.
_CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""
# KEYS[1] claim; ARGV: expected holder, new value ('' deletes), ttl. Compare-and-set.
_SWAP_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""


@dataclass(frozen=True)
class Claim:
    """What claim() found: our own claim (`token`, to bind to the job we make), the id of an
    identical job holding it (`holder`), or neither (waited too long: go on without)."""

    key: str
    token: str | None = None
    holder: str | None = None


def fingerprint(question: str, scope: Scope, owner: str) -> str:
    """Digest of what makes two misses the same job."""
    text = f"{owner}\n{scope.key}\n{normalise(question)}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class SingleFlight:
    """Attach identical in-flight misses to one job; see the module docstring."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be >= 1, got {ttl_seconds!r}")
        self.redis = client
        self.ttl_seconds = ttl_seconds
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._swap = client.register_script(_SWAP_SCRIPT)

    def claim(self, key: str) -> Claim:
        """Claim fingerprint `key`, or find the job holding it; an identical submission still
        making its job is waited for, up to WAIT_LIMIT_SECONDS."""
        token = f"{PENDING}{uuid.uuid4().hex}"
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        while time.monotonic() < deadline:
            holder = self._call(self._claim, key, [token, PENDING_TTL_SECONDS])
            if holder == token:
                return Claim(key, token=token)
            if not holder.startswith(PENDING):
                return Claim(key, holder=holder)
            time.sleep(WAIT_STEP_SECONDS)
        return Claim(key)

    def attach(self, claim: Claim, record: JobRecord | None) -> bool:
        """Whether the holder's job `record` (None: gone) is in flight to attach to; a stale
        claim is dropped, so the next claim() can take it."""
        if record is not None and record.get("status") in ACTIVE:
            return True
        if claim.holder is not None:
            self._call(self._swap, claim.key, [claim.holder, "", 0])
        return False

    def bind(self, claim: Claim, job_id: str) -> None:
        """Our claim now stands for job `job_id` (for as long as a job can be in flight)."""
        if claim.token is not None:
            self._call(self._swap, claim.key, [claim.token, job_id, self.ttl_seconds])

    def release(self, claim: Claim) -> None:
        """Give our claim up: the job it was for could not be made."""
        if claim.token is not None:
            self._call(self._swap, claim.key, [claim.token, "", 0])

    def _call(self, script: Any, key: str, args: list[Any]) -> Any:
        with broker_errors("single-flight claim failed"):
            value = script(keys=[keys.inflight(key)], args=args)
        return value.decode() if isinstance(value, bytes) else value
