import pytest
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", env_file=None)
    service_name: str = "demo"
    port: int = 8999


def test_prefixed_variable_wins_over_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://shared:6379/0")
    monkeypatch.setenv("DEMO_REDIS_URL", "redis://own:6379/1")
    assert DemoSettings().redis_url == "redis://own:6379/1"


def test_shared_variable_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://shared:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    s = DemoSettings()
    assert s.redis_url == "redis://shared:6379/0"
    assert s.database_url == "postgresql://db/x"


def test_service_fields_are_not_read_unprefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1234")
    assert DemoSettings().port == 8999
    monkeypatch.setenv("DEMO_PORT", "1235")
    assert DemoSettings().port == 1235


def test_bad_redis_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        DemoSettings(redis_url="http://nope")


@pytest.mark.parametrize("value", ["changeme", "dev-admin-key", "CHANGE-ME-please", "short"])
def test_placeholder_or_weak_secrets_are_refused_in_production(value: str) -> None:
    with pytest.raises(ValueError, match="real secret"):
        DemoSettings(environment="production").require_secret("KEY", value)
    assert DemoSettings().require_secret("KEY", value) == value


def test_the_shortener_refuses_its_own_defaults_in_production() -> None:
    from url_shortener.settings import UrlShortenerSettings

    with pytest.raises(ValueError, match="URL_SHORTENER_ADMIN_KEY"):
        UrlShortenerSettings(environment="production", _env_file=None).checked()  # type: ignore[call-arg]
    ok = UrlShortenerSettings(
        environment="production",
        admin_key="k" * 32,
        code_secret="s" * 32,
        _env_file=None,  # type: ignore[call-arg]
    )
    assert ok.checked() is ok
