"""Admission control: refuse new cache misses while the queue is as deep as allowed, as a whole
(API_MAX_QUEUE_DEPTH) or for the caller's key (its `max_queued`).

Two steps. `check()` reads the depths before the submit path spends anything (the cache's
query embedding costs seconds of CPU under load), so a refusal is cheap. The admission that
counts happens inside job creation: `ADMIT_FUNCTION` runs in shared/jobs.py's create script,
which checks both depths and adds the job to the queue in one atomic step, so concurrent
submissions can never push the queue past its limit. The same step gives the job its level in
the fair order across keys (FAIR_LEVELS).

Retry-After is an estimate of how long the queue ahead takes to drain: the median of the
recent job durations the workers record (`keys.RECENT_DURATIONS`) times the jobs over the
limit, divided by the workers serving it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared import keys
from shared.broker import broker_errors
from shared.errors import QueueFull, QueueRefused

RECENT_DURATIONS_KEPT = 100
DEFAULT_JOB_SECONDS = 10.0
MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 3600
QUEUE, KEY_QUEUED = "queue", "key-queued"  # the limits' names in 429 problems
# The fair order across API keys (docs/jobs.md): a job's level is how many jobs of its key were
# queued ahead of it, up to the last level; level 0 is served first. Its task carries the level
# as its Celery priority, and keys.QUEUED scores it level * LEVEL_SPAN + enqueue time, so a
# job's rank there is its place in the fair order (queue_position).
FAIR_LEVELS = 10
LEVEL_SPAN = 10**10  # above any epoch time in seconds

# A Lua function for the script that creates a job: nil and the job's fair level when it may be
# queued, else {0, limit, count}. queued: keys.QUEUED; mine: the owner's job index; max_depth,
# max_mine: the limits (0: none).
ADMIT_FUNCTION = f"""
local function admit(queued, mine, max_depth, max_mine)
  local depth = redis.call('ZCARD', queued)
  if tonumber(max_depth) > 0 and depth >= tonumber(max_depth) then
    return {{0, '{QUEUE}', depth}}, 0
  end
  local ahead = 0
  if depth > 0 then ahead = redis.call('ZINTERCARD', 2, queued, mine) end
  if tonumber(max_mine) > 0 and ahead >= tonumber(max_mine) then
    return {{0, '{KEY_QUEUED}', ahead}}, 0
  end
  return nil, math.min(ahead, {FAIR_LEVELS - 1})
end
local LEVEL_SPAN = {LEVEL_SPAN}
"""


@dataclass(frozen=True)
class Bounds:
    """The queue limits one submission is admitted under (0: no limit)."""

    max_depth: int = 0
    max_queued_per_key: int = 0


def record_duration(client: redis.Redis, seconds: float) -> None:
    """Remember how long a finished job took (the worker calls this after each job)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.RECENT_DURATIONS, f"{seconds:.3f}")
        pipe.ltrim(keys.RECENT_DURATIONS, 0, RECENT_DURATIONS_KEPT - 1)
        pipe.execute()


class Admission:
    """Queue limits and their Retry-After; see the module docstring."""

    def __init__(
        self, client: redis.Redis, max_depth: int, workers: Callable[[], int] = lambda: 1
    ) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth!r}")
        self.redis = client
        self.max_depth = max_depth
        self._workers = workers

    def bounds(self, max_queued_per_key: int = 0) -> Bounds:
        """The limits a job is created under: the whole queue's and the key's."""
        return Bounds(self.max_depth, max_queued_per_key)

    def check(self, owner: str, max_queued_per_key: int = 0) -> int:
        """Return the queue depth, or raise QueueFull (with an estimated retry_after) when the
        queue, or `owner`'s share of it, is already at its limit. Reads only: creation admits."""
        pipe = self.redis.pipeline(transaction=False)
        with broker_errors("queue depth unreadable"), pipe:
            pipe.zcard(keys.QUEUED)
            pipe.zintercard(2, [keys.QUEUED, keys.owner_jobs(owner)])
            depth, mine = (int(value) for value in pipe.execute())
        if depth >= self.max_depth:
            raise self.refusal(QueueRefused(QUEUE, depth, self.max_depth))
        if 0 < max_queued_per_key <= mine:
            raise self.refusal(QueueRefused(KEY_QUEUED, mine, max_queued_per_key))
        return depth

    def refusal(self, refused: QueueRefused) -> QueueFull:
        """The 429 error for a refused admission, with its Retry-After."""
        with broker_errors("recent job durations unreadable"):
            durations = [float(d) for d in self.redis.lrange(keys.RECENT_DURATIONS, 0, -1)]
        over = refused.count - refused.maximum + 1
        if refused.limit == KEY_QUEUED:
            message = (f"{refused.count} jobs of this API key are queued (limit "
                       f"{refused.maximum}); try again when one has started")
        else:
            message = f"{refused.count} jobs are queued (limit {refused.maximum}); try again later"
        return QueueFull(message, retry_after=self.retry_after(over, durations),
                         limit=refused.limit, quota=refused.maximum)

    def retry_after(self, jobs: int, durations: list[float]) -> int:
        """Seconds until `jobs` more jobs have left the queue, from recent job durations."""
        typical = statistics.median(durations) if durations else DEFAULT_JOB_SECONDS
        workers = max(1, self._workers())
        estimate = math.ceil(typical * max(1, jobs) / workers)
        return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, estimate))
