"""The cost circuit breaker: spend per fixed window, shared by every process through Redis.

Each window's spend is one float key (`keys.breaker_window(start)`) in the broker Redis that
expires with its window, so a window resets on its own; each API key's share of it is another
(`keys.owner_spend`), checked against the key's own budget (AUTH_KEY_BUDGET_EUR) on top of the
global limit. Every change goes through one Lua
script, atomic on the server: web processes read the spend before admitting a cache miss
(`check`) and reserve an estimate in the same atomic step, so concurrent submissions cannot all
slip in under the limit at once. A job's reservation is settled once, by the script that moves
the job to its final status (`SETTLE_FUNCTION`, run inside shared/jobs.py's transition): the
job's actual cost replaces the estimate (0 for a job that failed or never ran).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import redis

from shared import keys
from shared.broker import broker_errors
from shared.errors import BudgetExceeded
from shared.metrics import BREAKER_COST, BREAKER_LIMIT, BREAKER_OPEN
from shared.pricing import cost_eur
from shared.settings import BreakerSettings, PipelineSettings

OPEN, CLOSED = "open", "closed"
EXPIRY_GRACE_SECONDS = 5
RESERVED_FIELD = "breaker_reserved_eur"  # job hash fields: what the web reserved, and when
WINDOW_FIELD = "breaker_window"
PROMPT_OVERHEAD_TOKENS = 200  # instructions and question around the passages
KEY_BUDGET = "key-budget"  # the limit's name in 429 problems when a key's own budget refused
UNLIMITED_EUR = 1e300  # the global limit passed while the breaker is off (keys' budgets apply)


def spend_window(window_seconds: int, now: float) -> tuple[int, int]:
    """(start of the window `now` falls in, seconds its spend key lives: to its end plus grace)."""
    start = int(now // window_seconds) * window_seconds
    return start, max(1, math.ceil(start + window_seconds - now)) + EXPIRY_GRACE_SECONDS


def job_estimate_eur(pipeline: PipelineSettings, breaker: BreakerSettings) -> float:
    """An upper estimate of one job's cost: a full context and a full-length answer."""
    return cost_eur(
        pipeline.max_context_tokens + PROMPT_OVERHEAD_TOKENS, pipeline.max_new_tokens, breaker
    )


# KEYS[1] window key, KEYS[2] (optional) the owner's window key; ARGV: amount, limit, ttl,
# only_below_limit (1: refuse at or over a limit), the owner's limit (0: none). Returns {spend
# after, the owner's spend after, 1 if added else 0, the limit that refused ('' when none)},
# spends as strings (Lua floats).
_SPEND_SCRIPT = """
local spend = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = 0
if KEYS[2] then mine = tonumber(redis.call('GET', KEYS[2]) or '0') end
local amount = tonumber(ARGV[1])
if ARGV[4] == '1' then
  local refused = ''
  if spend >= tonumber(ARGV[2]) then refused = 'budget'
  elseif tonumber(ARGV[5]) > 0 and mine >= tonumber(ARGV[5]) then refused = 'key-budget' end
  if refused ~= '' then return {tostring(spend), tostring(mine), 0, refused} end
end
if amount ~= 0 then
  spend = tonumber(redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]))
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  if KEYS[2] then
    mine = tonumber(redis.call('INCRBYFLOAT', KEYS[2], ARGV[1]))
    if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
  end
end
return {tostring(spend), tostring(mine), 1, ''}
"""

# A Lua function for the scripts that end a job: settles its reservation exactly once (the
# fields are deleted). job: the job hash; spend: the current window's key; window: its start;
# eur: what the job cost; ttl: the spend key's lifetime; mine: the job owner's spend key of
# this window (the same amount applies to it). A reservation made in an earlier window
# expired with it, so only a reservation of this window is taken back.
SETTLE_FUNCTION = f"""
local function add_spend(key, amount, ttl)
  redis.call('INCRBYFLOAT', key, tostring(amount))
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ttl) end
end
local function settle(job, spend, window, eur, ttl, mine)
  local held = redis.call('HMGET', job, '{RESERVED_FIELD}', '{WINDOW_FIELD}')
  local amount = tonumber(eur)
  if held[1] then
    redis.call('HDEL', job, '{RESERVED_FIELD}', '{WINDOW_FIELD}')
    if held[2] == window then amount = amount - tonumber(held[1]) end
  end
  if amount ~= 0 then
    add_spend(spend, amount, ttl)
    add_spend(mine, amount, ttl)
  end
end
"""


