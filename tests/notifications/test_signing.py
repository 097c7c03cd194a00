"""The webhook signature a receiver verifies."""

from __future__ import annotations

import pytest

from notifications.signing import SignatureError, sign, verify


def test_a_signature_verifies_and_any_change_breaks_it() -> None:
    body = b'{"id":"d1"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    verify("s3cret", body, header, now=1_700_000_010)
    with pytest.raises(SignatureError, match="does not match"):
        verify("s3cret", b'{"id":"d2"}', header, now=1_700_000_010)
    with pytest.raises(SignatureError, match="does not match"):
        verify("other", body, header, now=1_700_000_010)


def test_an_old_signature_is_a_replay() -> None:
    header = sign("s3cret", b"x", timestamp=1_700_000_000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify("s3cret", b"x", header, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError, match="timestamp"):
        verify("s3cret", b"x", "v1=abc", now=1_700_000_000)
