"""Single-flight: identical cache misses in flight at once share one job.

A miss's fingerprint is its normalised question, scope and owner. The first submission
claims `keys.inflight(fingerprint)` (SET NX, first with a pending marker, then with its job
id once the job exists); identical submissions meanwhile wait for the id and attach to that
job while it is queued or running. A claim whose job is final is stale: it is dropped and the
next identical miss queues a fresh job.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from shared import keys
from shared.broker import broker_errors
from shared.cache import Scope, normalise
from shared.errors import JobNotFound

ACTIVE = frozenset({"queued", "running"})
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

JobLoader = Callable[[str], dict[str, Any]]


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

    def submit(
        self, key: str, create: Callable[[], dict[str, Any]], load: JobLoader
    ) -> tuple[dict[str, Any], bool]:
        """The job answering fingerprint `key` and whether it was already in flight: an active
        job holding the claim (attached), else one made by `create()`. `load(job_id)` reads a
        record (JobNotFound when gone)."""
        token = f"{PENDING}{uuid.uuid4().hex}"
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        while time.monotonic() < deadline:
            holder = self._call(self._claim, key, [token, PENDING_TTL_SECONDS])
            if holder == token:
                return self._create_claimed(key, token, create), False
            if not holder.startswith(PENDING):
                record = self._load_active(holder, load)
                if record is not None:
                    return record, True
                self._call(self._swap, key, [holder, "", 0])
                continue
            time.sleep(WAIT_STEP_SECONDS)
        return create(), False

    def _create_claimed(
        self, key: str, token: str, create: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        try:
            record = create()
        except BaseException:
            self._call(self._swap, key, [token, "", 0])
            raise
        self._call(self._swap, key, [token, record["id"], self.ttl_seconds])
        return record

    @staticmethod
    def _load_active(job_id: str, load: JobLoader) -> dict[str, Any] | None:
        try:
            record = load(job_id)
        except JobNotFound:
            return None
        return record if record.get("status") in ACTIVE else None

    def _call(self, script: Any, key: str, args: list[Any]) -> Any:
        with broker_errors("single-flight claim failed"):
            value = script(keys=[keys.inflight(key)], args=args)
        return value.decode() if isinstance(value, bytes) else value