class Breaker:
    """Spend per window against `settings.limit_eur`; see the module docstring."""

    def __init__(self, client: redis.Redis, settings: BreakerSettings) -> None:
        self.redis = client
        self.settings = settings
        self._script = client.register_script(_SPEND_SCRIPT)
        BREAKER_LIMIT.set(settings.limit_eur)

    def window_start(self, now: float | None = None) -> int:
        """Start (epoch seconds) of the window `now` falls in."""
        moment = time.time() if now is None else now
        return spend_window(self.settings.window_seconds, moment)[0]

    def charge(
        self, eur: float, reserved_eur: float = 0.0, reserved_window: int | None = None,
        owner: str | None = None,
    ) -> float:
        """Add a finished job's cost to the current window (and to `owner`'s share of it);
        returns the window's spend.

        A job admitted with a reservation (`check(reserve_eur=...)` in window `reserved_window`)
        settles it here: in the same window only the difference is added (it may be negative).
        """
        if eur < 0 or reserved_eur < 0:
            raise ValueError(f"a charge must be >= 0 EUR, got {eur!r} (reserved {reserved_eur!r})")
        amount = eur
        if reserved_window is not None and reserved_window == self.window_start():
            amount = eur - reserved_eur
        spend, _, _ = self._spend(amount, owner, only_below_limit=False)
        return spend

    def check(
        self, reserve_eur: float = 0.0, owner: str | None = None, owner_limit_eur: float = 0.0
    ) -> float:
        """Raise BudgetExceeded (retry_after = seconds to the window's end) when the window's
        spend has reached the limit, or `owner`'s spend has reached `owner_limit_eur` (0: no
        such limit); otherwise add `reserve_eur` (0: read only) to both atomically and return
        the window's spend."""
        if not self.settings.enabled and owner_limit_eur <= 0:
            return 0.0
        spend, mine, refused = self._spend(reserve_eur, owner, only_below_limit=True,
                                           owner_limit_eur=owner_limit_eur)
        if refused == KEY_BUDGET:
            raise BudgetExceeded(
                f"this API key's cost limit of {owner_limit_eur:.2f} EUR per "
                f"{self.settings.window_seconds} s reached (spent {mine:.4f} EUR)",
                retry_after=self.retry_after(), limit=KEY_BUDGET, quota=owner_limit_eur,
                window_seconds=self.settings.window_seconds,
            )
        if refused:
            raise BudgetExceeded(
                f"cost limit of {self.settings.limit_eur:.2f} EUR per "
                f"{self.settings.window_seconds} s reached (spent {spend:.4f} EUR)",
                retry_after=self.retry_after(), quota=self.settings.limit_eur,
                window_seconds=self.settings.window_seconds,
            )
        return spend

    def owner_spend(self, owner: str) -> float:
        """What `owner`'s jobs cost in the current window, reservations included."""
        with broker_errors("breaker state unreadable"):
            spent = self.redis.get(keys.owner_spend(owner, self.window_start()))
        return float(spent or 0.0)

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        moment = time.time() if now is None else now
        end = self.window_start(moment) + self.settings.window_seconds
        return max(1, math.ceil(end - moment))

    def state(self) -> dict[str, Any]:
        """spend, limit, state (open/closed), resets_at (ISO time), resets_in_seconds."""
        now = time.time()
        start = self.window_start(now)
        with broker_errors("breaker state unreadable"):
            spend = float(self.redis.get(keys.breaker_window(start)) or 0.0)
        self._publish(spend)
        resets = start + self.settings.window_seconds
        return {
            "enabled": self.settings.enabled,
            "spend_eur": round(spend, 6),
            "limit_eur": self.settings.limit_eur,
            "state": OPEN if self._is_open(spend) else CLOSED,
            "window_seconds": self.settings.window_seconds,
            "resets_at": datetime.fromtimestamp(resets, UTC).isoformat(),
            "resets_in_seconds": self.retry_after(now),
        }

    def _is_open(self, spend: float) -> bool:
        return self.settings.enabled and spend >= self.settings.limit_eur

    def _spend(
        self, amount: float, owner: str | None, only_below_limit: bool,
        owner_limit_eur: float = 0.0,
    ) -> tuple[float, float, str]:
        """(window spend, owner's spend, the limit that refused or "")."""
        start, ttl = spend_window(self.settings.window_seconds, time.time())
        limit = self.settings.limit_eur if self.settings.enabled else UNLIMITED_EUR
        args: list[str | int] = [
            repr(float(amount)), repr(limit), ttl, int(only_below_limit), repr(owner_limit_eur),
        ]
        window_keys = [keys.breaker_window(start)]
        if owner is not None:
            window_keys.append(keys.owner_spend(owner, start))
        with broker_errors("breaker update failed"):
            spend_text, mine_text, _, refused = self._script(keys=window_keys, args=args)
        spend = float(spend_text)
        self._publish(spend)
        return spend, float(mine_text), str(refused)

    def _publish(self, spend: float) -> None:
        BREAKER_COST.set(spend)
        BREAKER_OPEN.set(1 if self._is_open(spend) else 0)
