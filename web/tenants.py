"""The API keys this service accepts, as tenants: a name, an owner id and the key's limits.

Keys come from AUTH_API_KEYS (`name:key` or a bare key) and from AUTH_KEYS_FILE, a TOML file
that holds only each key's SHA-256 digest, never the key:

    [keys.alice]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    max_queued = 20         # each limit is optional; the AUTH_KEY_* setting is the default
    rate_per_second = 5.0
    burst = 10
    budget_eur = 1.0

In memory too only digests are kept; a presented key is hashed and compared against every
digest in constant time. With auth off every caller is one tenant, `anonymous`, with only
the global limits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared.errors import SettingsError
from shared.settings import AuthSettings

ANONYMOUS = "anonymous"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
LIMITS = {"max_queued": int, "rate_per_second": float, "burst": int, "budget_eur": float}


def digest_of(key: str) -> str:
    """The SHA-256 hex digest of a key, as AUTH_KEYS_FILE stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def owner_of_digest(digest: str) -> str:
    """The owner id of a key from its digest: records never hold the key itself."""
    return digest[:32]


@dataclass(frozen=True)
class Tenant:
    """One key's name (its label in usage and metrics), owner id and limits (0: none)."""

    name: str
    owner: str
    max_queued: int = 0
    rate_per_second: float = 0.0
    burst: int = 1
    budget_eur: float = 0.0


ANONYMOUS_TENANT = Tenant(ANONYMOUS, ANONYMOUS)


class KeyRing:
    """The accepted keys by digest; see the module docstring."""

    def __init__(self, by_digest: dict[str, Tenant]) -> None:
        self._by_digest = by_digest

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> KeyRing:
        """Every key of AUTH_API_KEYS and AUTH_KEYS_FILE with its limits; SettingsError naming
        the entry for a bad name, digest, limit or a duplicate."""
        default = Tenant("", "", settings.key_max_queued, settings.key_rate_per_second,
                         settings.key_burst, settings.key_budget_eur)
        entries: list[tuple[str, str, dict[str, Any]]] = [
            (name, digest_of(key), {}) for name, key in _named(settings.api_keys)]
        if settings.keys_file is not None:
            entries += _read_file(settings.keys_file)
        ring: dict[str, Tenant] = {}
        for name, digest, limits in entries:
            if any(tenant.name == name for tenant in ring.values()) or digest in ring:
                raise SettingsError(f"AUTH_API_KEYS / AUTH_KEYS_FILE: key {name!r} given twice")
            ring[digest] = replace(default, name=name, owner=owner_of_digest(digest), **limits)
        return cls(ring)

    def find(self, presented: str) -> Tenant | None:
        """The tenant of a presented key; None when unknown. Compares every digest (constant
        time, no early exit), so the time taken says nothing about which key nearly matched."""
        wanted = digest_of(presented).encode()
        found = None
        for digest, tenant in self._by_digest.items():
            if hmac.compare_digest(digest.encode(), wanted):
                found = tenant
        return found

    def names(self) -> list[str]:
        """Every key's name (the bounded label values of per-key metrics)."""
        return sorted(tenant.name for tenant in self._by_digest.values())


def _named(api_keys: list[str]) -> list[tuple[str, str]]:
    """(name, key) of each AUTH_API_KEYS entry: `name:key`, or a bare key named by position."""
    named = []
    for position, entry in enumerate(api_keys, start=1):
        name, separator, key = entry.partition(":")
        if not separator:
            name, key = f"key{position}", entry
        if not NAME.match(name) or not key:
            raise SettingsError(f"AUTH_API_KEYS: entry {position} must be `name:key` with a name "
                                "of letters, digits, '_', '.', '-' (at most 40), or a bare key")
        named.append((name, key))
    return named


def _read_file(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"AUTH_KEYS_FILE: cannot read {path}: {error}") from error
    entries = []
    for name, table in (document.get("keys") or {}).items():
        where = f"AUTH_KEYS_FILE {path}: key {name!r}"
        if not NAME.match(name) or not isinstance(table, dict):
            raise SettingsError(f"{where}: a [keys.<name>] table with a name of letters, digits, "
                                "'_', '.', '-' (at most 40)")
        digest = str(table.get("sha256", "")).lower()
        if not DIGEST.match(digest):
            raise SettingsError(f"{where}: sha256 must be the key's SHA-256 as 64 hex digits")
        unknown = sorted(set(table) - {"sha256", *LIMITS})
        if unknown:
            raise SettingsError(f"{where}: unknown fields {unknown}")
        entries.append((name, digest, {field: _limit(where, field, table[field])
                                       for field in LIMITS if field in table}))
    return entries


def _limit(where: str, field: str, value: Any) -> int | float:
    cast = LIMITS[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SettingsError(f"{where}: {field} must be a number >= 0, got {value!r}")
    if cast is int and value != int(value) or field == "burst" and value < 1:
        raise SettingsError(f"{where}: {field} must be a whole number (burst >= 1), got {value!r}")
    return cast(value)
