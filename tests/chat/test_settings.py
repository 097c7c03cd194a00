"""Chat settings: secrets refused as placeholders in production."""

from __future__ import annotations

import pytest

from chat.settings import ChatSettings


def test_placeholder_jwt_secret_refused_in_production() -> None:
    with pytest.raises(ValueError, match="CHAT_JWT_SECRET"):
        ChatSettings(environment="production", _env_file=None).checked()  # type: ignore[call-arg]
    ok = ChatSettings(
        environment="production",
        jwt_secret="x" * 40,
        _env_file=None,  # type: ignore[call-arg]
    )
    assert ok.checked() is ok
    dev = ChatSettings(_env_file=None)  # type: ignore[call-arg]
    assert dev.checked() is dev  # development keeps its default
