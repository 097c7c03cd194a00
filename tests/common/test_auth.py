"""common/auth.py: tokens and password hashes."""

from __future__ import annotations

import time

import jwt
import pytest

from common.auth import (
    InvalidToken,
    TokenIssuer,
    hash_password,
    hash_password_async,
    verify_password,
    verify_password_async,
)

SECRET = "a-test-secret-that-is-long-enough-1234"


def test_a_token_round_trips_with_its_claims() -> None:
    tokens = TokenIssuer(secret=SECRET, ttl=60)
    token, expires_in = tokens.issue("42", name="alice")
    claims = tokens.verify(token)
    assert expires_in == 60
    assert claims["sub"] == "42" and claims["name"] == "alice"
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-3] + ("aaa" if not t.endswith("aaa") else "bbb"),  # signature changed
        lambda t: TokenIssuer(secret="another-secret-entirely-0123456789").issue("42")[0],
        lambda t: jwt.encode({"sub": "42", "iat": 0, "exp": 2**40}, None, algorithm="none"),
        lambda t: jwt.encode({"sub": "42"}, SECRET),  # no exp / iat
        lambda t: "not.a.token",
        lambda t: "",
    ],
)
def test_forged_or_malformed_tokens_are_refused(forge) -> None:  # type: ignore[no-untyped-def]
    tokens = TokenIssuer(secret=SECRET)
    good, _ = tokens.issue("42")
    with pytest.raises(InvalidToken):
        tokens.verify(forge(good))


def test_an_expired_token_is_refused() -> None:
    tokens = TokenIssuer(secret=SECRET)
    token, _ = tokens.issue("42", ttl=-1)
    with pytest.raises(InvalidToken):
        tokens.verify(token)
    assert time.time() > 0


def test_an_issuer_is_checked_when_set() -> None:
    token, _ = TokenIssuer(secret=SECRET, issuer="chat").issue("1")
    assert TokenIssuer(secret=SECRET, issuer="chat").verify(token)["iss"] == "chat"
    with pytest.raises(InvalidToken):
        TokenIssuer(secret=SECRET, issuer="feed").verify(token)


def test_no_secret_no_issuer() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(secret="")


def test_password_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("hunter22"), hash_password("hunter22")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("hunter22", first) and verify_password("hunter22", second)
    assert not verify_password("hunter23", first)
    assert not verify_password("hunter22", "garbage")
    assert not verify_password("hunter22", "bcrypt$AAAA$AAAA")


async def test_async_wrappers() -> None:
    stored = await hash_password_async("pw-123456")
    assert await verify_password_async("pw-123456", stored)
    assert not await verify_password_async("pw-1234567", stored)
