import pytest

from shared.errors import SettingsError
from shared.settings import GROUPS, env_name, load_settings, settings_table


def test_defaults_serve_the_local_stack() -> None:
    settings = load_settings()
    assert settings.pipeline.embedding_model == "minilm"
    assert settings.jobs.visibility_timeout_seconds > settings.jobs.hard_time_limit_seconds


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_TOP_K", "99"),
        ("CACHE_SIMILARITY_THRESHOLD", "1.5"),
        ("API_PORT", "port"),
        ("CB_LIMIT_EUR", "-1"),
        ("PIPELINE_DEVICE", "tpu"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_soft_limit_must_be_below_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_SOFT_TIME_LIMIT_SECONDS", "400")
    with pytest.raises(SettingsError, match="soft_time_limit_seconds must be below"):
        load_settings()


def test_auth_needs_a_key_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ENABLED", "true")
    with pytest.raises(SettingsError, match="AUTH_"):
        load_settings()
    monkeypatch.setenv("AUTH_API_KEYS", "k1, k2")
    assert load_settings().auth.api_keys == ["k1", "k2"]


def test_overrides_take_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9000")
    assert load_settings(api={"port": 9100}).api.port == 9100


def test_table_lists_every_setting() -> None:
    table = settings_table()
    for cls in GROUPS.values():
        for field in cls.model_fields:
            assert f"`{env_name(cls, field)}`" in table
