"""The accepted API keys as tenants: names, digests and per-key limits from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import AuthSettings
from web.auth import owner_of
from web.tenants import KeyRing, Tenant, digest_of


def ring(tmp_path: Path, toml: str = "", **settings: object) -> KeyRing:
    if toml:
        (tmp_path / "keys.toml").write_text(toml)
        settings["keys_file"] = tmp_path / "keys.toml"
    return KeyRing.from_settings(AuthSettings(enabled=True, **settings))  # type: ignore[arg-type]


def test_named_and_bare_keys_get_the_default_limits(tmp_path: Path) -> None:
    keys = ring(tmp_path, api_keys=["alice:s3cret", "bare-key"], key_max_queued=7,
                key_rate_per_second=2.5, key_burst=5, key_budget_eur=1.5)
    assert keys.find("s3cret") == Tenant("alice", owner_of("s3cret"), 7, 2.5, 5, 1.5)
    found = keys.find("bare-key")
    assert found is not None and (found.name, found.owner) == ("key2", owner_of("bare-key"))
    assert keys.find("alice:s3cret") is None and keys.find("") is None
    assert keys.names() == ["alice", "key2"]


def test_the_keys_file_holds_digests_and_overrides_limits(tmp_path: Path) -> None:
    toml = f"""
[keys.team-a]
sha256 = "{digest_of('team-a-key').upper()}"
max_queued = 3
rate_per_second = 0.5

[keys.team-b]
sha256 = "{digest_of('team-b-key')}"
"""
    keys = ring(tmp_path, toml, key_max_queued=50)
    team_a = keys.find("team-a-key")
    assert team_a is not None and (team_a.max_queued, team_a.rate_per_second) == (3, 0.5)
    team_b = keys.find("team-b-key")
    assert team_b is not None and (team_b.name, team_b.max_queued) == ("team-b", 50)
    assert "team-a-key" not in str(vars(keys))  # only digests are kept


@pytest.mark.parametrize(("toml", "api_keys", "message"), [
    ('[keys.a]\nsha256 = "abc"\n', [], "sha256 must be the key's SHA-256"),
    (f'[keys.a]\nsha256 = "{"0" * 64}"\nburst = 0\n', [], "burst"),
    (f'[keys.a]\nsha256 = "{"0" * 64}"\nmax_queued = -1\n', [], "max_queued must be"),
    (f'[keys.a]\nsha256 = "{"0" * 64}"\ncolour = 1\n', [], "unknown fields \\['colour'\\]"),
    (f'[keys.a]\nsha256 = "{digest_of("k")}"\n', ["a:other"], "key 'a' given twice"),
    ("", ["bad name!:k"], "entry 1 must be `name:key`"),
    ("[keys", [], "cannot read"),
])
def test_bad_entries_fail_at_start_naming_them(
    tmp_path: Path, toml: str, api_keys: list[str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        ring(tmp_path, toml, api_keys=api_keys or ["x"])
