import pytest

from url_shortener.useragent import browser, is_bot

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
EDGE = CHROME + " Edg/126.0.0.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)


@pytest.mark.parametrize(
    ("ua", "name"),
    [(CHROME, "Chrome"), (EDGE, "Edge"), (FIREFOX, "Firefox"), (SAFARI, "Safari"), ("x", "Other")],
)
def test_browser_family(ua: str, name: str) -> None:
    assert browser(ua) == name
    assert not is_bot(ua)


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "facebookexternalhit/1.1",
        "curl/8.5.0",
        "python-httpx/0.27.0",
        "Slackbot-LinkExpanding 1.0",
        "",
    ],
)
def test_bots(ua: str) -> None:
    assert is_bot(ua)
    assert browser(ua) == "Bot"
