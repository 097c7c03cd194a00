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


def test_a_cluster_url_is_accepted_and_sets_the_switch() -> None:
    s = DemoSettings(redis_url="redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    assert s.redis_cluster and s.redis_url == "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    assert DemoSettings(redis_url="rediss+cluster://n:7000").redis_cluster
    assert not DemoSettings(redis_url="redis://one:6379/0").redis_cluster


def test_the_cluster_switch_makes_a_plain_url_a_cluster_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://node:7000/0")
    monkeypatch.setenv("DEMO_REDIS_CLUSTER", "true")
    assert DemoSettings().redis_url == "redis+cluster://node:7000/0"
    monkeypatch.delenv("DEMO_REDIS_CLUSTER")
    monkeypatch.setenv("REDIS_CLUSTER", "1")  # a shared name too
    assert DemoSettings().redis_url == "redis+cluster://node:7000/0"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"redis_cluster": True}, "needs a redis_url"),
        ({"redis_cluster": True, "redis_url": "unix:///tmp/r.sock"}, "over TCP"),
        ({"redis_url": "cluster://n:7000"}, "redis_url must start"),
        ({"redis_url": "n:7000"}, "redis_url must start"),
    ],
)
def test_cluster_settings_that_cannot_work_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSettings(**fields)


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
