"""The webhook signature a receiver verifies, and the guard against private targets."""

from __future__ import annotations

import pytest

from notifications.netguard import TargetRefused, check_url
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


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.com/hook",
    ],
)
def test_private_and_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, allow_private=False)


def test_private_targets_pass_when_allowed() -> None:
    check_url("http://127.0.0.1:9/hook", allow_private=True)


def test_a_public_address_passes() -> None:
    check_url("http://93.184.215.14/hook", allow_private=False)
