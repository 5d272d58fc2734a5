"""Requests per second per API key: a token bucket per key in the broker Redis.

One Lua script refills the bucket by the time passed (the Redis server's clock, so every web
process agrees) and takes a token, atomically: concurrent requests of one key across processes
can never take more than the bucket holds. A bucket lives while it is refilling, then expires
(a full bucket and no bucket are the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from shared import keys
from shared.broker import broker_errors

# KEYS[1] the bucket (hash: tokens, at_ms); ARGV: rate per second, burst. Returns {1 if a
# token was taken else 0, tokens left (string: Lua floats)}.
_TAKE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at_ms')
local tokens = tonumber(held[1]) or burst
local at_ms = tonumber(held[2]) or now_ms
tokens = math.min(burst, tokens + math.max(0, now_ms - at_ms) * rate / 1000)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_ms', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {taken, tostring(tokens)}
"""


@dataclass(frozen=True)
class Take:
    """A request's turn at its key's bucket: whether it may go on, tokens left, and when the
    next token arrives if not."""

    allowed: bool
    remaining: int
    retry_after: int


class TokenBucket:
    """Per-key token buckets; see the module docstring."""

    def __init__(self, client: redis.Redis) -> None:
        self._take = client.register_script(_TAKE_SCRIPT)

    def take(self, owner: str, rate_per_second: float, burst: int) -> Take:
        """Take one token from `owner`'s bucket (refilling at `rate_per_second` up to `burst`)."""
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second!r}")
        with broker_errors("rate limit unreadable"):
            taken, left = self._take(keys=[keys.rate_bucket(owner)],
                                     args=[repr(float(rate_per_second)), burst])
        tokens = float(left)
        wait = 0 if int(taken) else math.ceil((1 - tokens) / rate_per_second)
        return Take(bool(int(taken)), math.floor(tokens), max(1, wait) if wait else 0)
