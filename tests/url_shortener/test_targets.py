import pytest

from url_shortener.errors import InvalidAlias, InvalidTarget
from url_shortener.targets import check_alias, check_target

OWN = ["sho.rt"]
BLOCKED = ["malware.test"]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://example.com:8080/a?b=c#d",
        "https://例え.jp/パス",
        "http://[2606:4700:4700::1111]:8080/x",
        "http://93.184.216.34/x",
        "https://my_host.example.com/",
        "https://sub.example.co.uk/" + "a" * 1900,
    ],
)
def test_good_targets(url: str) -> None:
    assert check_target(url, own_hosts=OWN, blocked=BLOCKED) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/file", "http and https"),
        ("javascript:alert(1)", "http and https"),
        ("data:text/html,hi", "http and https"),
        ("https://user:pass@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://sho.rt/abc", "itself"),
        ("https://www.SHO.RT./abc", "itself"),
        ("https://malware.test/x", "blocked"),
        ("https://cdn.malware.test/x", "blocked"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
        ("https:///nohost", "no host"),
        ("https://example.com:99999/", "malformed"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/\r\nSet-Cookie: x", "control"),
        ("https://malware.test\\.example.com/", "backslash"),
        ("https://sho.rt\\.x.com/", "backslash"),
        ("https://malware%2Etest/", "Percent-encoded"),
        ("https://exa!mple.com/", "not a valid host"),
        ("https://example.com\u3002malware.test/", "blocked"),
    ],
)
def test_refused_targets_say_why(url: str, reason: str) -> None:
    with pytest.raises(InvalidTarget, match=reason):
        check_target(url, own_hosts=OWN, blocked=BLOCKED)


def test_blocking_a_domain_does_not_block_lookalikes() -> None:
    assert check_target("https://notmalware.test/", own_hosts=OWN, blocked=BLOCKED)


@pytest.mark.parametrize("alias", ["abc", "my-link", "Under_score", "x" * 64, "ABCDEFGH"])
def test_good_aliases(alias: str) -> None:
    assert check_alias(alias) == alias


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("ab", "3 to 64"),
        ("x" * 65, "3 to 64"),
        ("has space", "3 to 64"),
        ("émoji🙂", "3 to 64"),
        ("ｆｕｌｌ", "3 to 64"),  # full-width letters are not ASCII
        ("a/b", "3 to 64"),
        ("api", "reserved"),
        ("API", "reserved"),
        ("healthz", "reserved"),
        ("abcDEF1", "reserved for generated"),
    ],
)
def test_refused_aliases(alias: str, reason: str) -> None:
    with pytest.raises(InvalidAlias, match=reason):
        check_alias(alias)


PRIVATE = [
    "http://localhost/admin",
    "http://LOCALHOST.:8080/",
    "http://app.localhost/",
    "http://127.0.0.1/",
    "http://127.1.2.3:9000/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/router",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://100.64.0.1/",
    "http://192.0.2.1/",
]


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_loopback_targets_are_refused_by_default(url: str) -> None:
    with pytest.raises(InvalidTarget, match="public hosts only"):
        check_target(url, own_hosts=OWN, blocked=BLOCKED)
    assert check_target(url, own_hosts=OWN, blocked=BLOCKED, allow_private=True) == url


@pytest.mark.parametrize("url", ["https://10.example.com/", "https://localhost-news.com/"])
def test_public_names_that_only_look_private_are_accepted(url: str) -> None:
    assert check_target(url, own_hosts=OWN, blocked=BLOCKED) == url
