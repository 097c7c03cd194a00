"""The shortener's settings: secrets checked in production, lists from commas."""

import pytest

from url_shortener.settings import UrlShortenerSettings

REAL = "k" * 32


@pytest.mark.parametrize("field", ["admin_key", "code_secret"])
@pytest.mark.parametrize("value", ["dev-admin-key-that-is-long-enough", "DEV-" + "x" * 40])
def test_a_long_dev_secret_is_refused_in_production(field: str, value: str) -> None:
    """Long enough to pass the length rule: only the `dev-` prefix check refuses it."""
    assert len(value) >= 16
    fields = {"admin_key": REAL, "code_secret": REAL, field: value}
    with pytest.raises(ValueError, match="real secret"):
        UrlShortenerSettings(environment="production", _env_file=None, **fields).checked()  # type: ignore[call-arg, arg-type]
    development = UrlShortenerSettings(_env_file=None, **fields)  # type: ignore[call-arg, arg-type]
    assert development.checked() is development


def test_comma_separated_lists() -> None:
    settings = UrlShortenerSettings(
        _env_file=None,  # type: ignore[call-arg]
        blocked_domains=" a.test, b.test ,,",  # type: ignore[arg-type]
    )
    assert settings.blocked_domains == ["a.test", "b.test"]
